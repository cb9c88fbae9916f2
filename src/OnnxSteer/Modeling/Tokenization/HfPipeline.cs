using System.Globalization;
using System.Text;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace OnnxSteer.Modeling.Tokenization;

/// <summary>A Hugging Face BPE model (tokenizer.json's <c>model</c> with type BPE, or vocab.json + merges.txt):
/// characters become vocabulary tokens, unknown characters become their UTF-8 bytes as <c>&lt;0xXX&gt;</c> tokens (byte
/// fallback, as Llama/Mistral do) or the unknown token, then merges apply lowest rank first. The algorithm is Hugging
/// Face's (tokenizers' <c>Word::merge_all</c>), so ids match it, including ignore_merges (a word already in the
/// vocabulary is one token, as Llama 3 does) and fuse_unk. Merges are kept as (left id, right id) to (rank, new id),
/// built at load without a string per merge.</summary>
internal sealed class BpeModel
{
    private readonly VocabTable _vocab;
    private readonly string[] _idToToken;
    private readonly MergeTable _merges;
    private readonly int? _unkId;
    private readonly int[]? _byteIds;
    private readonly bool _fuseUnk;
    private readonly bool _ignoreMerges;

    [ThreadStatic] private static MergeScratch? t_scratch;

    public BpeModel(VocabTable vocab, string[] idToToken, MergeTable merges, string? unk,
        bool byteFallback, bool fuseUnk, bool ignoreMerges, bool byteLevel)
    {
        _vocab = vocab;
        _idToToken = idToToken;
        _merges = merges;
        _fuseUnk = fuseUnk;
        _ignoreMerges = ignoreMerges;
        ByteLevel = byteLevel;
        // An unk_token missing from the vocabulary acts as none (unknown characters are dropped), as before.
        _unkId = unk is not null && vocab.TryGetValue(unk, out var u) ? u : null;
        if (byteFallback)
        {
            _byteIds = new int[256];
            for (int b = 0; b < 256; b++)
                _byteIds[b] = vocab.TryGetValue($"<0x{b:X2}>", out var id) ? id : -1;
        }
    }

    public bool ByteLevel { get; }
    public bool ByteFallback => _byteIds is not null;

    public int? TokenToId(string token) => _vocab.TryGetValue(token, out var id) ? id : null;
    public string? IdToToken(int id) => id >= 0 && id < _idToToken.Length ? _idToToken[id] : null;

    /// <summary>Encodes one pre-tokenized word (in byte-level mode the raw text: its UTF-8 bytes are mapped to
    /// GPT-2's byte characters here).</summary>
    public void EncodeWord(string word, List<int> ids)
    {
        var w = ByteLevel ? ByteLevelMap.Encode(word) : word;
        if (_ignoreMerges && _vocab.TryGetValue(w, out var whole)) { ids.Add(whole); return; }
        var scratch = t_scratch ??= new MergeScratch();
        var symbols = scratch.Symbols;
        symbols.Clear();
        // Hugging Face's merge_word: one symbol per character (code point); a pending unknown is fused with the next
        // unknown when fuse_unk is set and flushed before the next known character. Byte-fallback tokens are added
        // without flushing a pending unknown, exactly as Hugging Face does.
        bool unkPending = false;
        Span<byte> utf8 = stackalloc byte[4];
        for (int i = 0; i < w.Length;)
        {
            int n = char.IsHighSurrogate(w[i]) && i + 1 < w.Length && char.IsLowSurrogate(w[i + 1]) ? 2 : 1;
            var c = w.AsSpan(i, n);
            i += n;
            if (_vocab.TryGetValue(c, out var id))
            {
                if (unkPending) { symbols.Add(_unkId!.Value); unkPending = false; }
                symbols.Add(id);
                continue;
            }
            if (_byteIds is not null)
            {
                int count = Encoding.UTF8.GetBytes(c, utf8);
                bool all = true;
                for (int k = 0; k < count; k++) all &= _byteIds[utf8[k]] >= 0;
                if (all)
                {
                    for (int k = 0; k < count; k++) symbols.Add(_byteIds[utf8[k]]);
                    continue;
                }
            }
            if (_unkId is int unk)
            {
                if (unkPending && !_fuseUnk) symbols.Add(unk);
                unkPending = true;
            }
        }
        if (unkPending) symbols.Add(_unkId!.Value);
        MergeAll(scratch);
        for (int i = 0; i < symbols.Count; i++) if (scratch.Alive(i)) ids.Add(symbols[i]);
    }

