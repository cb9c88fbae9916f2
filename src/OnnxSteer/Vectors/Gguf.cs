using System.Buffers.Binary;
using System.Text;

namespace OnnxSteer.Vectors;

/// <summary>A GGUF control vector as llama.cpp (<c>--control-vector</c>) and repeng read and write it:
/// one float vector per llama.cpp block index N >= 1, plus the file's key/value metadata.</summary>
internal sealed record GgufControlVector(
    string? Architecture,
    string? ModelHint,
    long? LayerCount,
    IReadOnlyDictionary<int, float[]> Directions,
    IReadOnlyDictionary<string, object> Metadata);

/// <summary>One F32 tensor of a GGUF file being written.</summary>
/// <param name="Name">The tensor's name.</param>
/// <param name="Dims">Dimensions in ggml order: the innermost (contiguous) first, i.e. a row-major [rows, cols] matrix is
/// <c>[cols, rows]</c>.</param>
/// <param name="Data">Produces the values (row-major, <c>Dims</c> product of them); called once, when the tensor is written.</param>
internal sealed record GgufTensor(string Name, long[] Dims, Func<ReadOnlyMemory<float>> Data)
{
    /// <summary>The number of values the dimensions imply.</summary>
    public long ElementCount => Dims.Aggregate(1L, (a, d) => a * d);
}

/// <summary>GGUF (versions 2 and 3) reader and writer for control-vector files. The reader walks every key/value
/// type the format defines (skipping what it does not need), bounds every count and length by the bytes that are
/// actually left in the file before allocating, and reports any violation as <see cref="ErrorKind.InvalidVector"/>.</summary>
internal static class Gguf
{
    public const uint Magic = 0x46554747; // "GGUF" read as a little-endian uint32
    public const uint DefaultAlignment = 32;
    public const long MaxFileBytes = 1L << 30;
    private const int MaxArrayDepth = 4;

    // gguf_type values from ggml/include/gguf.h.
    internal enum ValueType : uint
    {
        UInt8 = 0, Int8 = 1, UInt16 = 2, Int16 = 3, UInt32 = 4, Int32 = 5, Float32 = 6, Bool = 7,
        String = 8, Array = 9, UInt64 = 10, Int64 = 11, Float64 = 12,
    }

    // ggml_type values for the tensor types a control vector may use.
    internal const uint GgmlF32 = 0, GgmlF16 = 1, GgmlBF16 = 30;

    /// <summary>Reads a control-vector GGUF file.</summary>
    public static GgufControlVector Read(string path) => Parse(VectorFileIO.ReadBounded(path, MaxFileBytes), path);

    /// <summary>Parses a control-vector GGUF file held in memory; <paramref name="displayName"/> names it in errors.</summary>
    public static GgufControlVector Parse(byte[] file, string displayName)
    {
        var r = new Reader(file, displayName);
        var (tensorCount, kvCount) = ReadHeader(r, file);
        var metadata = ReadMetadata(r, kvCount);
        var alignment = Alignment(r, metadata);
        var infos = ReadTensorInfos(r, tensorCount);

        // The data section starts at the next multiple of the alignment after the tensor infos.
        var dataStart = (long)((ulong)r.Position + alignment - 1) / alignment * alignment;
        if (dataStart > file.Length) throw r.Bad($"the tensor data section would start at byte {dataStart}, past the end of the {file.Length}-byte file.");
        var directions = ReadDirections(r, file, infos, dataStart, alignment);

        string? StringKey(string key) => metadata.TryGetValue(key, out var v)
            ? v as string ?? throw r.Bad($"{key} is {TypeName(v)}; it must be a string.")
            : null;
        return new GgufControlVector(StringKey("general.architecture"), StringKey("controlvector.model_hint"), LayerCount(r, metadata), directions, metadata);
    }

