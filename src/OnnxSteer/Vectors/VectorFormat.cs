using System.Text.Json;
using System.Text.Json.Serialization;
using System.Text.RegularExpressions;

namespace OnnxSteer.Vectors;

/// <summary>The JSON description stored in a vector file (safetensors <c>__metadata__["onnxsteer.vectors"]</c>, and for one
/// vector in the GGUF key <c>onnxsteer.vector</c>).</summary>
internal sealed record VectorFileDescription
{
    [JsonPropertyName("format")] public string Format { get; init; } = VectorFormat.FormatName;
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = VectorFormat.FormatVersion;
    [JsonPropertyName("model")] public ModelFingerprint? Model { get; init; }
    [JsonPropertyName("vectors")] public required List<VectorDescription> Vectors { get; init; }
}

internal sealed record VectorDescription
{
    [JsonPropertyName("name")] public required string Name { get; init; }
    [JsonPropertyName("method")] public required string Method { get; init; }
    [JsonPropertyName("pair_count")] public int? PairCount { get; init; }
    [JsonPropertyName("chat_template")] public bool? ChatTemplate { get; init; }
    /// <summary>Prefix of this vector's tensor names: "" in a one-vector file, "{name}/" otherwise.</summary>
    [JsonPropertyName("tensor_prefix")] public required string TensorPrefix { get; init; }
    [JsonPropertyName("layers")] public required SortedDictionary<int, LayerDescription> Layers { get; init; }
}

internal sealed record LayerDescription
{
    [JsonPropertyName("norm")] public double Norm { get; init; }
    [JsonPropertyName("z_bar")] public double? ZBar { get; init; }
    [JsonPropertyName("mean_projection_without")] public double? MeanProjectionWithout { get; init; }
    [JsonPropertyName("separability")] public double? Separability { get; init; }
}

/// <summary>Names and helpers shared by the vector file formats.</summary>
internal static partial class VectorFormat
{
    public const string FormatName = "onnxsteer.vectors";
    public const int FormatVersion = 1;
    /// <summary>safetensors <c>__metadata__</c> key holding the <see cref="VectorFileDescription"/> JSON.</summary>
    public const string MetadataKey = "onnxsteer.vectors";
    /// <summary>GGUF key holding the description of the one vector in the file (llama.cpp ignores unknown keys).</summary>
    public const string GgufVectorKey = "onnxsteer.vector";
    /// <summary>GGUF key saying what the direction tensors hold: "unit" (u_hat) or "mean_diff" (u).</summary>
    public const string GgufScaleKey = "onnxsteer.scale";

    public static readonly JsonSerializerOptions Json = new()
    {
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        NumberHandling = JsonNumberHandling.AllowReadingFromString,
        MaxDepth = 16,
    };

    [GeneratedRegex("^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    private static partial Regex NamePattern();

    public static void CheckName(string name)
    {
        if (!NamePattern().IsMatch(name))
            throw new OnnxSteerException(ErrorKind.InvalidVector,
                $"vector name '{name}' is not allowed; use 1-128 letters, digits, '.', '_' or '-', starting with a letter or digit.");
    }

    public static string DirectionTensor(string prefix, int layer) => $"{prefix}direction.{layer}";
    public static string MeanDiffTensor(string prefix, int layer) => $"{prefix}mean_diff.{layer}";
}
