namespace OnnxSteer.Runtime.Generation;

/// <summary>Picks the next token from a row of logits: argmax, or a seeded sample after temperature, top-k and
/// top-p. Scratch buffers are allocated once per generation so a step allocates nothing.</summary>
internal sealed class Sampler
{
    private readonly GeneratorOptions _options;
    private readonly Random? _random;
    private readonly float[] _keys;
    private readonly int[] _indices;

    public Sampler(GeneratorOptions options, int vocab)
    {
        _options = options;
        if (options.Temperature > 0)
        {
            _random = new Random(options.Seed);
            _keys = new float[vocab];
            _indices = new int[vocab];
        }
        else
        {
            _keys = [];
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

        // Plain temperature sampling needs no ordering.
        if (_options.TopK == 0 && _options.TopP >= 1f)
        {
            double total = 0;
            for (int i = 0; i < n; i++) { _keys[i] = MathF.Exp((logits[i] - max) * invT); total += _keys[i]; }
            double r = _random.NextDouble() * total;
            for (int i = 0; i < n; i++) { r -= _keys[i]; if (r <= 0) return i; }
            return n - 1;
        }

        int keep;
        if (_options.TopK > 0 && _options.TopK < n)
        {
            // Keep the k largest in a small sorted prefix (descending); O(vocab·log k) with binary insertion.
            keep = _options.TopK;
            int count = 0;
            for (int i = 0; i < n; i++)
            {
                float v = logits[i];
                if (count == keep && v <= _keys[keep - 1]) continue;
                int lo = 0, hi = count;
                while (lo < hi) { int mid = (lo + hi) >> 1; if (_keys[mid] >= v) lo = mid + 1; else hi = mid; }
                int end = Math.Min(count, keep - 1);
                for (int j = end; j > lo; j--) { _keys[j] = _keys[j - 1]; _indices[j] = _indices[j - 1]; }
                _keys[lo] = v; _indices[lo] = i;
                if (count < keep) count++;
            }
            for (int i = 0; i < keep; i++) _keys[i] = MathF.Exp((_keys[i] - max) * invT);
        }
        else
        {
            // Sorting ascending by the negated logit puts the most likely first. Array.Sort is not stable but is
            // deterministic, so the same logits and seed always give the same token.
            keep = n;
            for (int i = 0; i < n; i++) { _keys[i] = -logits[i]; _indices[i] = i; }
            Array.Sort(_keys, _indices, 0, n);
            for (int i = 0; i < n; i++) _keys[i] = MathF.Exp((-_keys[i] - max) * invT);
        }

        double sum = 0;
        for (int i = 0; i < keep; i++) sum += _keys[i];
        if (_options.TopP < 1f)
        {
            double cumulative = 0;
            for (int i = 0; i < keep; i++)
            {
                cumulative += _keys[i] / sum;
                if (cumulative >= _options.TopP) { keep = i + 1; break; }
            }
            sum = 0;
            for (int i = 0; i < keep; i++) sum += _keys[i];
        }
        double pick = _random.NextDouble() * sum;
        for (int i = 0; i < keep; i++)
        {
            pick -= _keys[i];
            if (pick <= 0) return _indices[i];
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