    /// <summary>Magic, version (2 or 3, little-endian) and the two counts, each checked against the bytes left.</summary>
    private static (ulong TensorCount, ulong KvCount) ReadHeader(Reader r, byte[] file)
    {
        if (file.Length < 4 || BinaryPrimitives.ReadUInt32LittleEndian(file) != Magic)
            throw r.Bad("it does not start with the GGUF magic bytes.");
        r.Position = 4;
        var version = r.U32("version");
        if (version is 1) throw r.Bad("it is GGUF version 1 (32-bit counts); only versions 2 and 3 are read.");
        if (version is not (2 or 3))
            throw r.Bad(BinaryPrimitives.ReverseEndianness(version) is 2 or 3
                ? $"it is a big-endian GGUF file (version field {version}); only little-endian files are read."
                : $"unknown GGUF version {version}; versions 2 and 3 are read.");
        var tensorCount = r.U64("tensor_count");
        var kvCount = r.U64("kv_count");
        // Each key/value needs at least 8 (key length) + 4 (type) + 1 bytes, each tensor info at least 8 + 4 + 8 + 4 + 8.
        if (kvCount > (ulong)r.Remaining / 13) throw r.Bad($"kv_count {kvCount} cannot fit in the {r.Remaining} bytes left.");
        if (tensorCount > (ulong)r.Remaining / 32) throw r.Bad($"tensor_count {tensorCount} cannot fit in the {r.Remaining} bytes left.");
        return (tensorCount, kvCount);
    }

    private static Dictionary<string, object> ReadMetadata(Reader r, ulong kvCount)
    {
        var metadata = new Dictionary<string, object>(StringComparer.Ordinal);
        for (ulong i = 0; i < kvCount; i++)
        {
            var key = r.String("key");
            var type = (ValueType)r.U32($"type of '{key}'");
            var value = r.Value(type, key, depth: 0);
            if (!metadata.TryAdd(key, value)) throw r.Bad($"key '{key}' appears twice.");
        }
        return metadata;
    }

    /// <summary>general.alignment (a power of two) or the default.</summary>
    private static uint Alignment(Reader r, Dictionary<string, object> metadata)
    {
        if (!metadata.TryGetValue("general.alignment", out var alignValue)) return DefaultAlignment;
        if (alignValue is not uint a) throw r.Bad($"general.alignment is {TypeName(alignValue)}; it must be a uint32.");
        if (a == 0 || (a & (a - 1)) != 0) throw r.Bad($"general.alignment {a} is not a power of two.");
        return a;
    }

    private static List<(string Name, long Count, uint Type, ulong Offset)> ReadTensorInfos(Reader r, ulong tensorCount)
    {
        var infos = new List<(string Name, long Count, uint Type, ulong Offset)>();
        var names = new HashSet<string>(StringComparer.Ordinal);
        for (ulong i = 0; i < tensorCount; i++)
        {
            var name = r.String("tensor name");
            if (!names.Add(name)) throw r.Bad($"tensor '{name}' appears twice.");
            var nDims = r.U32($"n_dims of '{name}'");
            if (nDims is 0 or > 4) throw r.Bad($"tensor '{name}' has {nDims} dimensions (1-4 allowed).");
            long count = 1;
            var dims = new ulong[nDims];
            for (var d = 0; d < nDims; d++)
            {
                dims[d] = r.U64($"dimension of '{name}'");
                if (dims[d] == 0 || dims[d] > int.MaxValue || count * (long)dims[d] > int.MaxValue)
                    throw r.Bad($"tensor '{name}' has dimensions [{string.Join(", ", dims.Take(d + 1))}] (empty or too large).");
                count *= (long)dims[d];
            }
            // ggml counts dimensions from the innermost; a direction is 1-D, i.e. every dimension after the first is 1.
            if (dims.Skip(1).Any(x => x != 1))
                throw r.Bad($"tensor '{name}' has shape [{string.Join(", ", dims)}]; control-vector directions are 1-D.");
            var ggmlType = r.U32($"type of '{name}'");
            var offset = r.U64($"offset of '{name}'");
            infos.Add((name, count, ggmlType, offset));
        }
        return infos;
    }

