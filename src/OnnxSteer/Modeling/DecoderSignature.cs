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
internal sealed record CacheEntry(string Input, string Output, TensorElementType Type, long Heads, long HeadSize, bool Combined)
{
    /// <summary>The batch axis: 0 in [batch, heads, past, head], 1 in the combined [2, batch, heads, past, head].</summary>
    public int BatchAxis => Combined ? 1 : 0;

    /// <summary>The sequence (past length) axis.</summary>
    public int SequenceAxis => Combined ? 3 : 2;

    /// <summary>The cache's shape for <paramref name="batch"/> rows of <paramref name="length"/> positions (0: the empty
    /// cache of a prefill).</summary>
    public long[] Shape(int batch, int length) => Combined ? [2, batch, Heads, length, HeadSize] : [batch, Heads, length, HeadSize];
}

/// <summary>What a decoder input is for; every input of a supported model has one.</summary>
internal enum DecoderInputRole
{
    InputIds,
    AttentionMask,
    PositionIds,
    /// <summary>BERT-style segment ids (all zero for a decoder).</summary>
    TokenTypeIds,
    /// <summary>Optimum's merged decoder: false runs the no-cache (prefill) branch.</summary>
    UseCacheBranch,
    Cache,
    Steering,
}

/// <summary>One graph input, what it is for and, for a cache input, its <see cref="CacheEntry"/>.</summary>
internal sealed record DecoderInput(string Name, DecoderInputRole Role, TensorElementType Type, CacheEntry? Cache);

/// <summary>The decoder's inputs and outputs, read once from the session metadata by one set of rules, for every part
/// that feeds or reads the model: generation (<c>SteeredModel</c>, the decode loop), extraction (<c>VectorExtractor</c>)
/// and <c>verify</c>'s input generator. The names are ONNX Runtime GenAI's and Optimum's: <c>input_ids</c>,
/// <c>attention_mask</c>, <c>position_ids</c>, <c>token_type_ids</c>, <c>use_cache_branch</c>, the KV cache as
/// <c>past_key_values.{i}.key/value</c> → <c>present.{i}.key/value</c> (or <c>present_key_values.*</c>) or the combined
/// <c>past_{i}</c> → <c>present_{i}</c>, <c>logits</c>, and the steering contract's <c>steering.*</c>/<c>hidden_states.*</c>.
/// A graph input that is none of these is refused here, once, instead of by each caller differently.</summary>
internal sealed partial record DecoderSignature
{
    public required string InputIds { get; init; }
    public string? AttentionMask { get; init; }
    public string? PositionIds { get; init; }
    public string? TokenTypeIds { get; init; }
    public string? UseCacheBranch { get; init; }
    /// <summary>The logits output; null only where the caller allowed it (a graph pruned to its hidden states).</summary>
    public string? Logits { get; init; }
    /// <summary><see cref="Logits"/> for callers whose signature came from <see cref="Discover"/> (which requires it).</summary>
    public string LogitsOutput => Logits ?? throw new InvalidOperationException("this signature was read without a logits output");
    public TensorElementType LogitsType { get; init; }
    /// <summary>The last dimension of logits when fixed (the vocabulary size), else null.</summary>
    public int? VocabularySize { get; init; }
    public required CacheLayout Layout { get; init; }
    public required IReadOnlyList<CacheEntry> Cache { get; init; }
    /// <summary>Every graph input in session order with its role (overridable initializers, such as optional steering
    /// inputs, are not graph inputs and are not listed).</summary>
    public required IReadOnlyList<DecoderInput> Inputs { get; init; }
    /// <summary>Steering inputs per layer with their dtype (empty for an unpatched model or without a manifest).</summary>
    public required IReadOnlyDictionary<int, (string Add, string? Direction, string? Target, TensorElementType Type)> SteeringInputs { get; init; }
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

    /// <summary>The signature of a session's model, which must have logits (generation).</summary>
    public static DecoderSignature Discover(InferenceSession session, SteeringManifest? manifest, string modelPath, bool rightPaddingOnly = false) =>
        Read(session.InputMetadata, session.OutputMetadata, session.OverridableInitializerMetadata, manifest, modelPath, requireOutputs: true)
            with { RightPaddingOnly = rightPaddingOnly };

    /// <summary>The signature from input, output and overridable-initializer metadata.</summary>
    /// <param name="inputs">The graph inputs (a session's InputMetadata).</param>
    /// <param name="outputs">The graph outputs.</param>
    /// <param name="overridable">Initializers that may be fed (optional steering inputs); null when unknown.</param>
    /// <param name="manifest">steering.json, whose steered layers must have their three inputs; null reads no steering
    /// inputs (any <c>steering.*</c> input is still recognised as one).</param>
    /// <param name="modelPath">Named in errors.</param>
    /// <param name="requireOutputs">False for a graph pruned to its hidden-state outputs (extraction's prefill): logits and
    /// the presents may then be missing, and a cache entry's <see cref="CacheEntry.Output"/> is the name its present would have.</param>
    /// <exception cref="OnnxSteerException">(UnsupportedModel) no input_ids, no logits when required, a cache input
    /// without its present output or without fixed head dimensions, an input of no known role; (InvalidModel) a steered
    /// layer's inputs missing.</exception>
    public static DecoderSignature Read(IReadOnlyDictionary<string, NodeMetadata> inputs, IReadOnlyDictionary<string, NodeMetadata> outputs,
        IReadOnlyDictionary<string, NodeMetadata>? overridable, SteeringManifest? manifest, string modelPath, bool requireOutputs)
    {
        if (!inputs.ContainsKey("input_ids"))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{modelPath} has no input_ids input (inputs: {string.Join(", ", inputs.Keys)}); inputs_embeds-only models are not supported");
        var hasLogits = outputs.TryGetValue("logits", out var logitsMeta);
        if (!hasLogits && requireOutputs)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath} has no logits output (outputs: {string.Join(", ", outputs.Keys)})");

