using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Benchmarks;

/// <summary>Prefill latency (item 3).</summary>
internal static class PrefillBench
{
    public static void Run(BenchModel m, Func<string, SteeredModel> load, Options o, Report report)
    {
        var lengths = o.Lengths.Where(l => l + 1 <= m.Context).ToList();
        var mid = m.Layers / 2;
        var rng = new Random(3);
        var vectors = Enumerable.Range(0, m.Layers).Select(_ => DecodeBench.RandomUnit(rng, m.Hidden)).ToArray();
        var all = Enumerable.Range(0, m.Layers).Aggregate(Steering.None, (s, l) => s.Add(vectors[l], l, 4f, "bench"));
        var cases = new (string Name, string Folder, Steering Steering)[]
        {
            ("original", m.Original, Steering.None),
            ("patched (expose all), nothing fed", m.PatchedExposeAll, Steering.None),
            ("patched (expose none), nothing fed", m.PatchedExposeNone, Steering.None),
            ($"patched (expose all), add @ all {m.Layers} layers", m.PatchedExposeAll, all),
        };
        report.Heading($"Prefill latency, {m.Name}, batch 1 (wall ms / thread CPU ms; median (min-max) of {o.Repeats})");
        report.Row(["prompt tokens", .. cases.Select(c => c.Name), "load"]);
        report.Rule(cases.Length + 2);
        foreach (var len in lengths)
        {
            var prompts = DecodeBench.Prompts(1, len, m.Vocab);
            var samples = cases.Select(_ => new List<double>()).ToArray();
            var cpu = cases.Select(_ => new List<double>()).ToArray();
            var loads = new List<double>();
            // Warm up once, at the shortest length (a long prefill on the medium model takes many seconds).
            for (int rep = len == lengths[0] ? -1 : 0; rep < o.Repeats; rep++)
                for (int c = 0; c < cases.Length; c++)
                {
                    var model = load(cases[c].Folder);
                    double c0 = ThreadCpu.Ms();
                    var r = model.Generate([new GenerationRequest { PromptTokenIds = prompts[0], Steering = cases[c].Steering }],
                        new GeneratorOptions { MaxNewTokens = 1, UseChatTemplate = false })[0];
                    double c1 = ThreadCpu.Ms();
                    if (rep >= 0) { samples[c].Add(r.PrefillTime.TotalMilliseconds); cpu[c].Add(c1 - c0); loads.Add(Machine.LoadValue()); }
                }
            report.Row([$"{len}", .. samples.Select((s, c) => $"{Summary.Of(s).Format("F1")} / {Summary.Of(cpu[c]).Format("F1")}"), Summary.Of(loads).Format("F1")]);
        }
    }
}

/// <summary>Managed bytes allocated per generated token in steady state (item 6): the difference between a
/// 2N-token and an N-token generation, divided by N, so prefill and per-call setup cancel out.</summary>
internal static class AllocBench
{
    public static void Run(BenchModel m, Func<string, SteeredModel> load, Options o, Report report)
    {
        int n = o.Tokens / 2;
        var mid = m.Layers / 2;
        var v = DecodeBench.RandomUnit(new Random(5), m.Hidden);
        report.Heading($"Managed allocations per generated token, {m.Name} (steady state: (bytes for {2 * n} tokens - bytes for {n}) / {n}; min of {o.Repeats})");
        report.Row("loop", "batch", "bytes/token (this thread)", "bytes/token (all threads)", "bytes/step inside the loop (steps 2..N)");
        report.Rule(5);
        foreach (var batch in o.Batches)
        {
            var prompts = DecodeBench.Prompts(batch, o.Prompt, m.Vocab);
            var cases = new (string Name, Action<int> Run)[]
            {
                ("bare ORT loop, original", t => DecodeBench.RunBare(load(m.Original), prompts, t)),
                ("bare IOBinding loop (decode only; bindings prebuilt), original", t => DecodeBench.RunBound(load(m.Original), prompts, t)),
                ("ours, original", t => DecodeBench.RunOurs(load(m.Original), prompts, Steering.None, t, listen: false)),
                ("ours with plain Run (--no-bind), original", t => DecodeBench.RunOurs(load(m.Original + DecodeBench.PlainSuffix), prompts, Steering.None, t, listen: false)),
                ($"ours, patched, add @ layer {mid}", t => DecodeBench.RunOurs(load(m.PatchedExposeAll), prompts, Steering.None.Add(v, mid, 4f), t, listen: false)),
                ($"ours, patched, add @ layer {mid}, streaming (a string per piece)", t => DecodeBench.RunOurs(load(m.PatchedExposeAll), prompts, Steering.None.Add(v, mid, 4f), t, listen: true)),
            };
            foreach (var (name, run) in cases)
            {
                if (name.Contains("IOBinding", StringComparison.Ordinal))
                {
                    // Its setup allocates in proportion to the token count, so only the decode loop itself is measured.
                    run(2 * n);
                    var perStep = Enumerable.Range(0, o.Repeats).Select(_ => { run(2 * n); return BoundLoop.LastDecodeAllocatedPerStep; }).Min();
                    report.Row(name, $"{batch}", "", "", $"{perStep:F0}");
                    continue;
                }
                run(n); run(2 * n); // warm up (JIT, ORT arenas)
                var thread = new List<double>();
                var total = new List<double>();
                var inside = new List<double>();
                for (int rep = 0; rep < o.Repeats; rep++)
                {
                    var (t1, a1) = Measure(() => run(n));
                    var (t2, a2) = Measure(() => run(2 * n));
                    thread.Add((t2 - t1) / (double)n);
                    total.Add((a2 - a1) / (double)n);
                    inside.Add(name.StartsWith("ours", StringComparison.Ordinal) ? DecodeBench.LastSteadyBytesPerStep : double.NaN);
                }
                report.Row(name, $"{batch}", $"{thread.Min():F0}", $"{total.Min():F0}", double.IsNaN(inside.Min()) ? "" : $"{inside.Min():F0}");
            }
        }
    }

