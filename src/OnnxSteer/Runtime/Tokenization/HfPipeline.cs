using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace OnnxSteer.Runtime.Tokenization;

/// <summary>The BPE merge step, delegated to Microsoft.ML.Tokenizers' <see cref="BpeTokenizer"/>, plus the two
/// Hugging Face model options it lacks: byte fallback (an out-of-vocabulary character becomes its UTF-8 bytes as
/// <c>&lt;0xXX&gt;</c> tokens, as Llama/Mistral do) and ignore_merges (a word already in the vocabulary is one token,
/// as Llama 3 does).</summary>
internal sealed class BpeModel
{
    private readonly BpeTokenizer _bpe;
    private readonly Dictionary<string, int> _vocab;
    private readonly string[] _idToToken;
    private readonly int? _unkId;
    private readonly int[]? _byteIds;
    private readonly bool _ignoreMerges;

    public BpeModel(Dictionary<string, int> vocab, List<string> merges, string? unk, bool byteFallback, bool ignoreMerges, bool byteLevel)
    {
        _vocab = vocab;
        _ignoreMerges = ignoreMerges;
        ByteLevel = byteLevel;
        int max = vocab.Count == 0 ? 0 : vocab.Values.Max();
        _idToToken = new string[max + 1];
        foreach (var (text, id) in vocab) if (id >= 0) _idToToken[id] = text;
        _unkId = unk is not null && vocab.TryGetValue(unk, out var u) ? u : null;
        if (byteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++)
                _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
        }
        // Unknown characters stay one token each (not fused) so byte fallback can replace them exactly.
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            UnknownToken = _unkId is null ? null : unk,
            FuseUnknownTokens = false,
            ByteLevel = byteLevel,
        };
        _bpe = BpeTokenizer.Create(options);
    }

    public bool ByteLevel { get; }
    public bool ByteFallback => _byteIds is not null;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;
    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <summary>Encodes one pre-tokenized word (in byte-level mode: raw text; ML.Tokenizers maps bytes itself).</summary>
    public void EncodeWord(string word, List<int> ids)
    {
        if (_ignoreMerges && _vocab.TryGetValue(ByteLevel ? ByteLevelMap.Encode(word) : word, out var whole)) { ids.Add(whole); return; }
        var tokens = _bpe.EncodeToTokens(word, out _, considerPreTokenization: false, considerNormalization: false);
        for (int i = 0; i < tokens.Count; i++)
        {
            var t = tokens[i];
            if (_byteIds is not null && _unkId is int unk && t.Id == unk)
            {
                // Coalesce neighbouring unknowns so a surrogate pair (one code point, two UTF-16 units) is encoded whole.
                int from = t.Offset.Start.GetOffset(word.Length), to = t.Offset.End.GetOffset(word.Length);
                while (i + 1 < tokens.Count && tokens[i + 1].Id == unk) to = tokens[++i].Offset.End.GetOffset(word.Length);
                var bytes = Encoding.UTF8.GetBytes(word[from..to]);
                bool all = bytes.All(b => _byteIds[b] >= 0);
                if (!all) { ids.Add(unk); continue; }
                foreach (var b in bytes) ids.Add(_byteIds[b]);
                continue;
            }
            ids.Add(t.Id);
        }
    }

    public void AppendTokenBytes(int id, List<byte> bytes, bool byteLevelDecoder)
    {
        var token = IdToToken(id);
        if (token is null) return;
        if (byteLevelDecoder) { ByteLevelMap.Decode(token, bytes); return; }
        if (_byteIds is not null && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, null, out var b))
        {
            bytes.Add(b);
            return;
        }
        bytes.AddRange(Encoding.UTF8.GetBytes(token.Replace('\u2581', ' ')));
    }
}

