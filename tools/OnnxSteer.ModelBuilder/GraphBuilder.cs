using System.Runtime.InteropServices;
using Google.Protobuf;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.ModelBuilder;

/// <summary>Where initializer bytes go: inline <c>raw_data</c>, or appended to one external data file
/// (streamed, so a large model is never held twice in memory).</summary>
internal sealed class TensorStore : IDisposable
{
    private readonly FileStream? _file;
    private readonly string? _location;

    private TensorStore(FileStream? file, string? location) { _file = file; _location = location; }

    /// <summary>Tensors are stored inline in the model protobuf.</summary>
    public static TensorStore Embedded() => new(null, null);

    /// <summary>Tensors are appended to <paramref name="dataPath"/>; the model refers to it by its file name
    /// (a relative location, as exporters write it).</summary>
    public static TensorStore External(string dataPath) =>
        new(new FileStream(dataPath, FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20), Path.GetFileName(dataPath));

    /// <summary>Whether tensors go to an external file.</summary>
    public bool IsExternal => _file is not null;

    /// <summary>Makes an initializer of <paramref name="dtype"/> with the given little-endian bytes.</summary>
    public TensorProto Make(string name, TensorProto.Types.DataType dtype, long[] dims, ReadOnlySpan<byte> bytes)
    {
        var t = new TensorProto { Name = name, DataType = (int)dtype };
        t.Dims.AddRange(dims);
        if (_file is null)
        {
            t.RawData = ByteString.CopyFrom(bytes);
            return t;
        }
        // Exporters align external tensors so that ONNX Runtime can memory-map them; 64 bytes is enough for that.
        var pad = (int)((64 - _file.Position % 64) % 64);
        if (pad > 0) _file.Write(new byte[pad]);
        var offset = _file.Position;
        _file.Write(bytes);
        t.DataLocation = TensorProto.Types.DataLocation.External;
        t.ExternalData.Add(new StringStringEntryProto { Key = "location", Value = _location });
        t.ExternalData.Add(new StringStringEntryProto { Key = "offset", Value = offset.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        t.ExternalData.Add(new StringStringEntryProto { Key = "length", Value = bytes.Length.ToString(System.Globalization.CultureInfo.InvariantCulture) });
        return t;
    }

    /// <summary>Makes a float initializer stored as <paramref name="dtype"/> (float32 or float16), streaming the
    /// conversion in chunks so no second full-size copy is made.</summary>
    public TensorProto MakeFloat(string name, TensorProto.Types.DataType dtype, long[] dims, ReadOnlySpan<float> data)
    {
        if (_file is null || (dtype != TensorProto.Types.DataType.Float && dtype != TensorProto.Types.DataType.Float16))
            return Make(name, dtype, dims, TensorBytes.Encode(data, dtype));
        if (dtype == TensorProto.Types.DataType.Float)
            return Make(name, dtype, dims, System.Runtime.InteropServices.MemoryMarshal.AsBytes(data));
        var t = Make(name, dtype, dims, []);
        var offset = _file.Position;
        var buffer = new byte[1 << 20];
        for (var start = 0; start < data.Length; start += buffer.Length / 2)
        {
            var n = Math.Min(buffer.Length / 2, data.Length - start);
            var halves = System.Runtime.InteropServices.MemoryMarshal.Cast<byte, Half>(buffer.AsSpan(0, n * 2));
            for (var i = 0; i < n; i++) halves[i] = (Half)data[start + i];
            _file.Write(buffer, 0, n * 2);
        }
        t.ExternalData.Single(e => e.Key == "length").Value = (_file.Position - offset).ToString(System.Globalization.CultureInfo.InvariantCulture);
        return t;
    }

    /// <summary>Flushes and closes the external file.</summary>
    public void Dispose() => _file?.Dispose();
}

/// <summary>A small helper to write ONNX graphs: nodes named like the exporters name them
/// (<c>/model/layers.0/attn/q_proj/MatMul</c>, outputs <c>{node}/output_{k}</c>), initializers in float32/float16/int4,
/// inputs and outputs with symbolic dims. It only appends; there is no editing.</summary>
internal sealed class GraphBuilder
{
    private readonly TensorStore _store;
    private readonly Dictionary<string, string> _constants = new(StringComparer.Ordinal);
    private readonly HashSet<string> _nodeNames = new(StringComparer.Ordinal);

    /// <summary>Creates a builder writing into a new graph. Initializers go through <paramref name="store"/>.</summary>
    public GraphBuilder(string graphName, TensorStore store)
    {
        Graph = new GraphProto { Name = graphName };
        _store = store;
    }

    /// <summary>The graph being built.</summary>
    public GraphProto Graph { get; }

    /// <summary>Adds a node with <paramref name="outputs"/> outputs named <c>{name}/output_{k}</c> (or explicit names);
    /// returns the output names. Empty strings in <paramref name="inputs"/> are skipped optional inputs.</summary>
    public string[] Node(string opType, string name, IReadOnlyList<string> inputs, int outputs = 1, string domain = "",
        IReadOnlyList<string>? outputNames = null, params (string Name, object Value)[] attributes)
    {
        if (!_nodeNames.Add(name)) throw new InvalidOperationException($"duplicate node name '{name}'");
        var node = new NodeProto { OpType = opType, Name = name };
        if (domain.Length > 0) node.Domain = domain;
        node.Input.AddRange(inputs);
        var outs = outputNames?.ToArray() ?? Enumerable.Range(0, outputs).Select(k => $"{name}/output_{k}").ToArray();
        node.Output.AddRange(outs);
        foreach (var (an, av) in attributes) node.Attribute.Add(Attr(an, av));
        Graph.Node.Add(node);
        return outs;
    }

    private readonly Dictionary<string, int> _autoNames = new(StringComparer.Ordinal);

    /// <summary>A node name in TorchScript's style: <c>{scope}/{op}</c>, then <c>{scope}/{op}_1</c>, <c>_2</c>, ...</summary>
    public string AutoName(string scope, string opType)
    {
        var key = $"{scope}/{opType}";
        var n = _autoNames.GetValueOrDefault(key);
        _autoNames[key] = n + 1;
        return n == 0 ? key : $"{key}_{n}";
    }

    /// <summary>Adds a single-output node named by <see cref="AutoName"/> in <paramref name="scope"/>.</summary>
    public string In(string scope, string opType, params string[] inputs) => Op(opType, AutoName(scope, opType), inputs);

    /// <summary>Like <see cref="In"/> with attributes.</summary>
    public string InA(string scope, string opType, string[] inputs, params (string Name, object Value)[] attributes) =>
        OpA(opType, AutoName(scope, opType), inputs, attributes);

    /// <summary>Adds a single-output node and returns its output name.</summary>
    public string Op(string opType, string name, params string[] inputs) => Node(opType, name, inputs)[0];

    /// <summary>Adds a single-output node with attributes and returns its output name.</summary>
    public string OpA(string opType, string name, string[] inputs, params (string Name, object Value)[] attributes) =>
        Node(opType, name, inputs, 1, "", null, attributes)[0];

    /// <summary>A Constant node holding int64 values (a 1-D tensor, or a scalar when <paramref name="scalar"/>);
    /// reused when asked twice, named like the genai builder's <c>/model/constants/...</c>.</summary>
    public string Int64(bool scalar, params long[] values)
    {
        var key = $"/model/constants/TensorProto.INT64/{(scalar ? "0D" : "1D")}/{string.Join(", ", values)}";
        if (_constants.TryGetValue(key, out var existing)) return existing;
        var t = new TensorProto { DataType = (int)TensorProto.Types.DataType.Int64 };
        if (!scalar) t.Dims.Add(values.Length);
        t.RawData = ByteString.CopyFrom(MemoryMarshal.AsBytes(values.AsSpan()));
        Node("Constant", key.Replace("/model/constants/", "/model/constant_nodes/", StringComparison.Ordinal), [], 1, "", [key], ("value", t));
        _constants[key] = key;
        return key;
    }

    /// <summary>A scalar Constant of float type <paramref name="dtype"/>.</summary>
    public string Scalar(float value, TensorProto.Types.DataType dtype)
    {
        var key = $"/model/constants/TensorProto.{dtype.ToString().ToUpperInvariant()}/0D/{value.ToString("R", System.Globalization.CultureInfo.InvariantCulture)}";
        if (_constants.TryGetValue(key, out var existing)) return existing;
        var t = new TensorProto { DataType = (int)dtype, RawData = ByteString.CopyFrom(TensorBytes.Encode([value], dtype)) };
        Node("Constant", key.Replace("/model/constants/", "/model/constant_nodes/", StringComparison.Ordinal), [], 1, "", [key], ("value", t));
        _constants[key] = key;
        return key;
    }

    /// <summary>Adds a float initializer stored as <paramref name="dtype"/> (float32 or float16).</summary>
    public string Initializer(string name, float[] data, long[] dims, TensorProto.Types.DataType dtype)
    {
        Graph.Initializer.Add(_store.MakeFloat(name, dtype, dims, data));
        return name;
    }

    /// <summary>Adds an initializer from already encoded bytes (e.g. packed int4).</summary>
    public string InitializerBytes(string name, ReadOnlySpan<byte> bytes, long[] dims, TensorProto.Types.DataType dtype)
    {
        Graph.Initializer.Add(_store.Make(name, dtype, dims, bytes));
        return name;
    }

    /// <summary>Declares a graph input. Dims are <see cref="string"/> (symbolic) or <see cref="int"/>/<see cref="long"/>.</summary>
    public void Input(string name, TensorProto.Types.DataType dtype, params object[] dims) => Graph.Input.Add(ValueInfo(name, dtype, dims));

    /// <summary>Declares a graph output.</summary>
    public void Output(string name, TensorProto.Types.DataType dtype, params object[] dims) => Graph.Output.Add(ValueInfo(name, dtype, dims));

    /// <summary>A value info with symbolic (<see cref="string"/>) or fixed dims.</summary>
    public static ValueInfoProto ValueInfo(string name, TensorProto.Types.DataType dtype, params object[] dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
        {
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                _ => throw new ArgumentException($"bad dim {d}"),
            });
        }
        return new ValueInfoProto
        {
            Name = name,
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)dtype, Shape = shape } },
        };
    }

    /// <summary>Converts a CLR value to an attribute: int/long, float/double, long[]/int[], float[], string, tensor, graph.</summary>
    public static AttributeProto Attr(string name, object value)
    {
        var a = new AttributeProto { Name = name };
        switch (value)
        {
            case int i: a.Type = AttributeProto.Types.AttributeType.Int; a.I = i; break;
            case long l: a.Type = AttributeProto.Types.AttributeType.Int; a.I = l; break;
            case float f: a.Type = AttributeProto.Types.AttributeType.Float; a.F = f; break;
            case double d: a.Type = AttributeProto.Types.AttributeType.Float; a.F = (float)d; break;
            case long[] ls: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(ls); break;
            case int[] iss: a.Type = AttributeProto.Types.AttributeType.Ints; a.Ints.AddRange(iss.Select(x => (long)x)); break;
            case float[] fs: a.Type = AttributeProto.Types.AttributeType.Floats; a.Floats.AddRange(fs); break;
            case string s: a.Type = AttributeProto.Types.AttributeType.String; a.S = ByteString.CopyFromUtf8(s); break;
            case TensorProto t: a.Type = AttributeProto.Types.AttributeType.Tensor; a.T = t; break;
            case GraphProto g: a.Type = AttributeProto.Types.AttributeType.Graph; a.G = g; break;
            default: throw new ArgumentException($"unsupported attribute value {value.GetType()}");
        }
        return a;
    }
}

/// <summary>Encodes float data as the little-endian bytes of an ONNX tensor type.</summary>
internal static class TensorBytes
{
    /// <summary>float32 or float16 bytes of <paramref name="data"/>.</summary>
    public static byte[] Encode(ReadOnlySpan<float> data, TensorProto.Types.DataType dtype)
    {
        switch (dtype)
        {
            case TensorProto.Types.DataType.Float:
                return MemoryMarshal.AsBytes(data).ToArray();
            case TensorProto.Types.DataType.Float16:
                var bytes = new byte[data.Length * 2];
                var halves = MemoryMarshal.Cast<byte, Half>(bytes.AsSpan());
                for (var i = 0; i < data.Length; i++) halves[i] = (Half)data[i];
                return bytes;
            default:
                throw new ArgumentException($"cannot encode floats as {dtype}");
        }
    }

    /// <summary>Rounds every value through float16, as a float16 model stores it.</summary>
    public static void RoundToHalf(Span<float> data)
    {
        for (var i = 0; i < data.Length; i++) data[i] = (float)(Half)data[i];
    }
}
