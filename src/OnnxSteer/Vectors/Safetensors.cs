using System.Buffers.Binary;
using System.Text;
using System.Text.Json;

namespace OnnxSteer.Vectors;

/// <summary>One tensor of a vector file, converted to float32 on read.</summary>
internal sealed record FloatTensor(string Name, long[] Shape, float[] Data);

/// <summary>The safetensors format, read and written by hand: an 8-byte little-endian header length, a JSON header
/// mapping tensor names to <c>{dtype, shape, data_offsets}</c> (plus an optional <c>__metadata__</c> string map),
/// then the raw little-endian tensor bytes. Reading is strict: every length is checked against the file before
/// anything is allocated, so a hostile file costs at most its own size in memory.</summary>
internal static class Safetensors
{
    /// <summary>Largest header accepted (the reference implementation's limit is also 100 MB).</summary>
    public const long MaxHeaderBytes = 100_000_000;

    /// <summary>Largest vector file read into memory. Vector files are small (a 7B model's vector at every layer
    /// is about 1 MB), so anything bigger is not a vector file.</summary>
    public const long MaxFileBytes = 1L << 30;

    /// <summary>Reads every tensor (as float32) and the metadata map of a safetensors file.</summary>
    /// <exception cref="OnnxSteerException">Missing file (NotFound) or any violation of the format (InvalidVector).</exception>
    public static (IReadOnlyList<FloatTensor> Tensors, IReadOnlyDictionary<string, string> Metadata) Read(string path)
    {
        var bytes = VectorFileIO.ReadBounded(path, MaxFileBytes);
        return Parse(bytes, path);
    }

    /// <summary>Parses a whole safetensors file held in memory; <paramref name="displayName"/> names it in errors.</summary>
    public static (IReadOnlyList<FloatTensor> Tensors, IReadOnlyDictionary<string, string> Metadata) Parse(ReadOnlySpan<byte> file, string displayName)
    {
        OnnxSteerException Bad(string why) => new(ErrorKind.InvalidVector, $"'{displayName}' is not a valid safetensors file: {why}");

        if (file.Length < 8) throw Bad($"it is {file.Length} bytes long, shorter than the 8-byte header length.");
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(file);
        if (headerLength > MaxHeaderBytes) throw Bad($"header length {headerLength} exceeds the {MaxHeaderBytes}-byte limit.");
        if (headerLength > (ulong)(file.Length - 8)) throw Bad($"header length {headerLength} exceeds the {file.Length - 8} bytes that follow it.");
        if (headerLength < 2) throw Bad($"header length {headerLength} is too short for a JSON object.");
        var header = file.Slice(8, (int)headerLength);
        var data = file[(8 + (int)headerLength)..];

        // JsonDocument defers UTF-8 validation of strings until they are read, and then throws InvalidOperationException.
        if (!System.Text.Unicode.Utf8.IsValid(header)) throw Bad("header is not valid UTF-8.");
        JsonDocument doc;
        try
        {
            doc = JsonDocument.Parse(header.ToArray(), new JsonDocumentOptions { MaxDepth = 8 });
        }
        catch (JsonException e)
        {
            throw Bad($"header is not valid JSON ({e.Message}).");
        }
        using (doc)
        {
            if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad("header is not a JSON object.");
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            var entries = new List<(string Name, string Dtype, long[] Shape, long Begin, long End)>();
            var seen = new HashSet<string>(StringComparer.Ordinal);
            foreach (var property in doc.RootElement.EnumerateObject())
            {
                // JsonDocument keeps duplicate keys; the format forbids them and silently picking one would hide tampering.
                if (!seen.Add(property.Name)) throw Bad($"the header names '{property.Name}' twice.");
                if (property.Name == "__metadata__")
                {
                    if (property.Value.ValueKind != JsonValueKind.Object) throw Bad("__metadata__ is not an object.");
                    foreach (var item in property.Value.EnumerateObject())
                    {
                        if (item.Value.ValueKind != JsonValueKind.String) throw Bad($"__metadata__ value '{item.Name}' is not a string.");
                        if (!metadata.TryAdd(item.Name, item.Value.GetString()!)) throw Bad($"__metadata__ names '{item.Name}' twice.");
                    }
                    continue;
                }
                entries.Add(ParseEntry(property, Bad));
            }

            // Offsets must tile the data buffer exactly: no overlap, no hole, nothing past the end (as the spec requires).
            var sorted = entries.OrderBy(e => e.Begin).ThenBy(e => e.End).ToList();
            long cursor = 0;
            foreach (var e in sorted)
            {
                if (e.Begin != cursor)
                    throw Bad(e.Begin < cursor
                        ? $"tensor '{e.Name}' (bytes {e.Begin}-{e.End}) overlaps the tensor before it (which ends at {cursor})."
                        : $"tensor '{e.Name}' starts at byte {e.Begin} but the previous tensor ends at {cursor} (a hole in the data).");
                if (e.End > data.Length) throw Bad($"tensor '{e.Name}' ends at byte {e.End} but the data section is {data.Length} bytes.");
                cursor = e.End;
            }
            if (cursor != data.Length) throw Bad($"the tensors cover {cursor} bytes but the data section is {data.Length} bytes.");

            var tensors = new List<FloatTensor>(entries.Count);
            foreach (var e in entries)
            {
                var raw = data[(int)e.Begin..(int)e.End];
                tensors.Add(new FloatTensor(e.Name, e.Shape, ToFloat32(raw, e.Dtype)));
            }
            return (tensors, metadata);
        }
    }