    private static (long Thread, long Total) Measure(Action a)
    {
        long t0 = GC.GetAllocatedBytesForCurrentThread(), a0 = GC.GetTotalAllocatedBytes(true);
        a();
        return (GC.GetAllocatedBytesForCurrentThread() - t0, GC.GetTotalAllocatedBytes(true) - a0);
    }
}

/// <summary>Extraction throughput and memory (item 4).</summary>
internal static class ExtractBench
{
    public static void Run(BenchModel m, Options o, Report report)
    {
        using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (o.Threads is int t) so.IntraOpNumThreads = t;
        // Two extractors, so that no case reopens a session: one keeps the full graph, one runs the pruned graph.
        using var fullGraph = VectorExtractor.Load(m.PatchedExposeAll, 0, so);
        using var extractor = VectorExtractor.Load(m.PatchedExposeAll, 0, so);
        int pairs = o.Pairs[0];
        var data = Pairs(pairs, m.Vocab, seed: 11);
        var window = new ExtractionOptions().SortWindow;
        // The first two rows are what extraction did before graph pruning and sorting.
        var cases = new (string Name, VectorExtractor Extractor, ExtractionOptions Options)[]
        {
            ("full graph, batch 1", fullGraph, new ExtractionOptions { BatchSize = 1, PruneGraph = false, SortWindow = 0 }),
            ("full graph, batch 16, unsorted", fullGraph, new ExtractionOptions { BatchSize = 16, PruneGraph = false, SortWindow = 0 }),
            ("pruned, batch 1", extractor, new ExtractionOptions { BatchSize = 1, SortWindow = 0 }),
            ("pruned, batch 8, unsorted", extractor, new ExtractionOptions { BatchSize = 8, SortWindow = 0 }),
            ($"pruned, batch 8, sorted (window {window})", extractor, new ExtractionOptions { BatchSize = 8 }),
            ("pruned, batch 16, unsorted", extractor, new ExtractionOptions { BatchSize = 16, SortWindow = 0 }),
            ($"pruned, batch 16, sorted (window {window}; the defaults)", extractor, new ExtractionOptions { BatchSize = 16 }),
        };
        report.Heading($"Extraction throughput, {m.Name}: {pairs} pairs, prompts 24-48 tokens, all {m.Layers} layers (pairs/s; median (min-max) of {o.Repeats}; round-robin)");
        report.Row("case", "pairs/s (wall)", "pairs per CPU-second", "CPU vs full graph, batch 1", "CPU vs pruned, batch 1", "positions run (real)", "MatMul GFLOP/s per CPU-second", "load");
        report.Rule(8);
        var samples = cases.Select(_ => new List<double>()).ToArray();
        var cpuSamples = cases.Select(_ => new List<double>()).ToArray();
        var loads = cases.Select(_ => new List<double>()).ToArray();
        for (int rep = -1; rep < o.Repeats; rep++)
            for (int c = 0; c < cases.Length; c++)
            {
                var (_, x, opts) = cases[c];
                // The warm-up round is short: it only has to open the sessions, JIT and size ONNX Runtime's arenas.
                var input = rep < 0 ? Pairs(Math.Max(1, opts.BatchSize / 2), m.Vocab, seed: 5) : data;
                double c0 = ThreadCpu.Ms();
                var sw = Stopwatch.StartNew();
                x.Extract(input, Encode, opts with { Name = "bench" });
                double cpuS = (ThreadCpu.Ms() - c0) / 1000;
                if (rep >= 0) { samples[c].Add(pairs / sw.Elapsed.TotalSeconds); cpuSamples[c].Add(pairs / cpuS); loads[c].Add(Machine.LoadValue()); }
            }
        var prompts = data.SelectMany(p => new[] { Encode(p.With).Count, Encode(p.Without).Count }).ToList();
        var (flopsPerToken, lmHeadFlops, _) = ExtractProfileBench.MatMulFlops(OnnxSteer.Onnx.OnnxModelFile.Load(fullGraph.ModelFile).Proto);
        var medians = cpuSamples.Select(s => Summary.Of(s).Median).ToArray();
        for (int c = 0; c < cases.Length; c++)
        {
            var opts = cases[c].Options;
            var positions = Positions(prompts, opts.BatchSize, opts.SortWindow);
            // The graph's MatMul arithmetic for every position run (padding included) over the thread CPU time of the pair.
            var gflops = (opts.PruneGraph ? flopsPerToken - lmHeadFlops : flopsPerToken) * positions / pairs * medians[c] / 1e9;
            report.Row(cases[c].Name, Summary.Of(samples[c]).Format("F1"), Summary.Of(cpuSamples[c]).Format("F1"),
                $"{medians[c] / medians[0]:F2}x", $"{medians[c] / medians[2]:F2}x", $"{positions} ({prompts.Sum()})", $"{gflops:F1}",
                Summary.Of(loads[c]).Format("F1"));
        }
        var matmulPeak = ExtractProfileBench.Roofline(o, report);
        var batch1 = (flopsPerToken - lmHeadFlops) * prompts.Sum() / pairs * medians[2] / 1e9;
        report.Note($"Ceiling for batching on this core: pruned batch 1 already does {batch1:F1} GFLOP/s of MatMul arithmetic per CPU-second " +
                    $"(everything else in the run counted as overhead); a single large MatMul peaks at {matmulPeak:F1}. Even a batch with no padding, " +
                    $"no attention and no other kernels could be at most {matmulPeak / batch1:F2}x the pairs per CPU-second of batch 1.");

        // The paper steers one layer; extracting only that layer lets pruning drop every block above it as well.
        int mid = m.Layers / 2;
        using var oneLayer = VectorExtractor.Load(m.PatchedExposeAll, 0, so);
        var single = new (string Name, VectorExtractor Extractor, ExtractionOptions Options)[]
        {
            ($"full graph, layer {mid} only, batch 8, sorted", fullGraph, new ExtractionOptions { BatchSize = 8, PruneGraph = false, Layers = [mid] }),
            ($"pruned to layer {mid}, batch 8, sorted", oneLayer, new ExtractionOptions { BatchSize = 8, Layers = [mid] }),
        };
        var singleCpu = single.Select(_ => new List<double>()).ToArray();
        var singleLoads = single.Select(_ => new List<double>()).ToArray();
        for (int rep = -1; rep < o.Repeats; rep++)
            for (int c = 0; c < single.Length; c++)
            {
                var (_, x, opts) = single[c];
                var input = rep < 0 ? Pairs(4, m.Vocab, seed: 5) : data;
                double c0 = ThreadCpu.Ms();
                x.Extract(input, Encode, opts with { Name = "bench" });
                double cpuS = (ThreadCpu.Ms() - c0) / 1000;
                if (rep >= 0) { singleCpu[c].Add(pairs / cpuS); singleLoads[c].Add(Machine.LoadValue()); }
            }
        report.Heading($"Extraction of one layer ({mid} of {m.Layers}), {m.Name}: {pairs} pairs (pairs per CPU-second; median (min-max) of {o.Repeats})");
        report.Row("case", "graph nodes run", "pairs per CPU-second", "vs full graph", "load");
        report.Rule(5);
        var singleBase = Summary.Of(singleCpu[0]).Median;
        for (int c = 0; c < single.Length; c++)
        {
            var nodes = c == 0 ? fullGraph.Pruning?.NodesBefore ?? OnnxSteer.Onnx.OnnxModelFile.Load(fullGraph.ModelFile).Proto.Graph.Node.Count : oneLayer.Pruning!.NodesAfter;
            report.Row(single[c].Name, $"{nodes}", Summary.Of(singleCpu[c]).Format("F1"), $"{Summary.Of(singleCpu[c]).Median / singleBase:F2}x", Summary.Of(singleLoads[c]).Format("F1"));
        }

        report.Heading($"Extraction memory against pair count, {m.Name}, batch 16, pruned and sorted (the defaults; peak RSS above the loaded model, MiB)");
        report.Row("pairs", "peak RSS delta", "managed heap after a full GC", "seconds");
        report.Rule(4);
        foreach (var n in o.Pairs)
        {
            var many = Pairs(n, m.Vocab, seed: 13);
            GC.Collect(); GC.WaitForPendingFinalizers(); GC.Collect();
            long before = Machine.Rss();
            var sw = Stopwatch.StartNew();
            long peak;
            using (var rss = new PeakRss())
            {
                extractor.Extract(many, Encode, new ExtractionOptions { BatchSize = 16, Name = "bench" });
                peak = rss.Peak;
            }
            report.Row($"{n}", $"{(peak - before) / 1048576.0:F1}", $"{GC.GetTotalMemory(true) / 1048576.0:F1}", $"{sw.Elapsed.TotalSeconds:F1}");
        }
    }

