namespace OnnxSteer.ModelBuilder;

/// <summary>A float32 tensor in row-major order.</summary>
/// <param name="Shape">Dimensions.</param>
/// <param name="Data">Values, row-major.</param>
internal sealed record FloatTensor(int[] Shape, float[] Data)
{
    /// <summary>Element count implied by <see cref="Shape"/>.</summary>
    public long Count => Shape.Aggregate(1L, (a, b) => a * b);
}

/// <summary>Supplies decoder weights by their Hugging Face Llama names, in Hugging Face shapes
/// (Linear weights are [out, in]; see <see cref="LlamaNames"/>). Builders read each tensor once, when they write it,
/// so a source may generate or load lazily.</summary>
internal interface IWeightSource
{
    /// <summary>The tensor called <paramref name="name"/>, with exactly <paramref name="shape"/>.</summary>
    /// <exception cref="OnnxSteerException">Missing tensor or a different shape.</exception>
    FloatTensor Get(string name, int[] shape);
}

/// <summary>Hugging Face Llama tensor names and shapes for a <see cref="DecoderSpec"/>.</summary>
internal static class LlamaNames
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
        const int B = 32; // cache blocking: large matrices (lm_head) transpose several times faster
        for (var r0 = 0; r0 < rows; r0 += B)
            for (var c0 = 0; c0 < cols; c0 += B)
            {
                int r1 = Math.Min(rows, r0 + B), c1 = Math.Min(cols, c0 + B);
                for (var r = r0; r < r1; r++)
                    for (var c = c0; c < c1; c++)
                        t[(long)c * rows + r] = m[(long)r * cols + c];
            }
        return t;
    }
}

/// <summary>Deterministic random weights, generated per tensor from (seed, name) so that every layout and the
/// reference forward see the same numbers in any reading order. Uniform noise scaled so activations stay of order one:
/// embeddings std 1, Linear weights std 1/sqrt(in), norm gains 1 + std 0.1. Fast (SplitMix64), so the ~100M-parameter
/// benchmark model builds in seconds.</summary>
internal sealed class RandomWeights : IWeightSource
{
    private static readonly float Sqrt3 = MathF.Sqrt(3f);
    private readonly int _seed;

    /// <summary>Creates a source for <paramref name="seed"/>.</summary>
    public RandomWeights(int seed = 1) => _seed = seed;

    /// <inheritdoc />
    public FloatTensor Get(string name, int[] shape)
    {
        var count = shape.Aggregate(1L, (a, b) => a * b);
        var data = new float[count];
        var state = unchecked((ulong)_seed * 0x9E3779B97F4A7C15UL ^ StableHash(name));
        float mean, std;
        if (name.EndsWith("norm.weight", StringComparison.Ordinal) || name.EndsWith("layernorm.weight", StringComparison.Ordinal)) (mean, std) = (1f, 0.1f);
        else (mean, std) = (0f, name == LlamaNames.Embed ? 1f : 1f / MathF.Sqrt(shape[^1]));
        // Uniform on [-a, a] has std a/sqrt(3).
        var scale = std * Sqrt3 * 2f / (1 << 24);
        var a = std * Sqrt3;
        for (long i = 0; i < count; i++) data[i] = mean + (NextU24(ref state) * scale - a);
        return new FloatTensor(shape, data);
    }

    private static uint NextU24(ref ulong state)
    {
        unchecked
        {
            var z = state += 0x9E3779B97F4A7C15UL;
            z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
            z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
            return (uint)((z ^ (z >> 31)) >> 40);
        }
    }

    private static ulong StableHash(string s)
    {
        unchecked
        {
            var h = 14695981039346656037UL;
            foreach (var c in s) h = (h ^ c) * 1099511628211UL;
            return h;
        }
    }
}

/// <summary>Caches another source's tensors in memory (for the reference forward, which reads them repeatedly).</summary>
internal sealed class CachedWeights : IWeightSource
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
