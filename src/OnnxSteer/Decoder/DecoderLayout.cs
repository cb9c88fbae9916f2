using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Decoder;

/// <summary>Where the residual stream after one decoder block can be read and steered, in one graph
/// (a model whose decoder lives in several If branches has one point per branch and layer).</summary>
internal abstract class ResidualPoint
{
    private protected ResidualPoint(int layer, GraphView graph) { Layer = layer; Graph = graph; }

    /// <summary>The decoder block (0-based) after which this is the residual stream.</summary>
    public int Layer { get; }

    /// <summary>The graph (main graph or a subgraph) that holds the point.</summary>
    public GraphView Graph { get; }

    /// <summary>The residual's value when the graph materialises it; null when it must be created (a fused final norm).</summary>
    public abstract GraphValue? ExistingValue { get; }

    /// <summary>The uses that must see the steered value instead of the original one.</summary>
    public abstract IReadOnlyList<ValueUse> Consumers { get; }

    /// <summary>One line for <c>inspect</c>: the value name or how the residual is formed.</summary>
    public abstract string Describe();
}

/// <summary>A residual the graph computes as a plain value (e.g. the output of a residual <c>Add</c>):
/// steering inserts x' after it and makes every consumer read x'.</summary>
internal sealed class ValueResidualPoint : ResidualPoint
{
    /// <summary>Creates a point for <paramref name="residual"/>.</summary>
    public ValueResidualPoint(int layer, GraphView graph, GraphValue residual) : base(layer, graph) => Residual = residual;

    /// <summary>The residual value x.</summary>
    public GraphValue Residual { get; }

    /// <inheritdoc/>
    public override GraphValue? ExistingValue => Residual;

    /// <inheritdoc/>
    public override IReadOnlyList<ValueUse> Consumers => Residual.Uses;

    /// <inheritdoc/>
    public override string Describe() => Residual.Name;
}

/// <summary>A residual formed inside a fused norm (<c>SkipSimplifiedLayerNormalization</c>, <c>SkipLayerNormalization</c>):
/// x = input + skip (+ bias) is the node's output 3 and also what its output 0 normalises. Steering replaces the
/// node's <c>skip</c> input so both outputs see x' (never the bias slot: DirectML reads it differently).</summary>
internal sealed class FusedNormResidualPoint : ResidualPoint
{
    /// <summary>Creates a point at <paramref name="norm"/>.</summary>
    public FusedNormResidualPoint(int layer, GraphView graph, GraphNode norm, int? biasInputIndex) : base(layer, graph)
    {
        Norm = norm;
        BiasInputIndex = biasInputIndex;
    }

    /// <summary>Index of the <c>skip</c> input that steering replaces.</summary>
    public const int SkipInputIndex = 1;

    /// <summary>Index of the residual output (input + skip + bias).</summary>
    public const int ResidualOutputIndex = 3;

    /// <summary>The fused norm node.</summary>
    public GraphNode Norm { get; }

    /// <summary>Index of the node's bias input (3 for SkipSimplifiedLayerNormalization, 4 for SkipLayerNormalization) when it has one.</summary>
    public int? BiasInputIndex { get; }

    /// <inheritdoc/>
    public override GraphValue? ExistingValue => Norm.Output(ResidualOutputIndex);

    /// <inheritdoc/>
    public override IReadOnlyList<ValueUse> Consumers => [new ValueUse(Norm, SkipInputIndex)];

    /// <inheritdoc/>
    public override string Describe() => ExistingValue?.Name ?? $"(not materialised: output 3 of {Norm.Describe()})";
}

/// <summary>A recognised decoder: its layout, size and residual points.</summary>
public sealed class DecoderLayout
{
    /// <summary>Creates a layout description; points are ordered by layer.</summary>
    internal DecoderLayout(string name, int numLayers, int hiddenSize, int residualElemType, IReadOnlyList<ResidualPoint> points)
    {
        Name = name;
        NumLayers = numLayers;
        HiddenSize = hiddenSize;
        ResidualElemType = residualElemType;
        Points = points.OrderBy(p => p.Layer).ToList();
    }

    /// <summary>Layout name: genai, optimum, optimum-merged, ort-fused, gemma2.</summary>
    public string Name { get; }

    /// <summary>Number of decoder blocks.</summary>
    public int NumLayers { get; }

    /// <summary>Width of the residual stream.</summary>
    public int HiddenSize { get; }

    /// <summary>ONNX element type of the residual stream (<see cref="TensorProto.Types.DataType"/>).</summary>
    public int ResidualElemType { get; }

    /// <summary>The residual's element type name: float32, float16, bfloat16.</summary>
    public string ResidualDtype => DtypeName(ResidualElemType);

    /// <summary>All residual points, by layer (one per layer and graph that holds a copy of the decoder).</summary>
    internal IReadOnlyList<ResidualPoint> Points { get; }

    /// <summary>The points of <paramref name="layer"/>.</summary>
    internal IEnumerable<ResidualPoint> PointsOf(int layer) => Points.Where(p => p.Layer == layer);

