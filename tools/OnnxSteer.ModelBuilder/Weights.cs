namespace OnnxSteer.ModelBuilder;

/// <summary>A float32 tensor in row-major order.</summary>
/// <param name="Shape">Dimensions.</param>
/// <param name="Data">Values, row-major.</param>
public sealed record FloatTensor(int[] Shape, float[] Data)
{
    /// <summary>Element count implied by <see cref="Shape"/>.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>Supplies decoder weights by their Hugging Face Llama names, in Hugging Face shapes
/// (Linear weights are [out, in]; see <see cref="LlamaNames"/>). Builders read each tensor once, when they write it,
/// so a source may generate or load lazily.</summary>
public interface IWeightSource
{
    /// <summary>The tensor called <paramref name="name"/>, with exactly <paramref name="shape"/>.</summary>
    /// <exception cref="OnnxSteerException">Missing tensor or a different shape.</exception>
    FloatTensor Get(string name, int[] shape);
}

/// <summary>Hugging Face Llama tensor names and shapes for a <see cref="DecoderSpec"/>.</summary>
public static class LlamaNames
{
    /// <summary><c>model.embed_tokens.weight</c> [vocab, hidden].</summary>
    public const string Embed = "model.embed_tokens.weight";
    /// <summary><c>model.norm.weight</c> [hidden].</summary>
    public const string FinalNorm = "model.norm.weight";
    /// <summary><c>lm_head.weight</c> [vocab, hidden].</summary>
    public const string LmHead = "lm_head.weight";

    /// <summary><c>model.layers.{i}.input_layernorm.weight</c>.</summary>
    public static string InputNorm(int i) => $"model.layers.{i}.input_layernorm.weight";
    /// <summary><c>model.layers.{i}.post_attention_layernorm.weight</c>.</summary>
    public static string PostAttentionNorm(int i) => $"model.layers.{i}.post_attention_layernorm.weight";
    /// <summary><c>model.layers.{i}.self_attn.{p}_proj.weight</c>, p in q,k,v,o.</summary>
    public static string Attn(int i, char p) => $"model.layers.{i}.self_attn.{p}_proj.weight";
    /// <summary><c>model.layers.{i}.mlp.{p}_proj.weight</c>, p in gate, up, down.</summary>
    public static string Mlp(int i, string p) => $"model.layers.{i}.mlp.{p}_proj.weight";

    /// <summary>Every tensor name the decoder needs with its Hugging Face shape, in writing order.</summary>
    public static IEnumerable<(string Name, int[] Shape)> All(DecoderSpec s)
    {
        yield return (Embed, [s.Vocab, s.Hidden]);
        for (var i = 0; i < s.Layers; i++)
        {
            yield return (InputNorm(i), [s.Hidden]);
            yield return (Attn(i, 'q'), [s.QWidth, s.Hidden]);
            yield return (Attn(i, 'k'), [s.KvWidth, s.Hidden]);
            yield return (Attn(i, 'v'), [s.KvWidth, s.Hidden]);
            yield return (Attn(i, 'o'), [s.Hidden, s.QWidth]);
            yield return (PostAttentionNorm(i), [s.Hidden]);
            yield return (Mlp(i, "gate"), [s.Intermediate, s.Hidden]);
            yield return (Mlp(i, "up"), [s.Intermediate, s.Hidden]);
            yield return (Mlp(i, "down"), [s.Hidden, s.Intermediate]);
        }
        yield return (FinalNorm, [s.Hidden]);
        yield return (LmHead, [s.Vocab, s.Hidden]);
    }

    /// <summary>Transposes a row-major [rows, cols] matrix (a PyTorch Linear [out, in] into a MatMul [in, out]).</summary>
    public static float[] Transpose(float[] m, int rows, int cols)
    {
        var t = new float[m.Length];
        for (var r = 0; r < rows; r++)
            for (var c = 0; c < cols; c++)
                t[(long)c * rows + r] = m[(long)r * cols + c];
        return t;
    }
}

/// <summary>Deterministic random weights, generated per tensor from (seed, name) so that every layout and the
/// reference forward see the same numbers in any reading order. Scaled so activations stay of order one:
/// embeddings ~N(0,1), Linear weights ~N(0, 1/in), norm gains 1 + N(0, 0.1^2).</summary>
public sealed class RandomWeights : IWeightSource
{
    private readonly int _seed;

    /// <summary>Creates a source for <paramref name="seed"/>.</summary>
    public RandomWeights(int seed = 1) => _seed = seed;

    /// <inheritdoc />
    public FloatTensor Get(string name, int[] shape)
    {
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var data = new float[count];
        var rng = new Random(unchecked(_seed * 486187739 + StableHash(name)));
        if (name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith("layernorm.weight", StringComparison.Ordinal))
        {
            for (long i = 0; i < count; i++) data[i] = 1f + 0.1f * Gaussian(rng);
        }
        else
        {
            var std = name == LlamaNames.Embed ? 1.0 : 1.0 / Math.Sqrt(shape[^1]);
            for (long i = 0; i < count; i++) data[i] = (float)(std * Gaussian(rng));
        }
        return new FloatTensor(shape, data);
    }

    private static float Gaussian(Random rng)
    {
        // Box-Muller; 1 - NextDouble() keeps the logarithm finite.
        var u1 = 1.0 - rng.NextDouble();
        var u2 = rng.NextDouble();
        return (float)(Math.Sqrt(-2.0 * Math.Log(u1)) * Math.Cos(2.0 * Math.PI * u2));
    }

    private static int StableHash(string s)
    {
        unchecked
        {
            var h = (int)2166136261;
            foreach (var c in s) h = (h ^ c) * 16777619;
            return h;
        }
    }
}

/// <summary>Caches another source's tensors in memory (for the reference forward, which reads them repeatedly).</summary>
public sealed class CachedWeights : IWeightSource
{
    private readonly IWeightSource _inner;
    private readonly Dictionary<string, FloatTensor> _cache = new(StringComparer.Ordinal);

    /// <summary>Wraps <paramref name="inner"/>.</summary>
    public CachedWeights(IWeightSource inner) => _inner = inner;

    /// <inheritdoc />
    public FloatTensor Get(string name, int[] shape)
    {
        if (!_cache.TryGetValue(name, out var t)) _cache[name] = t = _inner.Get(name, shape);
        return t;
    }
}
