using OnnxSteer.Onnx;
using static OnnxSteer.Decoder.MatchHelpers;

namespace OnnxSteer.Decoder;

/// <summary>Follows the residual stream through a chain of <c>com.microsoft</c> skip norms linked by output 3
/// (input + skip + bias), the shape shared by the fused layouts (ort-fused, gemma2).</summary>
internal static class SkipNormChain
{
    /// <summary>The skip norms reached from <paramref name="start"/> (the first residual) by following, at each step, the
    /// single skip norm that reads the current residual as its input 0 or 1, then its output 3. Returns the chain, or
    /// the node where it forked and why.</summary>
    public static (List<GraphNode> Chain, string? Error, GraphNode? At) Follow(GraphValue start)
    {
        var chain = new List<GraphNode>();
        var residual = start;
        while (true)
        {
            var next = residual.Uses.Where(u => u.InputIndex is 0 or 1 && GenAiLayoutMatcher.IsSkipNorm(u.Node)).Select(u => u.Node).Distinct().ToList();
            if (next.Count == 0) break;
            if (next.Count > 1)
                return (chain, $"the residual '{residual.Name}' feeds {next.Count} skip norms; expected exactly 1", next[1]);
            if (chain.Contains(next[0])) return (chain, "the residual chain loops", next[0]);
            chain.Add(next[0]);
            if (next[0].Output(FusedNormResidualPoint.ResidualOutputIndex) is not { Uses.Count: > 0 } r) break;
            residual = r;
        }
        return (chain, null, null);
    }

    /// <summary>The operand of a skip norm that is not <paramref name="residual"/> (the sublayer's output).</summary>
    public static GraphValue? Sublayer(GraphNode norm, GraphValue residual) =>
        norm.Input(0) == residual ? norm.Input(1) : norm.Input(1) == residual ? norm.Input(0) : null;

    /// <summary>Residual points at the norms that close each block: chain[2L+1], steering through the skip operand.</summary>
    public static List<ResidualPoint> BlockPoints(GraphView graph, List<GraphNode> chain)
    {
        var points = new List<ResidualPoint>();
        for (var layer = 0; layer < chain.Count / 2; layer++)
        {
            var norm = chain[2 * layer + 1];
            int? bias = norm.OpType == "SkipSimplifiedLayerNormalization" ? 3 : 4;
            if (norm.Input(bias.Value) is null) bias = null;
            points.Add(new FusedNormResidualPoint(layer, graph, norm, bias));
        }
        return points;
    }
}

/// <summary>ONNX Runtime's transformer optimizer on GPT-2 style models: <c>com.microsoft::EmbedLayerNormalization</c>
/// (word + position embeddings and block 0's LayerNorm in one op) whose output 2 (<c>embedding_sum</c>) is the first
/// residual, then a chain of <c>SkipLayerNormalization</c> nodes (projection bias fused into input 4) linked by output 3,
/// two per block, each block's first one fed by a fused <c>Attention</c>; the final norm has output 0 only.
/// Residual after block L = the sum inside skip norm 2L+1, steered through its skip operand like genai.</summary>
internal sealed class OrtFusedLayoutMatcher : IDecoderLayoutMatcher
{
    /// <inheritdoc/>
    public string Name => "ort-fused";

