using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Contract;
using OnnxSteer.Modeling;

namespace OnnxSteer.Runtime;

/// <summary>The steering of one layer of one row, summed: x' = x + Add + (Target − x·Direction)·Direction.</summary>
internal sealed class ResolvedLayer(int hidden)
{
    public readonly float[] Add = new float[hidden];
    public readonly float[] Direction = new float[hidden];
    public float Target;

    public bool ValueEquals(ResolvedLayer? other) =>
        other is not null && Target == other.Target && Add.AsSpan().SequenceEqual(other.Add) && Direction.AsSpan().SequenceEqual(other.Direction);
}

/// <summary>Which run of a generation a steering feed is for: the prompt (whole, or the positions before the steered
/// header positions), one header position of the prompt (counted from the end, 1 = the last token), or decode.</summary>
internal readonly record struct SteeringPhase(bool IsDecode, int? PromptPosition)
{
    /// <summary>The prompt, or the part of it before the header positions.</summary>
    public static SteeringPhase Prompt => new(false, null);
    /// <summary>The generated tokens.</summary>
    public static SteeringPhase Decode => new(true, null);
    /// <summary>The prompt position <paramref name="fromEnd"/> tokens from the end, run on its own.</summary>
    public static SteeringPhase AtPromptPosition(int fromEnd) => new(false, fromEnd);
}

/// <summary>Turns per-row <see cref="Steering"/>s into the steering input tensors of one run (prefill or decode).
/// Owns the OrtValues it creates; they stay valid until <see cref="Dispose"/>.</summary>
internal sealed class SteeringFeed : IDisposable
{
    private readonly List<OrtValue> _owned = [];

    public List<(string Name, OrtValue Value)> Inputs { get; } = [];

    /// <summary>Checks every term against the model: patched, layer steered, vector length = hidden size.</summary>
    public static void Validate(Steering steering, DecoderSignature signature, int? hiddenSize, string modelPath, int? numLayers = null)
    {
        if (steering.IsEmpty) return;
        if (signature.SteeringInputs.Count == 0)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{modelPath} takes no steering inputs (no steering.json with steered layers); patch it first: onnxsteer patch <model> -o <out>");
        if (steering.HeaderLength > 0 && steering.Positions == SteeringPositions.Generated)
            throw new OnnxSteerException(ErrorKind.Usage,
                "terms scoped to a prompt position (header steering) steer the prompt; they cannot be combined with positions 'generated'");
        if (steering.HeaderLength > 0 && signature.Layout == CacheLayout.None)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{modelPath} has no KV cache; steering single prompt positions (header steering) runs the prompt in pieces, which needs one");
        foreach (var term in steering.Terms)
        {
            if (numLayers is int n && term.Layer >= n)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"'{term.Name}' asks for layer {term.Layer}; the model has {n} layers (0-{n - 1}), steered: {LayerSelection.Format(signature.SteeringInputs.Keys)}");
            if (!signature.SteeringInputs.TryGetValue(term.Layer, out var names))
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"'{term.Name}' asks for layer {term.Layer}, which this model does not steer; steered layers: {LayerSelection.Format(signature.SteeringInputs.Keys)}");
            if (term.Mode != SteeringMode.Add && names.Direction is null)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, AdditiveOnlyRefusal(term.Name, term.Mode, term.Layer, modelPath));
            if (hiddenSize is int h && term.Vector.Direction.Length != h)
                throw new OnnxSteerException(ErrorKind.InvalidVector,
                    $"'{term.Name}' at layer {term.Layer} has {term.Vector.Direction.Length} values; the model's hidden size is {h}");
        }
    }

    /// <summary>The refusal of a projection or ablation on a model patched for additive steering only (shared with the
    /// GenAI engine; library errors name options, not CLI flags).</summary>
    internal static string AdditiveOnlyRefusal(string name, SteeringMode mode, int layer, string model) =>
        $"'{name}' asks for {mode.ToString().ToLowerInvariant()} at layer {layer}, but {model} was patched for additive steering only " +
        "(steering.json additive_only: no direction or target inputs); patch the original without AdditiveOnly for projection and ablation";

    /// <summary>Sums a row's terms per layer, for the terms active in <paramref name="phase"/>: terms without a prompt
    /// position by <see cref="Steering.Positions"/>, terms scoped to a prompt position only in that position's run.</summary>
    public static Dictionary<int, ResolvedLayer> Resolve(Steering steering, SteeringPhase phase, int hidden)
    {
        var result = new Dictionary<int, ResolvedLayer>();
        bool unscoped = steering.Positions switch
        {
            SteeringPositions.All => true,
            SteeringPositions.Prompt => !phase.IsDecode,
            _ => phase.IsDecode,
        };
        foreach (var term in steering.Terms)
        {
            if (term.PromptPosition is int k ? k != phase.PromptPosition : !unscoped) continue;
            if (!result.TryGetValue(term.Layer, out var layer)) result[term.Layer] = layer = new ResolvedLayer(hidden);
            // Directions are meant to be unit; normalise anyway so a slightly off file cannot scale the projection.
            var u = term.Vector.Direction;
            double norm = 0;
            foreach (var v in u) norm += (double)v * v;
            norm = Math.Sqrt(norm);
            if (!(norm > 0)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{term.Name}' at layer {term.Layer} is a zero vector");
            if (term.Mode == SteeringMode.Add)
                for (int i = 0; i < hidden; i++) layer.Add[i] += (float)(term.Weight * u[i] / norm);
            else
            {
                for (int i = 0; i < hidden; i++) layer.Direction[i] = (float)(u[i] / norm);
                layer.Target = term.Mode == SteeringMode.Ablate ? 0 : term.Target;
            }
        }
        return result;
    }

    /// <summary>Builds the feed for one phase. Layers no row steers are left out (their graph defaults are zero),
    /// unless the model requires every steering input. steer_batch is 1 when all rows steer alike, else the batch.</summary>
    public static SteeringFeed Create(IReadOnlyList<Dictionary<int, ResolvedLayer>> rows, DecoderSignature signature, int hidden)
    {
        var feed = new SteeringFeed();
        try
        {
            foreach (var (layer, names) in signature.SteeringInputs.OrderBy(kv => kv.Key))
            {
                bool any = rows.Any(r => r.ContainsKey(layer));
                if (!any && !signature.SteeringRequired) continue;
                var perRow = rows.Select(r => r.GetValueOrDefault(layer)).ToArray();
                bool same = perRow.All(r => r is null) || perRow.All(r => r is not null && r.ValueEquals(perRow[0]));
                int sb = same ? 1 : rows.Count;
                var add = new float[sb * hidden];
                var dir = new float[sb * hidden];
                var target = new float[sb];
                for (int b = 0; b < sb; b++)
                {
                    if (perRow[b] is not ResolvedLayer r) continue;
                    r.Add.CopyTo(add, b * hidden);
                    r.Direction.CopyTo(dir, b * hidden);
                    target[b] = r.Target;
                }
                feed.Add(names.Add, add, [sb, 1, hidden], names.Type);
                // A model patched for additive steering only has no direction or target inputs (Validate refused any
                // projection, so these hold zeros).
                if (names.Direction is { } d) feed.Add(d, dir, [sb, 1, hidden], names.Type);
                if (names.Target is { } t) feed.Add(t, target, [sb, 1, 1], names.Type);
            }
            return feed;
        }
        catch
        {
            feed.Dispose();
            throw;
        }
    }

    private void Add(string name, float[] values, long[] shape, TensorElementType type)
    {
        var value = TensorConvert.FromFloats(values, shape, type);
        _owned.Add(value);
        Inputs.Add((name, value));
    }

    public void Dispose()
    {
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
        Inputs.Clear();
    }
}

