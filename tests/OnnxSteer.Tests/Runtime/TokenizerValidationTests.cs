using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Modeling.Tokenization;

namespace OnnxSteer.Tests.Runtime;

/// <summary>Tokenizer files are untrusted input (issue 16): each hostile file below must be refused by
/// <see cref="TextTokenizer.Load"/> with one <see cref="OnnxSteerException"/> line naming the file, before anything
/// large is allocated, or (for a catastrophic regex) fail the encode with such a line instead of hanging.</summary>
public sealed class TokenizerValidationTests
{
    /// <summary>The byte-level fixture (tokenizer.json, tokenizer_config.json) plus a special_tokens_map.json, with
    /// <paramref name="edit"/> applied to tokenizer.json's tree and <paramref name="editConfig"/> to the config's.</summary>
    private static TempDir Folder(Action<JsonObject>? edit = null, Action<JsonObject>? editConfig = null)
    {
        var dir = TestPaths.NewTempDir();
        ByteLevelFixture.Write(dir.Path);
        File.WriteAllText(dir.Combine("special_tokens_map.json"), """{"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}""");
        if (edit is not null) Edit(dir.Combine("tokenizer.json"), edit);
        if (editConfig is not null) Edit(dir.Combine("tokenizer_config.json"), editConfig);
        return dir;
    }

    private static void Edit(string path, Action<JsonObject> edit)
    {
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        edit(root);
        File.WriteAllText(path, root.ToJsonString());
    }

    private static JsonObject Model(JsonObject root) => root["model"]!.AsObject();
    private static JsonObject Vocab(JsonObject root) => Model(root)["vocab"]!.AsObject();

    /// <summary>Load must fail with <paramref name="kind"/>, one line, naming <paramref name="file"/> and saying <paramref name="says"/>.</summary>
    private static void Refused(TempDir dir, string file, string says, ErrorKind kind = ErrorKind.InvalidModel)
    {
        var e = Assert.Throws<OnnxSteerException>(() => TextTokenizer.Load(dir.Path));
        Assert.Equal(kind, e.Kind);
        Assert.Contains(file, e.Message);
        Assert.Contains(says, e.Message);
        Assert.DoesNotContain(e.Message, char.IsControl);
    }

    [Fact]
    public void The_unmodified_fixture_loads() // the control for every case below
    {
        using var dir = Folder();
        Assert.Equal(278, TextTokenizer.Load(dir.Path).EosTokenId);
    }