    /// <inheritdoc/>
    public LayoutMatch Match(GraphView graph)
    {
        var embeds = graph.Nodes.Where(n => Is(n, "EmbedLayerNormalization", MsDomain)).ToList();
        if (embeds.Count == 0)
            return LayoutMatch.Failed(Name, "no com.microsoft EmbedLayerNormalization node", null, 0, graph);
        if (embeds.Count > 1)
            return LayoutMatch.Failed(Name, $"{embeds.Count} EmbedLayerNormalization nodes; a decoder has one", embeds[1], 5);
        var embed = embeds[0];
        // Output 0 is LayerNorm(embeddings) (block 0's ln_1), output 2 the raw sum the residual stream starts from.
        if (embed.Output(2) is not { Uses.Count: > 0 } embeddingSum)
            return LayoutMatch.Failed(Name, "EmbedLayerNormalization does not expose output 2 (embedding_sum), so the first residual is not materialised", embed, 10);
        var (chain, error, at) = SkipNormChain.Follow(embeddingSum);
        if (error is not null) return LayoutMatch.Failed(Name, error, at, 20 + chain.Count);
        var norms = graph.Nodes.Where(GenAiLayoutMatcher.IsSkipNorm).ToList();
        if (chain.Count == 0)
            return LayoutMatch.Failed(Name, "no skip norm reads the embedding sum (output 2 of EmbedLayerNormalization)", embed, 15);
        if (chain.Count != norms.Count)
            return LayoutMatch.Failed(Name, $"{norms.Count - chain.Count} skip norm(s) are off the residual chain", norms.First(n => !chain.Contains(n)), 40);
        // The final norm is either a SkipLayerNormalization ending the chain (output 0 only), or, when the optimizer left
        // the last residual Add unfused, a plain LayerNormalization after Add(residual, mlp) (+ Add(bias)).
        ValueResidualPoint? lastAdd = null;
        if (chain.Count % 2 != 0)
        {
            var (value, why) = PlainFinalResidual(chain[^1].Output(FusedNormResidualPoint.ResidualOutputIndex));
            if (value is null)
                return LayoutMatch.Failed(Name, $"the residual chain has {chain.Count} skip norms; a decoder has two per block (post-attention and next ln_1/ln_f), or ends in Add + LayerNormalization ({why})", chain[^1], 40);
            lastAdd = new ValueResidualPoint(chain.Count / 2, graph, value);
        }
        else if (chain[^1].Output(FusedNormResidualPoint.ResidualOutputIndex) is { Uses.Count: > 0 })
            return LayoutMatch.Failed(Name, "the last skip norm's residual output is used; expected the final norm to end the chain", chain[^1], 45);

        var numLayers = (chain.Count + 1) / 2;
        var residualIn = embeddingSum;
        for (var layer = 0; layer < numLayers; layer++)
        {
            var postAttention = chain[2 * layer];
            var sublayer = SkipNormChain.Sublayer(postAttention, residualIn);
            var attention = sublayer is null ? null : FindBackward(sublayer, residualIn, n => AttentionOps.Contains(n.OpType));
            if (attention is null)
                return LayoutMatch.Failed(Name, $"no attention op feeds block {layer}'s post-attention norm", postAttention, 50 + layer * 40 / numLayers);
            if (2 * layer + 1 < chain.Count) residualIn = chain[2 * layer + 1].Output(FusedNormResidualPoint.ResidualOutputIndex)!;
        }

        var gamma = embed.Input(5);
        var hidden = LastDim(gamma) ?? LastDim(embed.Input(2));
        if (hidden is not { } h || h <= 0)
            return LayoutMatch.Failed(Name, "cannot tell the hidden size (no known shape for the embedding or its norm weight)", embed, 90);
        var dtype = FirstFloatType(embeddingSum, embed.Input(2), gamma);
        if (dtype == 0)
            return LayoutMatch.Failed(Name, "cannot tell the residual's element type", embed, 90);
        var attentionOps = string.Join("/", graph.Nodes.Where(n => AttentionOps.Contains(n.OpType)).Select(n => n.OpType).Distinct());
        var points = SkipNormChain.BlockPoints(graph, chain);
        if (lastAdd is not null) points.Add(lastAdd);
        var final = lastAdd is null ? chain[^1].Describe() : $"LayerNormalization after residual '{lastAdd.Residual.Name}'";
        return LayoutMatch.Matched(new DecoderLayout(Name, numLayers, h, dtype, points),
            $"{embed.Describe()} output 2 '{embeddingSum.Name}' starts a chain of {chain.Count} {chain[0].OpType} nodes linked by output 3; {numLayers} blocks with {attentionOps}; final norm {final}");
    }

    /// <summary>True when <paramref name="other"/> is computed from the node that produces <paramref name="residual"/>
    /// (the MLP reads the skip norm's output 0, a sibling of the residual output 3).</summary>
    private static bool FromSameNorm(GraphValue other, GraphValue residual) =>
        residual.Producer is { } norm && FindBackward(other, null, n => n == norm) is not null;

    /// <summary>The last residual when the final norm is a plain LayerNormalization: from the residual after the last
    /// attention half, Add(residual, mlp) whose other operand depends on it, then optionally Add(bias initializer),
    /// feeding LayerNormalization.</summary>
    private static (GraphValue? Value, string Why) PlainFinalResidual(GraphValue? residual)
    {
        if (residual is null) return (null, "the last skip norm has no output 3");
        var adds = residual.Uses.Where(u => Is(u.Node, "Add") && u.InputIndex is 0 or 1
            && SkipNormChain.Sublayer(u.Node, residual) is { } other && FromSameNorm(other, residual)).Select(u => u.Node).Distinct().ToList();
        if (adds.Count != 1) return (null, $"its output 3 feeds {adds.Count} residual Adds");
        var value = adds[0].Output(0)!;
        if (value.Uses.Count == 1 && value.Uses[0].Node is { } next && Is(next, "Add")
            && SkipNormChain.Sublayer(next, value) is { } bias && InitializerOf(bias) is not null)
            value = next.Output(0)!;
        return value.Uses.Any(u => Is(u.Node, "LayerNormalization") && u.InputIndex == 0)
            ? (value, "")
            : (null, $"'{value.Name}' does not feed a LayerNormalization");
    }
}
