using System.Diagnostics;
using System.Globalization;
using LLama;
using LLama.Common;
using LLama.Native;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;

namespace OnnxSteer.Benchmarks;

/// <summary>The <c>peers</c> suite (issue 12): OnnxSteer's <see cref="SteeredModel.Generate(IReadOnlyList{GenerationRequest}, GeneratorOptions?, Action{GeneratedPiece}?, CancellationToken)"/>
/// (what <c>onnxsteer generate</c> runs) against ONNX Runtime GenAI 0.20 on the same model folder and llama.cpp
/// (LLamaSharp 0.30, CPU backend) on an F32 GGUF of the same weights (<see cref="GgufLlamaWriter"/>), all fed the same
/// prompt token ids (no tokenizer is involved), greedy, unsteered and with one steered layer (OnnxSteer's patched model;
/// llama.cpp's control vector, <c>llama_set_adapter_cvec</c>, with the same vector at the same block). Every engine
/// runs at each thread count (1 and all cores, or <c>--threads N</c>), interleaved round by round with the order
/// rotating, so that load on the shared machine hits every contender alike. Each round loads every model afresh, so
/// load time and time to first token are measured cold for the objects (the file cache is warm after round one).</summary>
internal static class PeersBench
{
    /// <param name="DecodeTokensPerCpuSecond">Decode steps per second of the calling thread's CPU time: with one thread
    /// every engine computes on the caller, so this is the work per token with the waiting for a core (most of a loaded
    /// machine's noise) left out. NaN for more threads, whose work is elsewhere.</param>
    /// <param name="LoadPeakMiB">OnnxSteer rows: the process's peak resident memory during the load above what was resident
    /// before it (NaN for the peers, and where /proc cannot say).</param>
    /// <param name="LoadResidentMiB">OnnxSteer rows: resident memory after the load above what was resident before it.</param>
    private sealed record Sample(double LoadMs, double FirstTokenMs, double DecodeTokensPerSecond, double DecodeTokensPerCpuSecond, int[] Tokens,
        double LoadPeakMiB = double.NaN, double LoadResidentMiB = double.NaN);

    /// <param name="Engine">What is compared across thread counts ("onnxsteer", "GenAI", "llama.cpp"), with
    /// <paramref name="Steered"/> telling the two settings apart.</param>
    /// <param name="Reference">Index of the contender whose tokens this one's are compared with (null: itself the reference):
    /// GenAI for OnnxSteer, OnnxSteer (same steering) for llama.cpp. GenAI alone gets an EOS id back (see RunGenAi),
    /// so on a model whose greedy path meets it, GenAI's tokens part from the others' there.</param>
    private sealed record Contender(string Name, string Engine, bool Steered, int Threads, Func<int[], int, Sample> Run, int? Reference);

    private const string Ours = "onnxsteer", GenAiName = "GenAI 0.20", LlamaCpp = "llama.cpp";

