using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;

namespace OnnxSteer.Modeling;

/// <summary>What the runtime needs from genai_config.json, config.json and generation_config.json. Every value read is
/// checked for its type and range: a value of the wrong kind is an <see cref="ErrorKind.InvalidModel"/> error naming the
/// file and key (JSON null, which Hugging Face configs use for "not set", counts as absent), never an exception from
/// deep inside, and nothing is sized by a number from these files.</summary>
internal sealed record ModelConfig
{
    public const string GenAiFile = "genai_config.json";
    public const string HfConfigFile = "config.json";
    public const string GenerationFile = "generation_config.json";

    /// <summary>Config files are a few KB; anything larger is refused before it is read.</summary>
    private const long MaxConfigBytes = 16L << 20;

    public string? ModelType { get; init; }
    /// <summary>The Hugging Face name the files were saved from (config.json <c>_name_or_path</c>, tokenizer_config.json
    /// <c>name_or_path</c>), when it is a name rather than a local path.</summary>
    public string? NameOrPath { get; init; }
    /// <summary>genai_config.json's decoder filename, as written (resolved through <see cref="ModelFolder"/> by the loader).</summary>
    public string? DecoderFile { get; init; }
    public int? HiddenSize { get; init; }
    public int? NumLayers { get; init; }
    public int? PadTokenId { get; init; }
    /// <summary>The file <see cref="PadTokenId"/> comes from.</summary>
    public string? PadTokenSource { get; init; }
    /// <summary>End-of-sequence ids from every file that names some (generation_config.json, genai_config.json, config.json).</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>The smallest context length the files state (genai_config.json context_length, config.json
    /// max_position_embeddings or n_positions), with where it came from; null when none does.</summary>
    public (int Tokens, string Source)? ContextLength { get; init; }

    public static ModelConfig Load(string directory) => Load(new ModelFolder(directory));

    public static ModelConfig Load(ModelFolder folder)
    {
        var genaiRoot = folder.ReadJsonObject(GenAiFile, MaxConfigBytes);
        var config = folder.ReadJsonObject(HfConfigFile, MaxConfigBytes);
        var generation = folder.ReadJsonObject(GenerationFile, MaxConfigBytes);
        var genai = Obj(genaiRoot, "model", GenAiFile, "model");
        var decoder = Obj(genai, "decoder", GenAiFile, "model.decoder");

        var tokenizerConfig = folder.ReadJsonObject("tokenizer_config.json", MaxConfigBytes);
        var eos = new List<int>();
        AddIds(generation, "eos_token_id", GenerationFile, eos);
        AddIds(genai, "eos_token_id", GenAiFile, eos);
        AddIds(config, "eos_token_id", HfConfigFile, eos);

        (int, string)? context = null;
        foreach (var (obj, key, file, label) in new[]
                 {
                     (genai, "context_length", GenAiFile, "model.context_length"),
                     (config, "max_position_embeddings", HfConfigFile, "max_position_embeddings"),
                     (config, "n_positions", HfConfigFile, "n_positions"),
                 })
            if (Positive(obj, key, file, label, int.MaxValue) is int n && (context is null || n < context.Value.Item1))
                context = (n, $"{file} {label}");

        // The decoder filename is a path the folder names: it must stay inside even where steering.json's model_file wins.
        var decoderFile = Str(decoder, "filename", GenAiFile, "model.decoder.filename");
        if (decoderFile is not null) folder.Resolve(decoderFile, "genai_config.json model.decoder.filename");
        // Every value is read (and so checked) even where an earlier file's value wins: a bad value is an error wherever it is.
        var pads = new (int? Id, string File)[]
        {
            (TokenId(generation, "pad_token_id", GenerationFile), GenerationFile),
            (TokenId(genai, "pad_token_id", GenAiFile), GenAiFile),
            (TokenId(config, "pad_token_id", HfConfigFile), HfConfigFile),
        };
        int? First(params int?[] values) => values.FirstOrDefault(v => v is not null);
        string? FirstText(params string?[] values) => values.FirstOrDefault(v => v is not null);
        const int maxHidden = Contract.SteeringManifest.MaxHiddenSize, maxLayers = Contract.SteeringManifest.MaxLayers;
        return new ModelConfig
        {
            ModelType = FirstText(Str(genai, "type", GenAiFile, "model.type"), Str(config, "model_type", HfConfigFile, "model_type")),
            DecoderFile = decoderFile,
            HiddenSize = First(Positive(decoder, "hidden_size", GenAiFile, "model.decoder.hidden_size", maxHidden),
                               Positive(config, "hidden_size", HfConfigFile, "hidden_size", maxHidden),
                               Positive(config, "n_embd", HfConfigFile, "n_embd", maxHidden)),
            NumLayers = First(Positive(decoder, "num_hidden_layers", GenAiFile, "model.decoder.num_hidden_layers", maxLayers),
                              Positive(config, "num_hidden_layers", HfConfigFile, "num_hidden_layers", maxLayers),
                              Positive(config, "n_layer", HfConfigFile, "n_layer", maxLayers)),
            PadTokenId = pads.FirstOrDefault(p => p.Id is not null).Id,
            PadTokenSource = pads.FirstOrDefault(p => p.Id is not null).File,
            NameOrPath = HubName(config?["_name_or_path"]) ?? HubName(tokenizerConfig?["name_or_path"]),
            EosTokenIds = eos.Distinct().ToList(),
            ContextLength = context,
        };
    }

