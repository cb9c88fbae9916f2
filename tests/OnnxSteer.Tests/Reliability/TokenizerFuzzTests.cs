using System.Text;
using System.Text.Json.Nodes;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Tests.Runtime;

namespace OnnxSteer.Tests.Reliability;

/// <summary>Tokenizer folders for the fuzzer, each in its own scratch folder: the byte-level ChatML fixture, the bundled
/// model's tokenizer and the shared Llama export's (3.6 MB, SentencePiece-style BPE with byte fallback). Files are
/// copied to the temp folder, never into the repository.</summary>
public sealed class TokenizerFuzzFixtures : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-tokfuzz");

    public static readonly string[] Files = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"];

    public TokenizerFuzzFixtures()
    {
        var byteLevel = _dir.Combine("bytelevel");
        Directory.CreateDirectory(byteLevel);
        ByteLevelFixture.Write(byteLevel);
        File.WriteAllText(Path.Combine(byteLevel, "special_tokens_map.json"),
            """{"eos_token": {"content": "<|im_end|>", "lstrip": false}, "pad_token": "<|endoftext|>", "additional_special_tokens": ["<|im_start|>"]}""");
        Folders["bytelevel"] = byteLevel;
        var bundled = Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct");
        if (File.Exists(Path.Combine(bundled, "tokenizer.json"))) Folders["bundled"] = Copy(bundled, "bundled");
        Folders["llama"] = Copy(TestPaths.GenAiTinyLlamaFp16, "llama");
    }

    private string Copy(string source, string name)
    {
        var dir = _dir.Combine(name);
        Directory.CreateDirectory(dir);
        foreach (var f in Files)
            if (File.Exists(Path.Combine(source, f))) File.Copy(Path.Combine(source, f), Path.Combine(dir, f));
        return dir;
    }

    /// <summary>Fixture name → folder.</summary>
    public Dictionary<string, string> Folders { get; } = [];

    public void Dispose() => _dir.Dispose();
}

/// <summary>CI sample of the tokenizer-file fuzzer: byte mutations and JSON-tree mutations (hostile values, removed
/// keys, duplicated ids, wrong types, deep nesting) of tokenizer.json, tokenizer_config.json and special_tokens_map.json,
/// one file per case. A case passes when loading, encoding and decoding end normally or with a one-line
/// <see cref="OnnxSteerException"/>; any other exception, a multi-line message or a hang fails it. Long run:
/// <c>ONNXSTEER_FUZZ_CASES=2000 dotnet test tests/OnnxSteer.Tests --filter FullyQualifiedName~Reliability.TokenizerFuzzTests</c>
/// (<c>ONNXSTEER_FUZZ_SEED</c> picks another sequence).</summary>
public sealed class TokenizerFuzzTests(TokenizerFuzzFixtures fixtures) : IClassFixture<TokenizerFuzzFixtures>
{
    public static TheoryData<string, string> Targets()
    {
        var d = new TheoryData<string, string>();
        foreach (var fixture in new[] { "bytelevel", "bundled", "llama" })
            foreach (var file in TokenizerFuzzFixtures.Files) d.Add(fixture, file);
        return d;
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void ByteMutationsEndCleanly(string fixture, string file) => FuzzFile(fixture, file, structural: false);

    [Theory]
    [MemberData(nameof(Targets))]
    public void JsonMutationsEndCleanly(string fixture, string file) => FuzzFile(fixture, file, structural: true);

    private void FuzzFile(string fixture, string file, bool structural)
    {
        if (!fixtures.Folders.TryGetValue(fixture, out var folder)) return; // the bundled models are not in every checkout
        var path = Path.Combine(folder, file);
        if (!File.Exists(path)) return;
        var original = File.ReadAllBytes(path);
        // The Llama tokenizer.json is 3.6 MB: fewer CI cases, each costs a full parse.
        var cases = Fuzz.Cases(fixture == "llama" && file == "tokenizer.json" ? 6 : 20);
        var rng = new Random(HashCode.Combine(Fuzz.Seed, fixture.Length, file.Length, structural));
        var tree = structural ? JsonNode.Parse(original) : null;
        var failures = new List<string>();
        try
        {
            for (var i = 0; i < cases; i++)
            {
                var (kind, bytes) = structural ? TokenizerFuzz.MutateJson(tree!, rng) : Fuzz.MutateBytes(original, rng);
                File.WriteAllBytes(path, bytes);
                var failure = Fuzz.RunCase($"{fixture}/{file} case {i} ({kind})", () => TokenizerFuzz.Exercise(folder));
                if (failure is not null) failures.Add(failure);
            }
        }
        finally { File.WriteAllBytes(path, original); }
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases} cases failed:\n" + string.Join("\n\n", failures.Take(5)));
    }
}

/// <summary>The tokenizer fuzzer's mutator and the work each case does.</summary>
internal static class TokenizerFuzz
{
    private static readonly string[] Texts =
    [
        "Hello world", "the theand in café naïve 😀 12345", "<|im_start|>user\nhi<|im_end|>", "<s>[INST] x [/INST]</s>",
        new string('a', 40) + "!", "  \n\t  ", "\uD800 lone", "",
    ];

