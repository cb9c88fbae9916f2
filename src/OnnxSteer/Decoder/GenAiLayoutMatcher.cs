using OnnxSteer.Onnx;
using static OnnxSteer.Decoder.MatchHelpers;

namespace OnnxSteer.Decoder;

/// <summary>The onnxruntime-genai model builder's layout: a plain <c>SimplifiedLayerNormalization</c> (or
/// <c>LayerNormalization</c>) on the embedding, then a chain of <c>com.microsoft</c> skip norms linked by their
/// output 3 (the residual stream): post-attention norm and next input norm per block, ending in the final norm,
/// which produces no output 3. Residual after block L = the sum inside skip norm 2L+1 of the chain.</summary>
internal sealed class GenAiLayoutMatcher : IDecoderLayoutMatcher
{
    /// <summary>The skip-norm op types this layout uses (RMSNorm and LayerNorm models).</summary>
    public static readonly IReadOnlySet<string> SkipNormOps = new HashSet<string>(StringComparer.Ordinal)
        { "SkipSimplifiedLayerNormalization", "SkipLayerNormalization" };

    /// <inheritdoc/>
    public string Name => "genai";

    internal static bool IsSkipNorm(GraphNode n) => n.Domain == MsDomain && SkipNormOps.Contains(n.OpType);

    /// <inheritdoc/>
    public LayoutMatch Match(GraphView graph)
    {
        var norms = graph.Nodes.Where(IsSkipNorm).ToList();
        if (norms.Count == 0)
            return LayoutMatch.Failed(Name, "no com.microsoft SkipSimplifiedLayerNormalization or SkipLayerNormalization nodes", null, 0, graph);
        if (graph.Nodes.FirstOrDefault(n => n.OpType == "EmbedLayerNormalization") is { } embed)
            return LayoutMatch.Failed(Name, "the embedding is a fused EmbedLayerNormalization (the ort-fused layout, not the GenAI builder's)", embed, 10);

        var residualOutputs = norms.Select(n => n.Output(FusedNormResidualPoint.ResidualOutputIndex)).Where(v => v is not null).ToHashSet();
        var heads = norms.Where(n => !residualOutputs.Contains(n.Input(0)!) && !residualOutputs.Contains(n.Input(1)!)).ToList();
        if (heads.Count != 1)
            return LayoutMatch.Failed(Name, $"expected one skip norm starting the residual chain (reading the embedding), found {heads.Count}", heads.FirstOrDefault() ?? norms[0], 10);

        var chain = new List<GraphNode> { heads[0] };
        var current = heads[0];
        while (current.Output(FusedNormResidualPoint.ResidualOutputIndex) is { Uses.Count: > 0 } residual)
        {
            var next = residual.Uses.Where(u => u.InputIndex is 0 or 1 && IsSkipNorm(u.Node)).Select(u => u.Node).Distinct().ToList();
            if (next.Count == 0) break; // a final norm whose residual output is exposed (e.g. by onnxsteer)
            if (next.Count != 1)
                return LayoutMatch.Failed(Name, $"its output 3 (the residual) feeds {next.Count} skip norms; expected exactly 1", current, 20 + chain.Count);
            if (chain.Contains(next[0]))
                return LayoutMatch.Failed(Name, "the residual chain loops", next[0], 20);
            chain.Add(next[0]);
            current = next[0];
        }
        if (chain.Count != norms.Count)
        {
            var stray = norms.First(n => !chain.Contains(n));
            return LayoutMatch.Failed(Name, $"{norms.Count - chain.Count} skip norm(s) are off the residual chain (sandwich norms? that is the gemma2 layout)", stray, 40);
        }
        if (chain.Count < 2 || chain.Count % 2 != 0)
            return LayoutMatch.Failed(Name, $"the residual chain has {chain.Count} skip norms; a decoder has two per block (post-attention and next input/final norm)", current, 40);

        var head = chain[0];
        var embedding = new[] { head.Input(0), head.Input(1) }
            .FirstOrDefault(v => v is not null && v.Uses.Any(u => u.Node.OpType is "SimplifiedLayerNormalization" or "LayerNormalization"));
        if (embedding is null)
            return LayoutMatch.Failed(Name, "block 0's input norm (SimplifiedLayerNormalization or LayerNormalization on the embedding) was not found beside the first skip norm", head, 50);

        var numLayers = chain.Count / 2;
        for (var layer = 0; layer < numLayers; layer++)
        {
            // The post-attention norm's sublayer input must come from attention, without crossing the previous residual.
            var postAttention = chain[2 * layer];
            var residualIn = layer == 0 ? embedding : chain[2 * layer - 1].Output(FusedNormResidualPoint.ResidualOutputIndex);
            var sublayer = postAttention.Input(0) == residualIn ? postAttention.Input(1) : postAttention.Input(0);
            if (Gemma2LayoutMatcher.PlainNormBehind(sublayer) is { } sandwich)
                return LayoutMatch.Failed(Name, $"block {layer}'s post-attention skip operand is itself a norm (sandwich norms: the gemma2 layout)", sandwich, 55);
            if (sublayer is null || FindBackward(sublayer, residualIn, n => AttentionOps.Contains(n.OpType)) is null)
                return LayoutMatch.Failed(Name, $"no attention op feeds block {layer}'s post-attention norm", postAttention, 60 + layer * 30 / numLayers);
        }

        var gamma = head.Input(2);
        var hidden = LastDim(gamma) ?? LastDim(embedding);
        if (hidden is not { } h || h <= 0)
            return LayoutMatch.Failed(Name, "cannot tell the hidden size (no known shape for the norm weight or the embedding)", head, 90);
        var dtype = FirstFloatType(head.Output(FusedNormResidualPoint.ResidualOutputIndex), embedding, gamma);
        if (dtype == 0)
            return LayoutMatch.Failed(Name, "cannot tell the residual's element type", head, 90);

        var points = new List<ResidualPoint>();
        for (var layer = 0; layer < numLayers; layer++)
        {
            var norm = chain[2 * layer + 1];
            int? bias = norm.OpType == "SkipSimplifiedLayerNormalization" ? 3 : 4;
            if (norm.Input(bias.Value) is null) bias = null;
            points.Add(new FusedNormResidualPoint(layer, graph, norm, bias));
        }
        var attention = string.Join("/", graph.Nodes.Where(n => AttentionOps.Contains(n.OpType)).Select(n => n.OpType).Distinct());
        return LayoutMatch.Matched(new DecoderLayout(Name, numLayers, h, dtype, points),
            $"{chain.Count} {head.OpType} nodes chained through output 3 after {embedding.Name}; {numLayers} blocks with {attention}; final norm {chain[^1].Describe()}");
    }
}