    /// <summary>Positions ONNX Runtime runs (padding included) when prompts of these lengths go through the extractor's
    /// windowed sort and batching.</summary>
    private static long Positions(IReadOnlyList<int> lengths, int batch, int sortWindow)
    {
        long total = 0;
        int window = Math.Max(batch, sortWindow);
        foreach (var w in lengths.Chunk(window))
        {
            var order = sortWindow > 0 ? w.Order().ToArray() : w;
            foreach (var b in order.Chunk(batch)) total += (long)b.Length * b.Max();
        }
        return total;
    }

    // Prompts are written as space-separated token ids so no tokenizer is involved.
    internal static IReadOnlyList<int> Encode(string text) => text.Split(' ').Select(int.Parse).ToArray();

    /// <summary>Pairs are generated lazily: the extractor must not need the whole list in memory.</summary>
    internal static IEnumerable<PromptPair> Pairs(int count, int vocab, int seed)
    {
        var rng = new Random(seed);
        for (int i = 0; i < count; i++)
        {
            var without = Enumerable.Range(0, rng.Next(24, 40)).Select(_ => rng.Next(3, vocab)).ToArray();
            var with = without.Concat(Enumerable.Range(0, 8).Select(_ => rng.Next(3, vocab))).ToArray();
            yield return new PromptPair(string.Join(' ', with), string.Join(' ', without), i + 1);
        }
    }
}

