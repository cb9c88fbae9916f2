namespace OnnxSteer.Runtime.Generation;

/// <summary>Picks the next token from a row of logits: argmax, or a seeded sample after temperature, top-k and
/// top-p. Scratch buffers are allocated once per generation so a step allocates nothing.</summary>
internal sealed class Sampler
{
    private readonly GeneratorOptions _options;
    private readonly Random? _random;
    private readonly float[] _probs;
    private readonly int[] _indices;

    public Sampler(GeneratorOptions options, int vocab)
    {
        _options = options;
        if (options.Temperature > 0)
        {
            _random = new Random(options.Seed);
            _probs = new float[vocab];
            _indices = new int[vocab];
        }
        else
        {
            _probs = [];
            _indices = [];
        }
    }

    public int Next(ReadOnlySpan<float> logits)
    {
        if (_random is null) return ArgMax(logits);
        int n = logits.Length;
        float max = float.NegativeInfinity;
        foreach (var l in logits) if (l > max) max = l;
        float invT = 1f / _options.Temperature;
        for (int i = 0; i < n; i++) { _probs[i] = -(logits[i] - max) * invT; _indices[i] = i; }
        // Sorting ascending by the negated scaled logit puts the most likely first. Array.Sort is not stable but is
        // deterministic, so the same logits and seed always give the same token.
        int keep = n;
        if (_options.TopK > 0 && _options.TopK < n) keep = _options.TopK;
        Array.Sort(_probs, _indices, 0, n);
        double sum = 0;
        for (int i = 0; i < keep; i++) { _probs[i] = MathF.Exp(-_probs[i]); sum += _probs[i]; }
        if (_options.TopP < 1f)
        {
            double cumulative = 0;
            for (int i = 0; i < keep; i++)
            {
                cumulative += _probs[i] / sum;
                if (cumulative >= _options.TopP) { keep = i + 1; break; }
            }
            sum = 0;
            for (int i = 0; i < keep; i++) sum += _probs[i];
        }
        double r = _random.NextDouble() * sum;
        for (int i = 0; i < keep; i++)
        {
            r -= _probs[i];
            if (r <= 0) return _indices[i];
        }
        return _indices[keep - 1];
    }

    /// <summary>Index of the largest logit (the first on ties, as torch.argmax does).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        int best = 0;
        float max = logits[0];
        for (int i = 1; i < logits.Length; i++)
            if (logits[i] > max) { max = logits[i]; best = i; }
        return best;
    }
}
