using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using Microsoft.ML.Tokenizers;

namespace OnnxSteer.Runtime.Tokenization;

/// <summary>A model's tokenizer, loaded from the files in its folder: a Hugging Face <c>tokenizer.json</c>
/// (SentencePiece-style BPE with byte fallback as in Llama/Mistral, or byte-level BPE as in GPT-2/Qwen),
/// a SentencePiece <c>tokenizer.model</c>, or <c>vocab.json</c> + <c>merges.txt</c>. The BPE merges run in
/// Microsoft.ML.Tokenizers; the Hugging Face pipeline around them (added-token splitting, normalizer,
/// pre-tokenizer, post-processor, decoder) is reproduced here so ids match the Hugging Face tokenizer.</summary>
/// <remarks>Instances are immutable and safe to use from several threads.</remarks>
public sealed class TextTokenizer
{
    private readonly ITokenizerBackend _backend;
    private readonly AddedToken[] _addedTokens;          // longest first, for splitting
    private readonly Dictionary<int, AddedToken> _addedById;
    private readonly int[] _prefixIds;
    private readonly int[] _suffixIds;
    private readonly bool _stripLeadingSpace;

    private TextTokenizer(ITokenizerBackend backend, IEnumerable<AddedToken> added, int[] prefix, int[] suffix, bool stripLeadingSpace,
        string? bos, string? eos, string? pad, string kind)
    {
        _backend = backend;
        _addedTokens = added.GroupBy(t => t.Content).Select(g => g.First()).OrderByDescending(t => t.Content.Length).ToArray();
        _addedById = _addedTokens.GroupBy(t => t.Id).ToDictionary(g => g.Key, g => g.First());
        _prefixIds = prefix;
        _suffixIds = suffix;
        _stripLeadingSpace = stripLeadingSpace;
        BosToken = bos; EosToken = eos; PadToken = pad;
        BosTokenId = bos is null ? null : TokenToId(bos);
        EosTokenId = eos is null ? null : TokenToId(eos);
        PadTokenId = pad is null ? null : TokenToId(pad);
        Kind = kind;
    }

    /// <summary>Which files and model were used, e.g. "tokenizer.json (BPE, byte fallback)".</summary>
    public string Kind { get; }

    /// <summary>The beginning-of-sequence token text from tokenizer_config.json, if any.</summary>
    public string? BosToken { get; }
    /// <summary>The end-of-sequence token text from tokenizer_config.json, if any.</summary>
    public string? EosToken { get; }
    /// <summary>The padding token text from tokenizer_config.json, if any.</summary>
    public string? PadToken { get; }
    /// <summary>Id of <see cref="BosToken"/>.</summary>
    public int? BosTokenId { get; }
    /// <summary>Id of <see cref="EosToken"/>.</summary>
    public int? EosTokenId { get; }
    /// <summary>Id of <see cref="PadToken"/>.</summary>
    public int? PadTokenId { get; }

