using System.Text.Json;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Benchmarks;

/// <summary>Where decode time goes, from ONNX Runtime's own profiler (SessionOptions.EnableProfiling): kernel time per
/// operator type per decode step, and the part of each run spent outside kernels (framework overhead), for the
/// original model and the patched ones. The bare loop drives each session so the C# side adds nothing.</summary>
internal static class ProfileBench
{
    public static void Run(BenchModel m, Options o, string scratch, Report report)
    {
        int mid = m.Layers / 2;
        var rng = new Random(42);
        var vectors = Enumerable.Range(0, m.Layers).Select(_ => DecodeBench.RandomUnit(rng, m.Hidden)).ToArray();
        var addAll = Enumerable.Range(0, m.Layers).Aggregate(Steering.None, (s, l) => s.Add(vectors[l], l, 4f, "bench"));
        var cases = new (string Name, string Folder, Steering Steering)[]
        {
            ("original", m.Original, Steering.None),
            ("patched (expose all), nothing fed", m.PatchedExposeAll, Steering.None),
            ("patched (expose none), nothing fed", m.PatchedExposeNone, Steering.None),
            ($"patched (expose all), add @ all {m.Layers} layers", m.PatchedExposeAll, addAll),
            ($"patched layer {mid} only, add @ layer {mid}", m.PatchedOneLayer, Steering.None.Add(vectors[mid], mid, 4f, "bench")),
            ($"patched layer {mid} only, project @ layer {mid}", m.PatchedOneLayer, Steering.None.Project(vectors[mid], mid, 1f, "bench")),
            ($"patched layer {mid} only --additive-only, add @ layer {mid}", m.PatchedOneLayerAdditive, Steering.None.Add(vectors[mid], mid, 4f, "bench")),
        };
        int batch = o.Batches[0]; // the first --batch value
        var prompts = DecodeBench.Prompts(batch, o.Prompt, m.Vocab);
        var perCase = new List<(string Name, Dictionary<string, (double Us, double Count)> Ops, double RunUs, double KernelUs)>();
        foreach (var (name, folder, steering) in cases)
        {
            var modelFile = Directory.GetFiles(folder, "*.onnx").Single();
            using var so = new SessionOptions { ProfileOutputPathPrefix = Path.Combine(scratch, $"prof-{perCase.Count}"), EnableProfiling = true };
            if (o.Threads is int t) so.IntraOpNumThreads = t;
            so.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
            using var session = new InferenceSession(modelFile, so);
            var sig = DecoderSignature.Discover(session, SteeringManifest.TryLoad(folder), modelFile);
            var resolved = new[] { SteeringFeed.Resolve(steering, SteeringPhase.Decode, m.Hidden) };
            using var feed = SteeringFeed.Create(resolved, sig, m.Hidden);
            using (var loop = new BareLoop(session, sig, prompts, o.Tokens, feed.Inputs))
                loop.Run();
            var file = session.EndProfiling();
            var (ops, runUs, kernelUs) = Aggregate(file, o.Tokens - 1);
            perCase.Add((name, ops, runUs, kernelUs));
        }
        report.Heading($"ONNX Runtime profile, {m.Name}, batch {batch}, decode steps only (µs per step; kernel time by operator type)");
        var top = perCase.SelectMany(c => c.Ops).GroupBy(kv => kv.Key).OrderByDescending(g => g.Max(x => x.Value.Us)).Select(g => g.Key).Take(14).ToList();
        report.Row(["operator (nodes/step in first case)", .. perCase.Select(c => c.Name)]);
        report.Rule(perCase.Count + 1);
        foreach (var op in top)
            report.Row([$"{op} ({perCase[0].Ops.GetValueOrDefault(op).Count:F0})", .. perCase.Select(c => c.Ops.TryGetValue(op, out var v) ? $"{v.Us:F0} ({v.Count:F0})" : "-")]);
        report.Row(["all kernels", .. perCase.Select(c => $"{c.KernelUs:F0}")]);
        report.Row(["whole run (model_run)", .. perCase.Select(c => $"{c.RunUs:F0}")]);
        report.Row(["outside kernels", .. perCase.Select(c => $"{c.RunUs - c.KernelUs:F0}")]);
    }

    /// <summary>Sums kernel durations by operator type over all runs but the first (the prefill), per decode step.</summary>
    private static (Dictionary<string, (double, double)>, double, double) Aggregate(string file, int steps)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var events = doc.RootElement.EnumerateArray().ToList();
        var runs = events.Where(e => e.GetProperty("cat").GetString() == "Session" && e.GetProperty("name").GetString() == "model_run")
            .Select(e => (Ts: e.GetProperty("ts").GetInt64(), Dur: e.GetProperty("dur").GetInt64())).OrderBy(r => r.Ts).ToList();
        long decodeFrom = runs[0].Ts + runs[0].Dur;
        var ops = new Dictionary<string, (double, double)>();
        double kernel = 0;
        foreach (var e in events)
        {
            if (e.GetProperty("cat").GetString() != "Node" || !e.GetProperty("name").GetString()!.EndsWith("_kernel_time", StringComparison.Ordinal)) continue;
            if (e.GetProperty("ts").GetInt64() < decodeFrom) continue;
            var op = e.GetProperty("args").GetProperty("op_name").GetString()!;
            var dur = e.GetProperty("dur").GetInt64();
            var (us, n) = ops.GetValueOrDefault(op);
            ops[op] = (us + dur / (double)steps, n + 1.0 / steps);
            kernel += dur;
        }
        double run = runs.Skip(1).Sum(r => r.Dur) / (double)steps;
        return (ops, run, kernel / steps);
    }
}