        var cache = new List<CacheEntry>();
        var roles = new List<DecoderInput>();
        var layout = CacheLayout.None;
        foreach (var (name, meta) in inputs)
        {
            CacheEntry? entry = null;
            if (PerLayerPast().Match(name) is { Success: true } m)
            {
                var i = m.Groups[1].Value; var kv = m.Groups[2].Value;
                var output = new[] { $"present.{i}.{kv}", $"present_key_values.{i}.{kv}" }.FirstOrDefault(outputs.ContainsKey)
                    ?? (requireOutputs ? null : $"present.{i}.{kv}")
                    ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath}: input {name} has no matching present.{i}.{kv} output");
                var dims = meta.Dimensions;
                entry = new CacheEntry(name, output, meta.ElementDataType, Dim(dims, 1, name, modelPath), Dim(dims, 3, name, modelPath), false);
                layout = CacheLayout.PerLayerKeyValue;
            }
            else if (CombinedPast().Match(name) is { Success: true } c)
            {
                var output = $"present_{c.Groups[1].Value}";
                if (requireOutputs && !outputs.ContainsKey(output))
                    throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{modelPath}: input {name} has no matching {output} output");
                var dims = meta.Dimensions;
                entry = new CacheEntry(name, output, meta.ElementDataType, Dim(dims, 2, name, modelPath), Dim(dims, 4, name, modelPath), true);
                layout = CacheLayout.Combined;
            }
            if (entry is not null) cache.Add(entry);
            var role = entry is not null ? DecoderInputRole.Cache : name switch
            {
                "input_ids" => DecoderInputRole.InputIds,
                "attention_mask" => DecoderInputRole.AttentionMask,
                "position_ids" => DecoderInputRole.PositionIds,
                "token_type_ids" => DecoderInputRole.TokenTypeIds,
                "use_cache_branch" => DecoderInputRole.UseCacheBranch,
                _ when SteeringContract.IsSteeringInput(name) => DecoderInputRole.Steering,
                _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"{modelPath} has an input '{name}' that OnnxSteer cannot feed (it feeds input_ids, attention_mask, position_ids, " +
                    "token_type_ids, use_cache_branch, past_key_values.N.key/value or past_N, and steering.*)"),
            };
            roles.Add(new DecoderInput(name, role, meta.ElementDataType, entry));
        }
        // Order by layer then key/value so feeding is deterministic.
        cache.Sort((a, b) => string.CompareOrdinal(a.Input, b.Input));

        var steering = new Dictionary<int, (string, string?, string?, TensorElementType)>();
        // Optional steering inputs have zero initializers of the same name: ONNX Runtime lists those as overridable
        // initializers, not inputs, yet feeding them by name works the same.
        var feedable = new Dictionary<string, NodeMetadata>(inputs);
        if (overridable is not null)
            foreach (var (name, meta) in overridable) feedable.TryAdd(name, meta);
        if (manifest is not null)
            foreach (var layer in manifest.SteeredLayers)
            {
                var names = manifest.InputsOf(layer);
                if (!feedable.TryGetValue(names.Add, out var addMeta) || (names.Direction is { } d && !feedable.ContainsKey(d)) || (names.Target is { } t && !feedable.ContainsKey(t)))
                    throw new OnnxSteerException(ErrorKind.InvalidModel,
                        $"{modelPath}: steering.json lists layer {layer} as steered but the model lacks input {string.Join(", ", new[] { names.Add, names.Direction, names.Target }.OfType<string>())}");
                steering[layer] = (names.Add, names.Direction, names.Target, addMeta.ElementDataType);
            }

        var vocabulary = hasLogits && logitsMeta!.Dimensions is { Length: > 0 } ld && ld[^1] > 0 ? ld[^1] : (int?)null;
        return new DecoderSignature
        {
            InputIds = "input_ids",
            AttentionMask = inputs.ContainsKey("attention_mask") ? "attention_mask" : null,
            PositionIds = inputs.ContainsKey("position_ids") ? "position_ids" : null,
            TokenTypeIds = inputs.ContainsKey("token_type_ids") ? "token_type_ids" : null,
            UseCacheBranch = inputs.ContainsKey("use_cache_branch") ? "use_cache_branch" : null,
            Logits = hasLogits ? "logits" : null,
            LogitsType = hasLogits ? logitsMeta!.ElementDataType : default,
            VocabularySize = vocabulary,
            Layout = layout,
            Cache = cache,
            Inputs = roles,
            SteeringInputs = steering,
            SteeringRequired = manifest?.SteerInput == SteerInputMode.Required,
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
