using System.Text;
using System.Text.Json.Nodes;
using OnnxSteer.Decoder;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Reliability;

/// <summary>A patched copy of the bundled model with all four config files (the bundle has no config.json, so a
/// realistic one is added), and a complete copy of it outside the folder that mutated paths may point to.</summary>
public sealed class ConfigFuzzFixture : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-cfgfuzz");

    public ConfigFuzzFixture()
    {
        Model = _dir.Combine("patched");
        ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), Model, new PatchOptions());
        File.WriteAllText(Path.Combine(Model, "config.json"), new JsonObject
        {
            ["model_type"] = "llama", ["hidden_size"] = 128, ["num_hidden_layers"] = 6, ["max_position_embeddings"] = 256,
            ["eos_token_id"] = 2, ["pad_token_id"] = 0, ["vocab_size"] = 1536,
        }.ToJsonString());
        Outside = _dir.Combine("outside");
        Directory.CreateDirectory(Outside);
        foreach (var f in Directory.GetFiles(Model)) File.Copy(f, Path.Combine(Outside, Path.GetFileName(f)));
        foreach (var name in ConfigFuzzTests.Files) Originals[name] = File.ReadAllBytes(Path.Combine(Model, name));
        Pairs = _dir.Combine("pairs.jsonl");
        File.WriteAllLines(Pairs, [new JsonObject { ["prompt"] = "Describe a lake.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()]);
    }

    public string Model { get; }
    public string Outside { get; }
    public string Pairs { get; }
    public Dictionary<string, byte[]> Originals { get; } = [];

    public void Dispose() => _dir.Dispose();
}

/// <summary>Issue 16's fuzzer over the config files of a model folder: genai_config.json, config.json,
/// generation_config.json and steering.json, each mutated alone (hostile values at existing and known keys, removed
/// keys, wrong types, duplicate keys, deep nesting, huge strings, paths out of the folder, byte damage, a missing file)
/// and run through the loader and a short generation (and, for steering.json, an extraction). A case passes when it
/// ends normally or in an <see cref="OnnxSteerException"/> within the per-case timeout, and a mutated path that leads
/// out of the folder never loads. CI: 4 files × 6 cases, fixed seed. Long run:
/// <c>ONNXSTEER_FUZZ_CASES=500 ONNXSTEER_FUZZ_SEED=1001 dotnet test tests/OnnxSteer.Tests --filter FullyQualifiedName~ConfigFuzzTests</c>.</summary>
public sealed class ConfigFuzzTests(ConfigFuzzFixture fixture) : IClassFixture<ConfigFuzzFixture>
{
    public static readonly string[] Files = ["genai_config.json", "config.json", "generation_config.json", "steering.json"];

    public static TheoryData<string> Names() => [.. Files];

    /// <summary>Keys the loaders read, added where a file may not have them.</summary>
    private static readonly string[] KnownKeys =
    [
        "context_length", "max_position_embeddings", "n_positions", "pad_token_id", "eos_token_id", "hidden_size", "n_embd",
        "num_hidden_layers", "n_layer", "filename", "model_file", "num_layers", "steered_layers", "exposed_layers", "type",
        "model_type", "decoder", "model", "source", "inputs", "outputs", "format_version", "steer_input",
    ];

    private JsonNode?[] HostileValues() =>
    [
        2147483647, 2147483648L, -1, 0, int.MinValue, long.MaxValue, JsonNode.Parse("18446744073709551616"), JsonNode.Parse("1e308"),
        JsonNode.Parse("-0.0"), 3.5, "x", "", "../outside/model.onnx", Path.Combine(fixture.Outside, "model.onnx"), "/etc/passwd",
        "model.onnx\0", "a/../../outside/model.onnx", null, true, new JsonArray(), new JsonObject(), new JsonArray(1, 2, 3),
        new JsonArray(2147483647, -5), new string('a', 1 << 20), Deep(60),
    ];

    private static JsonNode Deep(int depth)
    {
        JsonNode node = 1;
        for (var i = 0; i < depth; i++) node = new JsonArray(node);
        return node;
    }

    /// <summary>One mutation of a JSON file: (kind, new bytes or null for "file removed", whether an outside path was
    /// written where a path key is read).</summary>
    private (string Kind, byte[]? Bytes, bool OutsidePath) Mutate(string file, byte[] original, Random rng)
    {
        if (rng.Next(5) == 0)
        {
            // Byte damage: the file is no longer (valid) JSON, or not an object.
            var b = (byte[])original.Clone();
            switch (rng.Next(7))
            {
                case 0: return ("truncate", b[..rng.Next(b.Length)], false);
                case 1: for (var i = 0; i < 1 + rng.Next(4); i++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8)); return ("flip", b, false);
                case 2: return ("empty", [], false);
                case 3: return ("removed", null, false);
                case 4: return ("array-root", "[1,2]"u8.ToArray(), false);
                case 5: return ("deep-root", Encoding.UTF8.GetBytes(new string('[', 100_000) + new string(']', 100_000)), false);
                default: return ("invalid-utf8", [.. "{\"model_type\": \""u8, 0xC3, 0x28, .. "\"}"u8], false);
            }
        }
        var root = JsonNode.Parse(original)!;
        // Where a path is read: steering.json's model_file, genai_config.json's model.decoder.filename.
        bool ReadAsPath(JsonNode parent, string? key) =>
            (file == "steering.json" && key == "model_file" && ReferenceEquals(parent, root))
            || (file == "genai_config.json" && key == "filename" && ReferenceEquals(parent, root["model"]?["decoder"]));
        var slots = new List<(JsonNode Parent, string? Key, int Index)>();
        Collect(root, slots);
        var value = HostileValues()[rng.Next(HostileValues().Length)];
        var outside = value is JsonValue v && v.TryGetValue<string>(out var s) && (s.Contains("outside", StringComparison.Ordinal) || s.StartsWith('/'));
        var op = rng.Next(4);
        var objects = slots.Select(x => x.Parent).OfType<JsonObject>().Distinct().ToList();
        if (objects.Count == 0) objects.Add(root.AsObject());
        if (op == 0 && slots.Count > 0)
        {
            var (parent, key, index) = slots[rng.Next(slots.Count)];
            if (key is not null) parent[key] = value; else parent.AsArray()[index] = value;
            return ($"set {key ?? $"[{index}]"} = {Short(value)}", Encoding.UTF8.GetBytes(root.ToJsonString()), outside && ReadAsPath(parent, key));
        }
        if (op == 1 && slots.Count > 0)
        {
            var (parent, key, index) = slots[rng.Next(slots.Count)];
            if (key is not null) parent.AsObject().Remove(key); else parent.AsArray().RemoveAt(index);
            return ($"remove {key ?? $"[{index}]"}", Encoding.UTF8.GetBytes(root.ToJsonString()), false);
        }
        if (op == 2)
        {
            var target = objects[rng.Next(objects.Count)];
            var key = KnownKeys[rng.Next(KnownKeys.Length)];
            target[key] = value;
            return ($"add {key} = {Short(value)}", Encoding.UTF8.GetBytes(root.ToJsonString()), outside && ReadAsPath(target, key));
        }
        // A key written twice (text level: JsonNode cannot hold it), the first copy hostile.
        var text = root.ToJsonString();
        var at = text.IndexOf('{') + 1;
        var dup = KnownKeys[rng.Next(KnownKeys.Length)];
        var injected = $"\"{dup}\": {(value is null ? "null" : value.ToJsonString())},";
        return ($"duplicate {dup}", Encoding.UTF8.GetBytes(text[..at] + injected + text[at..]), false);
    }

    private static string Short(JsonNode? v)
    {
        var t = v?.ToJsonString() ?? "null";
        return t.Length <= 30 ? t : t[..30] + "...";
    }

    private static void Collect(JsonNode node, List<(JsonNode, string?, int)> slots)
    {
        if (node is JsonObject o)
            foreach (var (k, child) in o.ToList())
            {
                slots.Add((o, k, -1));
                if (child is not null) Collect(child, slots);
            }
        else if (node is JsonArray a)
            for (var i = 0; i < a.Count; i++)
            {
                slots.Add((a, null, i));
                if (a[i] is { } child) Collect(child, slots);
            }
    }

    /// <summary>Loads the folder and generates 3 tokens; for steering.json also extracts from one pair.</summary>
    private void Exercise(string file)
    {
        using (var model = SteeredModel.Load(fixture.Model))
            model.Generate("Hi", options: new GeneratorOptions { MaxNewTokens = 3 });
        if (file == "steering.json")
            VectorExtraction.Run(new ExtractionRequest(fixture.Model, fixture.Pairs, new ExtractionOptions { Name = "v" }));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void MutationsOfEveryConfigFileEndCleanly(string file)
    {
        var path = Path.Combine(fixture.Model, file);
        var original = fixture.Originals[file];
        var rng = new Random(HashCode.Combine(Fuzz.Seed, file.Length, file[0]));
        var failures = new List<string>();
        var cases = Fuzz.Cases(6);
        try
        {
            for (var i = 0; i < cases; i++)
            {
                var (kind, bytes, outside) = Mutate(file, original, rng);
                if (bytes is null) File.Delete(path); else File.WriteAllBytes(path, bytes);
                var loadedOutside = false;
                var failure = Fuzz.RunCase($"{file} case {i} ({kind})", () =>
                {
                    Exercise(file);
                    loadedOutside = outside;
                });
                if (failure is not null) failures.Add(failure);
                else if (loadedOutside) failures.Add($"{file} case {i} ({kind}): a path out of the folder was followed");
            }
        }
        finally
        {
            File.WriteAllBytes(path, original);
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases} cases failed:\n" + string.Join("\n\n", failures.Take(5)));
    }
}
