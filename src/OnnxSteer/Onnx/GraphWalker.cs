using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>Enumerates a graph and all subgraphs (If/Loop/Scan bodies) without recursion limits being
/// driven by the file: nesting is bounded so a hostile model cannot overflow the stack.</summary>
internal static class GraphWalker
{
    /// <summary>Deepest subgraph nesting accepted.</summary>
    public const int MaxDepth = 32;

    /// <summary>The graph and every nested subgraph, outermost first.</summary>
    public static IEnumerable<GraphProto> AllGraphs(GraphProto graph)
    {
        var stack = new Stack<(GraphProto Graph, int Depth)>();
        stack.Push((graph, 0));
        while (stack.Count > 0)
        {
            var (g, depth) = stack.Pop();
            if (depth > MaxDepth)
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"subgraphs nest deeper than {MaxDepth} levels.");
            yield return g;
            foreach (var node in g.Node)
                foreach (var attr in node.Attribute)
                {
                    if (attr.G is not null) stack.Push((attr.G, depth + 1));
                    foreach (var sub in attr.Graphs) stack.Push((sub, depth + 1));
                }
        }
    }

    /// <summary>All initializers of the graph and its subgraphs.</summary>
    public static IEnumerable<TensorProto> AllInitializers(GraphProto graph) => AllGraphs(graph).SelectMany(g => g.Initializer);
}
