using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using OnnxSteer.Onnx;

namespace OnnxSteer.Modeling.Tokenization;

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

    private readonly string _source;

    private TextTokenizer(ITokenizerBackend backend, IEnumerable<AddedToken> added, int[] prefix, int[] suffix, bool stripLeadingSpace,
        string? bos, string? eos, string? pad, string kind, string source)
    {
        _source = source;
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
    /// tokenizer.json's added_tokens and tokenizer_config.json (or special_tokens_map.json).</summary>
    /// <remarks>The files are untrusted input: every size, type, id and reference is checked before it is used
    /// (docs/reliability.md, "Tokenizer files"). tokenizer.json's vocabulary and merges are streamed with
    /// <see cref="Utf8JsonReader"/> (no node tree, no string per merge).</remarks>
    /// <exception cref="OnnxSteerException">No tokenizer files (NotFound); a file that is malformed, too large or
    /// inconsistent (InvalidModel, naming the file); a tokenizer kind that is not supported (UnsupportedModel).</exception>
    public static TextTokenizer Load(string directory)
    {
        // Every file this loader may open is checked against the folder's path rule first (a tokenizer.json that is a
        // symlink out of the folder is refused, UnsafePath), so no caller has to remember to.
        new ModelFolder(directory).CheckFiles(ModelFolder.TokenizerFileNames);
        var cfg = ReadConfig(directory);
        var jsonPath = Path.Combine(directory, "tokenizer.json");
        if (File.Exists(jsonPath))
        {
            var (buffer, length, pooled) = TokenizerFile.ReadPooled(jsonPath, TokenizerFile.MaxModelFileBytes)!.Value;
            // Nothing built from the bytes refers to them (strings and nodes are copies), so the buffer goes back after.
            try { return Guarded(jsonPath, () => FromHuggingFaceJson(buffer.AsSpan(0, length), jsonPath, cfg)); }
            finally { TokenizerFile.ReturnPooled(buffer, pooled); }
        }

        var spPath = Path.Combine(directory, "tokenizer.model");
        if (File.Exists(spPath))
        {
            var bytes = TokenizerFile.ReadBytes(spPath, TokenizerFile.MaxModelFileBytes)!;
            SentencePieceTokenizer sp;
            // Microsoft.ML.Tokenizers parses the protobuf; whatever it throws on a corrupt file is this file's fault.
            try { sp = SentencePieceTokenizer.Create(new MemoryStream(bytes, writable: false), false, false); }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                throw TokenizerFile.Invalid(spPath, $"is not a SentencePiece model: {e.Message}");
            }
            var backend = new SentencePieceBackend(sp);
            var bos = cfg.Bos ?? sp.BeginningOfSentenceToken;
            var eos = cfg.Eos ?? sp.EndOfSentenceToken;
            var tokenizer = new TextTokenizer(backend, cfg.Added, [], [], stripLeadingSpace: true, bos, eos, cfg.Pad, "tokenizer.model (SentencePiece)", spPath);
            return tokenizer.WithBosEos(cfg.AddBos ?? true, cfg.AddEos ?? false);
        }
        var vocabPath = Path.Combine(directory, "vocab.json");
        var mergesPath = Path.Combine(directory, "merges.txt");
        if (File.Exists(vocabPath) && File.Exists(mergesPath))
        {
            var vocab = Guarded(vocabPath, () =>
            {
                var reader = new Utf8JsonReader(TokenizerFile.SkipBom(TokenizerFile.ReadBytes(vocabPath, TokenizerFile.MaxModelFileBytes)),
                    new JsonReaderOptions { MaxDepth = TokenizerFile.MaxDepth });
                if (!reader.Read()) throw TokenizerFile.Invalid(vocabPath, "is empty");
                var v = TokenizerFile.ReadVocab(ref reader, vocabPath, "the vocabulary");
                if (reader.Read()) throw TokenizerFile.Invalid(vocabPath, "has content after the vocabulary object");
                return v;
            });
            var table = vocab.IdTable(vocabPath, "the vocabulary");
            var merges = TokenizerFile.ReadMergeLines(TokenizerFile.ReadBytes(mergesPath, TokenizerFile.MaxModelFileBytes)!, vocab, mergesPath);
            var model = new BpeModel(vocab, table, merges, unk: null, byteFallback: false, fuseUnk: false, ignoreMerges: false, byteLevel: true);
            var pipeline = new HfBackend(model, normalizer: null, new ByteLevelPreTokenizer(addPrefixSpace: false, useRegex: true), byteLevelDecoder: true, vocabPath);
            var added = new List<AddedToken>(cfg.Added);
            foreach (var special in new[] { cfg.Bos, cfg.Eos, cfg.Pad })
                if (special is not null && vocab.TryGetValue(special, out var id) && added.All(a => a.Id != id)) added.Add(new AddedToken(special, id, true));
            var tokenizer = new TextTokenizer(pipeline, added, [], [], stripLeadingSpace: false, cfg.Bos, cfg.Eos, cfg.Pad,
                "vocab.json + merges.txt (byte-level BPE)", vocabPath);
            return tokenizer.WithBosEos(cfg.AddBos ?? false, false);
        }
        throw new OnnxSteerException(ErrorKind.NotFound,
            $"no tokenizer in {directory}: expected tokenizer.json, tokenizer.model, or vocab.json + merges.txt");
    }

    /// <summary>What tokenizer_config.json and special_tokens_map.json say (the config wins where both do).</summary>
    private sealed record TokenizerConfig(string? Bos, string? Eos, string? Pad, bool? AddBos, bool? AddEos, List<AddedToken> Added);

    private static TokenizerConfig ReadConfig(string directory)
    {
        var configPath = Path.Combine(directory, "tokenizer_config.json");
        var mapPath = Path.Combine(directory, "special_tokens_map.json");
        var map = Guarded(mapPath, () => TokenizerFile.ReadObject(mapPath));
        // Every file present is checked whole, even where the config's value wins.
        var mapTokens = map is null ? [null, null, null]
            : Guarded(mapPath, () => new[] { "bos_token", "eos_token", "pad_token" }.Select(k => TokenizerFile.TokenText(map, k, mapPath)).ToArray());
        string? FromMap(string key) => mapTokens[key switch { "bos_token" => 0, "eos_token" => 1, _ => 2 }];
        var config = Guarded(configPath, () => TokenizerFile.ReadObject(configPath));
        if (config is null) return new TokenizerConfig(FromMap("bos_token"), FromMap("eos_token"), FromMap("pad_token"), null, null, []);
        return Guarded(configPath, () =>
        {
            var added = new List<AddedToken>();
            if (TokenizerFile.OptObject(config, "added_tokens_decoder", configPath, "tokenizer_config") is JsonObject decoderTokens)
                foreach (var (key, node) in decoderTokens)
                {
                    var where = $"added_tokens_decoder[{TokenizerFile.Quote(key)}]";
                    if (!int.TryParse(key, NumberStyles.None, CultureInfo.InvariantCulture, out var id) || id > TokenizerFile.MaxTokenId)
                        throw TokenizerFile.Invalid(configPath, $"{where}: the key must be a token id, 0 to {TokenizerFile.MaxTokenId}");
                    if (node is not JsonObject o) throw TokenizerFile.Invalid(configPath, $"{where} must be an object");
                    added.Add(AddedToken.FromJson(o, id, configPath, where));
                }
            return new TokenizerConfig(
                TokenizerFile.TokenText(config, "bos_token", configPath) ?? FromMap("bos_token"),
                TokenizerFile.TokenText(config, "eos_token", configPath) ?? FromMap("eos_token"),
                TokenizerFile.TokenText(config, "pad_token", configPath) ?? FromMap("pad_token"),
                TokenizerFile.OptBool(config, "add_bos_token", configPath, "tokenizer_config"),
                TokenizerFile.OptBool(config, "add_eos_token", configPath, "tokenizer_config"),
                added);
        });
    }

    /// <summary>Runs a parse step of <paramref name="path"/>; what System.Text.Json or the regex parser throws on bad
    /// input (malformed or invalid UTF-8 JSON, a value of the wrong kind) becomes an InvalidModel error naming the file.</summary>
    private static T Guarded<T>(string path, Func<T> parse)
    {
        try { return parse(); }
        catch (JsonException e) { throw TokenizerFile.Invalid(path, $"is not valid JSON: {e.Message}"); }
        catch (InvalidOperationException e) { throw TokenizerFile.Invalid(path, $"is not valid: {e.Message}"); }
        catch (FormatException e) { throw TokenizerFile.Invalid(path, $"is not valid: {e.Message}"); }
        catch (DecoderFallbackException e) { throw TokenizerFile.Invalid(path, $"is not UTF-8: {e.Message}"); }
    }

    private TextTokenizer WithBosEos(bool addBos, bool addEos) => new(_backend, _addedTokens,
        addBos && BosTokenId is int b ? [b] : [], addEos && EosTokenId is int e ? [e] : [], _stripLeadingSpace, BosToken, EosToken, PadToken, Kind, _source);

    /// <summary>The parts of tokenizer.json: the model's vocabulary and merges streamed, the small pipeline sections as nodes.</summary>
    private static TextTokenizer FromHuggingFaceJson(ReadOnlySpan<byte> bytes, string path, TokenizerConfig cfg)
    {
        ReadOnlySpan<byte> json = TokenizerFile.SkipBom(bytes);
        var options = new JsonReaderOptions { MaxDepth = TokenizerFile.MaxDepth };
        var reader = new Utf8JsonReader(json, options);
        if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject) throw TokenizerFile.Invalid(path, "is not a JSON object");
        JsonNode? addedNode = null, normalizerNode = null, preTokenizerNode = null, postNode = null, decoderNode = null;
        HfModelSection? section = null;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var name = reader.GetString();
            reader.Read();
            switch (name)
            {
                case "model": section = HfModelSection.Read(ref reader, ref json, path); break;
                case "added_tokens": addedNode = Capture(ref reader, json, path); break;
                case "normalizer": normalizerNode = Capture(ref reader, json, path); break;
                case "pre_tokenizer": preTokenizerNode = Capture(ref reader, json, path); break;
                case "post_processor": postNode = Capture(ref reader, json, path); break;
                case "decoder": decoderNode = Capture(ref reader, json, path); break;
                default: reader.Skip(); break;
            }
        }
        if (reader.Read()) throw TokenizerFile.Invalid(path, "has content after the top-level object");
        if (section is null) throw TokenizerFile.Invalid(path, "has no \"model\"");

        var added = new List<AddedToken>(cfg.Added);
        switch (addedNode)
        {
            case null: break;
            case JsonArray list:
                for (int i = 0; i < list.Count; i++)
                {
                    if (list[i] is not JsonObject o) throw TokenizerFile.Invalid(path, $"added_tokens[{i}] must be an object");
                    added.Add(AddedToken.FromJson(o, TokenizerFile.TokenId(o["id"], path, $"added_tokens[{i}].id"), path, $"added_tokens[{i}]"));
                }
                break;
            default: throw TokenizerFile.Invalid(path, $"added_tokens must be an array, not {TokenizerFile.Kind(addedNode)}");
        }

        var vocab = section.Vocab;
        var preTokenizer = PreTokenizerStep.FromJson(preTokenizerNode, path, "pre_tokenizer");
        bool byteLevel = preTokenizer is not null && preTokenizer.IsByteLevel;
        var model = new BpeModel(vocab, section.IdToToken, section.Merges, section.Unk, section.ByteFallback, section.FuseUnk, section.IgnoreMerges, byteLevel);
        var normalizer = NormalizerStep.FromJson(normalizerNode, path, "normalizer");
        bool byteLevelDecoder = byteLevel || ContainsType(decoderNode, "ByteLevel");
        var backend = new HfBackend(model, normalizer, preTokenizer, byteLevelDecoder, path);

        // Post-processor: TemplateProcessing says which special tokens wrap a single sequence; otherwise follow
        // tokenizer_config.json's add_bos_token/add_eos_token (what transformers does for slow-tokenizer configs).
        int[] prefix = [], suffix = [];
        var post = postNode switch
        {
            null => null,
            JsonObject o => o,
            _ => throw TokenizerFile.Invalid(path, $"post_processor must be an object, not {TokenizerFile.Kind(postNode)}"),
        };
        if (FindTemplate(post, path, "post_processor") is JsonArray single)
        {
            var seen = false;
            var pre = new List<int>(); var after = new List<int>();
            for (int i = 0; i < single.Count; i++)
            {
                var where = $"post_processor.single[{i}]";
                if (single[i] is not JsonObject item) throw TokenizerFile.Invalid(path, $"{where} must be an object");
                if (item["Sequence"] is not null) { seen = true; continue; }
                if (TokenizerFile.OptObject(item, "SpecialToken", path, where) is not JsonObject specialToken) continue;
                var special = TokenizerFile.OptString(specialToken, "id", path, where + ".SpecialToken");
                if (special is null) continue;
                var list = FindSpecialIds(post, special, path, "post_processor") ?? (FindId(vocab, added, special) is int id ? [id] : []);
                (seen ? after : pre).AddRange(list);
            }
            prefix = [.. pre]; suffix = [.. after];
        }
        else
        {
            if ((cfg.AddBos ?? false) && cfg.Bos is not null && FindId(vocab, added, cfg.Bos) is int b) prefix = [b];
            if ((cfg.AddEos ?? false) && cfg.Eos is not null && FindId(vocab, added, cfg.Eos) is int e) suffix = [e];
        }

        // Llama's legacy decoder ends with Strip(start=1) and Metaspace decoders drop the prepended space:
        // both remove one leading space of the decoded text.
        bool strip = ContainsType(decoderNode, "Strip") || (ContainsType(decoderNode, "Metaspace")
            && (decoderNode!.ToJsonString().Contains("\"prepend_scheme\":\"never\"") is false));
        var kind = $"tokenizer.json (BPE{(byteLevel ? ", byte-level" : "")}{(model.ByteFallback ? ", byte fallback" : "")})";
        return new TextTokenizer(backend, added, prefix, suffix, strip, cfg.Bos, cfg.Eos, cfg.Pad, kind, path);
    }

    /// <summary>The current value (the reader on its first token) parsed as a node; used for the small sections.</summary>
    private static JsonNode? Capture(ref Utf8JsonReader reader, ReadOnlySpan<byte> json, string path)
    {
        var start = (int)reader.TokenStartIndex;
        reader.Skip();
        return TokenizerFile.ParseNode(json[start..(int)reader.BytesConsumed], path);
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
            if (segment.Length > 0) EncodeSegment(segment, ids, atStart: start == 0);
            if (token is null) break;
            ids.Add(token.Id);
            start = at + token.Content.Length;
            if (token.RStrip) while (start < text.Length && char.IsWhiteSpace(text[start])) start++;
            if (start == text.Length) break;
        }
        if (addSpecialTokens) ids.AddRange(_suffixIds);
        return ids.ToArray();
    }

    private void EncodeSegment(string segment, List<int> ids, bool atStart)
    {
        try { _backend.EncodeSegment(segment, ids, atStart); }
        catch (RegexMatchTimeoutException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, TokenizerFile.OneLine(
                $"{_source}: regex {TokenizerFile.Quote(e.Pattern)} ran over {TokenizerRegex.TimeoutMs} ms on one match (catastrophic backtracking); refused"));
        }
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

    private static bool ContainsType(JsonNode? node, string type) =>
        node is not null && node.ToJsonString().Contains($"\"type\":\"{type}\"", StringComparison.Ordinal);

    private static JsonArray? FindTemplate(JsonObject? processor, string path, string where)
    {
        if (processor is null) return null;
        if (TokenizerFile.OptString(processor, "type", path, where) == "TemplateProcessing")
            return TokenizerFile.OptArray(processor, "single", path, where);
        if (TokenizerFile.OptArray(processor, "processors", path, where) is JsonArray list)
            for (int i = 0; i < list.Count; i++)
                if (FindTemplate(list[i] as JsonObject, path, $"{where}.processors[{i}]") is JsonArray a) return a;
        return null;
    }

    private static int[]? FindSpecialIds(JsonObject? processor, string name, string path, string where)
    {
        if (processor is null) return null;
        if (TokenizerFile.OptObject(processor, "special_tokens", path, where) is JsonObject specials
            && TokenizerFile.OptObject(specials, name, path, $"{where}.special_tokens") is JsonObject entry
            && TokenizerFile.OptArray(entry, "ids", path, $"{where}.special_tokens[{TokenizerFile.Quote(name)}]") is JsonArray ids)
            return ids.Select((n, i) => TokenizerFile.TokenId(n, path, $"{where}.special_tokens[{TokenizerFile.Quote(name)}].ids[{i}]")).ToArray();
        if (TokenizerFile.OptArray(processor, "processors", path, where) is JsonArray list)
            for (int i = 0; i < list.Count; i++)
                if (FindSpecialIds(list[i] as JsonObject, name, path, $"{where}.processors[{i}]") is int[] a) return a;
        return null;
    }

    private static int? FindId(VocabTable vocab, List<AddedToken> added, string token)
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
    /// <summary>An added token from tokenizer.json's added_tokens or tokenizer_config.json's added_tokens_decoder. Empty
    /// content is refused: it would match everywhere and never advance the encoder.</summary>
    public static AddedToken FromJson(JsonObject o, int id, string path, string where)
    {
        var content = TokenizerFile.RequireString(o, "content", path, where);
        if (content.Length == 0) throw TokenizerFile.Invalid(path, $"{where} has empty content");
        return new AddedToken(content, id,
            TokenizerFile.OptBool(o, "special", path, where) ?? false,
            TokenizerFile.OptBool(o, "lstrip", path, where) ?? false,
            TokenizerFile.OptBool(o, "rstrip", path, where) ?? false);
    }
}