    public static void Run(BenchModel m, Options o, Report report)
    {
        var threadCounts = o.Threads is int t ? [t] : new[] { 1, SessionThreads.Resolve(null) }.Distinct().ToArray();
        var prompt = DecodeBench.Prompts(1, o.Prompt, m.Vocab)[0];
        int tokens = o.Tokens;
        int middle = m.Layers / 2;
        var direction = DecodeBench.RandomUnit(new Random(middle), m.Hidden);
        const float weight = 4f;
        var gguf = WriteGguf(m, report);

        var contenders = new List<Contender>();
        foreach (var threads in threadCounts)
        {
            int first = contenders.Count;
            contenders.Add(new($"{Ours}, original, {threads}t", Ours, false, threads, (p, n) => RunOurs(m.Original, p, n, threads, null), first + 3 + (o.PeersAllLayers ? 1 : 0) + o.OrtSettings.Count));
            // The steered row is what a user deploys after choosing a layer: that layer steerable, nothing exposed
            // (patch --layers M --expose none). The default patch (every layer steerable and exposed, what extraction
            // and sweeps need) is a separate engine name, so ratios and "best" keep comparing the deployment.
            contenders.Add(new($"{Ours}, patched layer {middle} only, add @ layer {middle}, {threads}t", Ours, true, threads,
                (p, n) => RunOurs(m.PatchedOneLayer, p, n, threads, Steering.None.Add(direction, middle, weight, "bench")), null));
            contenders.Add(new($"{Ours}, patched layer {middle} only --additive-only, add @ layer {middle}, {threads}t", Ours + " (additive-only patch)", true, threads,
                (p, n) => RunOurs(m.PatchedOneLayerAdditive, p, n, threads, Steering.None.Add(direction, middle, weight, "bench")), null));
            if (o.PeersAllLayers)
                contenders.Add(new($"{Ours}, patched all layers (expose all), add @ layer {middle}, {threads}t", Ours + " (all layers patched)", true, threads,
                    (p, n) => RunOurs(m.PatchedExposeAll, p, n, threads, Steering.None.Add(direction, middle, weight, "bench")), null));
            foreach (var setting in o.OrtSettings)
            {
                // full_logits=1: the LM head over every prompt position (the model file as it is); fuse_matmuls=1 / =0:
                // q/k/v and gate/up as one MatMul each, or as the file has them. Not ONNX Runtime settings.
                var parts = setting.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
                bool fullLogits = parts.Contains("full_logits=1");
                bool? fuse = parts.Contains("fuse_matmuls=1") ? true : parts.Contains("fuse_matmuls=0") ? false : null;
                var sessionSettings = string.Join(';', parts.Where(x => x is not ("full_logits=1" or "fuse_matmuls=0" or "fuse_matmuls=1")));
                var configure = sessionSettings.Length == 0 ? null : OrtSetting(sessionSettings);
                contenders.Add(new($"{Ours}, original, {setting}, {threads}t", $"{Ours} ({setting})", false, threads,
                    (p, n) => RunOurs(m.Original, p, n, threads, null, configure, lastPositionLogits: !fullLogits, fuseMatMuls: fuse), first));
            }
            contenders.Add(new($"{GenAiName}, original, {threads}t", GenAiName, false, threads, (p, n) => RunGenAi(m.Original, p, n, threads), null));
            if (gguf is not null)
            {
                contenders.Add(new($"{LlamaCpp} F32 GGUF, {threads}t", LlamaCpp, false, threads, (p, n) => RunLlama(gguf, p, n, threads, null), first));
                var control = direction.Direction.Select(x => x * weight).ToArray();
                contenders.Add(new($"{LlamaCpp} F32 GGUF, control vector @ layer {middle}, {threads}t", LlamaCpp, true, threads,
                    (p, n) => RunLlama(gguf, p, n, threads, (middle, control)), first + 1));
                // Float32 throughout, like the ONNX models: tells the defaults' f16 cache and flash attention apart from
                // the matrix products. A separate engine name, so ratios and "best" keep comparing with the defaults.
                if (o.LlamaF32Cache)
                    contenders.Add(new($"{LlamaCpp} F32 GGUF, f32 KV cache, no flash attention, {threads}t", LlamaCpp + " (f32 cache)", false, threads,
                        (p, n) => RunLlama(gguf, p, n, threads, null, f32Cache: true), first));
            }
        }

        var samples = contenders.Select(_ => new List<Sample>()).ToArray();
        var loads = new List<double>();
        for (int round = -1; round < o.Repeats; round++)
        {
            for (int i = 0; i < contenders.Count; i++)
            {
                int c = (i + Math.Max(round, 0)) % contenders.Count;
                var s = contenders[c].Run(prompt, round < 0 ? Math.Min(8, tokens) : tokens);
                if (round >= 0) samples[c].Add(s);
            }
            loads.Add(Machine.LoadValue());
        }

        report.Heading($"Peers, {m.Name}: greedy, {tokens} new tokens after a {o.Prompt}-token prompt, thread counts {string.Join(" and ", threadCounts)}, " +
                       $"interleaved (median (min-max) of {o.Repeats}; load average per round {Summary.Of(loads).Format("F1")})");
        report.Row("contender", "load ms", "first token ms", "decode tokens/s", "decode vs GenAI, same threads (ratio of medians; per round)",
            "decode vs llama.cpp, same threads and steering", "decode tokens per CPU-second (1 thread)", "CPU-s ratio vs GenAI / vs llama.cpp", "tokens equal to");
        report.Rule(9);
        double Median(int c) => Summary.Of(samples[c].Select(s => s.DecodeTokensPerSecond)).Median;
        double CpuMedian(int c) => Summary.Of(samples[c].Select(s => s.DecodeTokensPerCpuSecond)).Median;
        string CpuRatio(int c, int? peer) => peer is int p && p != c && !double.IsNaN(CpuMedian(c))
            ? (CpuMedian(c) / CpuMedian(p)).ToString("F2", CultureInfo.InvariantCulture) : "-";
        int? Find(string engine, bool steered, int threads) =>
            contenders.FindIndex(x => x.Engine == engine && x.Steered == steered && x.Threads == threads) is var i and >= 0 ? i : null;
        string Ratio(int c, int? peer)
        {
            if (peer is not int p || p == c) return "-";
            var paired = Summary.Of(samples[c].Zip(samples[p], (a, b) => a.DecodeTokensPerSecond / b.DecodeTokensPerSecond));
            return $"{(Median(c) / Median(p)).ToString("F2", CultureInfo.InvariantCulture)} (per round {paired.Format("F2")})";
        }
        for (int c = 0; c < contenders.Count; c++)
        {
            var x = contenders[c];
            var same = x.Reference is int r
                ? $"{samples[c][0].Tokens.Zip(samples[r][0].Tokens).TakeWhile(z => z.First == z.Second).Count()} of {samples[c][0].Tokens.Length} ({contenders[r].Name})"
                : "(reference)";
            report.Row(x.Name, Summary.Of(samples[c].Select(s => s.LoadMs)).Format("F0"), Summary.Of(samples[c].Select(s => s.FirstTokenMs)).Format("F1"),
                Summary.Of(samples[c].Select(s => s.DecodeTokensPerSecond)).Format("F1"),
                x.Steered ? "-" : Ratio(c, Find(GenAiName, false, x.Threads)),
                x.Engine == LlamaCpp ? "-" : Ratio(c, Find(LlamaCpp, x.Steered, x.Threads)),
                x.Threads == 1 ? Summary.Of(samples[c].Select(s => s.DecodeTokensPerCpuSecond)).Format("F1") : "-",
                x.Threads == 1 ? $"{(x.Steered ? "-" : CpuRatio(c, Find(GenAiName, false, 1)))} / {(x.Engine == LlamaCpp ? "-" : CpuRatio(c, Find(LlamaCpp, x.Steered, 1)))}" : "-",
                same);
        }

        // Steering overhead and the --ort settings: every other onnxsteer row against the unsteered default at its thread count.
        report.Note($"onnxsteer rows against onnxsteer, original at the same thread count ({m.Name}; ratio of median decode tokens/s, per round median (min-max)):");
        report.Row("contender", "decode vs onnxsteer original", "first token vs onnxsteer original");
        report.Rule(3);
        for (int c = 0; c < contenders.Count; c++)
        {
            var x = contenders[c];
            if (!x.Engine.StartsWith(Ours, StringComparison.Ordinal) || (x.Engine == Ours && !x.Steered)) continue;
            if (Find(Ours, false, x.Threads) is not int baseline) continue;
            var firstToken = Summary.Of(samples[c].Zip(samples[baseline], (a, b) => a.FirstTokenMs / b.FirstTokenMs));
            report.Row(x.Name, Ratio(c, baseline), $"{(Summary.Of(samples[c].Select(s => s.FirstTokenMs)).Median / Summary.Of(samples[baseline].Select(s => s.FirstTokenMs)).Median).ToString("F2", CultureInfo.InvariantCulture)} (per round {firstToken.Format("F2")})");
        }

        // Memory of a load (the fused MatMuls' concatenated weights must not stay resident beside the originals).
        report.Note($"onnxsteer rows, memory of the load ({m.Name}; MiB above the process's resident size before it, median (min-max)):");
        report.Row("contender", "peak during load", "resident after load");
        report.Rule(3);
        for (int c = 0; c < contenders.Count; c++)
            if (contenders[c].Engine.StartsWith(Ours, StringComparison.Ordinal))
                report.Row(contenders[c].Name, Summary.Of(samples[c].Select(s => s.LoadPeakMiB)).Format("F0"), Summary.Of(samples[c].Select(s => s.LoadResidentMiB)).Format("F0"));

        // The same in a fresh process per load (the numbers above share a heap with earlier runs), fused and unfused
        // alternating: resident and peak memory after the load and after generating.
        if (o.OrtSettings.Any(x => x is "fuse_matmuls=0" or "fuse_matmuls=1"))
        {
            var rows = new[] { true, false }.ToDictionary(f => f, _ => new List<double[]>());
            for (int r = 0; r < 3; r++)
                foreach (var fuse in r % 2 == 0 ? new[] { true, false } : [false, true])
                    rows[fuse].Add(RunMemoryChild(m.Original, fuse, threadCounts[0], prompt.Length, tokens));
            report.Note($"Memory of one load in a fresh process ({m.Name}, {threadCounts[0]} thread(s); MiB, median (min-max) of 3; /proc/self/status after the load and after generating {tokens} tokens):");
            report.Row("MatMuls", "resident after load", "peak after load", "resident after generating", "peak after generating");
            report.Rule(5);
            foreach (var (fuse, list) in rows)
                report.Row([fuse ? "fused (fuse_matmuls=1)" : "as in the file (fuse_matmuls=0)",
                    .. Enumerable.Range(0, 4).Select(k => Summary.Of(list.Select(x => x[k])).Format("F0"))]);
        }

        // The issue's targets compare each engine at its best thread count.
        report.Note($"Best thread count per engine ({m.Name}), decode tokens/s (median) and ratios of the bests:");
        report.Row("setting", Ours, GenAiName, LlamaCpp, "onnxsteer / GenAI", "onnxsteer / llama.cpp");
        report.Rule(6);
        foreach (var steered in new[] { false, true })
        {
            (double Tps, int Threads)? Best(string engine) => contenders.Select((x, i) => (x, i)).Where(z => z.x.Engine == engine && z.x.Steered == steered)
                .Select(z => ((double Tps, int Threads)?)(Median(z.i), z.x.Threads)).MaxBy(z => z!.Value.Tps);
            var ours = Best(Ours);
            var genai = steered ? null : Best(GenAiName);
            var llama = Best(LlamaCpp);
            string Cell((double Tps, int Threads)? b) => b is { } v ? $"{v.Tps.ToString("F1", CultureInfo.InvariantCulture)} ({v.Threads}t)" : "-";
            string Div((double Tps, int Threads)? a, (double Tps, int Threads)? b) => a is { } x && b is { } y ? (x.Tps / y.Tps).ToString("F2", CultureInfo.InvariantCulture) : "-";
            report.Row(steered ? $"one steered layer ({middle})" : "unsteered", Cell(ours), Cell(genai), Cell(llama), Div(ours, genai), Div(ours, llama));
        }
    }