    private static OnnxSteerException Bad(string file, string key, JsonNode? value, string expected) =>
        new(ErrorKind.InvalidModel, $"{file}: {key} is {Shown(value)}; it must be {expected}.");

    /// <summary>The value as JSON, cut short: a hostile file's value is not echoed whole.</summary>
    private static string Shown(JsonNode? value)
    {
        var text = value?.ToJsonString() ?? "null";
        return text.Length <= 40 ? text : text[..40] + "...";
    }

    private static JsonObject? Obj(JsonObject? parent, string key, string file, string label)
    {
        var node = parent?[key];
        return node switch
        {
            null => null,
            JsonObject o => o,
            _ => throw Bad(file, label, node, "an object"),
        };
    }

    /// <summary>Model type, hidden size and layer count, steering.json's (a patched folder's own record) before the
    /// configs'. One rule for every engine.</summary>
    public (string? ModelType, int? HiddenSize, int? NumLayers) Facts(OnnxSteer.Contract.SteeringManifest? manifest) =>
        (manifest?.ModelType ?? ModelType, manifest?.HiddenSize ?? HiddenSize, manifest?.NumLayers ?? NumLayers);

    /// <summary>The ids that end a sequence: the configs' EOS ids and the tokenizer's EOS token.</summary>
    public HashSet<int> EosIds(Tokenization.TextTokenizer tokenizer)
    {
        var eos = new HashSet<int>(EosTokenIds);
        if (tokenizer.EosTokenId is int e) eos.Add(e);
        return eos;
    }

    /// <summary>The model's name (what an engine reports as its ModelId): <see cref="NameOrPath"/>, else the name of the
    /// folder it was patched from (a patched folder's own name, often "patched" or a temp name, says nothing), else the
    /// folder's own name.</summary>
    public string ModelId(string directory, OnnxSteer.Contract.SteeringManifest? manifest) =>
        NameOrPath ?? (manifest?.Source.Path is { Length: > 0 } source ? Path.GetFileName(source.TrimEnd('/', '\\')) : null)
            ?? Path.GetFileName(directory.TrimEnd('/', '\\'));

    // transformers writes whatever path the model was loaded from; a local path ("/tmp/x", "./out") names nothing.
    // Any other JSON type there is ignored: the name only labels the model (ModelId), nothing depends on it.
    private static string? HubName(JsonNode? node) =>
        node is JsonValue v && v.TryGetValue<string>(out var s) && !string.IsNullOrWhiteSpace(s) && !s.StartsWith('/') && !s.StartsWith('.')
            && !s.Contains('\\') && !s.Contains(':') ? s.Trim() : null;

    private static string? Str(JsonObject? parent, string key, string file, string label)
    {
        var node = parent?[key];
        if (node is null) return null;
        if (node is JsonValue v && v.TryGetValue<string>(out var s)) return s;
        throw Bad(file, label, node, "a string");
    }

    /// <summary>An integer value, or null when absent; a non-integer (string, fraction, object, beyond 64 bits) is an error.</summary>
    private static long? Integer(JsonNode? node, string file, string label)
    {
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number && v.TryGetValue<long>(out var l)) return l;
        throw Bad(file, label, node, "an integer");
    }

    private static int? Positive(JsonObject? parent, string key, string file, string label, int max)
    {
        var node = parent?[key];
        if (Integer(node, file, label) is not long l) return null;
        if (l <= 0) throw Bad(file, label, node, "a positive integer");
        if (l > max) throw Bad(file, label, node, $"at most {max}");
        return (int)l;
    }

    /// <summary>A token id: negative values (some configs write -1 for "none") count as absent; beyond int range is an error.</summary>
    private static int? TokenId(JsonObject? parent, string key, string file)
    {
        var node = parent?[key];
        if (Integer(node, file, key) is not long l || l < 0) return null;
        if (l > int.MaxValue) throw Bad(file, key, node, $"a token id (at most {int.MaxValue})");
        return (int)l;
    }

    private static void AddIds(JsonObject? parent, string key, string file, List<int> ids)
    {
        var node = parent?[key];
        if (node is JsonArray a)
        {
            foreach (var item in a)
            {
                if (item is JsonArray) throw Bad(file, key, node, "a token id or a flat list of token ids");
                if (TokenIdValue(item, file, key) is int i) ids.Add(i);
            }
            return;
        }
        if (TokenIdValue(node, file, key) is int id) ids.Add(id);
    }

    private static int? TokenIdValue(JsonNode? node, string file, string key)
    {
        if (Integer(node, file, key) is not long l || l < 0) return null;
        if (l > int.MaxValue) throw Bad(file, key, node, $"a token id (at most {int.MaxValue})");
        return (int)l;
    }
}
