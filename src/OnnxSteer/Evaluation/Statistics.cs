namespace OnnxSteer.Evaluation;

/// <summary>The evaluation's uncertainty: Wilson score intervals for accuracies and McNemar's exact test for paired
/// comparisons (the same prompts steered and unsteered). Test sets here are small (10-40 prompts per instruction), so
/// a normal-approximation interval would leave [0, 1] and say nothing at 0 or 1; Wilson's does not.</summary>
internal static class Statistics
{
    /// <summary>z for a two-sided 95% interval.</summary>
    public const double Z95 = 1.959963984540054;

    /// <summary>The Wilson score interval of <paramref name="successes"/> out of <paramref name="n"/> (default 95%);
    /// [0, 1] when <paramref name="n"/> is 0.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative counts, or more successes than trials.</exception>
    public static (double Low, double High) Wilson(int successes, int n, double z = Z95)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(n);
        ArgumentOutOfRangeException.ThrowIfNegative(successes);
        ArgumentOutOfRangeException.ThrowIfGreaterThan(successes, n);
        if (n == 0) return (0, 1);
        var p = successes / (double)n;
        var z2 = z * z;
        var denominator = 1 + z2 / n;
        var centre = (p + z2 / (2 * n)) / denominator;
        var half = z * Math.Sqrt(p * (1 - p) / n + z2 / (4.0 * n * n)) / denominator;
        // Clamp the rounding at the ends: 0 of n must give exactly 0 as its lower bound.
        return (Math.Max(0, successes == 0 ? 0 : centre - half), Math.Min(1, successes == n ? 1 : centre + half));
    }

    /// <summary>McNemar's exact (binomial) two-sided p-value for paired outcomes: <paramref name="onlyFirst"/> pairs
    /// passed only in the first condition, <paramref name="onlySecond"/> only in the second; concordant pairs carry
    /// no information. 1 when there are no discordant pairs.</summary>
    /// <exception cref="ArgumentOutOfRangeException">Negative counts.</exception>
    public static double McNemarExact(int onlyFirst, int onlySecond)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(onlyFirst);
        ArgumentOutOfRangeException.ThrowIfNegative(onlySecond);
        var n = onlyFirst + onlySecond;
        if (n == 0) return 1;
        var k = Math.Min(onlyFirst, onlySecond);
        // P(X <= k) for X ~ Binomial(n, 1/2), summed in log space so that large n cannot underflow 0.5^n.
        var logHalfN = -n * Math.Log(2);
        double tail = 0, logChoose = 0;
        for (var i = 0; i <= k; i++)
        {
            if (i > 0) logChoose += Math.Log(n - i + 1) - Math.Log(i);
            tail += Math.Exp(logChoose + logHalfN);
        }
        return Math.Min(1, 2 * tail);
    }

    /// <summary>McNemar's exact p-value for two paired lists of outcomes (same length, same order).</summary>
    /// <exception cref="ArgumentException">The lists differ in length.</exception>
    public static double McNemarExact(IReadOnlyList<bool> first, IReadOnlyList<bool> second)
    {
        if (first.Count != second.Count) throw new ArgumentException($"paired outcomes need equal lengths, not {first.Count} and {second.Count}.");
        int b = 0, c = 0;
        for (var i = 0; i < first.Count; i++)
        {
            if (first[i] && !second[i]) b++;
            else if (!first[i] && second[i]) c++;
        }
        return McNemarExact(b, c);
    }
}