/// <summary>GPT-2's reversible map between bytes and printable characters (bytes_to_unicode).</summary>
internal static class ByteLevelMap
{
    private static readonly char[] ByteToChar = Build();
    private static readonly Dictionary<char, byte> CharToByte = Enumerable.Range(0, 256).ToDictionary(b => ByteToChar[b], b => (byte)b);

    private static char[] Build()
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

    public static string Encode(string text)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var chars = new char[bytes.Length];
        for (int i = 0; i < bytes.Length; i++) chars[i] = ByteToChar[bytes[i]];
        return new string(chars);
    }

    public static void Decode(string token, List<byte> bytes)
    {
        foreach (var c in token)
        {
            if (CharToByte.TryGetValue(c, out var b)) bytes.Add(b);
            else bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString()));
        }
    }
}

/// <summary>tokenizer.json pipeline: normalizer, pre-tokenizer, then BPE per word.</summary>
internal sealed class HfBackend(BpeModel model, NormalizerStep? normalizer, PreTokenizerStep? preTokenizer, bool byteLevelDecoder) : ITokenizerBackend
{
    public void EncodeSegment(string segment, List<int> ids, bool atStart)
    {
        var text = normalizer is null ? segment : normalizer.Apply(segment);
        if (preTokenizer is null) { if (text.Length > 0) model.EncodeWord(text, ids); return; }
        var words = new List<string> { text };
        preTokenizer.Split(words, atStart);
        foreach (var w in words) if (w.Length > 0) model.EncodeWord(w, ids);
    }

    public void AppendTokenBytes(int id, List<byte> bytes) => model.AppendTokenBytes(id, bytes, byteLevelDecoder);
    public int? TokenToId(string token) => model.TokenToId(token);
    public string? IdToToken(int id) => model.IdToToken(id);
}

/// <summary>A SentencePiece tokenizer.model, run by Microsoft.ML.Tokenizers.</summary>
internal sealed class SentencePieceBackend(SentencePieceTokenizer sp) : ITokenizerBackend
{
    private readonly Dictionary<int, string> _pieces = sp.Vocabulary.GroupBy(kv => kv.Value).ToDictionary(g => g.Key, g => g.First().Key);

    public void EncodeSegment(string segment, List<int> ids, bool atStart) =>
        ids.AddRange(sp.EncodeToIds(segment, addBeginningOfSentence: false, addEndOfSentence: false, considerPreTokenization: true, considerNormalization: true));

    public void AppendTokenBytes(int id, List<byte> bytes)
    {
        var token = IdToToken(id);
        if (token is null) return;
        if (token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[5] == '>'
            && byte.TryParse(token.AsSpan(3, 2), NumberStyles.HexNumber, null, out var b)) { bytes.Add(b); return; }
        bytes.AddRange(Encoding.UTF8.GetBytes(token.Replace('\u2581', ' ')));
    }

    public int? TokenToId(string token) => sp.Vocabulary.TryGetValue(token, out var id) ? id : null;
    public string? IdToToken(int id) => _pieces.TryGetValue(id, out var p) ? p : null;
}

/// <summary>A tokenizer.json normalizer (the subset real decoder LLMs use).</summary>
internal abstract class NormalizerStep
{
    public abstract string Apply(string text);

