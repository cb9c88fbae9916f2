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

/// <summary>The names of the steering inputs of one layer: add, direction and target, or add alone in a model patched
/// for additive steering only (<see cref="SteeringManifest.AdditiveOnly"/>; direction and target null).</summary>
public sealed record LayerSteeringInputs
{
    [JsonPropertyName("add")] public required string Add { get; init; }
    [JsonPropertyName("direction")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Direction { get; init; }
    [JsonPropertyName("target")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)]
    public string? Target { get; init; }
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
    /// <summary>Steered layers take only an add input (no projection subgraph): <c>patch --additive-only</c>. Written
    /// only when true; older manifests, without it, are full patches.</summary>
    [JsonPropertyName("additive_only")] [JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingDefault)]
    public bool AdditiveOnly { get; init; }
    [JsonPropertyName("steered_layers")] public required IReadOnlyList<int> SteeredLayers { get; init; }
    [JsonPropertyName("exposed_layers")] public required IReadOnlyList<int> ExposedLayers { get; init; }
    /// <summary>Steering input names per steered layer (keys are layer numbers as strings).</summary>
    [JsonPropertyName("inputs")] public required IReadOnlyDictionary<string, LayerSteeringInputs> Inputs { get; init; }
    /// <summary>Hidden-state output names per exposed layer (keys are layer numbers as strings).</summary>
    [JsonPropertyName("outputs")] public required IReadOnlyDictionary<string, string> Outputs { get; init; }

    // Duplicate keys are refused: which of two values wins is exactly the ambiguity a hostile file would exploit.
    private static readonly JsonSerializerOptions Options = new() { WriteIndented = true, AllowDuplicateProperties = false };

    /// <summary>Serialises to indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>Most layers a manifest may declare (the largest decoders have about 130); a bound, checked before anything
    /// is sized by the number, so a hostile 2147483647 fails here rather than in an allocation.</summary>
    public const int MaxLayers = 4096;

    /// <summary>Largest hidden size a manifest may declare (the largest decoders have about 25,000).</summary>
    public const int MaxHiddenSize = 1 << 20;

    /// <summary>steering.json is a few KB; a larger one is refused before it is read.</summary>
    private const long MaxManifestBytes = 16L << 20;

    /// <summary>Reads steering.json from a patched folder, or returns null when the folder has none.</summary>
    /// <exception cref="OnnxSteerException">The file exists but is not a valid manifest (InvalidModel), has another format
    /// version (UnsupportedModel), or leads outside the folder through a symlink (UnsafePath).</exception>
    public static SteeringManifest? TryLoad(string directory)
    {
        var folder = new OnnxSteer.Onnx.ModelFolder(directory);
        var text = folder.ReadText(SteeringContract.ManifestFileName, MaxManifestBytes);
        if (text is null) return null;
        var path = System.IO.Path.Combine(folder.Root, SteeringContract.ManifestFileName);
        try
        {
            var manifest = JsonSerializer.Deserialize<SteeringManifest>(text, Options)
                ?? throw new JsonException("empty document");
            if (manifest.FormatVersion != SteeringContract.FormatVersion)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{path} has format_version {manifest.FormatVersion}; this onnxsteer reads version {SteeringContract.FormatVersion}.");
            manifest.Check();
            return manifest;
        }
        catch (JsonException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} is not a valid steering manifest: {e.Message.Split('\n')[0].Trim()}");
        }
        catch (NotSupportedException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} is not a valid steering manifest: {e.Message.Split('\n')[0].Trim()}");
        }
    }

    /// <summary>Every value in range and every reference present; the deserializer alone lets JSON nulls and out-of-range
    /// numbers through. Throws <see cref="JsonException"/> naming the field.</summary>
    private void Check()
    {
        if (NumLayers <= 0 || NumLayers > MaxLayers)
            throw new JsonException($"num_layers is {NumLayers}; it must be 1-{MaxLayers}");
        if (HiddenSize <= 0 || HiddenSize > MaxHiddenSize)
            throw new JsonException($"hidden_size is {HiddenSize}; it must be 1-{MaxHiddenSize}");
        if (string.IsNullOrEmpty(ModelFile)) throw new JsonException("model_file is missing or empty");
        if (Source is null || string.IsNullOrEmpty(Source.ModelFile) || Source.Path is null || Source.GraphSha256 is null)
            throw new JsonException("source must give path, model_file and graph_sha256");
        if (string.IsNullOrEmpty(Layout)) throw new JsonException("layout is missing or empty");
        if (string.IsNullOrEmpty(ResidualDtype)) throw new JsonException("residual_dtype is missing or empty");
        if (!Enum.IsDefined(SteerInput)) throw new JsonException($"steer_input {(int)SteerInput} is not optional or required");
        CheckLayers(SteeredLayers, "steered_layers");
        CheckLayers(ExposedLayers, "exposed_layers");
        if (Inputs is null || Inputs.Any(kv => kv.Value is null || kv.Value.Add is null))
            throw new JsonException("inputs must map layers to add, direction and target names");
        if (AdditiveOnly ? Inputs.Values.Any(v => v.Direction is not null || v.Target is not null) : Inputs.Values.Any(v => v.Direction is null || v.Target is null))
            throw new JsonException(AdditiveOnly
                ? "inputs of an additive_only patch name add only (no direction or target)"
                : "inputs must map layers to add, direction and target names");
        if (Outputs is null || Outputs.Any(kv => kv.Value is null))
            throw new JsonException("outputs must map layers to output names");
    }

    /// <summary>The input names of steered layer <paramref name="layer"/>: from <see cref="Inputs"/>, else the contract's
    /// names (add alone when <see cref="AdditiveOnly"/>).</summary>
    internal LayerSteeringInputs InputsOf(int layer) =>
        Inputs.TryGetValue(layer.ToString(System.Globalization.CultureInfo.InvariantCulture), out var n) ? n
        : new LayerSteeringInputs
        {
            Add = SteeringContract.AddInput(layer),
            Direction = AdditiveOnly ? null : SteeringContract.DirectionInput(layer),
            Target = AdditiveOnly ? null : SteeringContract.TargetInput(layer),
        };

    private void CheckLayers(IReadOnlyList<int>? layers, string field)
    {
        if (layers is null) throw new JsonException($"{field} is missing");
        if (layers.Count > NumLayers) throw new JsonException($"{field} lists {layers.Count} layers; the model has {NumLayers}");
        foreach (var l in layers)
            if (l < 0 || l >= NumLayers) throw new JsonException($"{field} names layer {l}; the model has {NumLayers} layers (0-{NumLayers - 1})");
        if (layers.Distinct().Count() != layers.Count) throw new JsonException($"{field} names a layer twice");
    }

    /// <summary>Checks the manifest against the graph it describes, before anything is sized by its numbers: each steered
    /// layer's inputs and each exposed layer's hidden-state output must exist (only the layers in <paramref name="exposedToCheck"/>
    /// when given: a pruned graph keeps only those), and their last dimension, where fixed, must be <see cref="HiddenSize"/>.</summary>
    /// <param name="feedable">The session's inputs and overridable initializers.</param>
    /// <param name="outputs">The session's outputs.</param>
    /// <param name="modelPath">The model, for messages.</param>
    /// <param name="exposedToCheck">Exposed layers the graph must have (default: all).</param>
    /// <param name="checkSteered">Whether the steering inputs are checked (a pruned graph may have dropped unread ones).</param>
    /// <exception cref="OnnxSteerException">InvalidModel naming the mismatch.</exception>
    public void CheckAgainstGraph(IReadOnlyDictionary<string, Microsoft.ML.OnnxRuntime.NodeMetadata> feedable,
        IReadOnlyDictionary<string, Microsoft.ML.OnnxRuntime.NodeMetadata> outputs, string modelPath,
        IEnumerable<int>? exposedToCheck = null, bool checkSteered = true)
    {
        string Key(int layer) => layer.ToString(System.Globalization.CultureInfo.InvariantCulture);
        void CheckWidth(string name, Microsoft.ML.OnnxRuntime.NodeMetadata meta, string kind)
        {
            var dims = meta.Dimensions;
            if (dims.Length == 0 || (dims[^1] > 0 && dims[^1] != HiddenSize))
                throw new OnnxSteerException(ErrorKind.InvalidModel,
                    $"{modelPath}: steering.json says hidden_size {HiddenSize} but {kind} {name} has shape [{string.Join(", ", dims)}].");
        }
        foreach (var layer in exposedToCheck ?? ExposedLayers)
        {
            var name = Outputs.TryGetValue(Key(layer), out var n) ? n : SteeringContract.HiddenStateOutput(layer);
            if (!outputs.TryGetValue(name, out var meta))
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"{modelPath}: steering.json lists layer {layer} as exposed but the model has no output {name}.");
            CheckWidth(name, meta, "output");
        }
        if (!checkSteered) return;
        foreach (var layer in SteeredLayers)
        {
            var names = InputsOf(layer);
            foreach (var name in new[] { names.Add, names.Direction }.OfType<string>())
            {
                if (!feedable.TryGetValue(name, out var meta))
                    throw new OnnxSteerException(ErrorKind.InvalidModel, $"{modelPath}: steering.json lists layer {layer} as steered but the model has no input {name}.");
                CheckWidth(name, meta, "input");
            }
        }
    }
}