    /// <summary>Name of an ONNX element type as used in steering.json.</summary>
    public static string DtypeName(int elemType) => (TensorProto.Types.DataType)elemType switch
    {
        TensorProto.Types.DataType.Float => "float32",
        TensorProto.Types.DataType.Float16 => "float16",
        TensorProto.Types.DataType.Bfloat16 => "bfloat16",
        TensorProto.Types.DataType.Double => "float64",
        var t => t.ToString().ToLowerInvariant(),
    };
}

/// <summary>The result of one matcher on one graph: a decoder layout, or the reason it does not match and the node
/// where matching stopped (for <c>inspect --explain</c> and for naming the closest layout when nothing matches).</summary>
public sealed class LayoutMatch
{
    private LayoutMatch(string layout, DecoderLayout? decoder, string reason, string? stoppedAt, int progress)
    {
        LayoutName = layout;
        Decoder = decoder;
        Reason = reason;
        StoppedAt = stoppedAt;
        Progress = progress;
    }

    /// <summary>The matcher's layout name.</summary>
    public string LayoutName { get; }

    /// <summary>The decoder found, or null when the layout does not match.</summary>
    public DecoderLayout? Decoder { get; }

    /// <summary>True when the layout matched.</summary>
    public bool IsMatch => Decoder is not null;

    /// <summary>Why it matched (what was found) or why not.</summary>
    public string Reason { get; }

    /// <summary>The node (or graph) where matching stopped, when it failed; null on success.</summary>
    public string? StoppedAt { get; }

    /// <summary>How far matching got, 0-100; the failure with the highest value is the "closest" layout.</summary>
    public int Progress { get; }

    /// <summary>A successful match.</summary>
    public static LayoutMatch Matched(DecoderLayout decoder, string reason) => new(decoder.Name, decoder, reason, null, 100);

    /// <summary>A failed match that stopped at <paramref name="node"/> (or at the graph when null).</summary>
    internal static LayoutMatch Failed(string layout, string reason, GraphNode? node, int progress, GraphView? graph = null) =>
        new(layout, null, reason, node?.Describe() ?? (graph is null ? null : $"graph '{graph.Name}'"), Math.Clamp(progress, 0, 99));

    /// <summary>A failure of <paramref name="layout"/> that wraps an inner failure (e.g. in an If branch).</summary>
    public static LayoutMatch Failed(string layout, string reason, LayoutMatch inner, int progress) =>
        new(layout, null, $"{reason}: {inner.Reason}", inner.StoppedAt, Math.Clamp(progress, 0, 99));
}

/// <summary>Recognises one exporter's decoder layout by op types and topology (never by node names).
/// Implementations are stateless; add one class per layout and list it in <see cref="LayoutMatchers.All"/>.</summary>
internal interface IDecoderLayoutMatcher
{
    /// <summary>The layout's name as written to steering.json (genai, optimum, ...).</summary>
    string Name { get; }

    /// <summary>Matches <paramref name="graph"/> (a main graph or a subgraph).</summary>
    LayoutMatch Match(GraphView graph);
}

/// <summary>The known layouts and detection over them.</summary>
internal static class LayoutMatchers
{
    /// <summary>Every built-in matcher, most specific first (the first match wins).</summary>
    public static IReadOnlyList<IDecoderLayoutMatcher> All { get; } =
    [
        new OrtFusedLayoutMatcher(),
        new Gemma2LayoutMatcher(),
        new GenAiLayoutMatcher(),
        new OptimumMergedLayoutMatcher(),
        new OptimumLayoutMatcher(),
    ];

    /// <summary>Runs every matcher and returns all results in matcher order.</summary>
    public static IReadOnlyList<LayoutMatch> Explain(GraphView graph, IReadOnlyList<IDecoderLayoutMatcher>? matchers = null) =>
        (matchers ?? All).Select(m => m.Match(graph)).ToList();

    /// <summary>Detects the decoder layout of <paramref name="graph"/>.</summary>
    /// <exception cref="OnnxSteerException">No layout matches; the message names the closest one and where it stopped.</exception>
    public static DecoderLayout Detect(GraphView graph, IReadOnlyList<IDecoderLayoutMatcher>? matchers = null)
    {
        var results = Explain(graph, matchers);
        var match = results.FirstOrDefault(r => r.IsMatch);
        if (match is not null) return match.Decoder!;
        throw NotADecoder(results);
    }

    /// <summary>The error for a graph no layout matches, naming the closest layout and where it stopped.</summary>
    public static OnnxSteerException NotADecoder(IReadOnlyList<LayoutMatch> results)
    {
        var closest = results.OrderByDescending(r => r.Progress).FirstOrDefault();
        if (closest is null) return new OnnxSteerException(ErrorKind.UnsupportedModel, "not a decoder: no layout matchers are registered.");
        var at = closest.StoppedAt is null ? "" : $" at {closest.StoppedAt}";
        return new OnnxSteerException(ErrorKind.UnsupportedModel,
            $"not a recognised decoder: the closest layout is '{closest.LayoutName}', which stopped{at}: {closest.Reason} (inspecting with explanations lists every layout).");
    }
}
