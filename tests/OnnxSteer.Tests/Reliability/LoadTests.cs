using System.Diagnostics;
using OnnxSteer.Runtime;
using OnnxSteer.Tests.Runtime;
using Xunit.Abstractions;

namespace OnnxSteer.Tests.Reliability;

/// <summary>One loaded <see cref="SteeredModel"/> serving many threads with different steering per request, and a soak.
/// Sizes scale with environment variables so the long runs are the same tests (docs/reliability.md):
/// <c>ONNXSTEER_LOAD_REQUESTS</c> (requests per thread, CI 10) and <c>ONNXSTEER_SOAK_GENERATIONS</c> (CI 200).
/// Numbers are printed (run with <c>--logger "console;verbosity=detailed"</c>).</summary>
public sealed class LoadTests(PatchedFixtureModel fixture, ITestOutputHelper output) : IClassFixture<PatchedFixtureModel>
{
    private const int Threads = 16, Hidden = 16;
    private static readonly GeneratorOptions Options = new() { MaxNewTokens = 8, UseChatTemplate = false };

    private static int Env(string name, int fallback) => int.TryParse(Environment.GetEnvironmentVariable(name), out var n) && n > 0 ? n : fallback;

    private static GenerationRequest RandomRequest(Random rng, int[][] prompts)
    {
        var steering = Steering.None;
        // At most one term per layer: the patched model has one direction and target per layer.
        for (var layer = 0; layer < 2; layer++)
        {
            if (rng.Next(3) == 0) continue;
            var raw = Enumerable.Range(0, Hidden).Select(_ => (float)(rng.NextDouble() * 2 - 1)).ToArray();
            var vector = SteeringVector.FromRaw(raw, zBar: (float)(rng.NextDouble() * 4));
            steering = rng.Next(3) switch
            {
                0 => steering.Add(vector, layer, (float)(rng.NextDouble() * 16 - 8)),
                1 => steering.Project(vector, layer),
                _ => steering.Ablate(vector, layer),
            };
        }
        if (rng.Next(4) == 0) steering = steering.At(SteeringPositions.Prompt);
        return new GenerationRequest { PromptTokenIds = prompts[rng.Next(prompts.Length)], Steering = steering };
    }

    private static (long WorkingSet, long Managed) Memory()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        using var self = Process.GetCurrentProcess();
        return (self.WorkingSet64, GC.GetTotalMemory(forceFullCollection: true));
    }

    private static string Mb(long bytes) => $"{bytes / (1024.0 * 1024.0):F1} MiB";

    [Fact]
    public void ConcurrentSteeredRequestsEqualTheSameRequestsRunAlone()
    {
        var model = fixture.Model;
        var perThread = Env("ONNXSTEER_LOAD_REQUESTS", 10);
        var prompts = new[] { "Hello world, this is a test", "Write a poem about the sea.", "List three colours." }.Select(p => model.Tokenizer.Encode(p)).ToArray();
        var rng = new Random(21);
        var requests = Enumerable.Range(0, Threads * perThread).Select(_ => RandomRequest(rng, prompts)).ToArray();

        var alone = requests.Select(r => model.Generate([r], Options)[0].TokenIds).ToArray();
        var before = Memory();
        var concurrent = new int[requests.Length][];
        var clock = Stopwatch.StartNew();
        Parallel.For(0, Threads, new ParallelOptions { MaxDegreeOfParallelism = Threads }, t =>
        {
            for (var i = t; i < requests.Length; i += Threads) concurrent[i] = model.Generate([requests[i]], Options)[0].TokenIds;
        });
        var elapsed = clock.Elapsed;
        var after = Memory();
        output.WriteLine($"load: {Threads} threads x {perThread} requests = {requests.Length} in {elapsed.TotalSeconds:F1} s; " +
                         $"working set {Mb(before.WorkingSet)} -> {Mb(after.WorkingSet)}; managed heap {Mb(before.Managed)} -> {Mb(after.Managed)}");
        for (var i = 0; i < requests.Length; i++) Assert.True(alone[i].SequenceEqual(concurrent[i]), $"request {i} differs under load");
        Assert.True(alone.Select(a => string.Join(",", a)).Distinct().Count() > 3, "steering should change the outputs");
    }

    [Fact]
    public void SoakDoesNotGrowMemory()
    {
        var model = fixture.Model;
        var total = Env("ONNXSTEER_SOAK_GENERATIONS", 200);
        var every = Math.Max(100, total / 20);
        var prompts = new[] { model.Tokenizer.Encode("Hello world, this is a test") };
        var rng = new Random(22);
        var samples = new List<(int Done, long WorkingSet, long Managed)>();
        for (var i = 0; i < total; i++)
        {
            if (i % every == 0) { var m = Memory(); samples.Add((i, m.WorkingSet, m.Managed)); }
            model.Generate([RandomRequest(rng, prompts)], Options);
        }
        var end = Memory();
        samples.Add((total, end.WorkingSet, end.Managed));
        foreach (var s in samples) output.WriteLine($"soak: {s.Done,6} generations  working set {Mb(s.WorkingSet)}  managed heap {Mb(s.Managed)}");
        // Only judged on the long run: a short CI run is dominated by warm-up. After the first sample window the
        // managed heap must be flat and the working set must not keep climbing.
        if (total >= 1000)
        {
            var warm = samples[1];
            Assert.True(end.Managed - warm.Managed < 8L << 20, $"managed heap grew {Mb(end.Managed - warm.Managed)}");
            Assert.True(end.WorkingSet - warm.WorkingSet < 64L << 20, $"working set grew {Mb(end.WorkingSet - warm.WorkingSet)}");
        }
    }
}