    /// <summary>Hugging Face's Word::merge_all without dropout: a queue of candidate merges ordered by (rank, position);
    /// a popped merge is skipped when its symbols changed since it was queued.</summary>
    private void MergeAll(MergeScratch s)
    {
        var c = s.Symbols;
        int count = c.Count;
        s.Reset(count);
        if (count < 2 || _merges.Count == 0) return;
        var prev = s.Prev; var next = s.Next; var queue = s.Queue;
        for (int i = 0; i + 1 < count; i++)
            if (_merges.TryGetValue(c[i], c[i + 1], out var m)) queue.Enqueue((i, m.Id), Priority(m.Rank, i));
        while (queue.TryDequeue(out var top, out _))
        {
            int pos = top.Pos;
            if (!s.Alive(pos) || next[pos] < 0) continue;
            int right = next[pos];
            if (!_merges.TryGetValue(c[pos], c[right], out var now) || now.Id != top.Id) continue;
            c[pos] = top.Id;
            next[pos] = next[right];
            s.Remove(right);
            if (next[pos] >= 0) prev[next[pos]] = pos;
            if (prev[pos] >= 0 && _merges.TryGetValue(c[prev[pos]], c[pos], out var left))
                queue.Enqueue((prev[pos], left.Id), Priority(left.Rank, prev[pos]));
            if (next[pos] >= 0 && _merges.TryGetValue(c[pos], c[next[pos]], out var after))
                queue.Enqueue((pos, after.Id), Priority(after.Rank, pos));
        }
    }

    private static long Priority(int rank, int pos) => ((long)rank << 32) | (uint)pos;

    /// <summary>Per-thread buffers for one word's merge, reused so encoding does not allocate per word.</summary>
    private sealed class MergeScratch
    {
        public readonly List<int> Symbols = new(64);
        public readonly PriorityQueue<(int Pos, int Id), long> Queue = new();
        public int[] Prev = new int[64];
        public int[] Next = new int[64];
        private bool[] _removed = new bool[64];

        public void Reset(int count)
        {
            if (Prev.Length < count) { Prev = new int[count]; Next = new int[count]; _removed = new bool[count]; }
            for (int i = 0; i < count; i++) { Prev[i] = i - 1; Next[i] = i + 1 < count ? i + 1 : -1; _removed[i] = false; }
            Queue.Clear();
        }

        public bool Alive(int i) => !_removed[i];
        public void Remove(int i) => _removed[i] = true;
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