    /// <summary>Loads the tokenizer from a model folder, choosing by the files present (tokenizer.json first,
    /// then tokenizer.model, then vocab.json + merges.txt). Special tokens and bos/eos/pad come from
    /// tokenizer.json's added_tokens and tokenizer_config.json.</summary>
    /// <exception cref="OnnxSteerException">No tokenizer files, or a tokenizer kind that is not supported.</exception>
    public static TextTokenizer Load(string directory)
    {
        var config = ReadJson(Path.Combine(directory, "tokenizer_config.json"));
        var specialMap = ReadJson(Path.Combine(directory, "special_tokens_map.json"));
        string? bos = TokenText(config?["bos_token"]) ?? TokenText(specialMap?["bos_token"]);
        string? eos = TokenText(config?["eos_token"]) ?? TokenText(specialMap?["eos_token"]);
        string? pad = TokenText(config?["pad_token"]) ?? TokenText(specialMap?["pad_token"]);
        var added = new List<AddedToken>();
        if (config?["added_tokens_decoder"] is JsonObject decoderTokens)
            foreach (var (id, node) in decoderTokens)
                if (node is JsonObject o && int.TryParse(id, out var i)) added.Add(AddedToken.FromJson(o, i));

        var jsonPath = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(jsonPath))
        {
            var root = JsonNode.Parse(File.ReadAllText(jsonPath)) as JsonObject
                ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"{jsonPath} is not a JSON object");
            return FromHuggingFaceJson(root, config, added, bos, eos, pad, jsonPath);
        }
        var spPath = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(spPath))
        {
            bool addBos = config?["add_bos_token"]?.GetValue<bool>() ?? true;
            bool addEos = config?["add_eos_token"]?.GetValue<bool>() ?? false;
            using var stream = File.OpenRead(spPath);
            var sp = SentencePieceTokenizer.Create(stream, false, false);
            var backend = new SentencePieceBackend(sp);
            bos ??= sp.BeginningOfSentenceToken; eos ??= sp.EndOfSentenceToken;
            var tokenizer = new TextTokenizer(backend, added, [], [], stripLeadingSpace: true, bos, eos, pad, "tokenizer.model (SentencePiece)");
            return tokenizer.WithBosEos(addBos, addEos);
        }
        var vocabPath = Path.Combine(directory, "vocab.json");
        var mergesPath = Path.Combine(directory, "merges.txt");
        if (File.Exists(vocabPath) && File.Exists(mergesPath))
        {
            var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(vocabPath))
                ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"{vocabPath} is empty");
            var merges = File.ReadLines(mergesPath).Where(l => l.Length > 0 && !l.StartsWith("#version", StringComparison.Ordinal)).ToList();
            var model = new BpeModel(vocab, merges, unk: null, byteFallback: false, ignoreMerges: false, byteLevel: true);
            var pipeline = new HfBackend(model, normalizer: null, new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: true), byteLevelDecoder: true);
            foreach (var (text, id) in vocab) if (added.All(a => a.Id != id) && (text == bos || text == eos || text == pad)) added.Add(new AddedToken(text, id, true));
            bool addBos = config?["add_bos_token"]?.GetValue<bool>() ?? false;
            var tokenizer = new TextTokenizer(pipeline, added, [], [], stripLeadingSpace: false, bos, eos, pad, "vocab.json + merges.txt (byte-level BPE)");
            return tokenizer.WithBosEos(addBos, false);
        }
        throw new OnnxSteerException(ErrorKind.NotFound,
            $"no tokenizer in {directory}: expected tokenizer.json, tokenizer.model, or vocab.json + merges.txt");
    }

    private TextTokenizer WithBosEos(bool addBos, bool addEos) => new(_backend, _addedTokens,
        addBos && BosTokenId is int b ? [b] : [], addEos && EosTokenId is int e ? [e] : [], _stripLeadingSpace, BosToken, EosToken, PadToken, Kind);

    private static TextTokenizer FromHuggingFaceJson(JsonObject root, JsonObject? config, List<AddedToken> added,
        string? bos, string? eos, string? pad, string path)
    {
        if (root["added_tokens"] is JsonArray addedTokens)
            foreach (var node in addedTokens)
                if (node is JsonObject o) added.Add(AddedToken.FromJson(o, o["id"]!.GetValue<int>()));

        var modelNode = root["model"] as JsonObject ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} has no \"model\"");
        var type = modelNode["type"]?.GetValue<string>() ?? "BPE";
        if (type != "BPE")
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{path}: tokenizer model type \"{type}\" is not supported (BPE only)");

        var vocab = modelNode["vocab"].Deserialize<Dictionary<string, int>>()
            ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} has no model.vocab");
        var merges = new List<string>();
        if (modelNode["merges"] is JsonArray mergeArray)
            foreach (var m in mergeArray)
                merges.Add(m is JsonArray pair ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}" : m!.GetValue<string>());

        var preTokenizer = PreTokenizerStep.FromJson(root["pre_tokenizer"] as JsonObject, path);
        bool byteLevel = preTokenizer is not null && preTokenizer.IsByteLevel;
        var model = new BpeModel(vocab, merges,
            unk: modelNode["unk_token"]?.GetValue<string>(),
            byteFallback: modelNode["byte_fallback"]?.GetValue<bool>() ?? false,
            ignoreMerges: modelNode["ignore_merges"]?.GetValue<bool>() ?? false,
            byteLevel: byteLevel);
        var normalizer = NormalizerStep.FromJson(root["normalizer"] as JsonObject, path);
        var decoderNode = root["decoder"] as JsonObject;
        bool byteLevelDecoder = byteLevel || ContainsType(decoderNode, "ByteLevel");
        var backend = new HfBackend(model, normalizer, preTokenizer, byteLevelDecoder);

        // Post-processor: TemplateProcessing says which special tokens wrap a single sequence; otherwise follow
        // tokenizer_config.json's add_bos_token/add_eos_token (what transformers does for slow-tokenizer configs).
        int[] prefix = [], suffix = [];
        if (FindTemplate(root["post_processor"] as JsonObject) is JsonArray single)
        {
            var seen = false;
            var pre = new List<int>(); var post = new List<int>();
            foreach (var item in single)
            {
                if (item?["Sequence"] is not null) { seen = true; continue; }
                var special = item?["SpecialToken"]?["id"]?.GetValue<string>();
                if (special is null) continue;
                var ids = root["post_processor"]!.ToJsonString().Contains("special_tokens") ? FindSpecialIds(root["post_processor"] as JsonObject, special) : null;
                var list = ids ?? (FindId(vocab, added, special) is int id ? [id] : []);
                (seen ? post : pre).AddRange(list);
            }
            prefix = [.. pre]; suffix = [.. post];
        }
        else
        {
            bool addBos = config?["add_bos_token"]?.GetValue<bool>() ?? false;
            bool addEos = config?["add_eos_token"]?.GetValue<bool>() ?? false;
            if (addBos && bos is not null && FindId(vocab, added, bos) is int b) prefix = [b];
            if (addEos && eos is not null && FindId(vocab, added, eos) is int e) suffix = [e];
        }

        // Llama's legacy decoder ends with Strip(start=1) and Metaspace decoders drop the prepended space:
        // both remove one leading space of the decoded text.
        bool strip = ContainsType(decoderNode, "Strip") || (ContainsType(decoderNode, "Metaspace")
            && (decoderNode!.ToJsonString().Contains("\"prepend_scheme\":\"never\"") is false));
        var kind = $"tokenizer.json (BPE{(byteLevel ? ", byte-level" : "")}{(model.ByteFallback ? ", byte fallback" : "")})";
        return new TextTokenizer(backend, added, prefix, suffix, strip, bos, eos, pad, kind);
    }

    /// <summary>Encodes text to token ids, splitting out added and special tokens written in the text (e.g. a chat
    /// template's <c>&lt;|im_start|&gt;</c>) and, when <paramref name="addSpecialTokens"/> is true, adding the
    /// tokens the post-processor or <c>add_bos_token</c> prescribe (e.g. Llama's <c>&lt;s&gt;</c>).</summary>
    public int[] Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length / 3 + 4);
        if (addSpecialTokens) ids.AddRange(_prefixIds);
        int start = 0;
        while (start <= text.Length)
        {
            var (at, token) = FindAddedToken(text, start);
            int end = at < 0 ? text.Length : at;
            var segment = text[start..end];
            if (token is not null)
            {
                // lstrip/rstrip tokens swallow the whitespace beside them.
                if (token.LStrip) segment = segment.TrimEnd();
            }
            if (segment.Length > 0) _backend.EncodeSegment(segment, ids, atStart: start == 0);
            if (token is null) break;
            ids.Add(token.Id);
            start = at + token.Content.Length;
            if (token.RStrip) while (start < text.Length && char.IsWhiteSpace(text[start])) start++;
            if (start == text.Length) break;
        }
        if (addSpecialTokens) ids.AddRange(_suffixIds);
        return ids.ToArray();
    }

    /// <summary>Decodes token ids to text, skipping special tokens unless <paramref name="skipSpecialTokens"/> is false.</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = true)
    {
        var decoder = CreateStreamingDecoder(skipSpecialTokens);
        var sb = new StringBuilder();
        foreach (var id in ids) sb.Append(decoder.Append(id));
        sb.Append(decoder.Flush());
        return sb.ToString();
    }

    /// <summary>A decoder for streaming: it returns text only once the UTF-8 bytes of a character are complete,
    /// so a character split over several byte tokens is emitted whole.</summary>
    public StreamingDecoder CreateStreamingDecoder(bool skipSpecialTokens = true) => new(this, skipSpecialTokens, _stripLeadingSpace);

    /// <summary>The id of a token's text (vocabulary entry or added token), or null.</summary>
    public int? TokenToId(string token)
    {
        foreach (var t in _addedTokens) if (t.Content == token) return t.Id;
        return _backend.TokenToId(token);
    }

    /// <summary>The vocabulary text of a token id, or null when the id is unknown.</summary>
    public string? IdToToken(int id) => _addedById.TryGetValue(id, out var t) ? t.Content : _backend.IdToToken(id);

    /// <summary>Whether <paramref name="id"/> is a special token (skipped by <see cref="Decode"/>).</summary>
    public bool IsSpecial(int id) => _addedById.TryGetValue(id, out var t) && t.Special;

    internal void AppendBytes(int id, List<byte> bytes, bool skipSpecialTokens)
    {
        if (_addedById.TryGetValue(id, out var t))
        {
            if (!(skipSpecialTokens && t.Special)) bytes.AddRange(TokenBytes(id));
            return;
        }
        bytes.AddRange(TokenBytes(id));
    }

    /// <summary>Computes and keeps the bytes of every id below <paramref name="vocabSize"/>, once per tokenizer, so that a
    /// decode loop never meets an id whose bytes it still has to build (that would allocate mid-generation).</summary>
    internal void WarmDecodeCache(int vocabSize)
    {
        if (vocabSize <= _warmedTo || vocabSize > 1 << 22) return;
        for (int id = 0; id < vocabSize; id++) TokenBytes(id);
        _warmedTo = vocabSize;
    }

    private volatile int _warmedTo;

    // Each token's bytes are computed once and kept, so streaming decode allocates only the text it returns.
    // Races only compute the same array twice.
    private byte[]?[] _tokenBytes = [];

    private byte[] TokenBytes(int id)
    {
        if (id < 0) return [];
        var cache = _tokenBytes;
        if (id < cache.Length && cache[id] is { } hit) return hit;
        byte[] bytes;
        if (_addedById.TryGetValue(id, out var t)) bytes = Encoding.UTF8.GetBytes(t.Content);
        else
        {
            var list = new List<byte>(8);
            _backend.AppendTokenBytes(id, list);
            bytes = [.. list];
        }
        if (id >= cache.Length)
        {
            if (id > 1 << 22) return bytes; // an absurd id: do not grow the cache for it
            var grown = new byte[]?[Math.Max(id + 1, Math.Max(cache.Length * 2, 1024))];
            Array.Copy(cache, grown, cache.Length);
            _tokenBytes = cache = grown;
        }
        cache[id] = bytes;
        return bytes;
    }

    private (int At, AddedToken? Token) FindAddedToken(string text, int start)
    {
        if (_addedTokens.Length == 0) return (-1, null);
        int best = -1; AddedToken? bestToken = null;
        foreach (var t in _addedTokens)
        {
            int at = text.IndexOf(t.Content, start, StringComparison.Ordinal);
            // Earliest match wins; among equal starts the longest (tokens are sorted longest first).
            if (at >= 0 && (best < 0 || at < best)) { best = at; bestToken = t; }
        }
        return (best, bestToken);
    }

    private static JsonObject? ReadJson(string path)
    {
        if (!File.Exists(path)) return null;
        try { return JsonNode.Parse(File.ReadAllText(path)) as JsonObject; }
        catch (JsonException e) { throw new OnnxSteerException(ErrorKind.InvalidModel, $"{path} is not valid JSON: {e.Message}"); }
    }

    private static string? TokenText(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        JsonObject o => o["content"]?.GetValue<string>(),
        _ => null,
    };

    private static bool ContainsType(JsonObject? node, string type) =>
        node is not null && node.ToJsonString().Contains($"\"type\":\"{type}\"", StringComparison.Ordinal);

    private static JsonArray? FindTemplate(JsonObject? processor)
    {
        if (processor is null) return null;
        if (processor["type"]?.GetValue<string>() == "TemplateProcessing") return processor["single"] as JsonArray;
        if (processor["processors"] is JsonArray list)
            foreach (var p in list) if (FindTemplate(p as JsonObject) is JsonArray a) return a;
        return null;
    }

    private static int[]? FindSpecialIds(JsonObject? processor, string name)
    {
        if (processor is null) return null;
        if (processor["special_tokens"]?[name]?["ids"] is JsonArray ids) return ids.Select(i => i!.GetValue<int>()).ToArray();
        if (processor["processors"] is JsonArray list)
            foreach (var p in list) if (FindSpecialIds(p as JsonObject, name) is int[] a) return a;
        return null;
    }

    private static int? FindId(Dictionary<string, int> vocab, List<AddedToken> added, string token)
    {
        foreach (var t in added) if (t.Content == token) return t.Id;
        return vocab.TryGetValue(token, out var id) ? id : null;
    }
}