    public static NormalizerStep? FromJson(JsonObject? node, string path)
    {
        if (node is null) return null;
        var type = node["type"]?.GetValue<string>();
        return type switch
        {
            "Sequence" => new SequenceNormalizer(((JsonArray)node["normalizers"]!).Select(n => FromJson(n as JsonObject, path)).OfType<NormalizerStep>().ToArray()),
            "Prepend" => new FuncNormalizer(t => node["prepend"]!.GetValue<string>() + t),
            "Replace" => ReplaceStep(node),
            "NFC" => new FuncNormalizer(t => t.Normalize(NormalizationForm.FormC)),
            "NFD" => new FuncNormalizer(t => t.Normalize(NormalizationForm.FormD)),
            "NFKC" => new FuncNormalizer(t => t.Normalize(NormalizationForm.FormKC)),
            "NFKD" => new FuncNormalizer(t => t.Normalize(NormalizationForm.FormKD)),
            "Lowercase" => new FuncNormalizer(t => t.ToLowerInvariant()),
            "Strip" => new FuncNormalizer(t =>
                (node["strip_left"]?.GetValue<bool>() ?? true, node["strip_right"]?.GetValue<bool>() ?? true) switch
                {
                    (true, true) => t.Trim(), (true, false) => t.TrimStart(), (false, true) => t.TrimEnd(), _ => t,
                }),
            _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{path}: normalizer \"{type}\" is not supported"),
        };
    }

    private static NormalizerStep ReplaceStep(JsonObject node)
    {
        var content = node["content"]!.GetValue<string>();
        if (node["pattern"]?["String"]?.GetValue<string>() is string s) return new FuncNormalizer(t => t.Replace(s, content, StringComparison.Ordinal));
        var regex = new Regex(node["pattern"]!["Regex"]!.GetValue<string>(), RegexOptions.CultureInvariant);
        return new FuncNormalizer(t => regex.Replace(t, content));
    }

    private sealed class SequenceNormalizer(NormalizerStep[] steps) : NormalizerStep
    {
        public override string Apply(string text) { foreach (var s in steps) text = s.Apply(text); return text; }
    }

    private sealed class FuncNormalizer(Func<string, string> f) : NormalizerStep
    {
        public override string Apply(string text) => f(text);
    }
}

/// <summary>A tokenizer.json pre-tokenizer: splits a segment into words, in place.</summary>
internal abstract class PreTokenizerStep
{
    public virtual bool IsByteLevel => false;

    /// <param name="words">Words so far; replaced by the split result.</param>
    /// <param name="atStart">Whether the segment starts the text (Metaspace's prepend_scheme "first").</param>
    public abstract void Split(List<string> words, bool atStart);

    public static PreTokenizerStep? FromJson(JsonObject? node, string path)
    {
        if (node is null) return null;
        var type = node["type"]?.GetValue<string>();
        return type switch
        {
            "Sequence" => new SequencePreTokenizer(((JsonArray)node["pretokenizers"]!).Select(n => FromJson(n as JsonObject, path)).OfType<PreTokenizerStep>().ToArray()),
            "ByteLevel" => new ByteLevelPreTokenizer(node["add_prefix_space"]?.GetValue<bool>() ?? false, node["use_regex"]?.GetValue<bool>() ?? true),
            "Metaspace" => new MetaspacePreTokenizer(node["replacement"]?.GetValue<string>() ?? "\u2581",
                node["prepend_scheme"]?.GetValue<string>() ?? ((node["add_prefix_space"]?.GetValue<bool>() ?? true) ? "always" : "never"),
                node["split"]?.GetValue<bool>() ?? true),
            "Split" => new RegexSplitPreTokenizer(
                node["pattern"]?["Regex"]?.GetValue<string>() ?? Regex.Escape(node["pattern"]!["String"]!.GetValue<string>()),
                node["behavior"]?.GetValue<string>() ?? "Isolated", node["invert"]?.GetValue<bool>() ?? false),
            "Digits" => new RegexSplitPreTokenizer((node["individual_digits"]?.GetValue<bool>() ?? false) ? @"\p{Nd}" : @"\p{Nd}+", "Isolated", false),
            "WhitespaceSplit" => new RegexSplitPreTokenizer(@"\s+", "Removed", false),
            "Whitespace" => new RegexSplitPreTokenizer(@"\w+|[^\w\s]+", "Isolated", true),
            _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{path}: pre_tokenizer \"{type}\" is not supported"),
        };
    }

    protected static void SplitEach(List<string> words, Func<string, IEnumerable<string>> split)
    {
        var result = new List<string>(words.Count * 2);
        foreach (var w in words) result.AddRange(split(w));
        words.Clear();
        words.AddRange(result);
    }

    private sealed class SequencePreTokenizer(PreTokenizerStep[] steps) : PreTokenizerStep
    {
        public override bool IsByteLevel => steps.Any(s => s.IsByteLevel);
        public override void Split(List<string> words, bool atStart) { foreach (var s in steps) s.Split(words, atStart); }
    }
}

