using System.Text;
using OnnxSteer.Modeling.Tokenization;
using System.Text.Json;

namespace OnnxSteer.ModelBuilder;

/// <summary>Writes synthetic Hugging Face tokenizers of any vocabulary size, for load-time benchmarks and tests where
/// no real tokenizer of that size is at hand (nothing downloads). The tokenizer has Llama 3's shape: a Split
/// pre-tokenizer with Llama 3's regex, then ByteLevel, ignore_merges, a ByteLevel decoder, ChatML special tokens.
/// Its merges are random but valid (every merge joins two vocabulary tokens into a third), so it loads and encodes
/// like a real one; its ids mean nothing.</summary>
internal static class TokenizerFixtures
{
    /// <summary>Llama 3's pre-tokenizer regex (also Qwen2's, up to the digit rule).</summary>
    public const string Llama3Regex =
        @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    /// <summary>Special tokens appended after the vocabulary, in this order.</summary>
    public static readonly string[] SpecialTokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

    /// <summary>Writes tokenizer.json (a byte-level BPE of <paramref name="vocabSize"/> tokens, 256 bytes plus
    /// <c>vocabSize - 256</c> merges) and tokenizer_config.json into <paramref name="directory"/>.</summary>
    /// <param name="arrayMerges">Merges as <c>["a", "b"]</c> pairs (tokenizers 0.20+) instead of <c>"a b"</c> strings.</param>
    public static void WriteByteLevelBpe(string directory, int vocabSize, int seed = 1, bool arrayMerges = true)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(vocabSize, 257);
        var tokens = new List<string>(vocabSize);
        var known = new HashSet<string>(StringComparer.Ordinal);
        for (int b = 0; b < 256; b++) { tokens.Add(ByteLevelMap.CharFor(b).ToString()); known.Add(tokens[b]); }
        // Letters and the space marker dominate real merges; drawing the right side mostly from them keeps tokens word-like.
        var common = "abcdefghijklmnopqrstuvwxyzĠ".Select(c => c.ToString()).ToArray();
        var rng = new Random(seed);
        var merges = new List<(string A, string B)>(vocabSize - 256);
        while (tokens.Count < vocabSize)
        {
            var a = tokens[rng.Next(tokens.Count)];
            var b = rng.Next(4) == 0 ? tokens[rng.Next(tokens.Count)] : common[rng.Next(common.Length)];
            var joined = a + b;
            if (joined.Length > 16 || !known.Add(joined)) continue;
            merges.Add((a, b));
            tokens.Add(joined);
        }

        using (var stream = File.Create(Path.Combine(directory, "tokenizer.json")))
        using (var w = new Utf8JsonWriter(stream, new JsonWriterOptions { Indented = false, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("version", "1.0");
            w.WriteStartArray("added_tokens");
            for (int i = 0; i < SpecialTokens.Length; i++)
            {
                w.WriteStartObject();
                w.WriteNumber("id", vocabSize + i);
                w.WriteString("content", SpecialTokens[i]);
                w.WriteBoolean("single_word", false); w.WriteBoolean("lstrip", false); w.WriteBoolean("rstrip", false);
                w.WriteBoolean("normalized", false); w.WriteBoolean("special", true);
                w.WriteEndObject();
            }
            w.WriteEndArray();
            w.WriteNull("normalizer");
            w.WriteStartObject("pre_tokenizer");
            w.WriteString("type", "Sequence");
            w.WriteStartArray("pretokenizers");
            w.WriteStartObject();
            w.WriteString("type", "Split");
            w.WriteStartObject("pattern"); w.WriteString("Regex", Llama3Regex); w.WriteEndObject();
            w.WriteString("behavior", "Isolated"); w.WriteBoolean("invert", false);
            w.WriteEndObject();
            WriteByteLevel(w, null);
            w.WriteEndArray();
            w.WriteEndObject();
            WriteByteLevel(w, "post_processor");
            WriteByteLevel(w, "decoder");
            w.WriteStartObject("model");
            w.WriteString("type", "BPE");
            w.WriteNull("dropout"); w.WriteNull("unk_token"); w.WriteNull("continuing_subword_prefix"); w.WriteNull("end_of_word_suffix");
            w.WriteBoolean("fuse_unk", false); w.WriteBoolean("byte_fallback", false); w.WriteBoolean("ignore_merges", true);
            w.WriteStartObject("vocab");
            for (int i = 0; i < tokens.Count; i++) w.WriteNumber(tokens[i], i);
            w.WriteEndObject();
            w.WriteStartArray("merges");
            foreach (var (a, b) in merges)
            {
                if (!arrayMerges) { w.WriteStringValue(a + " " + b); continue; }
                w.WriteStartArray(); w.WriteStringValue(a); w.WriteStringValue(b); w.WriteEndArray();
            }
            w.WriteEndArray();
            w.WriteEndObject();
            w.WriteEndObject();
        }
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"),
            """{"add_bos_token": false, "bos_token": null, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "tokenizer_class": "PreTrainedTokenizerFast"}""",
            new UTF8Encoding(false));
    }

    private static void WriteByteLevel(Utf8JsonWriter w, string? name)
    {
        if (name is null) w.WriteStartObject(); else w.WriteStartObject(name);
        w.WriteString("type", "ByteLevel");
        w.WriteBoolean("add_prefix_space", false); w.WriteBoolean("trim_offsets", true); w.WriteBoolean("use_regex", false);
        w.WriteEndObject();
    }
}
