using System.Text.RegularExpressions;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Contract;

namespace OnnxSteer.Modeling;

/// <summary>How the KV cache is passed in and out of the model.</summary>
internal enum CacheLayout
{
    /// <summary>No cache inputs: every step re-runs the whole sequence.</summary>
    None,
    /// <summary><c>past_key_values.{i}.key/value</c> [batch, kv_heads, past, head] → <c>present.{i}.key/value</c>.</summary>
    PerLayerKeyValue,
    /// <summary><c>past_{i}</c> [2, batch, heads, past, head] → <c>present_{i}</c> (ONNX Runtime's GPT-2 fusion).</summary>
    Combined,
}

/// <summary>One cache tensor: its input, the output that feeds it next step, and its fixed dimensions.</summary>
internal sealed record CacheEntry(string Input, string Output, TensorElementType Type, long Heads, long HeadSize, bool Combined);

/// <summary>The model's inputs and outputs as found in the session metadata.</summary>
internal sealed partial class ModelSignature
{
    public required string InputIds { get; init; }
    public string? AttentionMask { get; init; }
    public string? PositionIds { get; init; }
    public string? UseCacheBranch { get; init; }
    public required string Logits { get; init; }
    public required TensorElementType LogitsType { get; init; }
    public required CacheLayout Layout { get; init; }
    public required IReadOnlyList<CacheEntry> Cache { get; init; }
    /// <summary>Steering inputs per layer with their dtype (empty for an unpatched model).</summary>
    public required IReadOnlyDictionary<int, (string Add, string Direction, string Target, TensorElementType Type)> SteeringInputs { get; init; }
    /// <summary>Whether the steering inputs must be fed (no zero defaults in the graph).</summary>
    public bool SteeringRequired { get; init; }
    /// <summary>The graph uses com.microsoft::GroupQueryAttention, which ONNX Runtime supports with right padding
    /// only: left-padded batches of unequal prompts would be wrong, so such rows run one at a time.</summary>
    public bool RightPaddingOnly { get; init; }

    /// <summary>Whether the model's graph (main graph and subgraphs; never external weights) uses GroupQueryAttention.
    /// Only onnxruntime-genai exports use it, so only folders with a genai_config.json are parsed.</summary>
    public static bool UsesGroupQueryAttention(string modelPath) => InspectGraph(modelPath).GroupQueryAttention;

    /// <summary>What the runtime reads from the graph itself: whether it uses GroupQueryAttention, and the length of its
    /// rotary cos/sin cache (first dimension of the cos_cache initializer of GroupQueryAttention or RotaryEmbedding), the
    /// last position the model can encode. Only onnxruntime-genai exports use these fused ops, so only folders with a
    /// genai_config.json are parsed (a large embedded-weight graph elsewhere is not read twice).</summary>
    public static (bool GroupQueryAttention, int? RotaryCacheLength) InspectGraph(string modelPath)
    {
        if (!File.Exists(Path.Combine(Path.GetDirectoryName(modelPath)!, "genai_config.json"))) return (false, null);
        var model = OnnxSteer.Onnx.OnnxModelFile.Parse(modelPath);
        bool gqa = false;
        long? cache = null;
        Visit(model.Graph);
        return (gqa, cache is long c && c > 0 ? (int)Math.Min(c, int.MaxValue) : null);

        void Visit(OnnxSteer.Onnx.Proto.GraphProto graph)
        {
            var dims = new Dictionary<string, long>(StringComparer.Ordinal);
            foreach (var t in graph.Initializer)
                if (t.Dims.Count > 0) dims.TryAdd(t.Name, t.Dims[0]);
            foreach (var n in graph.Node)
            {
                // cos_cache is input 7 of GroupQueryAttention and input 2 of RotaryEmbedding (com.microsoft contrib ops).
                int cosIndex = n.OpType switch { "GroupQueryAttention" => 7, "RotaryEmbedding" => 2, _ => -1 };
                if (n.OpType == "GroupQueryAttention") gqa = true;
                if (cosIndex >= 0 && n.Input.Count > cosIndex && dims.TryGetValue(n.Input[cosIndex], out var length) && length > 0)
                    cache = cache is long c ? Math.Min(c, length) : length;
                foreach (var a in n.Attribute)
                {
                    if (a.G is not null) Visit(a.G);
                    foreach (var g in a.Graphs) Visit(g);
                }
            }
        }
    }

