using OnnxSteer.Onnx;
using static OnnxSteer.Decoder.MatchHelpers;

namespace OnnxSteer.Decoder;

/// <summary>Gemma 2 as the onnxruntime-genai builder exports it: "sandwich" norms. Like genai, the residual stream is a
/// chain of <c>com.microsoft</c> skip norms linked by output 3 (pre_feedforward_layernorm, then the next block's input
/// norm or the final norm), but each one's sublayer operand is itself a plain norm (post_attention_layernorm,
/// post_feedforward_layernorm: <c>SimplifiedLayerNormalization</c>, possibly behind a Cast) of the sublayer output.
/// The skip norms run in float32 even in a float16 model, so the residual dtype (and the steering inputs) come from
/// the skip norms' weights, not from the embedding.</summary>
internal sealed class Gemma2LayoutMatcher : IDecoderLayoutMatcher
{
    /// <summary>Plain (non-skip) norm ops that sandwich a sublayer.</summary>
    private static readonly HashSet<string> PlainNorms = new(StringComparer.Ordinal) { "SimplifiedLayerNormalization", "LayerNormalization", "RMSNormalization" };

    /// <inheritdoc/>
    public string Name => "gemma2";

    /// <summary>The plain norm that produces <paramref name="value"/> (looking through Casts), or null.</summary>
    internal static GraphNode? PlainNormBehind(GraphValue? value)
    {
        for (var hops = 0; value?.Producer is { } p && hops < 3; hops++)
        {
            if (PlainNorms.Contains(p.OpType) && p.Domain is "" or MsDomain) return p;
            if (p.OpType != "Cast") return null;
            value = p.Input(0);
        }
        return null;
    }

    /// <inheritdoc/>
    public LayoutMatch Match(GraphView graph)
    {
        var norms = graph.Nodes.Where(GenAiLayoutMatcher.IsSkipNorm).ToList();
        if (norms.Count == 0)
            return LayoutMatch.Failed(Name, "no com.microsoft SkipSimplifiedLayerNormalization or SkipLayerNormalization nodes", null, 0, graph);
        if (graph.Nodes.FirstOrDefault(n => n.OpType == "EmbedLayerNormalization") is { } embed)
            return LayoutMatch.Failed(Name, "the embedding is a fused EmbedLayerNormalization (the ort-fused layout)", embed, 5);
        var residualOutputs = norms.Select(n => n.Output(FusedNormResidualPoint.ResidualOutputIndex)).Where(v => v is not null).ToHashSet();
        var heads = norms.Where(n => !residualOutputs.Contains(n.Input(0)!) && !residualOutputs.Contains(n.Input(1)!)).ToList();
        if (heads.Count != 1)
            return LayoutMatch.Failed(Name, $"expected one skip norm starting the residual chain, found {heads.Count}", heads.FirstOrDefault() ?? norms[0], 10);
        var head = heads[0];
        // The head's two operands: the first residual (the scaled embedding) and the post-attention norm's output.
        var sandwichAt0 = PlainNormBehind(head.Input(0));
        var sandwichAt1 = PlainNormBehind(head.Input(1));
        if (sandwichAt0 is null == (sandwichAt1 is null))
            return LayoutMatch.Failed(Name, sandwichAt0 is null
                ? "the first skip norm's operands come from no plain norm: no post_attention_layernorm sandwich (that is the plain genai layout)"
                : "both operands of the first skip norm come from plain norms; cannot tell the residual", head, 15);
        var embedding = sandwichAt0 is null ? head.Input(0)! : head.Input(1)!;
        if (!embedding.Uses.Any(u => PlainNorms.Contains(u.Node.OpType)))
            return LayoutMatch.Failed(Name, $"the first residual '{embedding.Name}' does not feed block 0's input norm", head, 20);

        var (chain, error, at) = SkipNormChain.Follow(embedding);
        if (error is not null) return LayoutMatch.Failed(Name, error, at, 20 + chain.Count);
        if (chain.Count != norms.Count)
            return LayoutMatch.Failed(Name, $"{norms.Count - chain.Count} skip norm(s) are off the residual chain", norms.First(n => !chain.Contains(n)), 40);
        if (chain.Count < 2 || chain.Count % 2 != 0)
            return LayoutMatch.Failed(Name, $"the residual chain has {chain.Count} skip norms; Gemma 2 has two per block (pre-feedforward and next input/final norm)", chain[^1], 40);

        var numLayers = chain.Count / 2;
        var residualIn = embedding;
        for (var i = 0; i < chain.Count; i++)
        {
            var norm = chain[i];
            var sublayer = SkipNormChain.Sublayer(norm, residualIn);
            var plain = PlainNormBehind(sublayer);
            var which = i % 2 == 0 ? "post_attention_layernorm" : "post_feedforward_layernorm";
            if (plain is null)
                return LayoutMatch.Failed(Name, $"block {i / 2}: the skip operand does not come from a plain norm ({which} sandwich missing)", norm, 50 + i * 40 / chain.Count);
            if (i % 2 == 0 && FindBackward(plain.Input(0)!, residualIn, n => AttentionOps.Contains(n.OpType)) is null)
                return LayoutMatch.Failed(Name, $"no attention op feeds block {i / 2}'s post_attention_layernorm", plain, 50 + i * 40 / chain.Count);
            residualIn = norm.Output(FusedNormResidualPoint.ResidualOutputIndex) ?? residualIn;
        }

        var gamma = chain[0].Input(2);
        var hidden = LastDim(gamma) ?? LastDim(embedding);
        if (hidden is not { } h || h <= 0)
            return LayoutMatch.Failed(Name, "cannot tell the hidden size (no known shape for the norm weight)", chain[0], 90);
        // The skip norm computes in its weight's type (T for input, skip and gamma alike): that is the residual's type.
        var dtype = FirstFloatType(gamma, chain[0].Output(FusedNormResidualPoint.ResidualOutputIndex), embedding);
        if (dtype == 0)
            return LayoutMatch.Failed(Name, "cannot tell the residual's element type", chain[0], 90);
        return LayoutMatch.Matched(new DecoderLayout(Name, numLayers, h, dtype, SkipNormChain.BlockPoints(graph, chain)),
            $"{chain.Count} {chain[0].OpType} nodes chained through output 3 from '{embedding.Name}', each skip operand a plain norm (sandwich); {numLayers} blocks; residual {DecoderLayout.DtypeName(dtype)}; final norm {chain[^1].Describe()}");
    }
}
