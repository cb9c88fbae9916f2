using System.Buffers.Binary;
using System.Text;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Vectors;

/// <summary>Deterministic vectors and hand-built files (from the format specifications, not from our writers).</summary>
internal static class VectorTestData
{
    public static float[] RandomVector(int seed, int width, double scale = 3)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, width).Select(_ => (float)((rng.NextDouble() * 2 - 1) * scale)).ToArray();
    }

    public static InstructionVector Vector(string name, int width, params int[] layers)
    {
        var diffs = layers.ToDictionary(l => l, l => RandomVector(name.Sum(c => c) * 31 + l * 7919 + width, width));
        var v = InstructionVector.FromMeanDiffs(name, InstructionVector.DiffMeanMethod, diffs, pairCount: 20);
        return v with
        {
            ChatTemplate = true,
            Layers = v.Layers.Values.ToDictionary(l => l.Layer, l => l with { ZBar = 10.5 + l.Layer, MeanProjectionWithout = -1.25 * l.Layer, Separability = 0.95 }),
        };
    }

    public static ModelFingerprint Model(int width = 16, int layers = 4, string type = "llama") =>
        new() { HiddenSize = width, NumLayers = layers, ModelType = type, SourceGraphSha256 = new string('a', 64) };

    /// <summary>A safetensors file from raw parts: 8-byte LE header length, the header text verbatim, the data.</summary>
    public static byte[] SafetensorsBytes(string header, byte[] data, ulong? lyingLength = null)
    {
        var h = Encoding.UTF8.GetBytes(header);
        var file = new byte[8 + h.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(file, lyingLength ?? (ulong)h.Length);
        h.CopyTo(file, 8);
        data.CopyTo(file, 8 + h.Length);
        return file;
    }

    public static byte[] F32Bytes(params float[] values)
    {
        var b = new byte[values.Length * 4];
        for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteSingleLittleEndian(b.AsSpan(i * 4), values[i]);
        return b;
    }
}

/// <summary>Builds GGUF files byte by byte following the GGUF specification (ggml/docs/gguf.md): header
/// (magic "GGUF", uint32 version, uint64 tensor_count, uint64 kv_count), key/value pairs (gguf_string key, uint32 type,
/// value), tensor infos (name, uint32 n_dims, uint64 dims, uint32 ggml type, uint64 offset), padding to
/// general.alignment, then the data section.</summary>
internal sealed class GgufBuilder
{
    private readonly MemoryStream _kv = new();
    private readonly List<(string Name, ulong[] Dims, uint Type, byte[] Data)> _tensors = [];
    private int _kvCount;

    public uint Version { get; set; } = 3;
    public uint Alignment { get; set; } = 32;

    public GgufBuilder Key(string key, uint type, byte[] value)
    {
        WriteString(_kv, key);
        _kv.Write(U32(type));
        _kv.Write(value);
        _kvCount++;
        return this;
    }

    public GgufBuilder String(string key, string value) => Key(key, 8, StringBytes(value));
    public GgufBuilder Int32(string key, int value) { var b = new byte[4]; BinaryPrimitives.WriteInt32LittleEndian(b, value); return Key(key, 5, b); }
    public GgufBuilder UInt32(string key, uint value) => Key(key, 4, U32(value));

    public GgufBuilder Tensor(string name, float[] values) => Tensor(name, [(ulong)values.Length], 0, VectorTestData.F32Bytes(values));

    public GgufBuilder TensorF16(string name, float[] values)
    {
        var b = new byte[values.Length * 2];
        for (var i = 0; i < values.Length; i++) BinaryPrimitives.WriteHalfLittleEndian(b.AsSpan(i * 2), (Half)values[i]);
        return Tensor(name, [(ulong)values.Length], 1, b);
    }

    public GgufBuilder Tensor(string name, ulong[] dims, uint type, byte[] data)
    {
        _tensors.Add((name, dims, type, data));
        return this;
    }

    public byte[] Build()
    {
        var s = new MemoryStream();
        s.Write("GGUF"u8);
        s.Write(U32(Version));
        s.Write(U64((ulong)_tensors.Count));
        s.Write(U64((ulong)_kvCount));
        s.Write(_kv.ToArray());
        ulong offset = 0;
        var offsets = new List<ulong>();
        foreach (var t in _tensors)
        {
            WriteString(s, t.Name);
            s.Write(U32((uint)t.Dims.Length));
            foreach (var d in t.Dims) s.Write(U64(d));
            s.Write(U32(t.Type));
            s.Write(U64(offset));
            offsets.Add(offset);
            offset += Align((ulong)t.Data.Length);
        }
        while (s.Length % Alignment != 0) s.WriteByte(0);
        var dataStart = s.Length;
        for (var i = 0; i < _tensors.Count; i++)
        {
            while ((ulong)(s.Length - dataStart) < offsets[i]) s.WriteByte(0);
            s.Write(_tensors[i].Data);
        }
        return s.ToArray();
    }

    private ulong Align(ulong n) => (n + Alignment - 1) / Alignment * Alignment;

    public static byte[] U32(uint v) { var b = new byte[4]; BinaryPrimitives.WriteUInt32LittleEndian(b, v); return b; }
    public static byte[] U64(ulong v) { var b = new byte[8]; BinaryPrimitives.WriteUInt64LittleEndian(b, v); return b; }

    public static byte[] StringBytes(string s)
    {
        var m = new MemoryStream();
        WriteString(m, s);
        return m.ToArray();
    }

    private static void WriteString(Stream s, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        s.Write(U64((ulong)bytes.Length));
        s.Write(bytes);
    }
}
