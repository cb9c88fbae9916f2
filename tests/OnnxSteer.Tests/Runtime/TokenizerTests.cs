using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Modeling.Tokenization;

namespace OnnxSteer.Tests.Runtime;

/// <summary>Encoding must match Hugging Face. The golden ids in TestData were computed by transformers.js 3.x
/// (run offline on the same files: tools' note in TestData/README.md), for the real fixture's Llama tokenizer.json
/// and for the byte-level BPE tokenizer.json that <see cref="ByteLevelFixture"/> writes.</summary>
public sealed class TokenizerTests
{
    private sealed record Golden(string text, int[] ids, int[] ids_no_special);

    private static Golden[] LoadGolden(string name) =>
        JsonSerializer.Deserialize<Golden[]>(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "tests", "OnnxSteer.Tests", "Runtime", "TestData", name)))!;

    public static TheoryData<int> LlamaCases() { var d = new TheoryData<int>(); for (int i = 0; i < LoadGolden("llama_tokenizer_golden.json").Length; i++) d.Add(i); return d; }
    public static TheoryData<int> ByteCases() { var d = new TheoryData<int>(); for (int i = 0; i < LoadGolden("bytebpe_tokenizer_golden.json").Length; i++) d.Add(i); return d; }

    private static readonly Lazy<TextTokenizer> Llama = new(() => TextTokenizer.Load(TestPaths.GenAiTinyLlamaFp16));

    [Theory]
    [MemberData(nameof(LlamaCases))]
    public void Llama_fixture_matches_huggingface_ids(int index)
    {
        var g = LoadGolden("llama_tokenizer_golden.json")[index];
        Assert.Equal(g.ids, Llama.Value.Encode(g.text));
        Assert.Equal(g.ids_no_special, Llama.Value.Encode(g.text, addSpecialTokens: false));
    }

    [Theory]
    [MemberData(nameof(LlamaCases))]
    public void Llama_fixture_round_trips_text(int index)
    {
        var g = LoadGolden("llama_tokenizer_golden.json")[index];
        if (g.text.Contains("<s>") || g.text.StartsWith(' ')) return; // specials are skipped; a leading space is stripped by design (HF's Strip decoder)
        Assert.Equal(g.text, Llama.Value.Decode(g.ids));
    }

    [Fact]
    public void Llama_fixture_reads_special_tokens()
    {
        var t = Llama.Value;
        Assert.Equal(1, t.BosTokenId);
        Assert.Equal(2, t.EosTokenId);
        Assert.Equal("<s>", t.BosToken);
        Assert.True(t.IsSpecial(2));
    }

    [Theory]
    [MemberData(nameof(ByteCases))]
    public void Byte_level_bpe_matches_huggingface_ids(int index)
    {
        using var dir = TestPaths.NewTempDir();
        ByteLevelFixture.Write(dir.Path);
        var tokenizer = TextTokenizer.Load(dir.Path);
        var g = LoadGolden("bytebpe_tokenizer_golden.json")[index];
        Assert.Equal(g.ids, tokenizer.Encode(g.text));
        Assert.Equal(g.text, tokenizer.Decode(g.ids, skipSpecialTokens: false));
    }

    [Fact]
    public void Byte_level_special_tokens_come_from_added_tokens()
    {
        using var dir = TestPaths.NewTempDir();
        ByteLevelFixture.Write(dir.Path);
        var tokenizer = TextTokenizer.Load(dir.Path);
        Assert.Equal(278, tokenizer.EosTokenId);
        Assert.Equal(276, tokenizer.PadTokenId);
        Assert.Null(tokenizer.BosTokenId);
        Assert.Equal([277, 117, 115, 101, 114], tokenizer.Encode("<|im_start|>user"));
    }

    [Fact]
    public void Vocab_json_and_merges_txt_load_as_gpt2_byte_level_bpe()
    {
        using var dir = TestPaths.NewTempDir();
        ByteLevelFixture.Write(dir.Path);
        var json = JsonNode.Parse(File.ReadAllText(dir.Combine("tokenizer.json")))!;
        File.WriteAllText(dir.Combine("vocab.json"), json["model"]!["vocab"]!.ToJsonString());
        File.WriteAllLines(dir.Combine("merges.txt"), ["#version: 0.2", .. ByteLevelFixture.Merges.Select(m => $"{m.A} {m.B}")]);
        File.Delete(dir.Combine("tokenizer.json"));
        File.WriteAllText(dir.Combine("tokenizer_config.json"), "{}");
        var tokenizer = TextTokenizer.Load(dir.Path);
        Assert.Contains("vocab.json", tokenizer.Kind);
        // Where GPT-2's regex and Qwen2's split alike, the ids equal the tokenizer.json goldens.
        foreach (var g in LoadGolden("bytebpe_tokenizer_golden.json").Where(g => g.text is "Hello world" or "the theand in" or "café naïve"))
            Assert.Equal(g.ids, tokenizer.Encode(g.text));
    }

    /// <summary>The bundled models' byte-level ChatML tokenizer against the trainer's golden ids
    /// (tools/train/tokenizer_golden.json, from the training tokenizer, verified with transformers.js). Runs for every
    /// models/*/tokenizer.json in the repository (none until the bundled models land).</summary>
    [Fact]
    public void Bundled_model_tokenizers_match_the_trainers_golden_ids()
    {
        var golden = JsonNode.Parse(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "tools", "train", "tokenizer_golden.json")))!["pairs"]!.AsArray();
        var models = Path.Combine(TestPaths.RepoRoot, "models");
        var dirs = Directory.Exists(models) ? Directory.GetDirectories(models).Where(d => File.Exists(Path.Combine(d, "tokenizer.json"))).ToList() : [];
        foreach (var dir in dirs)
        {
            var tokenizer = TextTokenizer.Load(dir);
            foreach (var pair in golden)
            {
                var text = pair!["text"]!.GetValue<string>();
                var ids = pair["ids"]!.AsArray().Select(i => i!.GetValue<int>()).ToArray();
                Assert.True(ids.SequenceEqual(tokenizer.Encode(text, addSpecialTokens: false)), $"{dir}: '{text}'");
                Assert.Equal(text, tokenizer.Decode(ids, skipSpecialTokens: false));
            }
        }
    }

    [Fact]
    public void Missing_tokenizer_files_are_reported()
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<OnnxSteerException>(() => TextTokenizer.Load(dir.Path));
        Assert.Equal(ErrorKind.NotFound, e.Kind);
        Assert.Contains("tokenizer.json", e.Message);
    }

    [Fact]
    public void Streaming_decoder_holds_back_split_characters()
    {
        // "😀" is four byte-fallback tokens: nothing may come out before the last one.
        var t = Llama.Value;
        var ids = t.Encode("emoji 😀 and", addSpecialTokens: false);
        var decoder = t.CreateStreamingDecoder();
        var pieces = ids.Select(decoder.Append).ToList();
        Assert.Equal("emoji 😀 and", string.Concat(pieces) + decoder.Flush());
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.Contains(pieces, p => p == " 😀" || p == "😀");
    }
}

