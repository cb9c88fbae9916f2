using System.Diagnostics;
using System.Text.Json;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using OnnxSteer.Vectors;

namespace OnnxSteer.Benchmarks;

/// <summary>Where extraction time goes (suite <c>extract-profile</c>): ONNX Runtime's profiler over the same prompts at
/// batch 1 and 16, on the full graph (with and without fetching logits) and on the graph pruned to the hidden states,
/// with MatMul FLOPs counted from the model; and the roofline: what one large MatMul reaches on this core.</summary>
internal static class ExtractProfileBench
{
    private sealed record Case(string Name, bool Prune, int Batch, bool Sort, bool FetchLogits);

    public static void Run(BenchModel m, Options o, string scratch, Report report)
    {
        var full = OnnxModelFile.Load(Directory.GetFiles(m.PatchedExposeAll, "*.onnx").Single()).Proto;
        var (flopsPerToken, lmHeadFlops, lmHeadNode) = MatMulFlops(full);
        int pairs = o.Pairs[0];
        var prompts = ExtractBench.Pairs(pairs, m.Vocab, seed: 11)
            .SelectMany(p => new[] { p.With, p.Without }).Select(t => ExtractBench.Encode(t).ToArray()).ToList();
        var layers = Enumerable.Range(0, m.Layers).ToList();
        var cases = new Case[]
        {
            new("full graph, batch 1", false, 1, false, false),
            new("full graph, batch 1, logits fetched too", false, 1, false, true),
            new("full graph, batch 16", false, 16, false, false),
            new("pruned, batch 1", true, 1, false, false),
            new("pruned, batch 16", true, 16, false, false),
            new("pruned, batch 16, sorted", true, 16, true, false),
        };
        var rows = new List<(Case Case, double PlainCpuMs, double CpuMs, double RunMs, Dictionary<string, double> Ops, double LmHeadMs, long Tokens, long RealTokens, int Nodes)>();
        foreach (var c in cases)
        {
            var order = Enumerable.Range(0, prompts.Count);
            if (c.Sort) order = order.OrderBy(i => prompts[i].Length);
            var sorted = order.ToList();
            var batches = sorted.Chunk(c.Batch).Select(ix => ix.Select(i => prompts[i]).ToList()).ToList();
            string[]? extra = c.FetchLogits ? ["logits"] : null;
            // Thread CPU without the profiler first (it adds a cost per node event, which weighs on batch 1 most).
            double plain;
            using (var po = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR })
            {
                if (o.Threads is int pt) po.IntraOpNumThreads = pt;
                using var x = VectorExtractor.Load(m.PatchedExposeAll, 0, po);
                x.Extract(ExtractBench.Pairs(Math.Max(1, c.Batch / 2), m.Vocab, seed: 5), ExtractBench.Encode,
                    new ExtractionOptions { BatchSize = c.Batch, PruneGraph = c.Prune, SortWindow = 0, Name = "warm" });
                var times = new List<double>();
                for (var rep = 0; rep < Math.Max(1, o.Repeats); rep++)
                {
                    double p0 = ThreadCpu.Ms();
                    foreach (var b in batches) x.LastTokenStates(b, layers, extra);
                    times.Add(ThreadCpu.Ms() - p0);
                }
                plain = Summary.Of(times).Median;
            }
            // The prefix first: EnableProfiling hands ONNX Runtime the prefix set at that moment (set after, it is ignored and
            // the profile lands in the working directory).
            using var so = new SessionOptions
            {
                LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR,
                ProfileOutputPathPrefix = Path.Combine(scratch, $"xprof-{rows.Count}"),
                EnableProfiling = true,
            };
            if (o.Threads is int t) so.IntraOpNumThreads = t;
            using var extractor = VectorExtractor.Load(m.PatchedExposeAll, 0, so);
            // Switches the extractor to the graph this case needs, and warms it up.
            extractor.Extract(ExtractBench.Pairs(Math.Max(1, c.Batch / 2), m.Vocab, seed: 5), ExtractBench.Encode,
                new ExtractionOptions { BatchSize = c.Batch, PruneGraph = c.Prune, SortWindow = 0, Name = "warm" });
            long executed = batches.Sum(b => (long)b.Count * b.Max(s => s.Length));
            long real = prompts.Sum(s => (long)s.Length);
            double c0 = ThreadCpu.Ms();
            foreach (var b in batches) extractor.LastTokenStates(b, layers, extra);
            double cpu = ThreadCpu.Ms() - c0;
            var file = extractor.Session.EndProfiling();
            var (ops, runUs, lmUs) = Aggregate(file, batches.Count, lmHeadNode);
            var nodes = extractor.Pruning?.NodesAfter ?? full.Graph.Node.Count;
            rows.Add((c, plain / pairs, cpu / pairs, runUs / 1000 / pairs, ops.ToDictionary(kv => kv.Key, kv => kv.Value / 1000 / pairs), lmUs / 1000 / pairs, executed, real, nodes));
            File.Delete(file);
        }