    /// <summary>The printable character that stands for byte <paramref name="b"/> (fixture writers use it).</summary>
    public static char CharFor(int b) => ByteToChar[b];

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
internal sealed class HfBackend(BpeModel model, NormalizerStep? normalizer, PreTokenizerStep? preTokenizer, bool byteLevelDecoder, string source) : ITokenizerBackend
{
    public void EncodeSegment(string segment, List<int> ids, bool atStart)
    {
        var text = normalizer is null ? segment : normalizer.Apply(segment, segment.Length, source);
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

/// <summary>Regexes from tokenizer files run with a match timeout: a pattern that backtracks catastrophically
/// (<c>^(\w+\s?)*$</c>) fails the encode with an error instead of hanging. The pre-tokenizer patterns of GPT-2, Llama 3
/// and Qwen2 are source-generated (no compile cost at load).</summary>
internal static partial class TokenizerRegex
{
    public const int TimeoutMs = 1000;

    /// <summary>Longest literal a normalizer may insert (real ones insert one character, "▁" or " ").</summary>
    public const int MaxInsertedText = 64;

    public const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
    public const string Llama3Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    public const string Qwen2Pattern = @"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

    [GeneratedRegex(Gpt2Pattern, RegexOptions.CultureInvariant, TimeoutMs)]
    public static partial Regex Gpt2();

    [GeneratedRegex(Llama3Pattern, RegexOptions.CultureInvariant, TimeoutMs)]
    private static partial Regex Llama3();

    [GeneratedRegex(Qwen2Pattern, RegexOptions.CultureInvariant, TimeoutMs)]
    private static partial Regex Qwen2();

    /// <summary>The regex for a pattern from <paramref name="path"/>; a pattern .NET cannot compile is an error.</summary>
    public static Regex For(string pattern, string path, string where) => pattern switch
    {
        Gpt2Pattern => Gpt2(),
        Llama3Pattern => Llama3(),
        Qwen2Pattern => Qwen2(),
        _ => Compile(pattern, path, where),
    };

    private static Regex Compile(string pattern, string path, string where)
    {
        // Interpreted, not RegexOptions.Compiled: compiling costs more at load than it saves on prompt-sized text.
        try { return new Regex(pattern, RegexOptions.CultureInvariant, TimeSpan.FromMilliseconds(TimeoutMs)); }
        catch (ArgumentException e) { throw TokenizerFile.Invalid(path, $"{where} regex {TokenizerFile.Quote(pattern)} does not compile: {e.Message}"); }
    }
}

/// <summary>A tokenizer.json normalizer (the subset real decoder LLMs use).</summary>
internal abstract class NormalizerStep
{
    /// <summary>Normalizes <paramref name="text"/>; <paramref name="originalLength"/> is the segment's length before any
    /// step, which bounds how far a chain of steps may grow it.</summary>
    public abstract string Apply(string text, int originalLength, string path);

    /// <summary>Most characters a normalized segment may have: NFKD expands one character to at most 18, so 32-fold
    /// growth is beyond any real normalizer and stops a chain of Replace steps from multiplying the text.</summary>
    protected static void CheckGrowth(string text, int originalLength, string path)
    {
        if (text.Length > 32L * originalLength + 4096)
            throw TokenizerFile.Invalid(path, $"normalizer grows a {originalLength}-character text to {text.Length} characters (more than 32-fold)");
    }

    public static NormalizerStep? FromJson(JsonNode? node, string path, string where)
    {
        if (node is null) return null;
        if (node is not JsonObject o) throw TokenizerFile.Invalid(path, $"{where} must be an object, not {TokenizerFile.Kind(node)}");
        var type = TokenizerFile.OptString(o, "type", path, where) ?? throw TokenizerFile.Invalid(path, $"{where} has no type");
        switch (type)
        {
            case "Sequence":
                var list = TokenizerFile.OptArray(o, "normalizers", path, where) ?? throw TokenizerFile.Invalid(path, $"{where}.normalizers is missing");
                return new SequenceNormalizer(list.Select((n, i) => FromJson(n, path, $"{where}.normalizers[{i}]")).OfType<NormalizerStep>().ToArray());
            case "Prepend":
                var prefix = Inserted(TokenizerFile.RequireString(o, "prepend", path, where), path, where + ".prepend");
                return new FuncNormalizer(t => prefix + t);
            case "Replace":
                return ReplaceStep(o, path, where);
            case "NFC": return new FuncNormalizer(t => t.Normalize(NormalizationForm.FormC));
            case "NFD": return new FuncNormalizer(t => t.Normalize(NormalizationForm.FormD));
            case "NFKC": return new FuncNormalizer(t => t.Normalize(NormalizationForm.FormKC));
            case "NFKD": return new FuncNormalizer(t => t.Normalize(NormalizationForm.FormKD));
            case "Lowercase": return new FuncNormalizer(t => t.ToLowerInvariant());
            case "Strip":
                var left = TokenizerFile.OptBool(o, "strip_left", path, where) ?? true;
                var right = TokenizerFile.OptBool(o, "strip_right", path, where) ?? true;
                return new FuncNormalizer(t => (left, right) switch
                {
                    (true, true) => t.Trim(), (true, false) => t.TrimStart(), (false, true) => t.TrimEnd(), _ => t,
                });
            default:
                throw TokenizerFile.Unsupported(path, $"normalizer {TokenizerFile.Quote(type)} is not supported");
        }
    }

    private static string Inserted(string text, string path, string where) => text.Length <= TokenizerRegex.MaxInsertedText ? text
        : throw TokenizerFile.Invalid(path, $"{where} is {text.Length} characters; a normalizer may insert at most {TokenizerRegex.MaxInsertedText}");

    private static NormalizerStep ReplaceStep(JsonObject o, string path, string where)
    {
        var content = Inserted(TokenizerFile.RequireString(o, "content", path, where), path, where + ".content");
        var pattern = TokenizerFile.OptObject(o, "pattern", path, where) ?? throw TokenizerFile.Invalid(path, $"{where}.pattern is missing");
        if (TokenizerFile.OptString(pattern, "String", path, where + ".pattern") is string s)
        {
            if (s.Length == 0) throw TokenizerFile.Invalid(path, $"{where}.pattern.String is empty");
            return new FuncNormalizer(t => t.Replace(s, content, StringComparison.Ordinal));
        }
        var regexText = TokenizerFile.OptString(pattern, "Regex", path, where + ".pattern")
            ?? throw TokenizerFile.Invalid(path, $"{where}.pattern needs \"String\" or \"Regex\"");
        var regex = TokenizerRegex.For(regexText, path, where);
        return new FuncNormalizer(t => regex.Replace(t, content));
    }

    private sealed class SequenceNormalizer(NormalizerStep[] steps) : NormalizerStep
    {
        public override string Apply(string text, int originalLength, string path)
        {
            foreach (var s in steps) text = s.Apply(text, originalLength, path);
            return text;
        }
    }

    private sealed class FuncNormalizer(Func<string, string> f) : NormalizerStep
    {
        public override string Apply(string text, int originalLength, string path)
        {
            var result = f(text);
            CheckGrowth(result, originalLength, path);
            return result;
        }
    }
}

/// <summary>A tokenizer.json pre-tokenizer: splits a segment into words, in place.</summary>
internal abstract class PreTokenizerStep
{
    public virtual bool IsByteLevel => false;

    /// <param name="words">Words so far; replaced by the split result.</param>
    /// <param name="atStart">Whether the segment starts the text (Metaspace's prepend_scheme "first").</param>
    public abstract void Split(List<string> words, bool atStart);

    public static PreTokenizerStep? FromJson(JsonNode? node, string path, string where)
    {
        if (node is null) return null;
        if (node is not JsonObject o) throw TokenizerFile.Invalid(path, $"{where} must be an object, not {TokenizerFile.Kind(node)}");
        var type = TokenizerFile.OptString(o, "type", path, where) ?? throw TokenizerFile.Invalid(path, $"{where} has no type");
        bool? Bool(string key) => TokenizerFile.OptBool(o, key, path, where);
        switch (type)
        {
            case "Sequence":
                var list = TokenizerFile.OptArray(o, "pretokenizers", path, where) ?? throw TokenizerFile.Invalid(path, $"{where}.pretokenizers is missing");
                return new SequencePreTokenizer(list.Select((n, i) => FromJson(n, path, $"{where}.pretokenizers[{i}]")).OfType<PreTokenizerStep>().ToArray());
            case "ByteLevel":
                return new ByteLevelPreTokenizer(Bool("add_prefix_space") ?? false, Bool("use_regex") ?? true);
            case "Metaspace":
                var replacement = TokenizerFile.OptString(o, "replacement", path, where) ?? "\u2581";
                if (replacement.Length is 0 or > 4) throw TokenizerFile.Invalid(path, $"{where}.replacement must be 1 to 4 characters");
                var scheme = TokenizerFile.OptString(o, "prepend_scheme", path, where) ?? ((Bool("add_prefix_space") ?? true) ? "always" : "never");
                if (scheme is not ("always" or "never" or "first"))
                    throw TokenizerFile.Invalid(path, $"{where}.prepend_scheme is {TokenizerFile.Quote(scheme)}; expected \"always\", \"never\" or \"first\"");
                return new MetaspacePreTokenizer(replacement, scheme, Bool("split") ?? true);
            case "Split":
                var pattern = TokenizerFile.OptObject(o, "pattern", path, where) ?? throw TokenizerFile.Invalid(path, $"{where}.pattern is missing");
                var regex = TokenizerFile.OptString(pattern, "Regex", path, where + ".pattern") is string r ? TokenizerRegex.For(r, path, where)
                    : TokenizerFile.OptString(pattern, "String", path, where + ".pattern") is { Length: > 0 } s ? new Regex(Regex.Escape(s), RegexOptions.CultureInvariant)
                    : throw TokenizerFile.Invalid(path, $"{where}.pattern needs a non-empty \"String\" or a \"Regex\"");
                var behavior = TokenizerFile.OptString(o, "behavior", path, where) ?? "Isolated";
                if (behavior is not ("Removed" or "Isolated" or "MergedWithPrevious" or "MergedWithNext" or "Contiguous"))
                    throw TokenizerFile.Invalid(path, $"{where}.behavior {TokenizerFile.Quote(behavior)} is not a split behavior");
                return new RegexSplitPreTokenizer(regex, behavior, Bool("invert") ?? false);
            case "Digits":
                return new RegexSplitPreTokenizer(new Regex((Bool("individual_digits") ?? false) ? @"\p{Nd}" : @"\p{Nd}+", RegexOptions.CultureInvariant), "Isolated", false);
            case "WhitespaceSplit":
                return new RegexSplitPreTokenizer(new Regex(@"\s+", RegexOptions.CultureInvariant), "Removed", false);
            case "Whitespace":
                // Hugging Face: split on \w+|[^\w\s]+ with invert, removing what lies between (the whitespace).
                return new RegexSplitPreTokenizer(new Regex(@"\w+|[^\w\s]+", RegexOptions.CultureInvariant), "Removed", true);
            default:
                throw TokenizerFile.Unsupported(path, $"pre_tokenizer {TokenizerFile.Quote(type)} is not supported");
        }
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
/// The byte-to-character mapping itself is done by <see cref="BpeModel"/>.</summary>
internal sealed class ByteLevelPreTokenizer(bool addPrefixSpace, bool useRegex) : PreTokenizerStep
{
    public override bool IsByteLevel => true;

    public override void Split(List<string> words, bool atStart)
    {
        if (addPrefixSpace && words.Count > 0 && words[0].Length > 0 && words[0][0] != ' ') words[0] = " " + words[0];
        if (useRegex) SplitEach(words, w => TokenizerRegex.Gpt2().Matches(w).Select(m => m.Value));
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
internal sealed class RegexSplitPreTokenizer(Regex regex, string behavior, bool invert) : PreTokenizerStep
{
    public override void Split(List<string> words, bool atStart) => SplitEach(words, w =>
    {
        var parts = new List<(string Text, bool Match)>();
        int last = 0;
        foreach (Match m in regex.Matches(w))
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
