using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxSteer.Modeling.Tokenization;

/// <summary>Reading the tokenizer files of a model folder as hostile input: sizes are checked before a file is read,
/// every value is checked for its type and range before it is used, and every failure is one
/// <see cref="OnnxSteerException"/> line (<see cref="ErrorKind.InvalidModel"/>) naming the file.</summary>
internal static class TokenizerFile
{
    /// <summary>Largest tokenizer.json, vocab.json, merges.txt or tokenizer.model read (the largest real ones are
    /// ~35 MB, Gemma's 256k vocabulary).</summary>
    public const long MaxModelFileBytes = 256L << 20;

    /// <summary>Largest tokenizer_config.json or special_tokens_map.json read (chat templates and added-token tables
    /// live there; real ones are well under 1 MB).</summary>
    public const long MaxConfigFileBytes = 32L << 20;

    /// <summary>Largest token id accepted (2^22 - 1). Real vocabularies stop at ~262k; the id table is sized by the
    /// largest id, so this bounds it (32 MB of references at worst).</summary>
    public const int MaxTokenId = (1 << 22) - 1;

    /// <summary>JSON nesting accepted (tokenizer files nest 5-6 deep).</summary>
    public const int MaxDepth = 64;

    // A key given twice is refused when parsed: JsonNode would otherwise throw ArgumentException on first access.
    private static readonly JsonDocumentOptions DocumentOptions = new() { MaxDepth = MaxDepth, AllowDuplicateProperties = false };

    /// <summary>The file's bytes (a UTF-8 byte-order mark dropped), or null when it does not exist.</summary>
    public static byte[]? ReadBytes(string path, long maxBytes)
    {
        if (!File.Exists(path)) return null;
        var length = new FileInfo(path).Length;
        if (length > maxBytes)
            throw Invalid(path, $"is {length} bytes; a tokenizer file may have at most {maxBytes >> 20} MiB");
        var bytes = File.ReadAllBytes(path);
        if (bytes.Length > maxBytes) throw Invalid(path, $"grew past {maxBytes >> 20} MiB while being read");
        return bytes;
    }

    /// <summary>Largest file <see cref="ReadPooled"/> reads into a pooled buffer; a larger one gets its own array, so
    /// the shared pool never keeps a buffer of hundreds of MB.</summary>
    private const long MaxPooledBytes = 32L << 20;