/// <summary>Turns generated token ids into text piece by piece, holding back the bytes of an incomplete UTF-8
/// character until the token that completes it arrives. One instance per generated sequence; not thread-safe.</summary>
public sealed class StreamingDecoder
{
    private readonly TextTokenizer _tokenizer;
    private readonly bool _skipSpecial;
    private bool _stripLeadingSpace;
    // Sized for the longest tokens real vocabularies have, so neither buffer grows (allocates) mid-generation.
    private readonly List<byte> _pending = new(256);
    private readonly System.Text.Decoder _utf8 = new UTF8Encoding(false, false).GetDecoder();
    private readonly char[] _chars = new char[258];

    internal StreamingDecoder(TextTokenizer tokenizer, bool skipSpecial, bool stripLeadingSpace)
    {
        _tokenizer = tokenizer; _skipSpecial = skipSpecial; _stripLeadingSpace = stripLeadingSpace;
    }

    /// <summary>Adds one token and returns the text it completes (empty while a character is incomplete).</summary>
    public string Append(int tokenId)
    {
        var text = AppendSpan(tokenId);
        return text.IsEmpty ? string.Empty : new string(text);
    }

    /// <summary>Adds one token and appends the text it completes to <paramref name="destination"/>; returns the number
    /// of characters appended. Allocates nothing once the token's bytes are cached and the builder has room, which is
    /// what lets the decode loop run without managed allocations.</summary>
    public int AppendTo(int tokenId, StringBuilder destination)
    {
        var text = AppendSpan(tokenId);
        destination.Append(text);
        return text.Length;
    }

