using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>What <see cref="GraphPruner.KeepOutputs"/> removed.</summary>
/// <param name="NodesBefore">Nodes in the main graph before pruning.</param>
/// <param name="NodesAfter">Nodes left.</param>
/// <param name="InitializersRemoved">Initializers no kept node reads (their external bytes are then never loaded).</param>
/// <param name="InputsRemoved">Graph inputs no kept node reads.</param>
internal sealed record PruneResult(int NodesBefore, int NodesAfter, int InitializersRemoved, int InputsRemoved);

/// <summary>Dead-node elimination towards a chosen set of outputs: keeps only the nodes the named graph outputs depend
/// on, and the inputs and initializers those nodes read. ONNX Runtime runs every node of a graph whatever outputs a
/// caller fetches, so a graph pruned to the outputs that are read is the only way to skip the work nobody reads
/// (for extraction: the LM head, the presents, the layers above the highest requested hidden state).</summary>
internal static class GraphPruner
{
    /// <summary>Prunes <paramref name="model"/>'s main graph <b>in place</b> to <paramref name="outputs"/> (in that order).
    /// Nodes with subgraphs are kept whole, and every name their subgraphs read counts as needed, so the result
    /// over-approximates rather than breaks a branch.</summary>
    /// <exception cref="OnnxSteerException">An output the graph does not have (UnsupportedModel).</exception>
    public static PruneResult KeepOutputs(ModelProto model, IReadOnlyList<string> outputs)
    {
        var graph = model.Graph;
        var outputInfo = new Dictionary<string, ValueInfoProto>(StringComparer.Ordinal);
        foreach (var o in graph.Output) outputInfo.TryAdd(o.Name, o);
        foreach (var name in outputs)
            if (!outputInfo.ContainsKey(name))
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"the model has no output '{name}' (outputs: {string.Join(", ", outputInfo.Keys.Take(8))}{(outputInfo.Count > 8 ? ", ..." : "")}).");

        var producer = new Dictionary<string, int>(StringComparer.Ordinal);
        for (var i = 0; i < graph.Node.Count; i++)
            foreach (var o in graph.Node[i].Output)
                if (o.Length > 0) producer[o] = i;

        var live = new bool[graph.Node.Count];
        var needed = new HashSet<string>(StringComparer.Ordinal);
        var work = new Stack<string>();
        void Need(string name)
        {
            if (name.Length > 0 && needed.Add(name)) work.Push(name);
        }
        foreach (var name in outputs) Need(name);
        while (work.Count > 0)
        {
            if (!producer.TryGetValue(work.Pop(), out var i) || live[i]) continue;
            live[i] = true;
            var node = graph.Node[i];
            foreach (var input in node.Input) Need(input);
            foreach (var attr in node.Attribute)
                foreach (var sub in attr.G is not null ? [attr.G] : attr.Graphs.ToList())
                    foreach (var g in GraphWalker.AllGraphs(sub))
                        foreach (var n in g.Node)
                            foreach (var input in n.Input) Need(input);
        }

        var before = graph.Node.Count;
        KeepWhere(graph.Node, (_, i) => live[i]);
        var initializersRemoved = KeepWhere(graph.Initializer, (t, _) => needed.Contains(t.Name));
        KeepWhere(graph.SparseInitializer, (t, _) => needed.Contains(t.Values?.Name ?? ""));
        var inputsRemoved = KeepWhere(graph.Input, (v, _) => needed.Contains(v.Name));

        graph.Output.Clear();
        graph.Output.AddRange(outputs.Select(n => outputInfo[n]));

        // value_info of values that no longer exist would only describe nothing; drop it.
        var defined = new HashSet<string>(graph.Node.SelectMany(n => n.Output), StringComparer.Ordinal);
        KeepWhere(graph.ValueInfo, (v, _) => defined.Contains(v.Name));
        return new PruneResult(before, graph.Node.Count, initializersRemoved, inputsRemoved);
    }

    /// <summary>Keeps the elements of a repeated field that pass <paramref name="keep"/> (element, index), in order; returns
    /// how many were removed.</summary>
    private static int KeepWhere<T>(Google.Protobuf.Collections.RepeatedField<T> field, Func<T, int, bool> keep)
    {
        var kept = field.Where(keep).ToList();
        var removed = field.Count - kept.Count;
        field.Clear();
        field.AddRange(kept);
        return removed;
    }
}
