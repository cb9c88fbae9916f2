using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxSteer.ModelBuilder;

/// <summary>Runs a decoder written by this tool (any layout) in ONNX Runtime with a KV cache, for tests and for the
/// export check. Simple rather than fast: ids and masks are managed arrays; the cache stays in ORT values.
/// Feeds position_ids (cumsum(mask) - 1, padding at 1) when the graph has them and use_cache_branch when merged.</summary>
internal sealed class DecoderRunner : IDisposable
{
    private readonly InferenceSession _session;
    private readonly string[] _outputNames;
    private IDisposableReadOnlyCollection<OrtValue>? _last;
    private int _pastLength;

    private DecoderRunner(InferenceSession session)
    {
        _session = session;
        var inputs = session.InputMetadata;
        HasPositionIds = inputs.ContainsKey("position_ids");
        HasUseCacheBranch = inputs.ContainsKey("use_cache_branch");
        // ONNX Runtime's fused GPT-2 keeps one past_{i} [2, batch, heads, past, head] per layer instead of key and value.
        CombinedCache = inputs.ContainsKey("past_0");
        Layers = CombinedCache ? inputs.Keys.Count(k => k.StartsWith("past_", StringComparison.Ordinal))
            : inputs.Keys.Count(k => k.StartsWith("past_key_values.", StringComparison.Ordinal) && k.EndsWith(".key", StringComparison.Ordinal));
        var past = inputs[CombinedCache ? "past_0" : "past_key_values.0.key"];
        ElementType = past.ElementDataType;
        KvHeads = past.Dimensions[CombinedCache ? 2 : 1];
        HeadDim = past.Dimensions[CombinedCache ? 4 : 3];
        _outputNames = CombinedCache ? ["logits", .. Enumerable.Range(0, Layers).Select(i => $"present_{i}")]
            : ["logits", .. Enumerable.Range(0, Layers).SelectMany(i => new[] { $"present.{i}.key", $"present.{i}.value" })];
    }

    /// <summary>Opens a model given as bytes (a graph rewritten in memory) with <paramref name="options"/>, which must name
    /// the folder of its external weights (<c>session.model_external_initializers_file_folder_path</c>).</summary>
    public static DecoderRunner Load(byte[] model, SessionOptions options)
    {
        var session = new InferenceSession(model, options);
        try { return new DecoderRunner(session); }
        catch { session.Dispose(); throw; }
    }

    /// <summary>Opens <paramref name="modelPath"/> on the CPU (or with <paramref name="options"/>).</summary>
    public static DecoderRunner Load(string modelPath, SessionOptions? options = null)
    {
        var session = options is null ? new InferenceSession(modelPath) : new InferenceSession(modelPath, options);
        try { return new DecoderRunner(session); }
        catch { session.Dispose(); throw; }
    }

    /// <summary>The underlying session.</summary>
    public InferenceSession Session => _session;
    /// <summary>Whether the graph has a position_ids input.</summary>
    public bool HasPositionIds { get; }
    /// <summary>Whether the graph is an Optimum merged decoder.</summary>
    public bool HasUseCacheBranch { get; }
    /// <summary>Whether the cache is one <c>past_{i}</c> per layer (ONNX Runtime's fused GPT-2).</summary>
    public bool CombinedCache { get; }
    /// <summary>Decoder blocks (from the past inputs).</summary>
    public int Layers { get; }
    /// <summary>KV heads.</summary>
    public int KvHeads { get; }
    /// <summary>Head width.</summary>
    public int HeadDim { get; }
    /// <summary>Float or Float16.</summary>
    public TensorElementType ElementType { get; }
    /// <summary>Tokens already in the cache.</summary>
    public int PastLength => _pastLength;

    /// <summary>Drops the cache.</summary>
    public void Reset()
    {
        _last?.Dispose();
        _last = null;
        _pastLength = 0;
    }

    /// <summary>Full no-cache run of <paramref name="ids"/> (rows of equal length) with <paramref name="mask"/>;
    /// returns logits [batch][position][vocab]. Leaves the cache holding the sequence.</summary>
    public float[][][] Forward(long[][] ids, long[][]? mask = null)
    {
        Reset();
        return Step(ids, mask ?? ids.Select(r => Enumerable.Repeat(1L, r.Length).ToArray()).ToArray());
    }