    /// <summary>An F32 GGUF of the model's weights beside the benchmark's copies (genai fp32 folders: the ModelBuilder's
    /// medium model and the bundled one); null, with a note, when the model is in another layout.</summary>
    private static string? WriteGguf(BenchModel m, Report report)
    {
        var path = Path.Combine(Path.GetDirectoryName(m.Original)!, "model.gguf");
        try
        {
            var sw = Stopwatch.StartNew();
            var weights = GenAiOnnxWeights.Open(m.Original);
            GgufLlamaWriter.Write(weights.Spec, weights, Path.Combine(m.Original, "tokenizer.json"), path, m.Name);
            report.Note($"Wrote {Path.GetFileName(path)} (F32, {new FileInfo(path).Length / (1 << 20)} MiB) from {m.Name}'s ONNX weights in {sw.Elapsed.TotalSeconds:F1} s. " +
                        "llama.cpp runs with its defaults otherwise (flash attention auto, f16 KV cache), as a user gets it.");
            return path;
        }
        catch (OnnxSteerException e)
        {
            report.Note($"llama.cpp left out for {m.Name}: {e.Message}");
            return null;
        }
    }

    /// <summary>The session setting one <c>--ort</c> value names: config entries joined by ';', and opt_level for the graph
    /// optimization level.</summary>
    private static Action<Microsoft.ML.OnnxRuntime.SessionOptions> OrtSetting(string setting)
    {
        var entries = setting.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(e => e.Split('=', 2) is [var k, var v] ? (Key: k, Value: v) : throw new ArgumentException($"--ort {setting}: expected KEY=VALUE"))
            .ToArray();
        return so =>
        {
            foreach (var (key, value) in entries)
            {
                if (key == "opt_level")
                    so.GraphOptimizationLevel = value switch
                    {
                        "basic" => Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                        "extended" => Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
                        "layout" => (Microsoft.ML.OnnxRuntime.GraphOptimizationLevel)3,
                        "all" => Microsoft.ML.OnnxRuntime.GraphOptimizationLevel.ORT_ENABLE_ALL,
                        _ => throw new ArgumentException($"--ort opt_level={value}: basic, extended, layout or all"),
                    };
                else if (key == "execution_mode")
                    so.ExecutionMode = value == "parallel" ? Microsoft.ML.OnnxRuntime.ExecutionMode.ORT_PARALLEL : Microsoft.ML.OnnxRuntime.ExecutionMode.ORT_SEQUENTIAL;
                else if (key == "mem_pattern")
                    so.EnableMemoryPattern = value == "1";
                else if (key == "cpu_arena")
                    so.EnableCpuMemArena = value == "1";
                else
                    so.AddSessionConfigEntry(key, value);
            }
        };
    }