    /// <summary>The file's bytes in a buffer rented from the shared array pool (hand it back with
    /// <see cref="ReturnPooled"/> once nothing refers to it), or null when it does not exist. For tokenizer.json, read
    /// once per load and only parsed: a process that loads tokenizers again (a model and its extractor, tests, sweeps)
    /// reuses the buffer instead of allocating the file's size on the large-object heap each time.</summary>
    public static (byte[] Buffer, int Length, bool Pooled)? ReadPooled(string path, long maxBytes)
    {
        if (!File.Exists(path)) return null;
        var length = new FileInfo(path).Length;
        if (length > maxBytes)
            throw Invalid(path, $"is {length} bytes; a tokenizer file may have at most {maxBytes >> 20} MiB");
        if (length > MaxPooledBytes) return ReadBytes(path, maxBytes) is { } own ? (own, own.Length, false) : null;
        using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.SequentialScan);
        // One byte of room past the size seen, so a file that grew since is noticed and read whole.
        var buffer = ArrayPool<byte>.Shared.Rent((int)length + 1);
        int total = 0;
        try
        {
            int n;
            while ((n = stream.Read(buffer, total, buffer.Length - total)) > 0)
            {
                total += n;
                if (total > maxBytes) throw Invalid(path, $"grew past {maxBytes >> 20} MiB while being read");
                if (total == buffer.Length)
                {
                    var grown = ArrayPool<byte>.Shared.Rent((int)Math.Min((long)buffer.Length * 2, maxBytes + 1));
                    buffer.AsSpan(0, total).CopyTo(grown);
                    ArrayPool<byte>.Shared.Return(buffer);
                    buffer = grown;
                }
            }
        }
        catch
        {
            ArrayPool<byte>.Shared.Return(buffer);
            throw;
        }
        return (buffer, total, true);
    }

    /// <summary>Hands a <see cref="ReadPooled"/> buffer back to the pool (one that was not rented is left to the GC).</summary>
    public static void ReturnPooled(byte[] buffer, bool pooled)
    {
        if (pooled) ArrayPool<byte>.Shared.Return(buffer);
    }

    /// <summary>The bytes after a UTF-8 byte-order mark, if there is one.</summary>
    public static ReadOnlySpan<byte> SkipBom(ReadOnlySpan<byte> bytes) =>
        bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF]) ? bytes[3..] : bytes;

    /// <summary>A JSON file that must hold an object, or null when it does not exist.</summary>
    public static JsonObject? ReadObject(string path)
    {
        var bytes = ReadBytes(path, MaxConfigFileBytes);
        if (bytes is null) return null;
        return ParseObject(bytes, path, "the file");
    }

    /// <summary>Parses JSON text that must be an object.</summary>
    public static JsonObject ParseObject(ReadOnlySpan<byte> utf8, string path, string what)
    {
        JsonNode? node;
        try { node = JsonNode.Parse(SkipBom(utf8), documentOptions: DocumentOptions); }
        catch (JsonException e) { throw Invalid(path, $"is not valid JSON: {e.Message}"); }
        return node as JsonObject ?? throw Invalid(path, $"{what} is not a JSON object");
    }

    /// <summary>Parses a JSON value (any kind, null allowed).</summary>
    public static JsonNode? ParseNode(ReadOnlySpan<byte> utf8, string path)
    {
        try { return JsonNode.Parse(utf8, documentOptions: DocumentOptions); }
        catch (JsonException e) { throw Invalid(path, $"is not valid JSON: {e.Message}"); }
    }

    /// <summary>An <see cref="ErrorKind.InvalidModel"/> error naming the file, on one line.</summary>
    public static OnnxSteerException Invalid(string path, string message) =>
        new(ErrorKind.InvalidModel, OneLine($"{path} {message}"));

    /// <summary>An <see cref="ErrorKind.UnsupportedModel"/> error naming the file, on one line.</summary>
    public static OnnxSteerException Unsupported(string path, string message) =>
        new(ErrorKind.UnsupportedModel, OneLine($"{path}: {message}"));

    /// <summary>Control characters escaped (a message is one terminal line, whatever a file holds).</summary>
    public static string OneLine(string text)
    {
        if (!text.Any(char.IsControl)) return text;
        var sb = new StringBuilder(text.Length + 8);
        foreach (var c in text)
            if (char.IsControl(c)) sb.Append($"\\u{(int)c:x4}"); else sb.Append(c);
        return sb.ToString();
    }

    /// <summary>Text from a file quoted for a message: control characters escaped, long text cut.</summary>
    public static string Quote(ReadOnlySpan<char> text) =>
        "\"" + OneLine(text.Length > 40 ? string.Concat(text[..40], "...") : text.ToString()) + "\"";

    // Typed accessors: a missing key or JSON null is null; any other type than the one asked for is an error.

    public static string? OptString(JsonObject o, string key, string path, string where)
    {
        var node = o[key];
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.String) return v.GetValue<string>();
        throw Invalid(path, $"{where}.{key} must be a string, not {Kind(node)}");
    }

    public static string RequireString(JsonObject o, string key, string path, string where) =>
        OptString(o, key, path, where) ?? throw Invalid(path, $"{where}.{key} is missing");

    public static bool? OptBool(JsonObject o, string key, string path, string where)
    {
        var node = o[key];
        if (node is null) return null;
        if (node is JsonValue v && v.GetValueKind() is JsonValueKind.True or JsonValueKind.False) return v.GetValue<bool>();
        throw Invalid(path, $"{where}.{key} must be true or false, not {Kind(node)}");
    }

    public static JsonObject? OptObject(JsonObject o, string key, string path, string where) => o[key] switch
    {
        null => null,
        JsonObject obj => obj,
        var node => throw Invalid(path, $"{where}.{key} must be an object, not {Kind(node)}"),
    };

    public static JsonArray? OptArray(JsonObject o, string key, string path, string where) => o[key] switch
    {
        null => null,
        JsonArray a => a,
        var node => throw Invalid(path, $"{where}.{key} must be an array, not {Kind(node)}"),
    };

    /// <summary>A token id: an integer in 0..<see cref="MaxTokenId"/>.</summary>
    public static int TokenId(JsonNode? node, string path, string where)
    {
        if (node is JsonValue v && v.GetValueKind() == JsonValueKind.Number)
        {
            if (v.TryGetValue<int>(out var i) && i is >= 0 and <= MaxTokenId) return i;
            if (v.TryGetValue<double>(out var d) && d == Math.Floor(d))
                throw Invalid(path, $"{where} is {OneLine(v.ToJsonString())}; token ids must be 0 to {MaxTokenId}");
        }
        throw Invalid(path, $"{where} must be an integer token id, not {(node is null ? "missing" : Kind(node) + " " + Short(node))}");
    }

    /// <summary>A token given as a string or as an AddedToken object <c>{"content": "..."}</c>; null when absent.</summary>
    public static string? TokenText(JsonObject o, string key, string path)
    {
        var node = o[key];
        switch (node)
        {
            case null: return null;
            case JsonValue v when v.GetValueKind() == JsonValueKind.String:
                return v.GetValue<string>();
            case JsonObject obj:
                var content = OptString(obj, "content", path, key) ?? throw Invalid(path, $"{key} has no \"content\"");
                return content;
            default:
                throw Invalid(path, $"{key} must be a string or an object with \"content\", not {Kind(node)}");
        }
    }

    public static string Kind(JsonNode node) => node switch
    {
        JsonObject => "an object",
        JsonArray => "an array",
        JsonValue v => v.GetValueKind() switch
        {
            JsonValueKind.String => "a string",
            JsonValueKind.Number => "a number",
            JsonValueKind.True or JsonValueKind.False => "a boolean",
            _ => "null",
        },
        _ => "a value",
    };

    private static string Short(JsonNode node)
    {
        var s = node.ToJsonString();
        return OneLine(s.Length > 40 ? s[..40] + "..." : s);
    }

    // ---- Streaming: the vocabulary and merges, the bulk of a tokenizer file, read without a node tree. ----

    /// <summary>Reads a <c>{"token": id, ...}</c> object (the reader on its StartObject) into a vocabulary, checking
    /// every id's type and range and refusing a token listed twice (an id given twice is refused by
    /// <see cref="VocabTable.IdTable"/>).</summary>
    /// <remarks>The load-time loops are compiled fully optimised at once: a tokenizer is loaded once per process, so
    /// tiered compilation would run them unoptimised (or on-stack replaced) exactly when they matter.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static VocabTable ReadVocab(ref Utf8JsonReader reader, string path, string where, int capacity = 0)
    {
        if (reader.TokenType != JsonTokenType.StartObject) throw Invalid(path, $"{where} must be an object");
        var vocab = new VocabTable(capacity);
        while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
        {
            var token = reader.GetString()!;
            reader.Read();
            if (reader.TokenType != JsonTokenType.Number)
                throw Invalid(path, $"{where} gives token {Quote(token)} a {reader.TokenType.ToString().ToLowerInvariant()} id; ids are integers");
            if (!reader.TryGetInt32(out var id) || id < 0 || id > MaxTokenId)
                throw Invalid(path, $"{where} gives token {Quote(token)} the id {OneLine(Encoding.UTF8.GetString(reader.ValueSpan))}; token ids must be 0 to {MaxTokenId}");
            if (!vocab.TryAdd(token, id)) throw Invalid(path, $"{where} lists token {Quote(token)} twice");
        }
        if (reader.TokenType != JsonTokenType.EndObject) throw Invalid(path, $"{where} is not an object of token ids");
        return vocab;
    }

    /// <summary>Reads a merges array (the reader on its StartArray): <c>"a b"</c> strings or <c>["a", "b"]</c> pairs,
    /// each resolved against the vocabulary without building strings: both parts and their concatenation must be
    /// tokens. A pair listed twice keeps its later rank, as Hugging Face does.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static MergeTable ReadMerges(ref Utf8JsonReader reader, VocabTable vocab, string path, string where, int capacity = 0)
    {
        if (reader.TokenType != JsonTokenType.StartArray) throw Invalid(path, $"{where} must be an array");
        var merges = new MergeTable(capacity);
        var buffer = ArrayPool<char>.Shared.Rent(256);
        try
        {
            int rank = 0;
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                int aLength, bLength;
                if (reader.TokenType == JsonTokenType.String)
                {
                    int n = Copy(ref reader, ref buffer, 0);
                    var text = buffer.AsSpan(0, n);
                    aLength = text.IndexOf(' ');
                    if (aLength < 0 || text[(aLength + 1)..].Contains(' '))
                        throw Invalid(path, $"{where}[{rank}] is {Quote(text)}; a merge string is two tokens separated by one space");
                    // Close the gap so the concatenation is contiguous: "a b" becomes "ab".
                    bLength = n - aLength - 1;
                    var a = Lookup(vocab, buffer.AsSpan(0, aLength), path, where, rank);
                    var b = Lookup(vocab, buffer.AsSpan(aLength + 1, bLength), path, where, rank);
                    buffer.AsSpan(aLength + 1, bLength).CopyTo(buffer.AsSpan(aLength));
                    Add(merges, a, b, Lookup(vocab, buffer.AsSpan(0, aLength + bLength), path, where, rank), rank);
                }
                else if (reader.TokenType == JsonTokenType.StartArray)
                {
                    if (!reader.Read() || reader.TokenType != JsonTokenType.String) throw Invalid(path, $"{where}[{rank}] must be a pair of token strings");
                    aLength = Copy(ref reader, ref buffer, 0);
                    if (!reader.Read() || reader.TokenType != JsonTokenType.String) throw Invalid(path, $"{where}[{rank}] must be a pair of token strings");
                    bLength = Copy(ref reader, ref buffer, aLength);
                    if (!reader.Read() || reader.TokenType != JsonTokenType.EndArray) throw Invalid(path, $"{where}[{rank}] must be a pair of token strings");
                    var a = Lookup(vocab, buffer.AsSpan(0, aLength), path, where, rank);
                    var b = Lookup(vocab, buffer.AsSpan(aLength, bLength), path, where, rank);
                    Add(merges, a, b, Lookup(vocab, buffer.AsSpan(0, aLength + bLength), path, where, rank), rank);
                }
                else throw Invalid(path, $"{where}[{rank}] must be a string or a pair of strings");
                rank++;
            }
        }
        finally { ArrayPool<char>.Shared.Return(buffer); }
        return merges;
    }

    /// <summary>Reads merges.txt lines ("a b", a "#version" line skipped) the same way.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static MergeTable ReadMergeLines(byte[] bytes, VocabTable vocab, string path)
    {
        string text;
        try { text = new UTF8Encoding(false, true).GetString(SkipBom(bytes)); }
        catch (DecoderFallbackException) { throw Invalid(path, "is not UTF-8 text"); }
        var merges = new MergeTable();
        var buffer = new char[256];
        int rank = 0, lineNumber = 0;
        foreach (var raw in text.AsSpan().EnumerateLines())
        {
            lineNumber++;
            var line = raw;
            if (line.IsEmpty || (lineNumber == 1 && line.StartsWith("#version", StringComparison.Ordinal))) continue;
            int space = line.IndexOf(' ');
            if (space < 0 || line[(space + 1)..].Contains(' '))
                throw Invalid(path, $"line {lineNumber} is {Quote(line)}; a merge is two tokens separated by one space");
            if (buffer.Length < line.Length) buffer = new char[line.Length];
            var a = Lookup(vocab, line[..space], path, $"line {lineNumber}", -1);
            var b = Lookup(vocab, line[(space + 1)..], path, $"line {lineNumber}", -1);
            line[..space].CopyTo(buffer);
            line[(space + 1)..].CopyTo(buffer.AsSpan(space));
            Add(merges, a, b, Lookup(vocab, buffer.AsSpan(0, line.Length - 1), path, $"line {lineNumber}", -1), rank++);
        }
        return merges;
    }

    /// <summary>A capacity for the entries of a JSON object or array spanning <paramref name="json"/>: its commas plus
    /// one (a vectorised count; an over-estimate for pairs and for tokens holding commas), so the tables never rehash.</summary>
    public static int EstimateEntries(ReadOnlySpan<byte> json) => Math.Min(json.Count((byte)',') + 1, MaxTokenId + 1);

    /// <summary>A capacity for a vocabulary object starting <paramref name="json"/> and read where it stands (its end not
    /// yet known): the colons from there to the end of the file, one per token. An over-estimate only by the colons
    /// after the vocabulary (a few keys; the merges have none but inside tokens), bounded by the file's size.</summary>
    public static int EstimateVocab(ReadOnlySpan<byte> json) => Math.Min(json.Count((byte)':'), MaxTokenId + 1);

    /// <summary>A capacity for a merges array starting <paramref name="json"/> (its end may not be known yet): for pairs
    /// (<c>[["a", "b"], ...]</c>) the brackets that follow, one per pair; for strings the commas plus one. Each pair holds
    /// a comma and is followed by one, so counting commas would double it. An over-estimate only by what follows the
    /// merges and by tokens holding brackets or commas.</summary>
    public static int EstimateMerges(ReadOnlySpan<byte> json)
    {
        var inside = json.Length > 0 ? json[1..].TrimStart(" \t\r\n"u8) : json;
        int count = inside.Length > 0 && inside[0] == (byte)'[' ? json.Count((byte)'[') - 1 : json.Count((byte)',') + 1;
        return Math.Clamp(count, 0, MaxTokenId + 1);
    }

    public static long PairKey(int a, int b) => ((long)a << 32) | (uint)b;

    private static void Add(MergeTable merges, int a, int b, int merged, int rank) => merges.Set(a, b, rank, merged);

    private static int Lookup(VocabTable vocab, ReadOnlySpan<char> token,
        string path, string where, int rank)
    {
        if (vocab.TryGetValue(token, out var id)) return id;
        var at = rank >= 0 ? $"{where}[{rank}]" : where;
        throw Invalid(path, $"{at} names {Quote(token)}, which is not in the vocabulary");
    }

    /// <summary>Copies the current string (unescaped) to <paramref name="buffer"/> at <paramref name="at"/>, growing it.</summary>
    private static int Copy(ref Utf8JsonReader reader, ref char[] buffer, int at)
    {
        // Unescaped UTF-16 never has more code units than the escaped UTF-8 bytes it came from.
        int need = at + reader.ValueSpan.Length;
        if (buffer.Length < need)
        {
            var grown = ArrayPool<char>.Shared.Rent(need);
            buffer.AsSpan(0, at).CopyTo(grown);
            ArrayPool<char>.Shared.Return(buffer);
            buffer = grown;
        }
        return reader.CopyString(buffer.AsSpan(at));
    }
}

/// <summary>One BPE merge: its priority (lower merges first) and the token it makes.</summary>
internal readonly record struct BpeMerge(int Rank, int Id);