/// <summary>Writes a tiny byte-level BPE tokenizer.json in the Qwen2/ChatML style (Split regex + ByteLevel,
/// NFC normalizer, ChatML special tokens) and its tokenizer_config.json. Mirrors TestData/README.md's generator.</summary>
public static class ByteLevelFixture
{
    public static readonly (string A, string B)[] Merges =
    [
        ("Ġ", "t"), ("h", "e"), ("Ġt", "he"), ("i", "n"), ("Ġ", "a"), ("r", "e"), ("o", "n"), ("Ġa", "n"), ("Ġan", "d"), ("l", "l"),
        ("e", "ll"), ("h", "ell"), ("H", "ell"), ("Hell", "o"), ("Ġ", "w"), ("o", "r"), ("Ġw", "or"), ("Ġwor", "l"), ("Ġworl", "d"), ("Ã", "©"),
    ];

    public static void Write(string dir)
    {
        var vocab = new JsonObject();
        var map = ByteToUnicode();
        for (int b = 0; b < 256; b++) vocab[map[b].ToString()] = b;
        int next = 256;
        foreach (var (a, b) in Merges) vocab[a + b] = next++;
        var added = new JsonArray();
        foreach (var special in new[] { "<|endoftext|>", "<|im_start|>", "<|im_end|>" })
            added.Add(new JsonObject { ["id"] = next++, ["content"] = special, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = false, ["special"] = true });
        var byteLevel = new JsonObject { ["type"] = "ByteLevel", ["add_prefix_space"] = false, ["trim_offsets"] = false, ["use_regex"] = false };
        var root = new JsonObject
        {
            ["version"] = "1.0",
            ["added_tokens"] = added,
            ["normalizer"] = new JsonObject { ["type"] = "NFC" },
            ["pre_tokenizer"] = new JsonObject
            {
                ["type"] = "Sequence",
                ["pretokenizers"] = new JsonArray(
                    new JsonObject
                    {
                        ["type"] = "Split",
                        ["pattern"] = new JsonObject { ["Regex"] = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+" },
                        ["behavior"] = "Isolated",
                        ["invert"] = false,
                    },
                    byteLevel.DeepClone()),
            },
            ["post_processor"] = byteLevel.DeepClone(),
            ["decoder"] = byteLevel.DeepClone(),
            ["model"] = new JsonObject
            {
                ["type"] = "BPE", ["unk_token"] = null, ["fuse_unk"] = false, ["byte_fallback"] = false, ["ignore_merges"] = false,
                ["vocab"] = vocab,
                ["merges"] = new JsonArray(Merges.Select(m => (JsonNode)JsonValue.Create($"{m.A} {m.B}")).ToArray()),
            },
        };
        File.WriteAllText(Path.Combine(dir, "tokenizer.json"), root.ToJsonString());
        File.WriteAllText(Path.Combine(dir, "tokenizer_config.json"),
            """{"add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "tokenizer_class": "Qwen2Tokenizer"}""");
    }

    // GPT-2's byte-to-character table written out again rather than taken from ByteLevelMap: the fixture is the test's
    // oracle, so a mistake in the library's table must not also be in the file the library reads.
    private static char[] ByteToUnicode()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }
}