        report.Heading($"Extraction profile, {m.Name}: {pairs} pairs ({prompts.Count} prompts, 24-48 tokens), all {m.Layers} layers, ONNX Runtime profiler (ms per pair)");
        report.Note($"MatMul FLOPs counted from the graph: {flopsPerToken / 1e6:F1} MFLOP per token, of which the LM head (`{lmHeadNode}`) {lmHeadFlops / 1e6:F1} ({100.0 * lmHeadFlops / flopsPerToken:F0}%). " +
                    "GFLOP/s = the graph's MatMul FLOPs for every executed position (padding included) / MatMul kernel time.");
        report.Note("");
        report.Row("case", "graph nodes", "thread CPU, no profiler", "thread CPU, profiled", "model_run", "all kernels", "MatMul kernels", "of which LM head", "attention", "other kernels", "positions run (real)", "MatMul GFLOP/s");
        report.Rule(12);
        foreach (var r in rows)
        {
            double kernels = r.Ops.Values.Sum();
            double matmul = r.Ops.Where(kv => kv.Key.Contains("MatMul", StringComparison.Ordinal) || kv.Key == "Gemm").Sum(kv => kv.Value);
            double attention = r.Ops.Where(kv => kv.Key.Contains("Attention", StringComparison.Ordinal)).Sum(kv => kv.Value);
            double flops = (r.Case.Prune ? flopsPerToken - lmHeadFlops : flopsPerToken) * (double)r.Tokens;
            report.Row(r.Case.Name, $"{r.Nodes}", $"{r.PlainCpuMs:F2}", $"{r.CpuMs:F2}", $"{r.RunMs:F2}", $"{kernels:F2}", $"{matmul:F2}", $"{r.LmHeadMs:F2}", $"{attention:F2}",
                $"{kernels - matmul - attention:F2}", $"{r.Tokens} ({r.RealTokens})", $"{flops / (matmul * pairs / 1000) / 1e9:F1}");
        }
        var top = rows.SelectMany(r => r.Ops).GroupBy(kv => kv.Key).OrderByDescending(g => g.Max(x => x.Value)).Select(g => g.Key).Take(10).ToList();
        report.Heading($"Extraction kernel time by operator type, {m.Name} (ms per pair)");
        report.Row(["operator", .. rows.Select(r => r.Case.Name)]);
        report.Rule(rows.Count + 1);
        foreach (var op in top)
            report.Row([op, .. rows.Select(r => r.Ops.TryGetValue(op, out var v) ? $"{v:F2}" : "-")]);