/// <summary>Patch time and bytes read against the size of the external data file (item 5). The data file is grown
/// with <see cref="FileStream.SetLength"/>, which makes it sparse: no disk is used, and a patch that read it would
/// show up in the bytes-read column.</summary>
internal static class PatchBench
{
    public static void Run(string scratch, Options o, Report report)
    {
        var src = Path.Combine(scratch, "patch-source");
        var fixture = DecoderFixtures.Write(Models.TinySpec with { Layers = 6 }, src, new RandomWeights(1));
        var data = Path.Combine(src, "model.onnx.data");
        long graphBytes = new FileInfo(fixture.ModelPath).Length;
        report.Heading($"Patch time against external data size (tiny genai graph of {graphBytes / 1024.0:F0} KiB; data file made sparse with SetLength; median (min-max) of {o.Repeats})");
        report.Row("data size", "patch ms", "bytes read (rchar)", "bytes read from disk", "data hard-linked", "load");
        report.Rule(6);
        var sizes = o.Sizes;
        var medians = new List<double>();
        foreach (var size in sizes)
        {
            using (var fs = new FileStream(data, FileMode.Open, FileAccess.Write))
                if (fs.Length < size) fs.SetLength(size);
            var ms = new List<double>();
            var rchar = new List<double>();
            var disk = new List<double>();
            var loads = new List<double>();
            bool linked = true;
            for (int rep = -1; rep < o.Repeats; rep++)
            {
                var outDir = Path.Combine(scratch, $"patched-{size}-{rep + 1}");
                var (r0, d0) = Machine.IoCounters();
                var sw = Stopwatch.StartNew();
                var result = ModelPatcher.Patch(src, outDir, new PatchOptions());
                sw.Stop();
                var (r1, d1) = Machine.IoCounters();
                linked &= result.LinkedFiles.Count == 1 && result.CopiedFiles.Count == 0;
                Directory.Delete(outDir, recursive: true);
                if (rep < 0) continue;
                ms.Add(sw.Elapsed.TotalMilliseconds); rchar.Add(r1 - r0); disk.Add(d1 - d0); loads.Add(Machine.LoadValue());
            }
            var s = Summary.Of(ms);
            medians.Add(s.Median);
            report.Row(Size(size), s.Format("F1"), $"{Summary.Of(rchar).Median:F0}", $"{Summary.Of(disk).Median:F0}", linked ? "yes" : "NO (copied)", Summary.Of(loads).Format("F1"));
        }
        if (medians.Count > 1)
            report.Note($"largest / smallest median patch time: {medians[^1] / medians[0]:F3}");
    }

    public static string Size(long bytes) => bytes >= 1L << 30 ? $"{bytes / (double)(1L << 30):0.#} GiB" : $"{bytes / (double)(1L << 20):0.#} MiB";
}
