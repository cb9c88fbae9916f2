using System.Buffers;
using System.Runtime.CompilerServices;
using System.Text.Json;
using System.Text.Unicode;

namespace OnnxSteer.Modeling.Tokenization;

/// <summary>A scanner for the two big sections of tokenizer.json, the vocabulary (<c>{"token": id, ...}</c>) and the
/// merges (<c>[["a", "b"], ...]</c> or <c>["a b", ...]</c>), in the shapes real files have: plain integer ids, strings
/// that are raw UTF-8 or use JSON escapes. Anything else (another value, a malformed or unusual token, a token named
/// twice or missing from the vocabulary) makes it give up (-1), and the caller reads the section again with
/// <see cref="Utf8JsonReader"/> (<see cref="TokenizerFile.ReadVocab"/>, <see cref="TokenizerFile.ReadMerges"/>), whose
/// checks and error lines stay the only ones; so a file is accepted exactly when it was before.</summary>
/// <remarks>Why not the reader (issue 12): its per-token work and the generic search code it calls are compiled by the
/// tiered JIT, so in a process's first loads of a tokenizer (the ones a CLI verb or an app pays for) they ran
/// unoptimised and a 61k-merge Llama file took 2-3 times its steady-state time. This code is compiled optimised at once,
/// calls nothing generic in the loop, and resolves merges against the vocabulary from a character buffer (no string per
/// merge). Escapes are decoded here too (files written by System.Text.Json escape every non-ASCII character), and any
/// escape System.Text.Json would refuse makes the scanner give up, so the reader reports it.</remarks>
internal static class TokenizerJsonScanner
{
    /// <summary>Reads the vocabulary object whose <c>{</c> is at <paramref name="open"/> into <paramref name="vocab"/>;
    /// returns the index of its closing <c>}</c>, or -1 when the reader must do it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int TryReadVocab(ReadOnlySpan<byte> json, int open, VocabTable vocab)
    {
        var buffer = ArrayPool<char>.Shared.Rent(256);
        try
        {
            int p = SkipWhitespace(json, open + 1);
            if (At(json, p) == '}') return p;
            while (true)
            {
                if (At(json, p) != '"') return -1;
                int n = ReadString(json, ref p, ref buffer, 0);
                if (n < 0) return -1;
                p = SkipWhitespace(json, p);
                if (At(json, p) != ':') return -1;
                p = SkipWhitespace(json, p + 1);
                // A plain integer: digits only, no leading zero, in range. Anything else (a sign, a fraction, an
                // exponent, another kind of value) is for the reader to refuse with its message.
                int id = 0, digits = 0;
                while (true)
                {
                    uint d = (uint)(At(json, p) - '0');
                    if (d > 9) break;
                    if (++digits > 7) return -1;
                    id = id * 10 + (int)d;
                    p++;
                }
                if (digits == 0 || (digits > 1 && json[p - digits] == '0') || id > TokenizerFile.MaxTokenId) return -1;
                if (!vocab.TryAdd(new string(buffer, 0, n), id)) return -1;
                p = SkipWhitespace(json, p);
                byte c = At(json, p);
                if (c == ',') { p = SkipWhitespace(json, p + 1); continue; }
                return c == '}' ? p : -1;
            }
        }
        finally { ArrayPool<char>.Shared.Return(buffer); }
    }

    /// <summary>Reads the merges array whose <c>[</c> is at <paramref name="open"/> into <paramref name="merges"/>,
    /// resolving each against <paramref name="vocab"/>; returns the index of its closing <c>]</c>, or -1 when the reader
    /// must do it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static int TryReadMerges(ReadOnlySpan<byte> json, int open, VocabTable vocab, MergeTable merges)
    {
        var buffer = ArrayPool<char>.Shared.Rent(256);
        try
        {
            int p = SkipWhitespace(json, open + 1);
            if (At(json, p) == ']') return p;
            for (int rank = 0; ; rank++)
            {
                byte c = At(json, p);
                int a, b, aLength, bLength;
                if (c == '[')
                {
                    p = SkipWhitespace(json, p + 1);
                    if (At(json, p) != '"') return -1;
                    aLength = ReadString(json, ref p, ref buffer, 0);
                    if (aLength < 0) return -1;
                    p = SkipWhitespace(json, p);
                    if (At(json, p) != ',') return -1;
                    p = SkipWhitespace(json, p + 1);
                    if (At(json, p) != '"') return -1;
                    bLength = ReadString(json, ref p, ref buffer, aLength);
                    if (bLength < 0) return -1;
                    p = SkipWhitespace(json, p);
                    if (At(json, p) != ']') return -1;
                    p++;
                    if (!vocab.TryGetValue(buffer.AsSpan(0, aLength), out a) || !vocab.TryGetValue(buffer.AsSpan(aLength, bLength), out b))
                        return -1;
                }
                else if (c == '"')
                {
                    int n = ReadString(json, ref p, ref buffer, 0);
                    if (n < 0) return -1;
                    // "a b": exactly one space.
                    aLength = -1;
                    for (int i = 0; i < n; i++)
                        if (buffer[i] == ' ')
                        {
                            if (aLength >= 0) return -1;
                            aLength = i;
                        }
                    if (aLength < 0) return -1;
                    bLength = n - aLength - 1;
                    if (!vocab.TryGetValue(buffer.AsSpan(0, aLength), out a) || !vocab.TryGetValue(buffer.AsSpan(aLength + 1, bLength), out b))
                        return -1;
                    // Close the gap so the concatenation is contiguous: "a b" becomes "ab".
                    buffer.AsSpan(aLength + 1, bLength).CopyTo(buffer.AsSpan(aLength));
                }
                else return -1;
                if (!vocab.TryGetValue(buffer.AsSpan(0, aLength + bLength), out var merged)) return -1;
                merges.Set(a, b, rank, merged);
                p = SkipWhitespace(json, p);
                c = At(json, p);
                if (c == ',') { p = SkipWhitespace(json, p + 1); continue; }
                return c == ']' ? p : -1;
            }
        }
        finally { ArrayPool<char>.Shared.Return(buffer); }
    }

