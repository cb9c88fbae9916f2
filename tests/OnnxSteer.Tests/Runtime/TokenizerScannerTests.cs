using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Modeling.Tokenization;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The fast scanner of tokenizer.json's vocabulary and merges (issue 12) must read what the
/// <see cref="Utf8JsonReader"/> path reads, and give up (so the reader, with its checks and error lines, decides)
/// on anything else; the open-addressing tables behind it must hold what a dictionary would.</summary>
public sealed class TokenizerScannerTests
{
    private static int Start(ReadOnlySpan<byte> json) => json.IndexOfAny("{["u8);

    private static VocabTable ReaderVocab(byte[] json, int start)
    {
        var reader = new Utf8JsonReader(json.AsSpan(start));
        reader.Read();
        return TokenizerFile.ReadVocab(ref reader, "t.json", "model.vocab");
    }

    private static MergeTable ReaderMerges(byte[] json, int start, VocabTable vocab)
    {
        var reader = new Utf8JsonReader(json.AsSpan(start));
        reader.Read();
        return TokenizerFile.ReadMerges(ref reader, vocab, "t.json", "model.merges");
    }

    private static void SameVocab(VocabTable expected, VocabTable actual)
    {
        var a = expected.IdTable("t.json", "v");
        var b = actual.IdTable("t.json", "v");
        Assert.Equal(expected.Count, actual.Count);
        Assert.Equal(a, b);
        foreach (var token in a)
            if (token is not null)
            {
                Assert.True(actual.TryGetValue(token, out var id));
                Assert.Equal(Array.IndexOf(a, token), id);
            }
    }

    private static void SameMerges(MergeTable expected, MergeTable actual)
    {
        Assert.Equal(expected.Count, actual.Count);
        foreach (var (left, right, merge) in expected.Entries())
        {
            Assert.True(actual.TryGetValue(left, right, out var got));
            Assert.Equal(merge, got);
        }
    }

    [Fact]
    public void The_shared_llama_file_is_scanned_whole_and_reads_as_the_reader_reads_it()
    {
        var json = File.ReadAllBytes(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "tokenizer.json"));
        int vocabAt = json.AsSpan().IndexOf("\"vocab\""u8), mergesAt = json.AsSpan().IndexOf("\"merges\""u8);
        vocabAt += Start(json.AsSpan(vocabAt));
        mergesAt += Start(json.AsSpan(mergesAt));

        var scanned = new VocabTable();
        int close = TokenizerJsonScanner.TryReadVocab(json, vocabAt, scanned);
        Assert.True(close > vocabAt, "the scanner gave the Llama vocabulary up");
        Assert.Equal((byte)'}', json[close]);
        var vocab = ReaderVocab(json, vocabAt);
        SameVocab(vocab, scanned);
        Assert.Equal(32000, scanned.Count);