/// <summary>tokenizer.json's <c>model</c>, streamed: the vocabulary, the merges (resolved against the vocabulary, in
/// whichever order the two appear) and the BPE options, each checked for type and range.</summary>
internal sealed class HfModelSection
{
    public required VocabTable Vocab { get; init; }
    public required string[] IdToToken { get; init; }
    public required MergeTable Merges { get; init; }
    public string? Unk { get; init; }
    public bool ByteFallback { get; init; }
    public bool FuseUnk { get; init; }
    public bool IgnoreMerges { get; init; }

    /// <summary>Reads the model object; the reader is on its StartObject and is left on its EndObject.</summary>
    /// <remarks>The vocabulary and the merges, nearly all of the file, are read where they stand, in the one pass of
    /// <paramref name="reader"/>, when they come in the usual order (vocab, then merges); merges that come first are
    /// skipped and resolved once the vocabulary is known. Both are read by <see cref="TokenizerJsonScanner"/> when it
    /// can (the reader otherwise); the reader then goes on after them from its saved state over the rest of the file,
    /// and <paramref name="json"/> becomes that rest, so the reader's positions keep indexing it.</remarks>
    public static HfModelSection Read(ref Utf8JsonReader reader, ref ReadOnlySpan<byte> json, string path)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw TokenizerFile.Invalid(path, "model must be an object");
        string? type = null, unk = null, prefix = null, suffix = null;
        bool? byteFallback = null, fuseUnk = null, ignoreMerges = null;
        VocabTable? vocab = null;
        bool vocabSeen = false, mergesSeen = false;
        MergeTable? mergeMap = null;
        ReadOnlySpan<byte> pendingMerges = default;
        bool mergesPending = false;
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var name = reader.GetString();
            reader.Read();
            switch (name)
            {
                case "type": type = String(ref reader, path, "model.type"); break;
                case "unk_token": unk = String(ref reader, path, "model.unk_token"); break;
                case "continuing_subword_prefix": prefix = String(ref reader, path, "model.continuing_subword_prefix"); break;
                case "end_of_word_suffix": suffix = String(ref reader, path, "model.end_of_word_suffix"); break;
                case "byte_fallback": byteFallback = Bool(ref reader, path, "model.byte_fallback"); break;
                case "fuse_unk": fuseUnk = Bool(ref reader, path, "model.fuse_unk"); break;
                case "ignore_merges": ignoreMerges = Bool(ref reader, path, "model.ignore_merges"); break;
                case "vocab":
                    // Given twice, which one would the merges name? (The node-parsed sections refuse any repeated key.)
                    if (vocabSeen) throw TokenizerFile.Invalid(path, "model.vocab is given twice");
                    vocabSeen = true;
                    // Another model type's vocabulary (Unigram's is an array) is left to the type check below.
                    if (reader.TokenType == JsonTokenType.StartObject && type is null or "BPE")
                    {
                        int open = (int)reader.TokenStartIndex;
                        int capacity = TokenizerFile.EstimateVocab(json[open..]);
                        var scanned = new VocabTable(capacity);
                        int close = TokenizerJsonScanner.TryReadVocab(json, open, scanned);
                        if (close >= 0)
                        {
                            vocab = scanned;
                            ResumeAt(ref reader, ref json, close);
                        }
                        else vocab = TokenizerFile.ReadVocab(ref reader, path, "model.vocab", capacity);
                    }
                    else reader.Skip();
                    break;
                case "merges":
                    if (mergesSeen) throw TokenizerFile.Invalid(path, "model.merges is given twice");
                    mergesSeen = true;
                    if (reader.TokenType == JsonTokenType.Null) break;
                    if (vocab is not null)
                    {
                        int open = (int)reader.TokenStartIndex;
                        int capacity = TokenizerFile.EstimateMerges(json[open..]);
                        var scanned = new MergeTable(capacity);
                        int close = reader.TokenType == JsonTokenType.StartArray ? TokenizerJsonScanner.TryReadMerges(json, open, vocab, scanned) : -1;
                        if (close >= 0)
                        {
                            mergeMap = scanned;
                            ResumeAt(ref reader, ref json, close);
                        }
                        else mergeMap = TokenizerFile.ReadMerges(ref reader, vocab, path, "model.merges", capacity);
                    }
                    else
                    {
                        // Resolved once the vocabulary is known.
                        var start = (int)reader.TokenStartIndex;
                        reader.Skip();
                        pendingMerges = json[start..(int)reader.BytesConsumed];
                        mergesPending = true;
                    }
                    break;
                default: reader.Skip(); break;
            }
        }
        type ??= "BPE";
        if (type != "BPE") throw TokenizerFile.Unsupported(path, $"tokenizer model type {TokenizerFile.Quote(type)} is not supported (BPE only)");
        if (vocab is null)
            throw TokenizerFile.Invalid(path, vocabSeen ? "model.vocab must be an object of token ids" : "has no model.vocab");
        if (!string.IsNullOrEmpty(prefix) || !string.IsNullOrEmpty(suffix))
            throw TokenizerFile.Unsupported(path, "BPE with continuing_subword_prefix or end_of_word_suffix is not supported");
        var table = vocab.IdTable(path, "model.vocab");
        if (mergesPending)
        {
            var mergeReader = new Utf8JsonReader(pendingMerges, new JsonReaderOptions { MaxDepth = TokenizerFile.MaxDepth });
            mergeReader.Read();
            int capacity = TokenizerFile.EstimateMerges(pendingMerges);
            var scanned = new MergeTable(capacity);
            mergeMap = mergeReader.TokenType == JsonTokenType.StartArray && TokenizerJsonScanner.TryReadMerges(pendingMerges, 0, vocab, scanned) >= 0
                ? scanned
                : TokenizerFile.ReadMerges(ref mergeReader, vocab, path, "model.merges", capacity);
        }
        return new HfModelSection
        {
            Vocab = vocab, IdToToken = table, Merges = mergeMap ?? new MergeTable(), Unk = unk,
            ByteFallback = byteFallback ?? false, FuseUnk = fuseUnk ?? false, IgnoreMerges = ignoreMerges ?? false,
        };
    }

    /// <summary>Moves the reader, which is on the StartObject or StartArray of a value the scanner has read, to that
    /// value's end (<paramref name="close"/>, its closing bracket in <paramref name="json"/>): a reader over the rest of
    /// the file, from the state the old one had, reads the bracket as the value's end token. <paramref name="json"/>
    /// becomes the rest of the file. (A syntax error found after this point is reported with a line number that does not
    /// count the lines of the scanned value.)</summary>
    private static void ResumeAt(ref Utf8JsonReader reader, ref ReadOnlySpan<byte> json, int close)
    {
        var state = reader.CurrentState;
        json = json[close..];
        reader = new Utf8JsonReader(json, isFinalBlock: true, state);
        reader.Read();
    }

    private static string? String(ref Utf8JsonReader reader, string path, string where) => reader.TokenType switch
    {
        JsonTokenType.String => reader.GetString(),
        JsonTokenType.Null => null,
        _ => throw TokenizerFile.Invalid(path, $"{where} must be a string"),
    };

    private static bool? Bool(ref Utf8JsonReader reader, string path, string where) => reader.TokenType switch
    {
        JsonTokenType.True => true,
        JsonTokenType.False => false,
        JsonTokenType.Null => null,
        _ => throw TokenizerFile.Invalid(path, $"{where} must be true or false"),
    };
}

/// <summary>The model part of a tokenizer: encodes one segment (free of added tokens) and maps ids to bytes.</summary>
internal interface ITokenizerBackend
{
    void EncodeSegment(string segment, List<int> ids, bool atStart);
    void AppendTokenBytes(int id, List<byte> bytes);
    int? TokenToId(string token);
    string? IdToToken(int id);
}