    /// <summary>Each tensor as a float32 direction by layer: types, alignment, bounds, names and overlaps checked.</summary>
    private static SortedDictionary<int, float[]> ReadDirections(Reader r, byte[] file, List<(string Name, long Count, uint Type, ulong Offset)> infos,
        long dataStart, uint alignment)
    {
        var dataLength = file.Length - dataStart;
        var directions = new SortedDictionary<int, float[]>();
        var ranges = new List<(ulong Begin, ulong End, string Name)>();
        foreach (var (name, count, type, offset) in infos)
        {
            var elementSize = type switch { GgmlF32 => 4, GgmlF16 or GgmlBF16 => 2, _ => 0 };
            if (elementSize == 0) throw r.Bad($"tensor '{name}' has ggml type {type}; control vectors are F32 (or F16/BF16).");
            if (offset % alignment != 0) throw r.Bad($"tensor '{name}' has offset {offset}, not a multiple of the alignment {alignment}.");
            var size = (ulong)count * (ulong)elementSize;
            if (offset > (ulong)dataLength || size > (ulong)dataLength - offset)
                throw r.Bad($"tensor '{name}' needs bytes {offset}-{offset + size} of the data section, which is {dataLength} bytes.");
            ranges.Add((offset, offset + size, name));
            var layer = ParseDirectionName(name) ?? throw r.Bad($"tensor '{name}' is not named direction.N (N a layer number).");
            if (layer == 0) throw r.Bad("it holds direction.0; llama.cpp never steers block 0 and refuses such files.");
            var raw = file.AsSpan((int)(dataStart + (long)offset), (int)size);
            var values = new float[count];
            for (var i = 0; i < values.Length; i++)
            {
                values[i] = type switch
                {
                    GgmlF32 => BinaryPrimitives.ReadSingleLittleEndian(raw[(i * 4)..]),
                    GgmlF16 => (float)BinaryPrimitives.ReadHalfLittleEndian(raw[(i * 2)..]),
                    _ => BitConverter.Int32BitsToSingle(BinaryPrimitives.ReadUInt16LittleEndian(raw[(i * 2)..]) << 16),
                };
            }
            directions[layer] = values;
        }
        ranges.Sort((a, b) => a.Begin.CompareTo(b.Begin));
        for (var i = 1; i < ranges.Count; i++)
            if (ranges[i].Begin < ranges[i - 1].End) throw r.Bad($"tensors '{ranges[i - 1].Name}' and '{ranges[i].Name}' overlap.");
        var widths = directions.Values.Select(v => v.Length).Distinct().ToList();
        if (widths.Count > 1) throw r.Bad($"its directions have different lengths ({string.Join(", ", widths)}).");
        return directions;
    }

    private static long? LayerCount(Reader r, Dictionary<string, object> metadata)
    {
        if (!metadata.TryGetValue("controlvector.layer_count", out var lc)) return null;
        // llama.cpp's cvector-generator writes int32, repeng writes uint32.
        return lc switch
        {
            int s when s >= 0 => s,
            uint u => u,
            _ => throw r.Bad($"controlvector.layer_count is {TypeName(lc)} {lc}; it must be a non-negative int32 or uint32."),
        };
    }

    /// <summary>Parses "direction.N" (N a plain decimal number) into N.</summary>
    internal static int? ParseDirectionName(string name)
    {
        const string prefix = "direction.";
        if (!name.StartsWith(prefix, StringComparison.Ordinal)) return null;
        var digits = name.AsSpan(prefix.Length);
        if (digits.Length is 0 or > 6) return null;
        foreach (var c in digits) if (c is < '0' or > '9') return null;
        return int.Parse(digits, System.Globalization.CultureInfo.InvariantCulture);
    }

    private static string TypeName(object? value) => value switch
    {
        null => "missing",
        string => "a string",
        uint => "a uint32",
        int => "an int32",
        _ => $"a {value.GetType().Name}",
    };