        Roofline(o, report);
    }

    /// <summary>What ONNX Runtime's CPU MatMul reaches on this core: [M, 768] x [768, 2048] fp32 for a batch-1 prefill's
    /// M, a batch-16 one's, and 1024.</summary>
    /// <returns>The best median GFLOP/s over the sizes (the peak a prefill could reach).</returns>
    public static double Roofline(Options o, Report report)
    {
        double best = 0;
        const int K = 768, N = 2048;
        report.Heading($"ONNX Runtime MatMul on this core: [M, {K}] x [{K}, {N}] fp32, one graph node, {o.Threads?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "default"} intra-op thread(s) (median (min-max) of 10 runs)");
        report.Row("M (rows)", "thread CPU ms", "GFLOP/s (per CPU-second)", "wall ms", "load");
        report.Rule(5);
        var rng = new Random(1);
        var w = new TensorProto { Name = "W", DataType = (int)TensorProto.Types.DataType.Float, Dims = { K, N } };
        var weights = new float[K * N];
        for (var i = 0; i < weights.Length; i++) weights[i] = (float)(rng.NextDouble() - 0.5);
        w.RawData = ByteString.CopyFrom(System.Runtime.InteropServices.MemoryMarshal.AsBytes(weights.AsSpan()));
        var graph = new GraphProto { Name = "matmul", Initializer = { w } };
        graph.Input.Add(new ValueInfoProto { Name = "X", Type = GraphView.TensorType((int)TensorProto.Types.DataType.Float, ["M", K]) });
        graph.Output.Add(new ValueInfoProto { Name = "Y", Type = GraphView.TensorType((int)TensorProto.Types.DataType.Float, ["M", N]) });
        graph.Node.Add(new NodeProto { OpType = "MatMul", Name = "mm", Input = { "X", "W" }, Output = { "Y" } });
        var model = new ModelProto { IrVersion = 8, Graph = graph, OpsetImport = { new OperatorSetIdProto { Domain = "", Version = 17 } } };
        using var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        if (o.Threads is int t) so.IntraOpNumThreads = t;
        using var session = new InferenceSession(model.ToByteArray(), so);
        foreach (var mRows in new[] { 36, 576, 1024 })
        {
            var x = new float[mRows * K];
            for (var i = 0; i < x.Length; i++) x[i] = (float)(rng.NextDouble() - 0.5);
            using var input = OrtValue.CreateTensorValueFromMemory(x, [mRows, K]);
            using var runOptions = new RunOptions();
            var cpu = new List<double>();
            var wall = new List<double>();
            var loads = new List<double>();
            for (var rep = -2; rep < 10; rep++)
            {
                double c0 = ThreadCpu.Ms();
                var sw = Stopwatch.StartNew();
                using (session.Run(runOptions, ["X"], [input], ["Y"])) { }
                if (rep < 0) continue;
                cpu.Add(ThreadCpu.Ms() - c0);
                wall.Add(sw.Elapsed.TotalMilliseconds);
                loads.Add(Machine.LoadValue());
            }
            var c = Summary.Of(cpu);
            double flops = 2.0 * mRows * K * N;
            best = Math.Max(best, flops / (c.Median / 1000) / 1e9);
            report.Row($"{mRows}", c.Format("F2"), $"{flops / (c.Median / 1000) / 1e9:F1} ({flops / (c.Max / 1000) / 1e9:F1}-{flops / (c.Min / 1000) / 1e9:F1})",
                Summary.Of(wall).Format("F2"), Summary.Of(loads).Format("F1"));
        }
        return best;
    }

    /// <summary>MatMul FLOPs per token: 2·K·N for every MatMul/Gemm whose weight is a 2-D initializer; the LM head is the
    /// MatMul that feeds <c>logits</c> (through at most a few single-input nodes).</summary>
    internal static (double PerToken, double LmHead, string LmHeadNode) MatMulFlops(ModelProto model)
    {
        var g = model.Graph;
        var inits = g.Initializer.ToDictionary(i => i.Name, StringComparer.Ordinal);
        var producer = new Dictionary<string, NodeProto>(StringComparer.Ordinal);
        foreach (var n in g.Node) foreach (var o in n.Output) producer[o] = n;
        double Flops(NodeProto n) =>
            n.OpType is "MatMul" or "Gemm" && n.Input.Count > 1 && inits.TryGetValue(n.Input[1], out var w) && w.Dims.Count == 2 ? 2.0 * w.Dims[0] * w.Dims[1] : 0;
        double total = g.Node.Sum(Flops);
        var node = producer.GetValueOrDefault("logits");
        for (var hop = 0; node is not null && node.OpType is not ("MatMul" or "Gemm") && hop < 4; hop++)
            node = producer.GetValueOrDefault(node.Input[0]);
        return (total, node is null ? 0 : Flops(node), node?.Name ?? "(none)");
    }

    /// <summary>Kernel time by operator type (µs), the model_run total and the LM head's kernel time over the last
    /// <paramref name="runs"/> runs (earlier ones are the warm-up).</summary>
    private static (Dictionary<string, double> Ops, double RunUs, double LmHeadUs) Aggregate(string file, int runs, string lmHeadNode)
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(file));
        var events = doc.RootElement.EnumerateArray().ToList();
        var modelRuns = events.Where(e => e.GetProperty("cat").GetString() == "Session" && e.GetProperty("name").GetString() == "model_run")
            .Select(e => (Ts: e.GetProperty("ts").GetInt64(), Dur: e.GetProperty("dur").GetInt64())).OrderBy(r => r.Ts).ToList();
        var measured = modelRuns.Skip(modelRuns.Count - runs).ToList();
        long from = measured[0].Ts;
        var ops = new Dictionary<string, double>();
        double lm = 0;
        foreach (var e in events)
        {
            if (e.GetProperty("cat").GetString() != "Node") continue;
            var name = e.GetProperty("name").GetString()!;
            if (!name.EndsWith("_kernel_time", StringComparison.Ordinal) || e.GetProperty("ts").GetInt64() < from) continue;
            var op = e.GetProperty("args").GetProperty("op_name").GetString()!;
            var dur = e.GetProperty("dur").GetInt64();
            ops[op] = ops.GetValueOrDefault(op) + dur;
            if (name == lmHeadNode + "_kernel_time") lm += dur;
        }
        return (ops, measured.Sum(r => r.Dur), lm);
    }
}
