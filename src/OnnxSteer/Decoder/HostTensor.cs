using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Onnx;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxSteer.Decoder;

/// <summary>A tensor held in managed memory as raw little-endian bytes: what verification feeds and compares.
/// Not for the generation loop (which keeps OrtValues); here simplicity and bit-exact comparison matter.</summary>
internal sealed record HostTensor(TensorElementType ElementType, long[] Shape, byte[] Data)
{
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);

    public static int ElementSize(TensorElementType t) => t switch
    {
        TensorElementType.Float or TensorElementType.Int32 or TensorElementType.UInt32 => 4,
        TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Int16 or TensorElementType.UInt16 => 2,
        TensorElementType.Int64 or TensorElementType.Double or TensorElementType.UInt64 => 8,
        TensorElementType.Bool or TensorElementType.Int8 or TensorElementType.UInt8 => 1,
        _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"tensors of type {t} are not supported here."),
    };

    public static bool IsFloat(TensorElementType t) => t is TensorElementType.Float or TensorElementType.Float16 or TensorElementType.BFloat16 or TensorElementType.Double;

    /// <summary>Unit roundoff of a float type (half the distance from 1 to the next value).</summary>
    public static double Epsilon(TensorElementType t) => t switch
    {
        TensorElementType.Float16 => Math.Pow(2, -11),
        TensorElementType.BFloat16 => Math.Pow(2, -8),
        TensorElementType.Double => Math.Pow(2, -53),
        _ => Math.Pow(2, -24),
    };

    public static HostTensor Zeros(TensorElementType t, long[] shape) => new(t, shape, new byte[shape.Aggregate(1L, (a, b) => a * b) * ElementSize(t)]);

    public static HostTensor Int64(long[] shape, Func<long, long> value)
    {
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var data = new byte[count * 8];
        for (var i = 0; i < count; i++) BitConverter.TryWriteBytes(data.AsSpan(i * 8), value(i));
        return new HostTensor(TensorElementType.Int64, shape, data);
    }

    public static HostTensor Integer(TensorElementType t, long[] shape, Func<long, long> value)
    {
        if (t == TensorElementType.Int64) return Int64(shape, value);
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var size = ElementSize(t);
        var data = new byte[count * size];
        for (var i = 0; i < count; i++)
        {
            var v = value(i);
            switch (t)
            {
                case TensorElementType.Int32: BitConverter.TryWriteBytes(data.AsSpan(i * 4), (int)v); break;
                case TensorElementType.Bool: data[i] = (byte)(v != 0 ? 1 : 0); break;
                default: throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot generate integer input of type {t}.");
            }
        }
        return new HostTensor(t, shape, data);
    }

    /// <summary>Element values as doubles (exact for every supported float type).</summary>
    public double[] ToDoubles()
    {
        var n = (int)Count;
        var result = new double[n];
        for (var i = 0; i < n; i++)
            result[i] = ElementType switch
            {
                TensorElementType.Float => BitConverter.ToSingle(Data, i * 4),
                TensorElementType.Float16 => (double)BitConverter.UInt16BitsToHalf(BitConverter.ToUInt16(Data, i * 2)),
                TensorElementType.BFloat16 => BitConverter.Int32BitsToSingle(BitConverter.ToUInt16(Data, i * 2) << 16),
                TensorElementType.Double => BitConverter.ToDouble(Data, i * 8),
                TensorElementType.Int64 => BitConverter.ToInt64(Data, i * 8),
                TensorElementType.Int32 => BitConverter.ToInt32(Data, i * 4),
                _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot read {ElementType} values."),
            };
        return result;
    }

    /// <summary>Rounds <paramref name="values"/> to <paramref name="t"/> (round to nearest even).</summary>
    public static HostTensor FromDoubles(TensorElementType t, long[] shape, IReadOnlyList<double> values)
    {
        var size = ElementSize(t);
        var data = new byte[values.Count * size];
        for (var i = 0; i < values.Count; i++)
        {
            switch (t)
            {
                case TensorElementType.Float: BitConverter.TryWriteBytes(data.AsSpan(i * 4), (float)values[i]); break;
                case TensorElementType.Float16: BitConverter.TryWriteBytes(data.AsSpan(i * 2), BitConverter.HalfToUInt16Bits((Half)values[i])); break;
                case TensorElementType.BFloat16:
                {
                    var bits = BitConverter.SingleToUInt32Bits((float)values[i]);
                    bits += 0x7FFF + ((bits >> 16) & 1); // round to nearest even
                    BitConverter.TryWriteBytes(data.AsSpan(i * 2), (ushort)(bits >> 16));
                    break;
                }
                case TensorElementType.Double: BitConverter.TryWriteBytes(data.AsSpan(i * 8), values[i]); break;
                default: throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot write {t} values.");
            }
        }
        return new HostTensor(t, shape, data);
    }

    public OrtValue ToOrtValue()
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, ElementType, Shape);
        try
        {
            Data.CopyTo(value.GetTensorMutableRawData());
            return value;
        }
        catch
        {
            value.Dispose();
            throw;
        }
    }

    public static HostTensor FromOrtValue(OrtValue value)
    {
        var info = value.GetTensorTypeAndShape();
        return new HostTensor(info.ElementDataType, info.Shape, value.GetTensorMutableRawData().ToArray());
    }
}