    /// <summary>Loads the folder's tokenizer and runs everything a caller may run on it.</summary>
    public static void Exercise(string folder)
    {
        try
        {
            var t = TextTokenizer.Load(folder);
            foreach (var text in Texts)
            {
                var ids = t.Encode(text);
                t.Decode(ids);
                t.Decode(ids, skipSpecialTokens: false);
                var stream = t.CreateStreamingDecoder();
                foreach (var id in ids) stream.Append(id);
                stream.Flush();
            }
            t.Decode([-1, 0, 1, 2, 3, 300, 32_000, int.MaxValue]);
            foreach (var token in new[] { t.BosToken, t.EosToken, t.PadToken, "<unk>", "" })
                if (token is not null) t.TokenToId(token);
            for (int id = -1; id < 300; id++) { t.IdToToken(id); t.IsSpecial(id); }
            t.WarmDecodeCache(1 << 16);
        }
        catch (OnnxSteerException e) when (e.Message.Any(char.IsControl))
        {
            throw new InvalidOperationException($"an error message with control characters: {e.Message}");
        }
    }

    private static readonly Func<JsonNode?>[] Hostile =
    [
        () => 5, () => -1, () => 0, () => 2147483647, () => 300_000_000, () => 4_194_304, () => 1.5, () => 1e300,
        () => true, () => null, () => "", () => "5", () => "yes", () => "(", () => @"^(\w+\s?)*$", () => "a b c", () => "\u0000\u001b[2J",
        () => new string('x', 10_000), () => new JsonArray(), () => new JsonObject(), () => new JsonArray(5, "a"),
        () => new JsonObject { ["content"] = 5 }, () => new JsonObject { ["content"] = "" },
        () => new JsonObject { ["type"] = "Sequence", ["normalizers"] = 5 },
        () => new JsonObject { ["type"] = "Split", ["pattern"] = new JsonObject { ["Regex"] = @"^(\w+\s?)*$" }, ["behavior"] = "Isolated", ["invert"] = false },
        () => new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["Regex"] = "(" }, ["content"] = "x" },
        () => new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "a" }, ["content"] = "aaaaaaaa" },
        () => new JsonObject { ["id"] = 99_999_999, ["content"] = "x" },
        () => new JsonObject { ["id"] = 3, ["content"] = "", ["special"] = true },
    ];

    /// <summary>One structural mutation of a JSON tree (the tree itself is left unchanged): a value replaced by a hostile
    /// one, a key or element removed, an element duplicated, an entry added with an id already taken, or a value
    /// replaced by deep nesting. Half of the picks avoid the vocabulary and merges, which would otherwise take nearly
    /// every pick in a real tokenizer.json.</summary>
    public static (string Kind, byte[] Bytes) MutateJson(JsonNode source, Random rng)
    {
        var root = source.DeepClone();
        var all = new List<JsonNode>();
        var small = new List<JsonNode>();
        Collect(root, all, small, inBulk: false, depth: 0);
        var pool = rng.Next(2) == 0 && small.Count > 0 ? small : all;
        var target = pool[rng.Next(pool.Count)];
        string kind;
        string? deep = null;
        switch (rng.Next(6))
        {
            case 0 or 1:
                Replace(target, Hostile[rng.Next(Hostile.Length)]());
                kind = "hostile-value";
                break;
            case 2:
                if (target.Parent is JsonObject po) po.Remove(target.GetPropertyName());
                else if (target.Parent is JsonArray pa) pa.Remove(target);
                kind = "removed";
                break;
            case 3 when target.Parent is JsonArray arr:
                arr.Insert(rng.Next(arr.Count + 1), target.DeepClone());
                kind = "duplicated-element";
                break;
            case 3 or 4 when target.Parent is JsonObject obj:
                // A new key with a value (often an id) another key already has: duplicated ids, duplicated added tokens.
                var name = target.GetPropertyName() + (rng.Next(2) == 0 ? "x" : "");
                obj[name] = target.DeepClone();
                kind = "duplicated-entry";
                break;
            default:
                deep = rng.Next(3) == 0 ? new string('[', 100_000) + new string(']', 100_000) : new string('[', 70) + new string(']', 70);
                Replace(target, "__DEEP__");
                kind = "deep-nesting";
                break;
        }
        var text = root.ToJsonString();
        if (deep is not null) text = text.Replace("\"__DEEP__\"", deep, StringComparison.Ordinal);
        return (kind, Encoding.UTF8.GetBytes(text));
    }

    private static void Replace(JsonNode target, JsonNode? value)
    {
        if (target.Parent is JsonObject o) o[target.GetPropertyName()] = value;
        else if (target.Parent is JsonArray a) a[target.GetElementIndex()] = value;
    }

    private static void Collect(JsonNode? node, List<JsonNode> all, List<JsonNode> small, bool inBulk, int depth)
    {
        if (node is null || depth > 40) return;
        if (node.Parent is not null)
        {
            all.Add(node);
            if (!inBulk) small.Add(node);
        }
        switch (node)
        {
            case JsonObject o:
                foreach (var (key, child) in o.ToList())
                    Collect(child, all, small, inBulk || (key is "vocab" or "merges" && o.Parent is JsonObject && o.GetPropertyName() == "model"), depth + 1);
                break;
            case JsonArray a:
                foreach (var child in a.ToList()) Collect(child, all, small, inBulk, depth + 1);
                break;
        }
    }
}
