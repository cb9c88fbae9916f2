using OnnxSteer.Onnx;

namespace OnnxSteer.Decoder;

/// <summary>Optimum's legacy merged decoder (<c>decoder_model_merged.onnx</c>): an <c>If</c> on <c>use_cache_branch</c>
/// whose two branches each hold a full decoder. Both branches are matched with the plain layouts and must agree;
/// the rewrite patches both identically and surfaces the new outputs through the If.</summary>
internal sealed class OptimumMergedLayoutMatcher : IDecoderLayoutMatcher
{
    private readonly IReadOnlyList<IDecoderLayoutMatcher> _branchMatchers = [new OptimumLayoutMatcher(), new GenAiLayoutMatcher()];

    /// <inheritdoc/>
    public string Name => "optimum-merged";

    /// <inheritdoc/>
    public LayoutMatch Match(GraphView graph)
    {
        var ifs = graph.Nodes.Where(n => n.OpType == "If" && n.Domain == ""
            && n.Subgraphs.ContainsKey("then_branch") && n.Subgraphs.ContainsKey("else_branch")).ToList();
        if (ifs.Count == 0)
            return LayoutMatch.Failed(Name, "no If node with then/else branches in the main graph", null, 0, graph);
        LayoutMatch? best = null;
        foreach (var node in ifs)
        {
            var result = MatchIf(node);
            if (result.IsMatch) return result;
            if (best is null || result.Progress > best.Progress) best = result;
        }
        return best!;
    }

    private LayoutMatch MatchIf(GraphNode node)
    {
        var branches = new[] { node.Subgraphs["then_branch"][0], node.Subgraphs["else_branch"][0] };
        var found = new List<DecoderLayout>();
        foreach (var branch in branches)
        {
            var results = _branchMatchers.Select(m => m.Match(branch)).ToList();
            var ok = results.FirstOrDefault(r => r.IsMatch);
            if (ok is null)
            {
                var closest = results.OrderByDescending(r => r.Progress).First();
                return LayoutMatch.Failed(Name, $"branch '{branch.Name}' of {node.Describe()} is not a decoder ({closest.LayoutName})", closest, 10 + closest.Progress / 2 + found.Count * 40);
            }
            found.Add(ok.Decoder!);
        }
        var (a, b) = (found[0], found[1]);
        if (a.NumLayers != b.NumLayers || a.HiddenSize != b.HiddenSize || a.ResidualElemType != b.ResidualElemType)
            return LayoutMatch.Failed(Name,
                $"the branches differ: {a.NumLayers} vs {b.NumLayers} layers, hidden {a.HiddenSize} vs {b.HiddenSize}, {a.ResidualDtype} vs {b.ResidualDtype}", node, 90);
        var cond = node.Input(0)?.Name ?? "?";
        return LayoutMatch.Matched(new DecoderLayout(Name, a.NumLayers, a.HiddenSize, a.ResidualElemType, [.. a.Points, .. b.Points]),
            $"{node.Describe()} on '{cond}' holds a {a.Name} decoder in each branch ({a.NumLayers} blocks, hidden {a.HiddenSize}, {a.ResidualDtype})");
    }
}