/// <summary>An ONNX Runtime CPU session for verification, fed and read through <see cref="HostTensor"/>s.</summary>
internal sealed class VerificationSession : IDisposable
{
    private readonly InferenceSession _session;
    private readonly SessionOptions _options;

    private VerificationSession(InferenceSession session, SessionOptions options, string modelFile)
    {
        _session = session;
        _options = options;
        ModelFile = modelFile;
    }

    /// <summary>The .onnx file this session runs.</summary>
    public string ModelFile { get; }

    /// <summary>Opens <paramref name="modelFile"/> on <paramref name="threads"/> CPU threads (one by default, for reproducible
    /// results), with or without graph optimizations.</summary>
    public static VerificationSession Open(string modelFile, bool optimize, int threads = 1)
    {
        var options = new SessionOptions
        {
            GraphOptimizationLevel = optimize ? GraphOptimizationLevel.ORT_ENABLE_ALL : GraphOptimizationLevel.ORT_DISABLE_ALL,
            LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
        };
        try
        {
            SessionThreads.Apply(options, threads);
            return new VerificationSession(new InferenceSession(modelFile, options), options, modelFile);
        }
        catch (OnnxRuntimeException e)
        {
            options.Dispose();
            throw new OnnxSteerException(ErrorKind.VerificationFailed, $"ONNX Runtime cannot load '{modelFile}': {e.Message}");
        }
    }

    public IReadOnlyDictionary<string, NodeMetadata> Inputs => _session.InputMetadata;

    public IReadOnlyDictionary<string, NodeMetadata> Outputs => _session.OutputMetadata;

    /// <summary>Inputs and overridable initializers (optional steering inputs are the latter).</summary>
    public IReadOnlyDictionary<string, NodeMetadata> Feedable
    {
        get
        {
            var all = new Dictionary<string, NodeMetadata>(_session.InputMetadata);
            foreach (var (name, meta) in _session.OverridableInitializerMetadata) all.TryAdd(name, meta);
            return all;
        }
    }

    public Dictionary<string, HostTensor> Run(IReadOnlyDictionary<string, HostTensor> inputs, IReadOnlyCollection<string> outputs)
    {
        var values = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var (name, tensor) in inputs) values[name] = tensor.ToOrtValue();
            using var runOptions = new RunOptions();
            using var results = _session.Run(runOptions, values, outputs);
            var map = new Dictionary<string, HostTensor>();
            var i = 0;
            foreach (var name in outputs) map[name] = HostTensor.FromOrtValue(results.ElementAt(i++));
            return map;
        }
        catch (OnnxRuntimeException e)
        {
            throw new OnnxSteerException(ErrorKind.VerificationFailed, $"ONNX Runtime failed to run the model: {e.Message}");
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }

    public void Dispose()
    {
        _session.Dispose();
        _options.Dispose();
    }
}
