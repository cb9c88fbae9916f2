using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Decoder;

/// <summary>Topology helpers shared by the layout matchers.</summary>
internal static class MatchHelpers
{
    public const string MsDomain = "com.microsoft";

    /// <summary>Ops that compute attention, fused or decomposed (Softmax).</summary>
    public static readonly HashSet<string> AttentionOps = new(StringComparer.Ordinal)
    {
        "MultiHeadAttention", "GroupQueryAttention", "Attention", "PackedMultiHeadAttention", "PackedAttention",
        "SparseAttention", "PagedAttention", "DecoderMaskedMultiHeadAttention", "Softmax",
    };

    public static bool Is(GraphNode node, string opType, string domain = "") => node.OpType == opType && node.Domain == domain;

    /// <summary>True when <paramref name="value"/> is computed (transitively) from <paramref name="source"/> inside one graph.</summary>
    public static bool DependsOn(GraphValue value, GraphValue source) => Reaches(value, source);

    /// <summary>Searches backwards from <paramref name="start"/> without crossing <paramref name="stop"/>; returns the first
    /// node satisfying <paramref name="predicate"/>, or null. Bounded by the graph's size (each node visited once).</summary>
    public static GraphNode? FindBackward(GraphValue start, GraphValue? stop, Func<GraphNode, bool> predicate)
    {
        var visited = new HashSet<GraphNode>();
        var stack = new Stack<GraphValue>();
        stack.Push(start);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (v == stop) continue;
            if (v.Producer is not { } p || !visited.Add(p)) continue;
            if (predicate(p)) return p;
            foreach (var input in p.Inputs)
            {
                if (input is not null && input != stop) stack.Push(input);
            }
        }
        return null;
    }

    /// <summary>True when <paramref name="value"/> reaches back to <paramref name="source"/>.</summary>
    public static bool Reaches(GraphValue value, GraphValue source)
    {
        if (value == source) return true;
        var visited = new HashSet<GraphNode>();
        var stack = new Stack<GraphValue>();
        stack.Push(value);
        while (stack.Count > 0)
        {
            var v = stack.Pop();
            if (v == source) return true;
            if (v.Producer is not { } p || !visited.Add(p)) continue;
            foreach (var input in p.Inputs) if (input is not null) stack.Push(input);
        }
        return false;
    }

    /// <summary>The initializer behind a value, looking through captured outer values.</summary>
    public static TensorProto? InitializerOf(GraphValue? value)
    {
        for (var v = value; v is not null; v = v.OuterValue)
            if (v.Initializer is not null) return v.Initializer;
        return null;
    }

    /// <summary>True for a graph input (of any enclosing graph).</summary>
    public static bool IsGraphInput(GraphValue value)
    {
        for (var v = value; v is not null; v = v.OuterValue)
            if (v.IsGraphInput) return true;
        return false;
    }

    public static bool IsFloatType(int elemType) => elemType is (int)TensorProto.Types.DataType.Float
        or (int)TensorProto.Types.DataType.Float16 or (int)TensorProto.Types.DataType.Bfloat16 or (int)TensorProto.Types.DataType.Double;

    /// <summary>Last dimension of a value when known, from its type or its initializer.</summary>
    public static int? LastDim(GraphValue? value)
    {
        if (value is null) return null;
        var init = InitializerOf(value);
        if (init is not null && init.Dims.Count > 0) return Width(value, init.Dims[^1]);
        var dims = value.Dims;
        return dims is { Count: > 0 } && dims[^1] is { } d && d > 0 ? Width(value, d) : null;
    }

    // Dims come from an untrusted file: a huge or negative one is a broken model, not an overflow (found by the fuzzer).
    private static int Width(GraphValue value, long dim) => dim is >= 0 and <= int.MaxValue ? (int)dim
        : throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{value.Name}' has dimension {dim}, outside 0..{int.MaxValue}.");

    /// <summary>Element type of the first of <paramref name="values"/> whose type is a known float type.</summary>
    public static int FirstFloatType(params GraphValue?[] values)
    {
        foreach (var v in values)
        {
            if (v is null) continue;
            var t = v.ElemType;
            if (t == 0) t = InitializerOf(v)?.DataType ?? 0;
            if (IsFloatType(t)) return t;
        }
        return 0;
    }
}