    /// <summary>The byte at <paramref name="p"/>, or 0 (never valid where it is asked for) past the end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static byte At(ReadOnlySpan<byte> json, int p) => (uint)p < (uint)json.Length ? json[p] : (byte)0;

    /// <summary>JSON's four whitespace bytes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int SkipWhitespace(ReadOnlySpan<byte> json, int p)
    {
        while ((uint)p < (uint)json.Length && json[p] is (byte)' ' or (byte)'\n' or (byte)'\r' or (byte)'\t') p++;
        return p;
    }

    /// <summary>Decodes the string whose opening quote is at <paramref name="p"/> into <paramref name="buffer"/> at
    /// <paramref name="at"/> (growing it) and moves <paramref name="p"/> past its closing quote; returns the characters
    /// written, or -1 (a control character, invalid UTF-8, a bad escape, no closing quote).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int ReadString(ReadOnlySpan<byte> json, ref int p, ref char[] buffer, int at)
    {
        int start = p + 1, q = start;
        bool escaped = false;
        while (true)
        {
            if ((uint)q >= (uint)json.Length) return -1;
            byte c = json[q];
            if (c == '"') break;
            if (c < 0x20) return -1;
            if (c == '\\') { escaped = true; q += 2; continue; }
            q++;
        }
        // UTF-16 never has more code units than the UTF-8 bytes (escaped or not) it came from.
        if (buffer.Length < at + (q - start)) Grow(ref buffer, at, at + (q - start));
        int n;
        if (!escaped)
        {
            if (Utf8.ToUtf16(json[start..q], buffer.AsSpan(at), out _, out n, replaceInvalidSequences: false) != OperationStatus.Done) return -1;
        }
        else n = Unescape(json[start..q], buffer.AsSpan(at));
        if (n >= 0) p = q + 1;
        return n;
    }

    /// <summary>The characters of a string's content (between its quotes) that holds escapes; -1 for anything
    /// System.Text.Json would refuse (an unknown escape, bad hex, a surrogate escape that is not a high-low pair,
    /// invalid UTF-8 between escapes), which the reader then reports. Valid escapes mean the one thing JSON says.</summary>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static int Unescape(ReadOnlySpan<byte> content, Span<char> destination)
    {
        int n = 0, i = 0;
        while (i < content.Length)
        {
            int escape = i;
            while (escape < content.Length && content[escape] != '\\') escape++;
            if (escape > i)
            {
                // A backslash is ASCII, so a run between escapes never cuts a UTF-8 sequence.
                if (Utf8.ToUtf16(content[i..escape], destination[n..], out _, out int written, replaceInvalidSequences: false) != OperationStatus.Done)
                    return -1;
                n += written;
            }
            if (escape == content.Length) break;
            if (escape + 1 >= content.Length) return -1;
            i = escape + 2;
            switch (content[escape + 1])
            {
                case (byte)'"': destination[n++] = '"'; break;
                case (byte)'\\': destination[n++] = '\\'; break;
                case (byte)'/': destination[n++] = '/'; break;
                case (byte)'b': destination[n++] = '\b'; break;
                case (byte)'f': destination[n++] = '\f'; break;
                case (byte)'n': destination[n++] = '\n'; break;
                case (byte)'r': destination[n++] = '\r'; break;
                case (byte)'t': destination[n++] = '\t'; break;
                case (byte)'u':
                    int unit = Hex4(content, i);
                    if (unit < 0) return -1;
                    i += 4;
                    if (unit is >= 0xD800 and <= 0xDFFF)
                    {
                        // A high surrogate must be followed by an escaped low one; a low one alone is refused.
                        if (unit >= 0xDC00 || i + 6 > content.Length || content[i] != '\\' || content[i + 1] != 'u') return -1;
                        int low = Hex4(content, i + 2);
                        if (low is < 0xDC00 or > 0xDFFF) return -1;
                        destination[n++] = (char)unit;
                        unit = low;
                        i += 6;
                    }
                    destination[n++] = (char)unit;
                    break;
                default: return -1;
            }
        }
        return n;
    }

    /// <summary>Four hex digits at <paramref name="at"/> as a number, or -1.</summary>
    private static int Hex4(ReadOnlySpan<byte> content, int at)
    {
        if (at + 4 > content.Length) return -1;
        int value = 0;
        for (int k = at; k < at + 4; k++)
        {
            int c = content[k], digit;
            if (c is >= '0' and <= '9') digit = c - '0';
            else if (c is >= 'a' and <= 'f') digit = c - 'a' + 10;
            else if (c is >= 'A' and <= 'F') digit = c - 'A' + 10;
            else return -1;
            value = value * 16 + digit;
        }
        return value;
    }

    private static void Grow(ref char[] buffer, int keep, int need)
    {
        var grown = ArrayPool<char>.Shared.Rent(need);
        buffer.AsSpan(0, keep).CopyTo(grown);
        ArrayPool<char>.Shared.Return(buffer);
        buffer = grown;
    }
}