    /// <summary>Returns what is left at the end (an incomplete character becomes U+FFFD).</summary>
    public string Flush()
    {
        var text = FlushSpan();
        return text.IsEmpty ? string.Empty : new string(text);
    }

    /// <summary>Appends what is left at the end to <paramref name="destination"/>; returns the number of characters appended.</summary>
    public int FlushTo(StringBuilder destination)
    {
        var text = FlushSpan();
        destination.Append(text);
        return text.Length;
    }

    private ReadOnlySpan<char> AppendSpan(int tokenId)
    {
        _pending.Clear();
        _tokenizer.AppendBytes(tokenId, _pending, _skipSpecial);
        if (_pending.Count == 0) return [];
        var text = DecodePending(flush: false);
        if (_stripLeadingSpace && text.Length > 0)
        {
            _stripLeadingSpace = false;
            if (text[0] == ' ') text = text[1..];
        }
        return text;
    }

    private ReadOnlySpan<char> FlushSpan()
    {
        _pending.Clear();
        return DecodePending(flush: true);
    }

    // The returned span is valid until the next call.
    private ReadOnlySpan<char> DecodePending(bool flush)
    {
        var bytes = System.Runtime.InteropServices.CollectionsMarshal.AsSpan(_pending);
        var chars = bytes.Length + 2 <= _chars.Length ? _chars : new char[bytes.Length + 2];
        _utf8.Convert(bytes, chars, flush, out _, out int charsUsed, out _);
        return chars.AsSpan(0, charsUsed);
    }
}

internal sealed record AddedToken(string Content, int Id, bool Special, bool LStrip = false, bool RStrip = false)
{
    public static AddedToken FromJson(JsonObject o, int id) => new(
        o["content"]!.GetValue<string>(), id,
        o["special"]?.GetValue<bool>() ?? false,
        o["lstrip"]?.GetValue<bool>() ?? false,
        o["rstrip"]?.GetValue<bool>() ?? false);
}

/// <summary>The model part of a tokenizer: encodes one segment (free of added tokens) and maps ids to bytes.</summary>
internal interface ITokenizerBackend
{
    void EncodeSegment(string segment, List<int> ids, bool atStart);
    void AppendTokenBytes(int id, List<byte> bytes);
    int? TokenToId(string token);
    string? IdToToken(int id);
}