        var merges = new MergeTable();
        close = TokenizerJsonScanner.TryReadMerges(json, mergesAt, scanned, merges);
        Assert.True(close > mergesAt, "the scanner gave the Llama merges up");
        Assert.Equal((byte)']', json[close]);
        SameMerges(ReaderMerges(json, mergesAt, vocab), merges);
        Assert.True(merges.Count > 60_000);
    }

    [Theory]
    [InlineData("""{}""", 0)]
    [InlineData("{ \"a\" : 0 ,\n\t\"b\":1}", 2)]
    [InlineData("""{"\"": 3, "\\": 4, "\u00e9\ud83d\ude00": 5, "é😀x": 6, "\/": 7, "tab\t": 8}""", 6)]
    [InlineData("""{"a": 4194303}""", 1)]
    [InlineData("""{"\u00C9\n\b\f\r": 1, "é\u00e9é": 2, "\u0120the": 3, "\u0000": 4, "\uD83D\uDE00\ud83d\ude00": 5}""", 5)]
    public void Vocabularies_real_files_write_are_scanned_as_the_reader_reads_them(string text, int count)
    {
        var json = Encoding.UTF8.GetBytes(text);
        var scanned = new VocabTable();
        Assert.Equal(json.Length - 1, TokenizerJsonScanner.TryReadVocab(json, 0, scanned));
        Assert.Equal(count, scanned.Count);
        SameVocab(ReaderVocab(json, 0), scanned);
    }

    [Theory]
    [InlineData("""{"a": 01}""")]       // leading zero: invalid JSON
    [InlineData("""{"a": 1.0}""")]
    [InlineData("""{"a": 1e2}""")]
    [InlineData("""{"a": -1}""")]
    [InlineData("""{"a": 4194304}""")]  // above the largest id
    [InlineData("""{"a": 12345678}""")]
    [InlineData("""{"a": "1"}""")]
    [InlineData("""{"a": null}""")]
    [InlineData("""{"a": 1,}""")]       // trailing comma
    [InlineData("""{"a": 1 "b": 2}""")]
    [InlineData("""{"a" 1}""")]
    [InlineData("""{a: 1}""")]
    [InlineData("""{"a": 1, "a": 2}""")] // a token twice
    [InlineData("{\"a\": 1 // comment\n}")]
    [InlineData("""{"\q": 1}""")]       // an escape JSON does not have
    [InlineData("""{"\ud800": 1}""")]   // a lone surrogate
    [InlineData("""{"\udc00": 1}""")]
    [InlineData("""{"\ud800\u0041": 1}""")] // a high surrogate not followed by a low one
    [InlineData("""{"\ud800x": 1}""")]
    [InlineData("""{"\ud83d\ude0": 1}""")]
    [InlineData("""{"\u12": 1}""")]     // short hex
    [InlineData("""{"\uZZZZ": 1}""")]
    [InlineData("""{"a\x": 1}""")]
    [InlineData("""{"a": 1""")]          // cut short
    [InlineData("{\"a\"")]
    public void Anything_else_in_a_vocabulary_is_left_to_the_reader(string text)
    {
        Assert.Equal(-1, TokenizerJsonScanner.TryReadVocab(Encoding.UTF8.GetBytes(text), 0, new VocabTable()));
    }

    [Theory]
    [InlineData(new byte[] { (byte)'{', (byte)'"', 0x01, (byte)'"', (byte)':', (byte)'1', (byte)'}' })] // a raw control character
    [InlineData(new byte[] { (byte)'{', (byte)'"', 0xFF, (byte)'"', (byte)':', (byte)'1', (byte)'}' })] // not UTF-8
    [InlineData(new byte[] { (byte)'{', (byte)'"', 0xED, 0xA0, 0x80, (byte)'"', (byte)':', (byte)'1', (byte)'}' })] // an encoded surrogate
    public void Bytes_the_reader_refuses_are_left_to_it(byte[] json)
    {
        Assert.Equal(-1, TokenizerJsonScanner.TryReadVocab(json, 0, new VocabTable()));
        Assert.ThrowsAny<Exception>(() => ReaderVocab(json, 0));
    }

    private static VocabTable SmallVocab()
    {
        var vocab = new VocabTable();
        string[] tokens = ["a", "b", "ab", "é", "\"", "é\"", "abab", "c"];
        for (int i = 0; i < tokens.Length; i++) Assert.True(vocab.TryAdd(tokens[i], i));
        return vocab;
    }

    [Theory]
    [InlineData("""[]""", 0)]
    [InlineData("[[\"a\", \"b\"], [\"ab\",\"ab\"] ,\n [\"\\u00e9\", \"\\\"\"]]", 3)]
    [InlineData("""["a b", "ab ab", "é \""]""", 3)]
    [InlineData("""[["a", "b"], "a b"]""", 1)] // the same pair twice: the later rank wins
    public void Merges_real_files_write_are_scanned_as_the_reader_reads_them(string text, int count)
    {
        var json = Encoding.UTF8.GetBytes(text);
        var vocab = SmallVocab();
        var scanned = new MergeTable();
        Assert.Equal(json.Length - 1, TokenizerJsonScanner.TryReadMerges(json, 0, vocab, scanned));
        Assert.Equal(count, scanned.Count);
        SameMerges(ReaderMerges(json, 0, vocab), scanned);
    }

    [Theory]
    [InlineData("""[["a", "b", "c"]]""")]
    [InlineData("""[["a"]]""")]
    [InlineData("""[["a", 1]]""")]
    [InlineData("""["a  b"]""")]
    [InlineData("""["ab"]""")]
    [InlineData("""["a b c"]""")]
    [InlineData("""[["a", "c"]]""")]  // "ac" is not a token
    [InlineData("""[["a", "x"]]""")]  // "x" is not a token
    [InlineData("""[["a", "b"],]""")]
    [InlineData("""[["a", "b"]""")]
    [InlineData("""[null]""")]
    public void Anything_else_in_merges_is_left_to_the_reader(string text)
    {
        Assert.Equal(-1, TokenizerJsonScanner.TryReadMerges(Encoding.UTF8.GetBytes(text), 0, SmallVocab(), new MergeTable()));
    }

    [Fact]
    public void The_vocabulary_table_holds_what_a_dictionary_holds_under_either_hash()
    {
        var expected = new Dictionary<string, int>(StringComparer.Ordinal);
        var random = new Random(12);
        while (expected.Count < 50_000)
        {
            var chars = new char[random.Next(1, 12)];
            for (int i = 0; i < chars.Length; i++) chars[i] = (char)random.Next(0x20, 0x3000);
            expected.TryAdd(new string(chars), expected.Count);
        }
        // A probe limit of 0 makes the first collision switch to the randomised hash (and rebuild), as a crafted file would.
        foreach (var (table, randomized) in new[] { (new VocabTable(), false), (new VocabTable(8, maxProbes: 0), true) })
        {
            foreach (var (token, id) in expected) Assert.True(table.TryAdd(token, id));
            Assert.Equal(randomized, table.Randomized);
            Assert.Equal(expected.Count, table.Count);
            foreach (var (token, id) in expected)
            {
                Assert.True(table.TryGetValue(token.AsSpan(), out var got));
                Assert.Equal(id, got);
                Assert.False(table.TryAdd(token, id + 1));
            }
            Assert.False(table.TryGetValue("not a token at all, longer than any", out _));
            var ids = table.IdTable("t.json", "v");
            foreach (var (token, id) in expected) Assert.Equal(token, ids[id]);
        }
    }

    [Fact]
    public void An_id_given_twice_is_reported_with_the_first_two_tokens_that_share_it()
    {
        var table = new VocabTable();
        Assert.True(table.TryAdd("x", 1));
        Assert.True(table.TryAdd("y", 1));
        Assert.True(table.TryAdd("z", 1));
        var e = Assert.Throws<OnnxSteerException>(() => table.IdTable("t.json", "model.vocab"));
        Assert.Contains("gives the id 1 to both \"x\" and \"y\"", e.Message);
    }

    [Fact]
    public void The_merge_table_keeps_the_later_rank_and_grows()
    {
        var table = new MergeTable();
        for (int i = 0; i < 10_000; i++) table.Set(i, i + 1, i, 20_000 + i);
        table.Set(5, 6, 99_999, 7);
        Assert.Equal(10_000, table.Count);
        Assert.True(table.TryGetValue(5, 6, out var m));
        Assert.Equal(new BpeMerge(99_999, 7), m);
        Assert.True(table.TryGetValue(9_999, 10_000, out m));
        Assert.Equal(new BpeMerge(9_999, 29_999), m);
        Assert.False(table.TryGetValue(6, 5, out _));
    }

    /// <summary>After the scanned sections the reader goes on from its saved state: keys after the merges are still
    /// read and checked, and a syntax error there is still refused.</summary>
    [Fact]
    public void The_reader_goes_on_after_the_scanned_sections()
    {
        using var dir = TestPaths.NewTempDir();
        ByteLevelFixture.Write(dir.Path);
        var path = dir.Combine("tokenizer.json");
        var root = JsonNode.Parse(File.ReadAllText(path))!.AsObject();
        var expected = TextTokenizer.Load(dir.Path).Encode("Hello world and the rest");

        // A key after the merges (an object to skip), then the model type: read there, and it decides.
        var model = root["model"]!.AsObject();
        model.Remove("type");
        model["dropout"] = new JsonObject { ["nested"] = new JsonArray(1, 2, new JsonObject { ["a"] = "}]" }) };
        model["type"] = "BPE";
        root["zzz_after_model"] = new JsonArray("x");
        File.WriteAllText(path, root.ToJsonString());
        Assert.Equal(expected, TextTokenizer.Load(dir.Path).Encode("Hello world and the rest"));

        model["type"] = "WordPiece";
        File.WriteAllText(path, root.ToJsonString());
        var e = Assert.Throws<OnnxSteerException>(() => TextTokenizer.Load(dir.Path));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);

        model["type"] = "BPE";
        var text = root.ToJsonString();
        File.WriteAllText(path, text[..^1] + ", oops}");
        e = Assert.Throws<OnnxSteerException>(() => TextTokenizer.Load(dir.Path));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
        Assert.Contains("tokenizer.json is not valid JSON", e.Message);
    }
}