    /// <summary>Writes a GGUF v3 control vector: the architecture, model hint and layer count keys (int32, as llama.cpp
    /// writes it), any extra string keys, then one F32 <c>direction.N</c> tensor per layer, 32-byte aligned.</summary>
    public static void Write(Stream stream, string modelHint, IReadOnlyDictionary<int, float[]> directions, IReadOnlyDictionary<string, string>? extraStrings)
    {
        var metadata = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", "controlvector"),
            new("controlvector.model_hint", modelHint),
            new("controlvector.layer_count", directions.Count),
        };
        if (extraStrings is not null) metadata.AddRange(extraStrings.Select(kv => new KeyValuePair<string, object>(kv.Key, kv.Value)));
        var tensors = directions.Keys.OrderBy(k => k)
            .Select(layer => new GgufTensor($"direction.{layer}", [directions[layer].Length], () => directions[layer]))
            .ToList();
        WriteFile(stream, metadata, tensors);
    }

    /// <summary>Writes a GGUF v3 file of F32 tensors (control vectors, and the model builder's llama.cpp models): the
    /// header, the key/values in the given order, the tensor infos, then each tensor's data at the next multiple of
    /// <see cref="DefaultAlignment"/>. Tensors are produced one at a time, in order, so a file larger than memory can be
    /// written. Metadata values: string, int, uint, ulong, float, bool, or arrays of string, int or float.</summary>
    public static void WriteFile(Stream stream, IReadOnlyList<KeyValuePair<string, object>> metadata, IReadOnlyList<GgufTensor> tensors)
    {
        var w = new BinaryWriter(stream, Encoding.UTF8, leaveOpen: true);
        w.Write(Magic);
        w.Write(3u);
        w.Write((ulong)tensors.Count);
        w.Write((ulong)metadata.Count);
        foreach (var (key, value) in metadata)
        {
            WriteString(w, key);
            WriteValue(w, key, value);
        }
        ulong offset = 0;
        foreach (var t in tensors)
        {
            WriteString(w, t.Name);
            w.Write((uint)t.Dims.Length);
            foreach (var d in t.Dims) w.Write((ulong)d);
            w.Write(GgmlF32);
            w.Write(offset);
            offset += Pad((ulong)t.ElementCount * 4, DefaultAlignment);
        }
        w.Flush();
        PadTo(w, DefaultAlignment);
        foreach (var t in tensors)
        {
            var data = t.Data();
            if (data.Length != t.ElementCount)
                throw new InvalidOperationException($"GGUF tensor '{t.Name}' declares {t.ElementCount} values but {data.Length} were supplied.");
            w.Flush();
            stream.Write(System.Runtime.InteropServices.MemoryMarshal.AsBytes(data.Span));
            PadTo(w, DefaultAlignment);
        }
        w.Flush();
    }

    private static void WriteValue(BinaryWriter w, string key, object value)
    {
        switch (value)
        {
            case string s: w.Write((uint)ValueType.String); WriteString(w, s); break;
            case int i: w.Write((uint)ValueType.Int32); w.Write(i); break;
            case uint u: w.Write((uint)ValueType.UInt32); w.Write(u); break;
            case ulong u: w.Write((uint)ValueType.UInt64); w.Write(u); break;
            case float f: w.Write((uint)ValueType.Float32); w.Write(f); break;
            case bool b: w.Write((uint)ValueType.Bool); w.Write((byte)(b ? 1 : 0)); break;
            case string[] a:
                w.Write((uint)ValueType.Array); w.Write((uint)ValueType.String); w.Write((ulong)a.Length);
                foreach (var s in a) WriteString(w, s);
                break;
            case int[] a:
                w.Write((uint)ValueType.Array); w.Write((uint)ValueType.Int32); w.Write((ulong)a.Length);
                foreach (var i in a) w.Write(i);
                break;
            case float[] a:
                w.Write((uint)ValueType.Array); w.Write((uint)ValueType.Float32); w.Write((ulong)a.Length);
                foreach (var f in a) w.Write(f);
                break;
            default:
                throw new ArgumentException($"GGUF key '{key}' has a value of type {value.GetType().Name}, which the writer does not encode.", nameof(value));
        }
    }

    private static ulong Pad(ulong n, ulong alignment) => (n + alignment - 1) / alignment * alignment;

    private static void PadTo(BinaryWriter w, uint alignment)
    {
        var pos = (ulong)w.BaseStream.Position;
        for (var p = pos; p < Pad(pos, alignment); p++) w.Write((byte)0);
    }

    private static void WriteString(BinaryWriter w, string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        w.Write((ulong)bytes.Length);
        w.Write(bytes);
    }

    /// <summary>Bounds-checked cursor over the file.</summary>
    private sealed class Reader(byte[] file, string displayName)
    {
        public int Position;
        public long Remaining => file.Length - Position;

        public OnnxSteerException Bad(string why) => new(ErrorKind.InvalidVector, $"'{displayName}' is not a valid GGUF control vector: {why}");

        private ReadOnlySpan<byte> Take(int n, string what)
        {
            if (n > Remaining) throw Bad($"it ends inside {what} (byte {Position}; {n} bytes needed, {Remaining} left).");
            var span = file.AsSpan(Position, n);
            Position += n;
            return span;
        }

        public uint U32(string what) => BinaryPrimitives.ReadUInt32LittleEndian(Take(4, what));
        public ulong U64(string what) => BinaryPrimitives.ReadUInt64LittleEndian(Take(8, what));

        public string String(string what)
        {
            var length = U64($"the length of {what}");
            if (length > (ulong)Remaining) throw Bad($"{what} claims {length} bytes but only {Remaining} are left.");
            var bytes = Take((int)length, what);
            try
            {
                return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes);
            }
            catch (DecoderFallbackException)
            {
                throw Bad($"{what} at byte {Position - (int)length} is not valid UTF-8.");
            }
        }

        public object Value(ValueType type, string key, int depth)
        {
            switch (type)
            {
                case ValueType.UInt8: return Take(1, key)[0];
                case ValueType.Int8: return (sbyte)Take(1, key)[0];
                case ValueType.UInt16: return BinaryPrimitives.ReadUInt16LittleEndian(Take(2, key));
                case ValueType.Int16: return BinaryPrimitives.ReadInt16LittleEndian(Take(2, key));
                case ValueType.UInt32: return U32(key);
                case ValueType.Int32: return BinaryPrimitives.ReadInt32LittleEndian(Take(4, key));
                case ValueType.Float32: return BinaryPrimitives.ReadSingleLittleEndian(Take(4, key));
                case ValueType.Bool:
                    var b = Take(1, key)[0];
                    if (b > 1) throw Bad($"bool value of '{key}' is {b}.");
                    return b == 1;
                case ValueType.String: return String($"the value of '{key}'");
                case ValueType.UInt64: return U64(key);
                case ValueType.Int64: return BinaryPrimitives.ReadInt64LittleEndian(Take(8, key));
                case ValueType.Float64: return BinaryPrimitives.ReadDoubleLittleEndian(Take(8, key));
                case ValueType.Array:
                {
                    if (depth >= MaxArrayDepth) throw Bad($"'{key}' nests arrays deeper than {MaxArrayDepth}.");
                    var elementType = (ValueType)U32($"element type of '{key}'");
                    var count = U64($"element count of '{key}'");
                    var minSize = MinSize(elementType) ?? throw Bad($"'{key}' is an array of unknown type {(uint)elementType}.");
                    if (count > (ulong)Remaining / (ulong)minSize) throw Bad($"'{key}' claims {count} elements but only {Remaining} bytes are left.");
                    // Arrays are parsed to validate them but not kept: control vectors need none of their values.
                    for (ulong i = 0; i < count; i++) Value(elementType, key, depth + 1);
                    return new GgufArray(elementType, count);
                }
                default:
                    throw Bad($"'{key}' has unknown value type {(uint)type}.");
            }
        }

        private static int? MinSize(ValueType t) => t switch
        {
            ValueType.UInt8 or ValueType.Int8 or ValueType.Bool => 1,
            ValueType.UInt16 or ValueType.Int16 => 2,
            ValueType.UInt32 or ValueType.Int32 or ValueType.Float32 => 4,
            ValueType.UInt64 or ValueType.Int64 or ValueType.Float64 or ValueType.String => 8,
            ValueType.Array => 12,
            _ => null,
        };
    }

    /// <summary>Placeholder for an array value that was validated and skipped.</summary>
    internal sealed record GgufArray(ValueType ElementType, ulong Count);
}
