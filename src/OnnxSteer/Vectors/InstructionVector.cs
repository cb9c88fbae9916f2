using System.Text.Json.Serialization;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;

namespace OnnxSteer.Vectors;

/// <summary>What a vector was computed on: it must match the model it is applied to in hidden size and layers.</summary>
public sealed record ModelFingerprint
{
    /// <summary>Width of the residual stream.</summary>
    [JsonPropertyName("hidden_size")] public required int HiddenSize { get; init; }
    /// <summary>Number of decoder blocks.</summary>
    [JsonPropertyName("num_layers")] public required int NumLayers { get; init; }
    /// <summary>Model family (llama, phi3, gemma2, ...), when known.</summary>
    [JsonPropertyName("model_type")] public string? ModelType { get; init; }
    /// <summary>SHA-256 of the source (unpatched) .onnx graph, when known.</summary>
    [JsonPropertyName("source_graph_sha256")] public string? SourceGraphSha256 { get; init; }
    /// <summary>The source model's sampled weights fingerprint (steering.json <c>source.weights_fingerprint</c>), when known.</summary>
    [JsonPropertyName("source_weights_fingerprint")] public string? SourceWeightsFingerprint { get; init; }
}

/// <summary>One layer of an instruction vector: the unit direction, the raw mean difference and its statistics.
/// Statistics that a vector's origin does not provide (a GGUF import, a combination) are null.</summary>
public sealed record VectorLayer
{
    /// <summary>The layer L: the residual stream after decoder block L (0-based), as in <c>hidden_states.{L}</c>.</summary>
    public required int Layer { get; init; }
    /// <summary>u_hat = u / |u|, float32 [hidden], unit length.</summary>
    public required float[] Direction { get; init; }
    /// <summary>u = mean over pairs of (h+ − h−) at the last prompt token, float32 [hidden].</summary>
    public required float[] MeanDiff { get; init; }
    /// <summary>|u| (float, like the weights <c>Steering.Add</c> takes, so <c>weight: -4 * layer.Norm</c> needs no cast).</summary>
    public required float Norm { get; init; }
    /// <summary>z̄ = mean(h+ · u_hat): the target of projection steering; null when unknown.</summary>
    public double? ZBar { get; init; }
    /// <summary>mean(h− · u_hat): where prompts without the instruction sit along the direction; null when unknown.</summary>
    public double? MeanProjectionWithout { get; init; }
    /// <summary>Share of pairs whose with-prompt projects further along u_hat than its without-prompt; null when unknown.</summary>
    public double? Separability { get; init; }

    /// <summary>This layer as the runtime steers with it: unit direction, z̄ (the projection target) and |u|. The one
    /// conversion from vector files to <see cref="SteeringVector"/>.</summary>
    public SteeringVector ToSteeringVector() => new(Direction, ZBar is { } z ? (float)z : null, (float)Norm);
}

/// <summary>A named instruction vector: one direction per layer, computed by one method from one set of pairs.</summary>
public sealed record InstructionVector
{
    /// <summary>Method string written by <c>extract</c>.</summary>
    public const string DiffMeanMethod = "diff-mean, last prompt token";

    /// <summary>The method of a header vector: the mean difference at the <paramref name="fromEnd"/>-th prompt position
    /// from the end (extract --header-positions).</summary>
    public static string HeaderMethod(int fromEnd) => $"diff-mean, prompt position -{fromEnd.ToString(System.Globalization.CultureInfo.InvariantCulture)}";

    /// <summary>The vector's name (letters, digits, '.', '_', '-'), e.g. <c>format.lowercase</c>.</summary>
    public required string Name { get; init; }
    /// <summary>How it was computed ("diff-mean, last prompt token", "gguf import", "combination of ...").</summary>
    public required string Method { get; init; }
    /// <summary>Number of prompt pairs it was computed from; null when unknown.</summary>
    public int? PairCount { get; init; }
    /// <summary>Whether the prompts were wrapped in the model's chat template; null when unknown.</summary>
    public bool? ChatTemplate { get; init; }
    /// <summary>The layers, keyed by layer number.</summary>
    public required IReadOnlyDictionary<int, VectorLayer> Layers { get; init; }

    /// <summary>Width of every direction.</summary>
    public int HiddenSize => Layers.Count == 0 ? 0 : Layers.Values.First().Direction.Length;