/// <summary>Conversions between float32 data and the model's tensor dtypes.</summary>
internal static class TensorConvert
{
    public static OrtValue FromFloats(float[] values, long[] shape, TensorElementType type)
    {
        switch (type)
        {
            case TensorElementType.Float:
                return OrtValue.CreateTensorValueFromMemory(values, shape);
            case TensorElementType.Float16:
            {
                var half = new Float16[values.Length];
                for (int i = 0; i < values.Length; i++) half[i] = new Float16(BitConverter.HalfToUInt16Bits((Half)values[i]));
                return OrtValue.CreateTensorValueFromMemory(half, shape);
            }
            case TensorElementType.BFloat16:
            {
                var bf = new BFloat16[values.Length];
                for (int i = 0; i < values.Length; i++)
                {
                    // Round to nearest even on the upper 16 bits of the float32 pattern.
                    uint bits = BitConverter.SingleToUInt32Bits(values[i]);
                    bits += 0x7FFF + ((bits >> 16) & 1);
                    bf[i] = new BFloat16((ushort)(bits >> 16));
                }
                return OrtValue.CreateTensorValueFromMemory(bf, shape);
            }
            default:
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"steering inputs of type {type} are not supported (float32, float16, bfloat16)");
        }
    }

    /// <summary>Copies a row of logits into a float32 buffer (or reads them in place when already float32).</summary>
    public static ReadOnlySpan<float> Row(OrtValue logits, TensorElementType type, long offset, int vocab, float[] scratch) => type switch
    {
        TensorElementType.Float => logits.GetTensorDataAsSpan<float>().Slice(checked((int)offset), vocab),
        TensorElementType.Float16 => ToFloat(logits.GetTensorDataAsSpan<Float16>().Slice(checked((int)offset), vocab), scratch),
        TensorElementType.BFloat16 => ToFloat(logits.GetTensorDataAsSpan<BFloat16>().Slice(checked((int)offset), vocab), scratch),
        _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"logits of type {type} are not supported"),
    };

    /// <summary>Widens half-precision values into <paramref name="scratch"/> and returns that part of it.</summary>
    public static ReadOnlySpan<float> ToFloat(ReadOnlySpan<Float16> src, float[] scratch)
    {
        for (int i = 0; i < src.Length; i++) scratch[i] = (float)BitConverter.UInt16BitsToHalf(src[i].value);
        return scratch.AsSpan(0, src.Length);
    }

    /// <summary>Widens bfloat16 values (the upper half of a float32) into <paramref name="scratch"/> and returns that part of it.</summary>
    public static ReadOnlySpan<float> ToFloat(ReadOnlySpan<BFloat16> src, float[] scratch)
    {
        for (int i = 0; i < src.Length; i++) scratch[i] = BitConverter.UInt32BitsToSingle((uint)src[i].value << 16);
        return scratch.AsSpan(0, src.Length);
    }
}