    [Theory]
    [InlineData(2147483647)]
    [InlineData(300_000_000)]
    [InlineData(4_194_304)]
    [InlineData(-1)]
    public void Vocab_ids_out_of_range_are_refused_before_allocating(long id)
    {
        using var dir = Folder(r => Vocab(r)["Ġthe"] = id);
        long before = GC.GetAllocatedBytesForCurrentThread();
        Refused(dir, "tokenizer.json", "token ids must be 0 to 4194303");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 16 << 20, "the id table was allocated before the check");
    }

    [Fact]
    public void An_id_given_to_two_tokens_is_refused()
    {
        using var dir = Folder(r => Vocab(r)["Ġthe"] = 5);
        Refused(dir, "tokenizer.json", "gives the id 5 to both");
    }

    [Fact]
    public void A_token_listed_twice_is_refused()
    {
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"\\u0120the\":258", "\"\\u0120the\":258,\"\\u0120the\":259", StringComparison.Ordinal));
        Refused(dir, "tokenizer.json", "lists token \"Ġthe\" twice");
    }

    [Theory]
    [InlineData("\"5\"", "a string id")]
    [InlineData("1.5", "the id 1.5")]
    [InlineData("null", "a null id")]
    [InlineData("[]", "a startarray id")]
    public void Ids_that_are_not_integers_are_refused(string value, string says)
    {
        using var dir = Folder(r => Vocab(r)["Ġthe"] = JsonNode.Parse(value));
        Refused(dir, "tokenizer.json", says);
    }

    [Theory]
    [InlineData("Ġ zzz", "names \"zzz\", which is not in the vocabulary")]
    [InlineData("Ġ h", "names \"Ġh\", which is not in the vocabulary")] // both parts exist, the merged token does not
    [InlineData("Ġ t x", "two tokens separated by one space")]
    [InlineData("Ġt", "two tokens separated by one space")]
    public void Merges_must_name_vocabulary_tokens(string merge, string says)
    {
        using var dir = Folder(r => Model(r)["merges"]!.AsArray().Add(merge));
        Refused(dir, "tokenizer.json", says);
    }

    [Fact]
    public void Pair_merges_are_checked_like_string_merges()
    {
        using var dir = Folder(r => Model(r)["merges"] = new JsonArray(new JsonArray("Ġ", "zzz")));
        Refused(dir, "tokenizer.json", "model.merges[0] names \"zzz\"");
        using var bad = Folder(r => Model(r)["merges"] = new JsonArray(new JsonArray("Ġ", 5)));
        Refused(bad, "tokenizer.json", "model.merges[0] must be a pair of token strings");
    }

    [Fact]
    public void Merges_before_the_vocabulary_still_load() // JSON objects are unordered
    {
        using var dir = Folder(r =>
        {
            var model = Model(r);
            var vocab = model["vocab"]!;
            model.Remove("vocab");
            model["vocab"] = vocab;
        });
        Assert.Equal([258, 274], TextTokenizer.Load(dir.Path).Encode(" the world", addSpecialTokens: false));
    }

    [Fact]
    public void An_added_token_without_an_id_is_refused()
    {
        using var dir = Folder(r => r["added_tokens"]![0]!.AsObject().Remove("id"));
        Refused(dir, "tokenizer.json", "added_tokens[0].id must be an integer token id");
    }

    [Fact]
    public void An_added_token_with_empty_content_is_refused() // it used to send Encode into an endless loop
    {
        using var dir = Folder(r => r["added_tokens"]![1]!["content"] = "");
        Refused(dir, "tokenizer.json", "added_tokens[1] has empty content");
        using var config = Folder(editConfig: c => c["added_tokens_decoder"] = new JsonObject { ["5"] = new JsonObject { ["content"] = "" } });
        Refused(config, "tokenizer_config.json", "has empty content");
    }

    [Theory]
    [InlineData("""{"type": "Sequence", "normalizers": 5}""", "normalizer.normalizers must be an array, not a number")]
    [InlineData("""{"type": "Sequence", "normalizers": [5]}""", "normalizer.normalizers[0] must be an object")]
    [InlineData("""{"type": 5}""", "normalizer.type must be a string")]
    [InlineData("""{"type": "Replace", "pattern": {"String": ""}, "content": "x"}""", "normalizer.pattern.String is empty")]
    [InlineData("""{"type": "Replace", "pattern": {"Regex": "("}, "content": "x"}""", "does not compile")]
    [InlineData("""{"type": "Strip", "strip_left": "yes"}""", "normalizer.strip_left must be true or false")]
    public void Malformed_normalizers_are_refused(string normalizer, string says)
    {
        using var dir = Folder(r => r["normalizer"] = JsonNode.Parse(normalizer));
        Refused(dir, "tokenizer.json", says);
    }

    [Fact]
    public void A_normalizer_may_not_insert_long_text()
    {
        using var dir = Folder(r => r["normalizer"] = new JsonObject { ["type"] = "Prepend", ["prepend"] = new string('x', 65) });
        Refused(dir, "tokenizer.json", "a normalizer may insert at most 64");
    }

    [Fact]
    public void Chained_normalizers_may_not_multiply_the_text()
    {
        var steps = new JsonArray();
        for (int i = 0; i < 6; i++) steps.Add(new JsonObject { ["type"] = "Replace", ["pattern"] = new JsonObject { ["String"] = "a" }, ["content"] = "aaaaaaaa" });
        using var dir = Folder(r => r["normalizer"] = new JsonObject { ["type"] = "Sequence", ["normalizers"] = steps });
        var tokenizer = TextTokenizer.Load(dir.Path);
        var e = Assert.Throws<OnnxSteerException>(() => tokenizer.Encode(new string('a', 1000)));
        Assert.Contains("more than 32-fold", e.Message);
    }

    [Fact]
    public void A_split_regex_that_does_not_compile_is_refused()
    {
        using var dir = Folder(r => r["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"] = new JsonObject { ["Regex"] = "(?<" });
        Refused(dir, "tokenizer.json", "pre_tokenizer.pretokenizers[0] regex \"(?<\" does not compile");
    }

    [Fact]
    public void A_catastrophic_split_regex_fails_the_encode_instead_of_hanging()
    {
        using var dir = Folder(r => r["pre_tokenizer"]!["pretokenizers"]![0]!["pattern"] = new JsonObject { ["Regex"] = @"^(\w+\s?)*$" });
        var tokenizer = TextTokenizer.Load(dir.Path);
        var sw = Stopwatch.StartNew();
        var e = Assert.Throws<OnnxSteerException>(() => tokenizer.Encode(new string('a', 64) + "!"));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
        Assert.Contains("tokenizer.json", e.Message);
        Assert.Contains("catastrophic backtracking", e.Message);
        Assert.True(sw.Elapsed < TimeSpan.FromSeconds(30), $"took {sw.Elapsed}");
    }

    [Theory]
    [InlineData("""{"content": 5}""", "eos_token.content must be a string, not a number")]
    [InlineData("[]", "eos_token must be a string or an object")]
    [InlineData("5", "eos_token must be a string or an object")]
    public void Config_special_tokens_of_the_wrong_type_are_refused(string value, string says)
    {
        using var dir = Folder(editConfig: c => c["eos_token"] = JsonNode.Parse(value));
        Refused(dir, "tokenizer_config.json", says);
    }

    [Theory]
    [InlineData("add_bos_token", "\"yes\"")]
    [InlineData("add_eos_token", "1")]
    public void Config_flags_must_be_booleans(string key, string value)
    {
        using var dir = Folder(editConfig: c => c[key] = JsonNode.Parse(value));
        Refused(dir, "tokenizer_config.json", $"{key} must be true or false, not");
    }

    [Theory]
    [InlineData("""{"x": {"content": "a"}}""", "the key must be a token id")]
    [InlineData("""{"99999999999": {"content": "a"}}""", "the key must be a token id")]
    [InlineData("""{"5": "a"}""", "must be an object")]
    [InlineData("""{"5": {"content": "a", "special": "yes"}}""", "special must be true or false")]
    public void Config_added_tokens_are_checked(string decoder, string says)
    {
        using var dir = Folder(editConfig: c => c["added_tokens_decoder"] = JsonNode.Parse(decoder));
        Refused(dir, "tokenizer_config.json", says);
    }

    [Theory]
    [InlineData("[1, 2", "is not valid JSON")]
    [InlineData("5", "is not a JSON object")]
    [InlineData("{\"eos_token\": [1]}", "eos_token must be a string or an object")]
    [InlineData("\u0000\u0001junk", "is not valid JSON")]
    public void Junk_special_tokens_maps_are_refused(string text, string says)
    {
        using var dir = Folder();
        File.WriteAllText(dir.Combine("special_tokens_map.json"), text);
        Refused(dir, "special_tokens_map.json", says);
    }

    /// <summary>Fuzzer finding (bytelevel/tokenizer_config.json case 69, llama/tokenizer_config.json case 33): a key given
    /// twice made JsonNode throw ArgumentException ("An item with the same key has already been added") on first access.</summary>
    [Theory]
    [InlineData("tokenizer_config.json", """{"pad_token": "<|endoftext|>", "pad_token": "<|im_end|>"}""")]
    [InlineData("tokenizer_config.json", """{"added_tokens_decoder": {"1": {"content": "a"}, "1": {"content": "b"}}}""")]
    [InlineData("special_tokens_map.json", """{"eos_token": "a", "eos_token": "b"}""")]
    public void Keys_given_twice_are_refused(string file, string text)
    {
        using var dir = Folder();
        File.WriteAllText(dir.Combine(file), text);
        Refused(dir, file, "is not valid JSON");
    }

    [Fact]
    public void Keys_given_twice_in_a_tokenizer_json_section_are_refused()
    {
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"normalizer\":{\"type\":\"NFC\"}", "\"normalizer\":{\"type\":\"NFC\",\"type\":\"NFD\"}", StringComparison.Ordinal));
        Refused(dir, "tokenizer.json", "is not valid JSON");
    }

    [Theory]
    [InlineData("vocab")]
    [InlineData("merges")]
    public void A_vocabulary_or_merges_given_twice_in_the_model_are_refused(string key)
    {
        // Streamed, not node-parsed: the model section checks its own bulk keys (which vocabulary would merges name?).
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        var text = File.ReadAllText(path);
        var at = text.IndexOf($"\"{key}\":", StringComparison.Ordinal);
        Assert.True(at > 0);
        File.WriteAllText(path, text.Insert(at, key == "vocab" ? "\"vocab\":{\"a\":0}," : "\"merges\":[],"));
        Refused(dir, "tokenizer.json", $"model.{key} is given twice");
    }

    [Fact]
    public void Escaped_and_raw_tokens_and_merges_resolve_alike()
    {
        // Merges are looked up by their UTF-8 bytes, so a \u escape in the vocabulary or in a merge must not matter.
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        var text = File.ReadAllText(path);
        Assert.Contains("\"\\u0120t\":", text); // the fixture's writer escapes every non-ASCII character
        var expected = TextTokenizer.Load(dir.Path).Encode(" the world and", addSpecialTokens: false);
        Assert.Equal([258, 274, 264], expected);
        // Raw UTF-8 throughout, then one string merge escaped again (its space too) and one vocabulary key escaped
        // where it need not be.
        text = text.Replace("\\u0120", "Ġ", StringComparison.Ordinal);
        Assert.Contains("\"Ġ t\"", text);
        Assert.Contains("\"Ġa\":", text);
        text = text.Replace("\"Ġ t\"", "\"\\u0120\\u0020t\"", StringComparison.Ordinal).Replace("\"Ġa\":", "\"\\u0120\\u0061\":", StringComparison.Ordinal);
        File.WriteAllText(path, text, new UTF8Encoding(false));
        Assert.Equal(expected, TextTokenizer.Load(dir.Path).Encode(" the world and", addSpecialTokens: false));
    }

    [Fact]
    public void Truncated_json_is_refused_as_invalid_json()
    {
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        var bytes = File.ReadAllBytes(path);
        foreach (var cut in new[] { 1, bytes.Length / 3, bytes.Length / 2, bytes.Length - 1 })
        {
            File.WriteAllBytes(path, bytes[..cut]);
            Refused(dir, "tokenizer.json", "is not valid JSON");
        }
        File.WriteAllBytes(path, []);
        Refused(dir, "tokenizer.json", "is not valid JSON");
    }

    [Theory]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    [InlineData("special_tokens_map.json")]
    public void Hundred_thousand_deep_arrays_are_refused(string file)
    {
        using var dir = Folder();
        var deep = new string('[', 100_000) + new string(']', 100_000);
        File.WriteAllText(dir.Combine(file), "{\"x\": " + deep + "}");
        Refused(dir, file, "depth");
    }

    [Fact]
    public void Invalid_utf8_in_a_token_is_refused()
    {
        using var dir = Folder();
        var path = dir.Combine("tokenizer.json");
        var text = File.ReadAllText(path); // ASCII: the fixture writer escapes everything else
        var bytes = Encoding.ASCII.GetBytes(text);
        bytes[text.IndexOf("\"in\":259", StringComparison.Ordinal) + 1] = 0xFF;
        File.WriteAllBytes(path, bytes);
        Refused(dir, "tokenizer.json", "tokenizer.json");
    }

    [Fact]
    public void Other_model_types_are_unsupported_not_invalid()
    {
        using var dir = Folder(r => { Model(r)["type"] = "Unigram"; Model(r)["vocab"] = new JsonArray(new JsonArray("a", -1.5)); });
        Refused(dir, "tokenizer.json", "\"Unigram\" is not supported", ErrorKind.UnsupportedModel);
    }

    [Fact]
    public void Oversized_files_are_refused_without_reading_them()
    {
        using var dir = Folder();
        using (var f = File.OpenWrite(dir.Combine("tokenizer.json"))) f.SetLength(TokenizerFile.MaxModelFileBytes + 1); // sparse: no disk used
        long before = GC.GetAllocatedBytesForCurrentThread();
        Refused(dir, "tokenizer.json", "a tokenizer file may have at most 256 MiB");
        Assert.True(GC.GetAllocatedBytesForCurrentThread() - before < 1 << 20);
    }

    [Fact]
    public void A_corrupt_sentencepiece_model_is_invalid()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllBytes(dir.Combine("tokenizer.model"), [0x0A, 0xFF, 0xFF, 0xFF, 0x0F, 1, 2, 3]);
        Refused(dir, "tokenizer.model", "is not a SentencePiece model");
    }

    [Fact]
    public void Vocab_json_and_merges_txt_are_checked_too()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.Combine("vocab.json"), """{"a": 0, "b": 1, "ab": 2}""");
        File.WriteAllText(dir.Combine("merges.txt"), "#version: 0.2\na b\nb q\n");
        Refused(dir, "merges.txt", "line 3 names \"q\"");
        File.WriteAllText(dir.Combine("vocab.json"), """{"a": 0, "b": "1"}""");
        Refused(dir, "vocab.json", "a string id");
        File.WriteAllText(dir.Combine("vocab.json"), """{"a": 0, "b": 1, "ab": 2}""");
        File.WriteAllText(dir.Combine("merges.txt"), "a b\n");
        Assert.Equal([2], TextTokenizer.Load(dir.Path).Encode("ab"));
    }

    /// <summary>A synthetic Llama 3-shaped 32k tokenizer (the benchmark's) loads and encodes, so the streamed reader
    /// handles both merge formats at size and the generated regex path runs; the merges it was built from must hold.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Synthetic_large_tokenizers_load_and_encode(bool arrayMerges)
    {
        using var dir = TestPaths.NewTempDir();
        TokenizerFixtures.WriteByteLevelBpe(dir.Path, 32_000, arrayMerges: arrayMerges);
        var t = TextTokenizer.Load(dir.Path);
        Assert.Equal(32_002, t.EosTokenId);
        var text = "the quick brown fox, 12345 jumps!\n<|im_start|>user";
        var ids = t.Encode(text);
        Assert.Contains(32_001, ids);
        Assert.Equal(text, t.Decode(ids, skipSpecialTokens: false));
        // ignore_merges: a whole word that is a token is that token (the random merges may not build it the same way).
        var id = Enumerable.Range(256, 31_744).Reverse().First(i => t.IdToToken(i) is { Length: >= 3 } s && s.All(char.IsAsciiLetterLower));
        Assert.Equal([id], t.Encode(t.IdToToken(id)!, addSpecialTokens: false));
    }
}