/// <summary>GPT-2's ByteLevel pre-tokenizer: the GPT-2 regex split (optional) and a prefix space (optional).
/// The byte-to-character mapping itself is done by ML.Tokenizers' byte-level BPE.</summary>
internal sealed partial class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    [GeneratedRegex(@"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")]
    private static partial Regex Gpt2();

    public override bool IsByteLevel => true;

    public override void Split(List<string> words, bool atStart)
    {
        if (addPrefixSpace && words.Count > 0 && words[0].Length > 0 && words[0][0] != ' ') words[0] = " " + words[0];
        if (useRegex) SplitEach(words, w => Gpt2().Matches(w).Select(m => m.Value));
    }
}

/// <summary>SentencePiece-style Metaspace: spaces become ▁, a ▁ is prepended, and words split before each ▁.</summary>
internal sealed class MetaspacePreTokenizer(string replacement, string prependScheme, bool split) : PreTokenizerStep
{
    public override void Split(List<string> words, bool atStart)
    {
        for (int i = 0; i < words.Count; i++)
        {
            var w = words[i].Replace(" ", replacement, StringComparison.Ordinal);
            bool prepend = prependScheme == "always" || (prependScheme == "first" && atStart && i == 0);
            if (prepend && !w.StartsWith(replacement, StringComparison.Ordinal)) w = replacement + w;
            words[i] = w;
        }
        if (!split) return;
        SplitEach(words, w =>
        {
            var parts = new List<string>();
            int start = 0;
            for (int i = 1; i <= w.Length; i++)
                if (i == w.Length || string.CompareOrdinal(w, i, replacement, 0, replacement.Length) == 0)
                {
                    parts.Add(w[start..i]);
                    start = i;
                }
            return parts;
        });
    }
}

/// <summary>The Split pre-tokenizer with a regex (Qwen2, Llama 3 and others put their GPT-style regex here).</summary>
internal sealed class RegexSplitPreTokenizer(string pattern, string behavior, bool invert) : PreTokenizerStep
{
    private readonly Regex _regex = new(pattern, RegexOptions.CultureInvariant | RegexOptions.Compiled);

    public override void Split(List<string> words, bool atStart) => SplitEach(words, w =>
    {
        var parts = new List<(string Text, bool Match)>();
        int last = 0;
        foreach (Match m in _regex.Matches(w))
        {
            if (m.Length == 0) continue;
            if (m.Index > last) parts.Add((w[last..m.Index], false));
            parts.Add((m.Value, true));
            last = m.Index + m.Length;
        }
        if (last < w.Length) parts.Add((w[last..], false));
        if (invert) parts = parts.Select(p => (p.Text, !p.Match)).ToList();
        return behavior switch
        {
            "Removed" => parts.Where(p => !p.Match).Select(p => p.Text),
            "MergedWithPrevious" => Merge(parts, previous: true),
            "MergedWithNext" => Merge(parts, previous: false),
            _ => parts.Select(p => p.Text), // Isolated (and Contiguous, close enough for real tokenizers)
        };
    });

    private static List<string> Merge(List<(string Text, bool Match)> parts, bool previous)
    {
        var result = new List<string>();
        if (previous)
        {
            foreach (var p in parts)
                if (p.Match && result.Count > 0) result[^1] += p.Text; else result.Add(p.Text);
        }
        else
        {
            string carry = "";
            foreach (var p in parts)
                if (p.Match) carry += p.Text; else { result.Add(carry + p.Text); carry = ""; }
            if (carry.Length > 0) result.Add(carry);
        }
        return result;
    }
}