    /// <summary>The layer <paramref name="layer"/>, or an error naming the layers the vector has.</summary>
    /// <exception cref="OnnxSteerException">The vector has no such layer (InvalidVector, as everywhere a vector lacks a layer).</exception>
    public VectorLayer Layer(int layer) => Layers.TryGetValue(layer, out var l) ? l
        : throw new OnnxSteerException(ErrorKind.InvalidVector,
            $"vector '{Name}' has no layer {layer}; it has layers {LayerSelection.Format(Layers.Keys)}.");

    /// <summary>Builds a vector from mean differences, normalising each into its direction.</summary>
    /// <exception cref="OnnxSteerException">A mean difference is zero, non-finite, or the widths differ (InvalidVector).</exception>
    public static InstructionVector FromMeanDiffs(string name, string method, IReadOnlyDictionary<int, float[]> meanDiffs, int? pairCount = null)
    {
        var layers = new SortedDictionary<int, VectorLayer>();
        foreach (var (layer, diff) in meanDiffs)
        {
            var (direction, norm) = VectorMath.Normalize(diff, $"vector '{name}' layer {layer}");
            layers[layer] = new VectorLayer { Layer = layer, Direction = direction, MeanDiff = (float[])diff.Clone(), Norm = (float)norm };
        }
        var vector = new InstructionVector { Name = name, Method = method, PairCount = pairCount, Layers = layers };
        vector.Validate();
        return vector;
    }

    /// <summary>Checks name, widths, finiteness and unit length.</summary>
    /// <exception cref="OnnxSteerException">Anything wrong (InvalidVector).</exception>
    public void Validate()
    {
        VectorFormat.CheckName(Name);
        if (Layers.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{Name}' has no layers.");
        var width = HiddenSize;
        foreach (var (key, l) in Layers)
        {
            var where = $"vector '{Name}' layer {key}";
            if (l.Layer != key || key < 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"{where}: inconsistent layer number {l.Layer}.");
            if (l.Direction.Length != width || l.MeanDiff.Length != width)
                throw new OnnxSteerException(ErrorKind.InvalidVector,
                    $"{where}: direction has {l.Direction.Length} and mean_diff {l.MeanDiff.Length} values; expected {width} like the other layers.");
            if (width == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"{where}: empty direction.");
            VectorMath.CheckFinite(l.Direction, $"{where} direction");
            VectorMath.CheckFinite(l.MeanDiff, $"{where} mean_diff");
            foreach (var (stat, value) in new[] { ("norm", (double?)l.Norm), ("z_bar", l.ZBar), ("mean_projection_without", l.MeanProjectionWithout), ("separability", l.Separability) })
                if (value is { } v && !double.IsFinite(v))
                    throw new OnnxSteerException(ErrorKind.InvalidVector, $"{where}: {stat} is {v}.");
            var unit = VectorMath.Norm(l.Direction);
            if (Math.Abs(unit - 1) > 1e-3)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"{where}: direction has length {unit:G6}; directions must be unit vectors.");
        }
    }
}

/// <summary>Vector arithmetic in double precision (the sums of many float32 activations lose digits otherwise).</summary>
internal static class VectorMath
{
    public static double Norm(ReadOnlySpan<float> v)
    {
        double s = 0;
        foreach (var x in v) s += (double)x * x;
        return Math.Sqrt(s);
    }

    public static double Dot(ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        double s = 0;
        for (var i = 0; i < a.Length; i++) s += (double)a[i] * b[i];
        return s;
    }

    public static (float[] Direction, double Norm) Normalize(ReadOnlySpan<float> v, string what)
    {
        CheckFinite(v, what);
        var norm = Norm(v);
        if (norm == 0 || !double.IsFinite(norm))
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"{what} has length {norm}; it cannot be turned into a direction.");
        var direction = new float[v.Length];
        for (var i = 0; i < v.Length; i++) direction[i] = (float)(v[i] / norm);
        return (direction, norm);
    }

    public static void CheckFinite(ReadOnlySpan<float> v, string what)
    {
        for (var i = 0; i < v.Length; i++)
            if (!float.IsFinite(v[i]))
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"{what} holds {v[i]} at index {i}.");
    }
}