    private static (string Name, string Dtype, long[] Shape, long Begin, long End) ParseEntry(JsonProperty property, Func<string, OnnxSteerException> bad)
    {
        var name = property.Name;
        var value = property.Value;
        if (name.Length == 0) throw bad("a tensor has an empty name.");
        if (value.ValueKind != JsonValueKind.Object) throw bad($"entry '{name}' is not an object.");
        if (!value.TryGetProperty("dtype", out var dtypeEl) || dtypeEl.ValueKind != JsonValueKind.String)
            throw bad($"tensor '{name}' has no string 'dtype'.");
        var dtype = dtypeEl.GetString()!;
        var elementSize = ElementSize(dtype) ?? throw bad($"tensor '{name}' has dtype '{dtype}'; vector files hold F32, F16, BF16 or F64.");
        if (!value.TryGetProperty("shape", out var shapeEl) || shapeEl.ValueKind != JsonValueKind.Array)
            throw bad($"tensor '{name}' has no 'shape' array.");
        if (shapeEl.GetArrayLength() > 8) throw bad($"tensor '{name}' has {shapeEl.GetArrayLength()} dimensions.");
        var shape = new long[shapeEl.GetArrayLength()];
        long count = 1;
        var i = 0;
        foreach (var dim in shapeEl.EnumerateArray())
        {
            if (dim.ValueKind != JsonValueKind.Number || !dim.TryGetInt64(out var d) || d < 0)
                throw bad($"tensor '{name}' has a shape entry that is not a non-negative integer: {dim.GetRawText()}.");
            shape[i++] = d;
            // A shape whose product overflows cannot describe bytes that exist; refuse before multiplying further.
            if (d != 0 && count > long.MaxValue / d / elementSize) throw bad($"tensor '{name}' has a shape whose size overflows: [{string.Join(", ", shapeEl.EnumerateArray().Select(x => x.GetRawText()))}].");
            count *= d;
        }
        if (!value.TryGetProperty("data_offsets", out var offEl) || offEl.ValueKind != JsonValueKind.Array || offEl.GetArrayLength() != 2)
            throw bad($"tensor '{name}' has no 'data_offsets' pair.");
        var begin = offEl[0].ValueKind == JsonValueKind.Number && offEl[0].TryGetInt64(out var b) ? b : -1;
        var end = offEl[1].ValueKind == JsonValueKind.Number && offEl[1].TryGetInt64(out var en) ? en : -1;
        if (begin < 0 || end < begin) throw bad($"tensor '{name}' has data_offsets [{offEl[0].GetRawText()}, {offEl[1].GetRawText()}].");
        if (end - begin != count * elementSize)
            throw bad($"tensor '{name}' is {dtype} [{string.Join(", ", shape)}] = {count * elementSize} bytes but its data_offsets span {end - begin} bytes.");
        return (name, dtype, shape, begin, end);
    }

