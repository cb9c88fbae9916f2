using OnnxSteer.Onnx;
using static OnnxSteer.Decoder.MatchHelpers;

namespace OnnxSteer.Decoder;

/// <summary>Hugging Face Optimum / torch.onnx exports: decomposed norms and plain residual <c>Add</c>s.
/// From the embedding <c>Gather</c>, the residual stream is the chain of Adds whose other operand is computed
/// from the stream itself (the attention and MLP sublayers); two per block, the second one being the residual
/// after the block.</summary>
internal sealed class OptimumLayoutMatcher : IDecoderLayoutMatcher
{
    /// <inheritdoc/>
    public string Name => "optimum";

    /// <inheritdoc/>
    public LayoutMatch Match(GraphView graph)
    {
        var gathers = graph.Nodes.Where(n => n.OpType == "Gather" && n.Domain == ""
            && InitializerOf(n.Input(0)) is { Dims.Count: 2 } && n.Input(1) is { } ids && IsGraphInput(ids)).ToList();
        if (gathers.Count == 0)
            return LayoutMatch.Failed(Name, "no embedding Gather (a 2-D initializer indexed by a graph input)", null, 0, graph);

        LayoutMatch? best = null;
        foreach (var gather in gathers)
        {
            var result = MatchFrom(graph, gather);
            if (result.IsMatch) return result;
            if (best is null || result.Progress > best.Progress) best = result;
        }
        return best!;
    }

    private LayoutMatch MatchFrom(GraphView graph, GraphNode gather)
    {
        var embedding = gather.Output(0)!;
        var stream = embedding;
        var adds = new List<GraphNode>();
        var residuals = new List<GraphValue> { stream };
        var prelude = 0;
        while (true)
        {
            var candidates = stream.Uses.Where(u => u.Node.OpType == "Add" && u.Node.Domain == "" && u.InputIndex is 0 or 1)
                .Select(u => u.Node).Distinct().ToList();
            var residualAdds = candidates.Where(a => OtherOperand(a, stream) is { } o && DependsOn(o, stream)).ToList();
            if (residualAdds.Count == 0)
            {
                // Before block 0 the stream may be adjusted by values that do not depend on it (GPT-2's position
                // embedding Add, Gemma's scaling Mul); follow a single such step.
                if (adds.Count == 0 && prelude < 3 && SinglePreludeStep(stream) is { } next)
                {
                    stream = next;
                    residuals[0] = stream;
                    prelude++;
                    continue;
                }
                break;
            }
            if (residualAdds.Count > 1)
                return LayoutMatch.Failed(Name, $"the residual '{stream.Name}' feeds {residualAdds.Count} residual Adds; expected 1", residualAdds[1], 20 + adds.Count);
            adds.Add(residualAdds[0]);
            stream = residualAdds[0].Output(0)!;
            residuals.Add(stream);
        }
        if (adds.Count < 2)
            return LayoutMatch.Failed(Name, $"found {adds.Count} residual Add(s) after the embedding; a decoder block has two", adds.LastOrDefault() ?? gather, 5 + adds.Count * 5);
        if (adds.Count % 2 != 0)
            return LayoutMatch.Failed(Name, $"found {adds.Count} residual Adds; a decoder has two per block (attention and MLP)", adds[^1], 40);
        var numLayers = adds.Count / 2;
        for (var layer = 0; layer < numLayers; layer++)
        {
            var add = adds[2 * layer];
            var residualIn = residuals[2 * layer];
            if (FindBackward(OtherOperand(add, residualIn)!, residualIn, n => AttentionOps.Contains(n.OpType)) is null)
                return LayoutMatch.Failed(Name, $"no attention (Softmax or an attention op) feeds block {layer}'s first residual Add", add, 50 + layer * 40 / numLayers);
        }
        if (stream.Uses.Count == 0)
            return LayoutMatch.Failed(Name, "the last residual feeds nothing (no final norm)", adds[^1], 90);

        var hidden = LastDim(gather.Input(0)) ?? LastDim(embedding);
        if (hidden is not { } h || h <= 0)
            return LayoutMatch.Failed(Name, "cannot tell the hidden size", gather, 90);
        var dtype = FirstFloatType(adds[1].Output(0), embedding, gather.Input(0));
        if (dtype == 0)
            return LayoutMatch.Failed(Name, "cannot tell the residual's element type", gather, 90);
        var points = Enumerable.Range(0, numLayers)
            .Select(l => (ResidualPoint)new ValueResidualPoint(l, graph, adds[2 * l + 1].Output(0)!)).ToList();
        return LayoutMatch.Matched(new DecoderLayout(Name, numLayers, h, dtype, points),
            $"{adds.Count} residual Adds chained from embedding {gather.Describe()}; {numLayers} blocks, each with attention; the last residual feeds {stream.Uses[0].Node.Describe()}");
    }

    private static GraphValue? OtherOperand(GraphNode add, GraphValue stream) =>
        add.Input(0) == stream ? add.Input(1) : add.Input(1) == stream ? add.Input(0) : null;

    private static GraphValue? SinglePreludeStep(GraphValue stream)
    {
        var steps = stream.Uses.Where(u => u.Node.OpType is "Add" or "Mul" or "Cast" && u.Node.Domain == "").Select(u => u.Node).Distinct().ToList();
        if (steps.Count != 1) return null;
        var step = steps[0];
        if (step.OpType != "Cast" && OtherOperand(step, stream) is { } other && DependsOn(other, stream)) return null;
        return step.Output(0);
    }
}
