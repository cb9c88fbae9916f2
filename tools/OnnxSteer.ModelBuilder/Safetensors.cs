using System.Buffers.Binary;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json;
using Microsoft.Win32.SafeHandles;

namespace OnnxSteer.ModelBuilder;

/// <summary>One tensor's entry in a safetensors header.</summary>
/// <param name="Name">Tensor name.</param>
/// <param name="DType">safetensors dtype string (F32, F16, BF16, ...).</param>
/// <param name="Shape">Dimensions.</param>
/// <param name="Begin">Start offset in the data section.</param>
/// <param name="End">End offset (exclusive) in the data section.</param>
internal sealed record SafetensorsEntry(string Name, string DType, long[] Shape, long Begin, long End);

/// <summary>A minimal, validating reader of the safetensors format (8-byte little-endian header length, JSON header
/// of name -> {dtype, shape, data_offsets}, then the data section). Reads F32, F16 and BF16 tensors as float32,
/// one tensor at a time, without mapping the whole file.</summary>
internal sealed class SafetensorsFile : IDisposable
{
    private const long MaxHeader = 100L << 20;
    private readonly SafeFileHandle _handle;
    private readonly long _dataStart;

    private SafetensorsFile(string path, SafeFileHandle handle, long dataStart, Dictionary<string, SafetensorsEntry> entries, Dictionary<string, string> metadata)
    {
        FilePath = path;
        _handle = handle;
        _dataStart = dataStart;
        Entries = entries;
        Metadata = metadata;
    }