    /// <summary>Feeds <paramref name="ids"/> [batch][new tokens] after the cached tokens; <paramref name="mask"/> covers
    /// past and new tokens [batch][past + new]. Returns logits [batch][new position][vocab].</summary>
    public float[][][] Step(long[][] ids, long[][] mask)
    {
        var batch = ids.Length;
        var seq = ids[0].Length;
        var total = mask[0].Length;
        if (total != _pastLength + seq)
            throw new ArgumentException($"mask covers {total} tokens; expected past {_pastLength} + new {seq}");
        var names = new List<string>();
        var values = new List<OrtValue>();
        var owned = new List<OrtValue>();
        try
        {
            void Add(string name, OrtValue v, bool own = true) { names.Add(name); values.Add(v); if (own) owned.Add(v); }
            Add("input_ids", OrtValue.CreateTensorValueFromMemory(ids.SelectMany(r => r).ToArray(), [batch, seq]));
            Add("attention_mask", OrtValue.CreateTensorValueFromMemory(mask.SelectMany(r => r).ToArray(), [batch, total]));
            if (HasPositionIds)
            {
                var pos = new long[batch * seq];
                for (var b = 0; b < batch; b++)
                {
                    long c = 0;
                    for (var t = 0; t < total; t++)
                    {
                        c += mask[b][t];
                        if (t >= _pastLength) pos[b * seq + t - _pastLength] = mask[b][t] == 0 ? 1 : c - 1;
                    }
                }
                Add("position_ids", OrtValue.CreateTensorValueFromMemory(pos, [batch, seq]));
            }
            if (HasUseCacheBranch) Add("use_cache_branch", OrtValue.CreateTensorValueFromMemory(new[] { _pastLength > 0 }, [1]));
            for (var i = 0; i < Layers && CombinedCache; i++)
            {
                if (_last is null)
                    Add($"past_{i}", OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, ElementType, [2, batch, KvHeads, 0, HeadDim]));
                else
                    Add($"past_{i}", _last[1 + i], own: false);
            }
            for (var i = 0; i < Layers && !CombinedCache; i++)
            {
                foreach (var (kind, index) in new[] { ("key", 1 + 2 * i), ("value", 2 + 2 * i) })
                {
                    if (_last is null)
                        Add($"past_key_values.{i}.{kind}", OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, ElementType, [batch, KvHeads, 0, HeadDim]));
                    else
                        Add($"past_key_values.{i}.{kind}", _last[index], own: false);
                }
            }
            using var runOptions = new RunOptions();
            var outputs = _session.Run(runOptions, names, values, _outputNames);
            var logits = ReadFloats(outputs[0]);
            var vocab = logits.Length / (batch * seq);
            _last?.Dispose();
            _last = outputs;
            _pastLength = total;
            var result = new float[batch][][];
            for (var b = 0; b < batch; b++)
            {
                result[b] = new float[seq][];
                for (var t = 0; t < seq; t++) result[b][t] = logits.AsSpan((b * seq + t) * vocab, vocab).ToArray();
            }
            return result;
        }
        finally
        {
            foreach (var v in owned) v.Dispose();
        }
    }

    /// <summary>Reads a float or float16 tensor as float32.</summary>
    public static float[] ReadFloats(OrtValue value)
    {
        var type = value.GetTensorTypeAndShape().ElementDataType;
        if (type == TensorElementType.Float) return value.GetTensorDataAsSpan<float>().ToArray();
        if (type == TensorElementType.Float16)
        {
            var span = value.GetTensorDataAsSpan<Float16>();
            var r = new float[span.Length];
            for (var i = 0; i < r.Length; i++) r[i] = (float)BitConverter.UInt16BitsToHalf(span[i].value);
            return r;
        }
        throw new ArgumentException($"not a float tensor: {type}");
    }

    /// <summary>Disposes the cache and the session.</summary>
    public void Dispose()
    {
        Reset();
        _session.Dispose();
    }
}
