using OnnxSteer.ModelBuilder;

namespace OnnxSteer.Tests.ModelBuilder;

/// <summary>Numeric checks shared by the layout tests: cache consistency, padding, agreement with the C# reference.</summary>
internal static class LayoutChecks
{
    public static long[] Tokens(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, count).Select(_ => (long)rng.Next(3, vocab)).ToArray();
    }

    public static double MaxAbsDiff(float[] a, float[] b)
    {
        Assert.Equal(a.Length, b.Length);
        double m = 0;
        for (var i = 0; i < a.Length; i++)
        {
            Assert.False(float.IsNaN(a[i]) || float.IsNaN(b[i]), $"NaN at {i}");
            m = Math.Max(m, Math.Abs(a[i] - b[i]));
        }
        return m;
    }

    /// <summary>Prefill <paramref name="prefill"/> tokens, then single-token steps; every step's logits must equal the
    /// full no-cache run's logits at that position.</summary>
    public static void CacheMatchesFullRun(string modelPath, DecoderSpec spec, double tol, int prefill = 5, int steps = 3)
    {
        var ids = Tokens(prefill + steps, spec.Vocab, 11);
        using var runner = DecoderRunner.Load(modelPath);
        var full = runner.Forward([ids])[0];
        Assert.Equal(prefill + steps, full.Length);
        Assert.Equal(spec.Vocab, full[0].Length);

        runner.Reset();
        var pre = runner.Step([ids[..prefill]], [Enumerable.Repeat(1L, prefill).ToArray()])[0];
        Assert.True(MaxAbsDiff(full[prefill - 1], pre[prefill - 1]) <= tol);
        for (var t = prefill; t < prefill + steps; t++)
        {
            var step = runner.Step([[ids[t]]], [Enumerable.Repeat(1L, t + 1).ToArray()])[0];
            var d = MaxAbsDiff(full[t], step[0]);
            Assert.True(d <= tol, $"decode step at position {t}: max |diff| {d} > {tol}");
        }
    }

    /// <summary>A batch of two rows, the shorter left-padded, must give each row's logits as when run alone,
    /// in prefill and in the following decode steps.</summary>
    public static void LeftPaddedBatchMatchesRows(string modelPath, DecoderSpec spec, double tol, int steps = 2)
    {
        var a = Tokens(6, spec.Vocab, 21);
        var b = Tokens(3, spec.Vocab, 22);
        using var runner = DecoderRunner.Load(modelPath);
        var aloneA = runner.Forward([[.. a, .. Tokens(steps, spec.Vocab, 23)]])[0];
        var aloneB = runner.Forward([[.. b, .. Tokens(steps, spec.Vocab, 24)]])[0];

        runner.Reset();
        long[] padB = [0, 0, 0, .. b];
        long[][] mask = [[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]];
        var batch = runner.Step([a, padB], mask);
        Assert.True(MaxAbsDiff(aloneA[5], batch[0][5]) <= tol, "row 0 prefill");
        Assert.True(MaxAbsDiff(aloneB[2], batch[1][5]) <= tol, "row 1 (left-padded) prefill");
        var nextA = Tokens(steps, spec.Vocab, 23);
        var nextB = Tokens(steps, spec.Vocab, 24);
        for (var k = 0; k < steps; k++)
        {
            mask = [[.. mask[0], 1], [.. mask[1], 1]];
            var step = runner.Step([[nextA[k]], [nextB[k]]], mask);
            Assert.True(MaxAbsDiff(aloneA[6 + k], step[0][0]) <= tol, $"row 0 decode {k}");
            var dB = MaxAbsDiff(aloneB[3 + k], step[1][0]);
            Assert.True(dB <= tol, $"row 1 (left-padded) decode {k}: {dB}");
        }
    }

    /// <summary>Random weights must give logits with real spread, or every comparison passes trivially.</summary>
    public static void AssertNotDegenerate(float[] logits)
    {
        var mean = logits.Average();
        var std = Math.Sqrt(logits.Average(v => (v - mean) * (v - mean)));
        Assert.InRange(std, 0.3, 100);
    }

    /// <summary>The ONNX model's logits at every position equal the plain C# reference forward's.</summary>
    public static void MatchesReference(string modelPath, DecoderSpec spec, IWeightSource weights, double tol, int length = 7)
    {
        var ids = Tokens(length, spec.Vocab, 31);
        using var runner = DecoderRunner.Load(modelPath);
        var onnx = runner.Forward([ids])[0];
        var reference = new ReferenceDecoder(spec, weights).Forward(ids);
        AssertNotDegenerate(reference[^1]);
        for (var t = 0; t < length; t++)
        {
            var d = MaxAbsDiff(reference[t], onnx[t]);
            Assert.True(d <= tol, $"position {t}: max |onnx - reference| {d} > {tol}");
        }
    }
}