    private static Sample RunOurs(string folder, int[] prompt, int tokens, int threads, Steering? steering,
        Action<Microsoft.ML.OnnxRuntime.SessionOptions>? configure = null, bool lastPositionLogits = true, bool? fuseMatMuls = null)
    {
        bool peakReset = Machine.ResetPeak();
        var before = Machine.Memory();
        long t0 = Stopwatch.GetTimestamp();
        using var model = SteeredModel.Load(folder, new RuntimeOptions
        {
            IntraOpThreads = threads, ConfigureSession = configure, LastPositionLogits = lastPositionLogits,
            FuseMatMuls = fuseMatMuls ?? new RuntimeOptions().FuseMatMuls,
        });
        double load = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        var after = Machine.Memory();
        double cpuFirst = double.NaN;
        int pieces = 0;
        var result = model.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering ?? Steering.None }],
            new GeneratorOptions { MaxNewTokens = tokens, UseChatTemplate = false }, _ => { if (pieces++ == 0) cpuFirst = ThreadCpu.Ms(); })[0];
        double cpu = ThreadCpu.Ms() - cpuFirst;
        return new Sample(load, result.TimeToFirstToken.TotalMilliseconds, result.TokensPerSecond,
            threads == 1 ? (result.TokenIds.Length - 1) / (cpu / 1000) : double.NaN, result.TokenIds,
            peakReset ? after.Peak - before.Rss : double.NaN, after.Rss - before.Rss);
    }

    public const string MemoryChildFlag = "--peers-memory-child";

    /// <summary>Runs <see cref="MemoryChild"/> in a fresh process: [resident after load, peak after load, resident after
    /// generating, peak after generating] in MiB.</summary>
    private static double[] RunMemoryChild(string folder, bool fuse, int threads, int promptLength, int tokens)
    {
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(typeof(PeersBench).Assembly.Location);
        foreach (var a in new[] { MemoryChildFlag, folder, fuse ? "1" : "0", threads.ToString(CultureInfo.InvariantCulture),
                     promptLength.ToString(CultureInfo.InvariantCulture), tokens.ToString(CultureInfo.InvariantCulture) })
            psi.ArgumentList.Add(a);
        using var child = Process.Start(psi)!;
        var line = child.StandardOutput.ReadToEnd().Trim();
        child.WaitForExit();
        if (child.ExitCode != 0) throw new InvalidOperationException($"the memory child exited with {child.ExitCode}: {line}");
        return [.. line.Split(' ').Select(x => double.Parse(x, CultureInfo.InvariantCulture))];
    }

    /// <summary>The child: loads <paramref name="args"/>' folder with or without the MatMul fusion, generates, and prints
    /// resident and peak memory after each.</summary>
    public static int MemoryChild(string[] args)
    {
        var (folder, fuse, threads, promptLength, tokens) = (args[0], args[1] == "1", int.Parse(args[2], CultureInfo.InvariantCulture),
            int.Parse(args[3], CultureInfo.InvariantCulture), int.Parse(args[4], CultureInfo.InvariantCulture));
        using var model = SteeredModel.Load(folder, new RuntimeOptions { IntraOpThreads = threads, FuseMatMuls = fuse });
        GC.Collect();
        var loaded = Machine.Memory();
        var vocab = model.Signature.VocabularySize ?? 1000;
        var prompt = DecodeBench.Prompts(1, promptLength, vocab)[0];
        model.Generate([new GenerationRequest { PromptTokenIds = prompt }], new GeneratorOptions { MaxNewTokens = tokens, UseChatTemplate = false });
        var generated = Machine.Memory();
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{loaded.Rss:F1} {loaded.Peak:F1} {generated.Rss:F1} {generated.Peak:F1}"));
        return 0;
    }

    private static Sample RunGenAi(string folder, int[] prompt, int tokens, int threads)
    {
        long t0 = Stopwatch.GetTimestamp();
        using var config = new Config(folder);
        config.ClearProviders();
        // Same thread count as ours; the benchmark copies forget their EOS ids, which GenAI needs, so it gets one back and
        // min_length keeps it from ending early (every contender generates exactly the requested tokens).
        config.Overlay("{\"model\":{\"eos_token_id\":2,\"decoder\":{\"session_options\":{\"intra_op_num_threads\":" +
            threads.ToString(CultureInfo.InvariantCulture) + ",\"inter_op_num_threads\":1}}}}");
        using var model = new Model(config);
        double load = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + tokens);
        parameters.SetSearchOption("min_length", prompt.Length + tokens);
        parameters.SetSearchOption("do_sample", false);
        long start = Stopwatch.GetTimestamp();
        using var generator = new Generator(model, parameters);
        generator.AppendTokens(prompt);
        generator.GenerateNextToken();
        long first = Stopwatch.GetTimestamp();
        double cpuFirst = ThreadCpu.Ms();
        int steps = 0;
        while (!generator.IsDone() && steps < tokens - 1)
        {
            generator.GenerateNextToken();
            steps++;
        }
        double decode = Stopwatch.GetElapsedTime(first).TotalSeconds;
        double cpu = ThreadCpu.Ms() - cpuFirst;
        var sequence = generator.GetSequence(0).ToArray();
        return new Sample(load, Stopwatch.GetElapsedTime(start, first).TotalMilliseconds, steps / decode,
            threads == 1 ? steps / (cpu / 1000) : double.NaN, sequence[prompt.Length..]);
    }

    private static bool _llamaLogSilenced;

    /// <summary>llama.cpp through LLamaSharp's native API: the prompt ids in one batch, then one id per decode call, greedy
    /// (argmax of the last logits, as GenAI and OnnxSteer do). A steered run sets a control vector that adds
    /// <paramref name="steer"/>'s vector to the output of that block only (llama.cpp numbers blocks like OnnxSteer's layers).</summary>
    private static unsafe Sample RunLlama(string gguf, int[] prompt, int tokens, int threads, (int Layer, float[] Vector)? steer, bool f32Cache = false)
    {
        if (!_llamaLogSilenced)
        {
            // llama.cpp logs every key and tensor at load; the report needs none of it.
            NativeLibraryConfig.All.WithLogCallback((level, message) => { });
            _llamaLogSilenced = true;
        }
        long t0 = Stopwatch.GetTimestamp();
        var p = new ModelParams(gguf)
        {
            ContextSize = (uint)(prompt.Length + tokens + 1), BatchSize = (uint)prompt.Length, Threads = threads, BatchThreads = threads, GpuLayerCount = 0,
        };
        if (f32Cache) p = new ModelParams(gguf)
        {
            ContextSize = p.ContextSize, BatchSize = p.BatchSize, Threads = threads, BatchThreads = threads, GpuLayerCount = 0,
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32, FlashAttention = false,
        };
        using var weights = LLamaWeights.LoadFromFile(p);
        using var context = weights.CreateContext(p);
        if (steer is { } s)
        {
            var (layer, vector) = s;
            // The buffer holds blocks 1..n-1 (llama.cpp never steers block 0); only the steered block's slot is non-zero.
            int embd = vector.Length, layers = weights.NativeHandle.LayerCount;
            var data = new float[embd * layers];
            vector.CopyTo(data, (layer - 1) * embd);
            fixed (float* ptr = data)
                if (NativeApi.llama_set_adapter_cvec(context.NativeHandle, ptr, (nuint)data.Length, embd, layer, layer) != 0)
                    throw new InvalidOperationException("llama.cpp refused the control vector.");
        }
        double load = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        var batch = new LLamaBatch();
        long start = Stopwatch.GetTimestamp();
        for (int i = 0; i < prompt.Length; i++) batch.Add((LLamaToken)prompt[i], i, (LLamaSeqId)0, i == prompt.Length - 1);
        Check(context.Decode(batch));
        var result = new int[tokens];
        result[0] = ArgMax(context.NativeHandle.GetLogitsIth(prompt.Length - 1));
        long first = Stopwatch.GetTimestamp();
        double cpuFirst = ThreadCpu.Ms();
        for (int step = 1; step < tokens; step++)
        {
            batch.Clear();
            batch.Add((LLamaToken)result[step - 1], prompt.Length + step - 1, (LLamaSeqId)0, true);
            Check(context.Decode(batch));
            result[step] = ArgMax(context.NativeHandle.GetLogitsIth(0));
        }
        double decode = Stopwatch.GetElapsedTime(first).TotalSeconds;
        double cpu = ThreadCpu.Ms() - cpuFirst;
        return new Sample(load, Stopwatch.GetElapsedTime(start, first).TotalMilliseconds, (tokens - 1) / decode,
            threads == 1 ? (tokens - 1) / (cpu / 1000) : double.NaN, result);

        static void Check(DecodeResult r)
        {
            if (r != DecodeResult.Ok) throw new InvalidOperationException($"llama_decode returned {r}.");
        }
    }

    private static int ArgMax(Span<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
