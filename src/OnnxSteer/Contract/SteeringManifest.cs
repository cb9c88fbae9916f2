using System.Text.Json;
using System.Text.Json.Serialization;

namespace OnnxSteer.Contract;

/// <summary>How the steering inputs are declared in a patched model.</summary>
public enum SteerInputMode
{
    /// <summary>Each steering input is also an initializer of zeros: callers that know nothing of steering run unchanged.</summary>
    Optional,
    /// <summary>Plain graph inputs that must be fed (what onnxruntime-genai's SetModelInput and onnxruntime-node need).</summary>
    Required,
}

/// <summary>Where the patched model came from.</summary>
public sealed record ManifestSource
{
    /// <summary>Full path of the source folder at patch time (used by <c>verify</c> when no --source is given).</summary>
    [JsonPropertyName("path")] public required string Path { get; init; }
    /// <summary>File name of the source .onnx.</summary>
    [JsonPropertyName("model_file")] public required string ModelFile { get; init; }
    /// <summary>SHA-256 of the source .onnx file (the graph protobuf, not the external weights).</summary>
    [JsonPropertyName("graph_sha256")] public required string GraphSha256 { get; init; }
    /// <summary>The source's external weights, sampled (<c>OnnxSteer.Onnx.WeightsFingerprint</c>: sizes and 16 chunks per
    /// file): tells apart models that share a graph. Null when the weights are inside the .onnx, or for folders patched
    /// before it was recorded.</summary>
    [JsonPropertyName("weights_fingerprint")]
    [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? WeightsFingerprint { get; init; }
}

/// <summary>The names of the three steering inputs of one layer.</summary>
public sealed record LayerSteeringInputs
{
    [JsonPropertyName("add")] public required string Add { get; init; }
    [JsonPropertyName("direction")] public required string Direction { get; init; }
    [JsonPropertyName("target")] public required string Target { get; init; }
}

/// <summary>steering.json: what a patched folder contains, written by <c>patch</c> and read by the runtime.</summary>
public sealed record SteeringManifest
{
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = SteeringContract.FormatVersion;
    [JsonPropertyName("tool")] public string Tool { get; init; } = "onnxsteer";
    [JsonPropertyName("model_file")] public required string ModelFile { get; init; }
    [JsonPropertyName("source")] public required ManifestSource Source { get; init; }
    /// <summary>Layout name: genai, optimum, optimum-merged, ort-fused, gemma2.</summary>
    [JsonPropertyName("layout")] public required string Layout { get; init; }
    /// <summary>Model family when known (llama, gpt2, gemma2, ...), from genai_config/config.json.</summary>
    [JsonPropertyName("model_type")] public string? ModelType { get; init; }
    [JsonPropertyName("num_layers")] public required int NumLayers { get; init; }
    [JsonPropertyName("hidden_size")] public required int HiddenSize { get; init; }
    /// <summary>ONNX element type name of the residual stream: float32, float16, bfloat16.</summary>
    [JsonPropertyName("residual_dtype")] public required string ResidualDtype { get; init; }
    [JsonPropertyName("steer_input")] [JsonConverter(typeof(JsonStringEnumConverter<SteerInputMode>))]
    public SteerInputMode SteerInput { get; init; } = SteerInputMode.Optional;
    [JsonPropertyName("steered_layers")] public required IReadOnlyList<int> SteeredLayers { get; init; }
    [JsonPropertyName("exposed_layers")] public required IReadOnlyList<int> ExposedLayers { get; init; }
    /// <summary>Steering input names per steered layer (keys are layer numbers as strings).</summary>
    [JsonPropertyName("inputs")] public required IReadOnlyDictionary<string, LayerSteeringInputs> Inputs { get; init; }
    /// <summary>Hidden-state output names per exposed layer (keys are layer numbers as strings).</summary>
    [JsonPropertyName("outputs")] public required IReadOnlyDictionary<string, string> Outputs { get; init; }

    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true };

    /// <summary>Serialises to indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>Reads steering.json from a patched folder, or returns null when the folder has none.</summary>
    /// <exception cref="OnnxSteerException">The file exists but is not a valid manifest.</exception>
    public static SteeringManifest? TryLoad(string directory)
    {
        var path = System.IO.Path.Combine(directory, SteeringContract.ManifestFileName);
        if (!File.Exists(path)) return null;
        try
        {
            var manifest = JsonSerializer.Deserialize<SteeringManifest>(File.ReadAllText(path), Options)
                ?? throw new JsonException("empty document");
            if (manifest.FormatVersion != SteeringContract.FormatVersion)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{path} has format_version {manifest.FormatVersion}; this onnxsteer reads version {SteeringContract.FormatVersion}.");
            if (manifest.NumLayers <= 0 || manifest.HiddenSize <= 0)
                throw new JsonException("num_layers and hidden_size must be positive");
            return manifest;
        }
        catch (JsonException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} is not a valid steering manifest: {e.Message}");
        }
    }
}
