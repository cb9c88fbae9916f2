using System.Diagnostics;

namespace OnnxSteer.ModelBuilder;

/// <summary>Result of <see cref="SelfCheck.Run"/>.</summary>
internal sealed record SelfCheckResult(int Prefill, int Steps, double PrefillMs, double DecodeMsPerToken, double MaxAbsDiff);

/// <summary>Smoke check of a written model: prefill + single-token decode steps with the KV cache against one full run.</summary>
internal static class SelfCheck
{
    /// <summary>Runs the check on random token ids (seed 1) and returns timings and the largest logit difference.</summary>
    public static SelfCheckResult Run(string modelPath, int prefill, int steps)
    {
        using var runner = DecoderRunner.Load(modelPath);
        var vocab = (int)runner.Session.OutputMetadata["logits"].Dimensions[^1];
        var rng = new Random(1);
        var ids = Enumerable.Range(0, prefill + steps).Select(_ => (long)rng.Next(vocab)).ToArray();
        var full = runner.Forward([ids])[0];
        runner.Reset();
        var sw = Stopwatch.StartNew();
        runner.Step([ids[..prefill]], [Enumerable.Repeat(1L, prefill).ToArray()]);
        var prefillMs = sw.Elapsed.TotalMilliseconds;
        double max = 0;
        sw.Restart();
        for (var t = prefill; t < prefill + steps; t++)
        {
            var step = runner.Step([[ids[t]]], [Enumerable.Repeat(1L, t + 1).ToArray()])[0][0];
            for (var v = 0; v < step.Length; v++) max = Math.Max(max, Math.Abs(step[v] - full[t][v]));
        }
        return new SelfCheckResult(prefill, steps, prefillMs, sw.Elapsed.TotalMilliseconds / Math.Max(1, steps), max);
    }
}
