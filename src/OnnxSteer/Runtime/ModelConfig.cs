using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxSteer.Runtime;

/// <summary>What the runtime needs from genai_config.json, config.json and generation_config.json.</summary>
internal sealed record ModelConfig
{
    public string? ModelType { get; init; }
    /// <summary>The Hugging Face name the files were saved from (config.json <c>_name_or_path</c>, tokenizer_config.json
    /// <c>name_or_path</c>), when it is a name rather than a local path.</summary>
    public string? NameOrPath { get; init; }
    public string? DecoderFile { get; init; }
    public int? HiddenSize { get; init; }
    public int? NumLayers { get; init; }
    public int? PadTokenId { get; init; }
    /// <summary>End-of-sequence ids from every file that names some (generation_config.json, genai_config.json, config.json).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];

    public static ModelConfig Load(string directory)
    {
        var genai = Read(directory, "genai_config.json")?["model"] as JsonObject;
        var config = Read(directory, "config.json");
        var generation = Read(directory, "generation_config.json");
        var tokenizerConfig = Read(directory, "tokenizer_config.json");
        var eos = new List<int>();
        foreach (var node in new[] { generation?["eos_token_id"], genai?["eos_token_id"], config?["eos_token_id"] }) AddIds(node, eos);
        var decoder = genai?["decoder"] as JsonObject;
        return new ModelConfig
        {
            ModelType = Str(genai?["type"]) ?? Str(config?["model_type"]),
            NameOrPath = HubName(Str(config?["_name_or_path"])) ?? HubName(Str(tokenizerConfig?["name_or_path"])),
            DecoderFile = Str(decoder?["filename"]),
            HiddenSize = Int(decoder?["hidden_size"]) ?? Int(config?["hidden_size"]) ?? Int(config?["n_embd"]),
            NumLayers = Int(decoder?["num_hidden_layers"]) ?? Int(config?["num_hidden_layers"]) ?? Int(config?["n_layer"]),
            PadTokenId = Int(generation?["pad_token_id"]) ?? Int(genai?["pad_token_id"]) ?? Int(config?["pad_token_id"]),
            EosTokenIds = eos.Distinct().ToList(),
        };
    }

    private static JsonObject? Read(string directory, string name)
    {
        var path = Path.Combine(directory, name);
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject; }
        catch (JsonException e) { throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} is not valid JSON: {e.Message}"); }
    }

    private static void AddIds(JsonNode? node, List<int> ids)
    {
        if (node is JsonArray a) { foreach (var n in a) AddIds(n, ids); return; }
        if (Int(node) is int i && i >= 0) ids.Add(i);
    }

    /// <summary>The model's name (<see cref="ISteeredGenerator.ModelId"/>): <see cref="NameOrPath"/>, else the name of the
    /// folder it was patched from (a patched folder's own name, often "patched" or a temp name, says nothing), else the
    /// folder's own name.</summary>
    public string ModelId(string directory, OnnxSteer.Contract.SteeringManifest? manifest) =>
        NameOrPath ?? (manifest?.Source.Path is { Length: > 0 } source ? Path.GetFileName(source.TrimEnd('/', '\\')) : null)
            ?? Path.GetFileName(directory.TrimEnd('/', '\\'));

    // transformers writes whatever path the model was loaded from; a local path ("/tmp/x", "./out") names nothing.
    private static string? HubName(string? s) =>
        string.IsNullOrWhiteSpace(s) || s.StartsWith('/') || s.StartsWith('.') || s.Contains('\\') || s.Contains(':') ? null : s.Trim();

    private static string? Str(JsonNode? n) => n is JsonValue v && v.TryGetValue<string>(out var s) ? s : null;
    private static int? Int(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;
}