    private static int? ElementSize(string dtype) => dtype switch
    {
        "F32" => 4,
        "F16" or "BF16" => 2,
        "F64" => 8,
        _ => null,
    };

    private static float[] ToFloat32(ReadOnlySpan<byte> raw, string dtype)
    {
        switch (dtype)
        {
            case "F32":
            {
                var result = new float[raw.Length / 4];
                for (var i = 0; i < result.Length; i++) result[i] = BinaryPrimitives.ReadSingleLittleEndian(raw[(i * 4)..]);
                return result;
            }
            case "F16":
            {
                var result = new float[raw.Length / 2];
                for (var i = 0; i < result.Length; i++) result[i] = (float)BinaryPrimitives.ReadHalfLittleEndian(raw[(i * 2)..]);
                return result;
            }
            case "BF16":
            {
                var result = new float[raw.Length / 2];
                for (var i = 0; i < result.Length; i++) result[i] = BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]) << 16);
                return result;
            }
            case "F64":
            {
                var result = new float[raw.Length / 8];
                for (var i = 0; i < result.Length; i++) result[i] = (float)BinaryPrimitives.ReadDoubleLittleEndian(raw[(i * 8)..]);
                return result;
            }
            default:
                throw new InvalidOperationException($"unhandled dtype {dtype}");
        }
    }

    /// <summary>Writes float32 tensors (in the given order) and a metadata map. The header is padded with spaces to a
    /// multiple of 8 bytes so that the data section stays aligned, as the reference writer does.</summary>
    public static void Write(Stream stream, IReadOnlyList<FloatTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        using var headerBuffer = new MemoryStream();
        using (var json = new Utf8JsonWriter(headerBuffer))
        {
            json.WriteStartObject();
            if (metadata is { Count: > 0 })
            {
                json.WriteStartObject("__metadata__");
                foreach (var (key, value) in metadata) json.WriteString(key, value);
                json.WriteEndObject();
            }
            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", "F32");
                json.WriteStartArray("shape");
                foreach (var d in t.Shape) json.WriteNumberValue(d);
                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += (long)t.Data.Length * 4;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }
            json.WriteEndObject();
        }
        var header = headerBuffer.ToArray();
        var padded = (header.Length + 7) / 8 * 8;
        Span<byte> length = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(length, (ulong)padded);
        stream.Write(length);
        stream.Write(header);
        for (var i = header.Length; i < padded; i++) stream.WriteByte((byte)' ');
        var buffer = new byte[4096];
        foreach (var t in tensors)
        {
            var span = t.Data.AsSpan();
            while (span.Length > 0)
            {
                var n = Math.Min(span.Length, buffer.Length / 4);
                for (var i = 0; i < n; i++) BinaryPrimitives.WriteSingleLittleEndian(buffer.AsSpan(i * 4), span[i]);
                stream.Write(buffer, 0, n * 4);
                span = span[n..];
            }
        }
    }

    /// <summary>Encodes a string for a JSON header (used by tests that build files by hand).</summary>
    internal static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
}

/// <summary>Small file helpers shared by the vector formats.</summary>
internal static class VectorFileIO
{
    /// <summary>Reads a whole file after checking it exists and is at most <paramref name="maxBytes"/> long.</summary>
    public static byte[] ReadBounded(string path, long maxBytes)
    {
        if (Directory.Exists(path)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}' is a folder, not a vector file.");
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"vector file '{path}' does not exist.");
        try
        {
            using var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            if (stream.Length > maxBytes)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}' is {stream.Length} bytes; vector files over {maxBytes} bytes are refused.");
            var bytes = new byte[stream.Length];
            stream.ReadExactly(bytes);
            return bytes;
        }
        catch (IOException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"cannot read '{path}': {e.Message}", e);
        }
        catch (UnauthorizedAccessException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"cannot read '{path}': {e.Message}", e);
        }
    }
}