    [GeneratedRegex(@"^past_key_values\.(\d+)\.(key|value)$")] private static partial Regex PerLayerPast();
    [GeneratedRegex(@"^past_(\d+)$")] private static partial Regex CombinedPast();

    public static ModelSignature Discover(InferenceSession session, SteeringManifest? manifest, string modelPath, bool rightPaddingOnly = false)
    {
        var inputs = session.InputMetadata;
        var outputs = session.OutputMetadata;
        if (!inputs.ContainsKey("input_ids"))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{modelPath} has no input_ids input (inputs: {string.Join(", ", inputs.Keys)}); inputs_embeds-only models are not supported");
        if (!outputs.TryGetValue("logits", out var logitsMeta))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath} has no logits output (outputs: {string.Join(", ", outputs.Keys)})");

        var cache = new List<CacheEntry>();
        var layout = CacheLayout.None;
        foreach (var (name, meta) in inputs)
        {
            if (PerLayerPast().Match(name) is { Success: true } m)
            {
                var i = m.Groups[1].Value; var kv = m.Groups[2].Value;
                var output = new[] { $"present.{i}.{kv}", $"present_key_values.{i}.{kv}" }.FirstOrDefault(outputs.ContainsKey)
                    ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath}: input {name} has no matching present.{i}.{kv} output");
                var dims = meta.Dimensions;
                cache.Add(new CacheEntry(name, output, meta.ElementDataType, Dim(dims, 1, name, modelPath), Dim(dims, 3, name, modelPath), false));
                layout = CacheLayout.PerLayerKeyValue;
            }
            else if (CombinedPast().Match(name) is { Success: true } c)
            {
                var output = $"present_{c.Groups[1].Value}";
                if (!outputs.ContainsKey(output))
                    throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath}: input {name} has no matching {output} output");
                var dims = meta.Dimensions;
                cache.Add(new CacheEntry(name, output, meta.ElementDataType, Dim(dims, 2, name, modelPath), Dim(dims, 4, name, modelPath), true));
                layout = CacheLayout.Combined;
            }
        }
        // Order by layer then key/value so feeding is deterministic.
        cache.Sort((a, b) => string.CompareOrdinal(a.Input, b.Input));

        var steering = new Dictionary<int, (string, string, string, TensorElementType)>();
        // Optional steering inputs have zero initializers of the same name: ONNX Runtime lists those as overridable
        // initializers, not inputs, yet feeding them by name works the same.
        var feedable = new Dictionary<string, NodeMetadata>(inputs);
        foreach (var (name, meta) in session.OverridableInitializerMetadata) feedable.TryAdd(name, meta);
        if (manifest is not null)
            foreach (var layer in manifest.SteeredLayers)
            {
                var names = manifest.Inputs.TryGetValue(layer.ToString(System.Globalization.CultureInfo.InvariantCulture), out var n) ? n
                    : new LayerSteeringInputs { Add = SteeringContract.AddInput(layer), Direction = SteeringContract.DirectionInput(layer), Target = SteeringContract.TargetInput(layer) };
                if (!feedable.TryGetValue(names.Add, out var addMeta) || !feedable.ContainsKey(names.Direction) || !feedable.ContainsKey(names.Target))
                    throw new OnnxSteerException(ErrorKind.InvalidModel,
                        $"{modelPath}: steering.json lists layer {layer} as steered but the model lacks input {names.Add}, {names.Direction} or {names.Target}");
                steering[layer] = (names.Add, names.Direction, names.Target, addMeta.ElementDataType);
            }

        return new ModelSignature
        {
            InputIds = "input_ids",
            AttentionMask = inputs.ContainsKey("attention_mask") ? "attention_mask" : null,
            PositionIds = inputs.ContainsKey("position_ids") ? "position_ids" : null,
            UseCacheBranch = inputs.ContainsKey("use_cache_branch") ? "use_cache_branch" : null,
            Logits = "logits",
            LogitsType = logitsMeta.ElementDataType,
            Layout = layout,
            Cache = cache,
            SteeringInputs = steering,
            SteeringRequired = manifest?.SteerInput == SteerInputMode.Required,
            RightPaddingOnly = rightPaddingOnly,
        };
    }

    private static long Dim(int[] dims, int index, string name, string modelPath)
    {
        if (dims.Length <= index || dims[index] <= 0)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{modelPath}: cache input {name} has shape [{string.Join(", ", dims)}]; dimension {index} (heads/head size) must be fixed");
        return dims[index];
    }
}