    /// <summary>The file.</summary>
    public string FilePath { get; }
    /// <summary>Tensors by name.</summary>
    public IReadOnlyDictionary<string, SafetensorsEntry> Entries { get; }
    /// <summary>The optional <c>__metadata__</c> string map.</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens and validates <paramref name="path"/>: header bounds, JSON shape, known dtypes, byte sizes that match
    /// shapes, offsets inside the data section and no overlapping tensors.</summary>
    /// <exception cref="OnnxSteerException">NotFound, or InvalidModel naming the problem.</exception>
    public static SafetensorsFile Open(string path)
    {
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"weights file '{path}' does not exist.");
        var handle = File.OpenHandle(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        try
        {
            var name = Path.GetFileName(path);
            var fileLength = RandomAccess.GetLength(handle);
            Span<byte> len = stackalloc byte[8];
            if (fileLength < 8 || RandomAccess.Read(handle, len, 0) != 8)
                throw Bad(name, $"file is {fileLength} bytes, shorter than the 8-byte header length");
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(len);
            if (headerLength < 2 || headerLength > MaxHeader || (long)headerLength > fileLength - 8)
                throw Bad(name, $"header length {headerLength} is out of range for a {fileLength}-byte file");
            var header = new byte[headerLength];
            if (RandomAccess.Read(handle, header, 8) != header.Length) throw Bad(name, "truncated header");
            var dataStart = 8 + (long)headerLength;
            var dataLength = fileLength - dataStart;

            var entries = new Dictionary<string, SafetensorsEntry>(StringComparer.Ordinal);
            var metadata = new Dictionary<string, string>(StringComparer.Ordinal);
            JsonDocument doc;
            try { doc = JsonDocument.Parse(header); }
            catch (JsonException e) { throw Bad(name, $"header is not JSON ({e.Message})"); }
            using (doc)
            {
                if (doc.RootElement.ValueKind != JsonValueKind.Object) throw Bad(name, "header is not a JSON object");
                foreach (var prop in doc.RootElement.EnumerateObject())
                {
                    if (prop.Name == "__metadata__")
                    {
                        if (prop.Value.ValueKind != JsonValueKind.Object) throw Bad(name, "__metadata__ is not an object");
                        foreach (var m in prop.Value.EnumerateObject())
                            metadata[m.Name] = m.Value.ValueKind == JsonValueKind.String ? m.Value.GetString()! : m.Value.GetRawText();
                        continue;
                    }
                    var v = prop.Value;
                    if (v.ValueKind != JsonValueKind.Object
                        || !v.TryGetProperty("dtype", out var dt) || dt.ValueKind != JsonValueKind.String
                        || !v.TryGetProperty("shape", out var sh) || sh.ValueKind != JsonValueKind.Array
                        || !v.TryGetProperty("data_offsets", out var off) || off.ValueKind != JsonValueKind.Array || off.GetArrayLength() != 2)
                        throw Bad(name, $"tensor '{prop.Name}' needs dtype, shape and data_offsets [begin, end]");
                    var shape = sh.EnumerateArray().Select(d => d.TryGetInt64(out var x) && x >= 0 ? x : throw Bad(name, $"tensor '{prop.Name}' has a bad dim {d}")).ToArray();
                    long begin = off[0].TryGetInt64(out var b0) ? b0 : -1, end = off[1].TryGetInt64(out var e0) ? e0 : -1;
                    if (begin < 0 || end < begin || end > dataLength)
                        throw Bad(name, $"tensor '{prop.Name}' data_offsets [{begin}, {end}] fall outside the {dataLength}-byte data section");
                    var size = ElementSize(dt.GetString()!);
                    var count = shape.Aggregate(1L, (a, x) => checked(a * x));
                    if (size > 0 && count * size != end - begin)
                        throw Bad(name, $"tensor '{prop.Name}' {dt.GetString()}[{string.Join(",", shape)}] needs {count * size} bytes, data_offsets give {end - begin}");
                    entries[prop.Name] = new SafetensorsEntry(prop.Name, dt.GetString()!, shape, begin, end);
                }
            }
            var sorted = entries.Values.Where(e => e.End > e.Begin).OrderBy(e => e.Begin).ToList();
            for (var i = 1; i < sorted.Count; i++)
                if (sorted[i].Begin < sorted[i - 1].End)
                    throw Bad(name, $"tensors '{sorted[i - 1].Name}' and '{sorted[i].Name}' overlap");
            return new SafetensorsFile(path, handle, dataStart, entries, metadata);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    private static OnnxSteerException Bad(string file, string why) => new(ErrorKind.InvalidModel, $"'{file}' is not a valid safetensors file: {why}.");

    private static int ElementSize(string dtype) => dtype switch
    {
        "F64" or "I64" or "U64" => 8,
        "F32" or "I32" or "U32" => 4,
        "F16" or "BF16" or "I16" or "U16" => 2,
        "I8" or "U8" or "BOOL" or "F8_E4M3" or "F8_E5M2" => 1,
        _ => 0,
    };

    /// <summary>Reads tensor <paramref name="name"/> (F32, F16 or BF16) as float32.</summary>
    public FloatTensor ReadFloat(string name)
    {
        if (!Entries.TryGetValue(name, out var e))
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{Path.GetFileName(FilePath)}' has no tensor '{name}'.");
        var count = e.Shape.Aggregate(1L, (a, x) => a * x);
        var result = new float[count];
        var bytes = new byte[e.End - e.Begin];
        if (RandomAccess.Read(_handle, bytes, _dataStart + e.Begin) != bytes.Length)
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{Path.GetFileName(FilePath)}' is truncated inside tensor '{name}'.");
        switch (e.DType)
        {
            case "F32":
                MemoryMarshal.Cast<byte, float>(bytes).CopyTo(result);
                break;
            case "F16":
                var h = MemoryMarshal.Cast<byte, Half>(bytes);
                for (var i = 0; i < count; i++) result[i] = (float)h[i];
                break;
            case "BF16":
                var u = MemoryMarshal.Cast<byte, ushort>(bytes);
                for (var i = 0; i < count; i++) result[i] = BitConverter.Int32BitsToSingle(u[i] << 16);
                break;
            default:
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"tensor '{name}' has dtype {e.DType}; only F32, F16 and BF16 weights can be exported.");
        }
        foreach (var v in result)
            if (!float.IsFinite(v)) throw new OnnxSteerException(ErrorKind.InvalidModel, $"tensor '{name}' holds NaN or Inf.");
        return new FloatTensor(e.Shape.Select(x => (int)x).ToArray(), result);
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _handle.Dispose();

    /// <summary>Writes float32 tensors as a safetensors file (tests and tools; names in the given order).</summary>
    public static void WriteFloat32(string path, IEnumerable<(string Name, int[] Shape, float[] Data)> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        var list = tensors.ToList();
        var header = new Dictionary<string, object>(StringComparer.Ordinal);
        if (metadata is not null) header["__metadata__"] = metadata;
        long offset = 0;
        foreach (var (name, shape, data) in list)
        {
            header[name] = new Dictionary<string, object> { ["dtype"] = "F32", ["shape"] = shape, ["data_offsets"] = new[] { offset, offset + data.Length * 4L } };
            offset += data.Length * 4L;
        }
        var json = Encoding.UTF8.GetBytes(JsonSerializer.Serialize(header));
        // Pad the header with spaces to 8 bytes, as the reference writer does, so the data section is aligned.
        var padded = (json.Length + 7) / 8 * 8;
        using var f = new FileStream(path, FileMode.Create, FileAccess.Write);
        Span<byte> len = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(len, (ulong)padded);
        f.Write(len);
        f.Write(json);
        for (var i = json.Length; i < padded; i++) f.WriteByte((byte)' ');
        foreach (var (_, _, data) in list) f.Write(MemoryMarshal.AsBytes(data.AsSpan()));
    }
}

/// <summary>Weights from a Hugging Face Llama <c>model.safetensors</c>. A missing <c>lm_head.weight</c> falls back to
/// <c>model.embed_tokens.weight</c> (tied embeddings).</summary>
internal sealed class SafetensorsWeights : IWeightSource, IDisposable
{
    private readonly SafetensorsFile _file;

    private SafetensorsWeights(SafetensorsFile file) => _file = file;

    /// <summary>Opens and validates the file.</summary>
    public static SafetensorsWeights Open(string path) => new(SafetensorsFile.Open(path));

    /// <summary>The underlying file.</summary>
    public SafetensorsFile File => _file;

    /// <inheritdoc />
    public FloatTensor Get(string name, int[] shape)
    {
        var actual = name == LlamaNames.LmHead && !_file.Entries.ContainsKey(name) ? LlamaNames.Embed : name;
        if (!_file.Entries.TryGetValue(actual, out var e))
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{Path.GetFileName(_file.FilePath)}' has no tensor '{name}' (expected [{string.Join(",", shape)}] from config.json).");
        if (!e.Shape.SequenceEqual(shape.Select(x => (long)x)))
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"tensor '{actual}' is [{string.Join(",", e.Shape)}]; config.json implies [{string.Join(",", shape)}].");
        return _file.ReadFloat(actual);
    }

    /// <summary>Closes the file.</summary>
    public void Dispose() => _file.Dispose();
}
