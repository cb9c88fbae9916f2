using System.Globalization;
using OnnxSteer.Runtime;

namespace OnnxSteer.Benchmarks;

/// <summary>Command-line settings of one benchmark run.</summary>
internal sealed record Options
{
    public List<string> Suites { get; init; } = [];
    public List<string> Models { get; init; } = [];
    public int Repeats { get; init; } = 5;
    public int? Threads { get; init; }
    public int[] Batches { get; init; } = [1, 4];
    public int Tokens { get; init; } = 128;
    public int Prompt { get; init; } = 64;
    public bool Full { get; init; }
    public int[] Pairs { get; init; } = [16, 64, 256];
    public int[] Lengths { get; init; } = [64, 256, 1024];
    public long[] Sizes { get; init; } = [10L << 20, 1L << 30, 10L << 30];
    public string? Markdown { get; init; }
    public string? Keep { get; init; }
    public bool LlamaF32Cache { get; init; }
    public bool PeersAllLayers { get; init; }
    public List<string> OrtSettings { get; init; } = [];

    public const string Usage = """
        usage: OnnxSteer.Benchmarks [decode] [prefill] [alloc] [extract] [extract-profile] [roofline] [patch] [profile] [tokenizer-load] [peers] [genai] [all]
                 [--model tiny|medium|medium-optimum|bundled|FOLDER]... [--repeats N] [--threads N] [--batch 1,4] [--tokens 128]
                 [--prompt 64] [--full] [--pairs 16,64,256] [--lengths 64,256,1024] [--sizes 10M,1G,10G]
                 [--markdown FILE] [--keep DIR] [--llama-f32-cache] [--all-layers] [--ort KEY=VALUE[;KEY=VALUE]]...
          decode   decode ms/token and tokens/s: bare ORT loop, original, patched (nothing fed, add @ 1 layer,
                   add @ all layers, project @ 1 layer) with hidden states exposed at all layers and at none
          prefill  prefill latency for --lengths-token prompts (default 64, 256, 1024)
          alloc    managed bytes allocated per generated token in steady state
          extract  extraction pairs/s at batch 1/8/16 (over the first --pairs count), full graph against pruned, unsorted
                   against sorted, and peak memory for each --pairs count
          extract-profile  ONNX Runtime's profiler over extraction (full graph with and without logits, pruned; batch 1
                   and 16), MatMul GFLOP/s counted from the graph, then the roofline below
          roofline one [M,768]x[768,2048] MatMul: the GFLOP/s ONNX Runtime reaches on this core
          patch    patch time and bytes read against a sparse external data file of each --sizes
          profile  ONNX Runtime's profiler: decode kernel time per operator type, original against patched
          tokenizer-load  tokenizer load ms (process start to ready, cold, warm) on the shared Llama export, the bundled
                   model and synthetic byte-level BPE tokenizers of 32k and 128k tokens
          peers    onnxsteer (unsteered, and one layer steered) against ONNX Runtime GenAI 0.20 on the same folder and
                   llama.cpp (LLamaSharp 0.30 CPU) on an F32 GGUF of the same weights (unsteered, and a control vector at
                   the same layer), same prompt ids, interleaved: load ms, first-token ms, decode tokens/s (and per
                   CPU-second at one thread) and their ratios; threads 1 and all cores (or --threads N);
                   --llama-f32-cache adds llama.cpp with an f32 KV cache and flash attention off (float32 throughout);
                   the steered onnxsteer row is the deployed patch (the middle layer steerable, nothing exposed);
                   --all-layers adds the default patch (every layer steerable and exposed) as its own row;
                   --ort KEY=VALUE adds an unsteered onnxsteer row with that ONNX Runtime session config entry (several
                   joined by ';'; opt_level=basic|extended|all|layout sets the graph optimization level;
                   full_logits=1 loads the model file as it is, the LM head over every prompt position;
                   fuse_matmuls=1 / fuse_matmuls=0 runs q/k/v and gate/up as one MatMul each / as the file has them;
                   these combine with the others by ';'; either alone also measures memory in fresh processes)
          lockstep steering overhead measured step by step: the original and a patched model decode in lockstep,
                   alternating which goes first, and each step's thread CPU time is paired (a null control, the
                   original against itself, shows the method's resolution)
          genai    ONNX Runtime GenAI on the original folder against OnnxSteer's genai engine on the folder patched for
                   GenAI: nothing fed, add @ 1 layer, add @ all layers (decode ms/step, batch 1)
        models: tiny = tiny-instruct's shape with random weights; medium = ~134M-parameter Llama (random weights,
                genai layout); medium-optimum = the same in Optimum's decomposed layout;
        bundled = models/tiny-instruct. All are written or linked into a temp folder deleted at exit.
        """;

    public static Options Parse(string[] args)
    {
        var o = new Options();
        var suites = new List<string>();
        var models = new List<string>();
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "decode" or "prefill" or "alloc" or "extract" or "patch" or "profile" or "extract-profile" or "roofline" or "lockstep" or "genai" or "tokenizer-load" or "peers": suites.Add(args[i]); break;
                case "all": suites.AddRange(["decode", "prefill", "alloc", "extract", "patch"]); break;
                case "--model": models.Add(Next()); break;
                case "--repeats": o = o with { Repeats = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--threads": o = o with { Threads = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--batch": o = o with { Batches = Ints(Next()) }; break;
                case "--tokens": o = o with { Tokens = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--prompt": o = o with { Prompt = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--full": o = o with { Full = true }; break;
                case "--llama-f32-cache": o = o with { LlamaF32Cache = true }; break;
                case "--all-layers": o = o with { PeersAllLayers = true }; break;
                case "--ort": o = o with { OrtSettings = [.. o.OrtSettings, Next()] }; break;
                case "--pairs": o = o with { Pairs = Ints(Next()) }; break;
                case "--lengths": o = o with { Lengths = Ints(Next()) }; break;
                case "--sizes": o = o with { Sizes = Next().Split(',').Select(ParseSize).ToArray() }; break;
                case "--markdown": o = o with { Markdown = Next() }; break;
                case "--keep": o = o with { Keep = Next() }; break;
                case "-h" or "--help": throw new ArgumentException(Usage);
                default: throw new ArgumentException($"unknown argument '{args[i]}'\n{Usage}");
            }
        }
        if (suites.Count == 0) suites.AddRange(["decode", "prefill", "alloc", "extract", "patch"]);
        if (models.Count == 0) models.Add("medium");
        return o with { Suites = suites.Distinct().ToList(), Models = models };
    }

    private static int[] Ints(string s) => s.Split(',').Select(x => int.Parse(x, CultureInfo.InvariantCulture)).ToArray();

    private static long ParseSize(string s)
    {
        s = s.Trim().ToUpperInvariant();
        long unit = s[^1] switch { 'K' => 1L << 10, 'M' => 1L << 20, 'G' => 1L << 30, _ => 1 };
        return long.Parse(unit == 1 ? s : s[..^1], CultureInfo.InvariantCulture) * unit;
    }
}

/// <summary>Prints Markdown tables to stdout as results arrive (and to --markdown FILE).</summary>
internal sealed class Report(TextWriter? file)
{
    private void Line(string s)
    {
        Console.WriteLine(s);
        file?.WriteLine(s);
        file?.Flush();
    }

    public void Heading(string s) { Line(""); Line($"#### {s}"); Line(""); }
    public void Row(params string[] cells) => Line("| " + string.Join(" | ", cells) + " |");
    public void Rule(int n) => Line("|" + string.Concat(Enumerable.Repeat(" --- |", n)));
    public void Note(string s) { Line(""); Line(s); }
}

internal static class Program
{
    public static int Main(string[] args)
    {
        if (args is [TokenizerLoadBench.ChildFlag, var tokenizerFolder]) return TokenizerLoadBench.Child(tokenizerFolder);
        if (args is [PeersBench.MemoryChildFlag, .. var memoryArgs]) return PeersBench.MemoryChild(memoryArgs);
        Options o;
        try { o = Options.Parse(args); }
        catch (ArgumentException e) { Console.Error.WriteLine(e.Message); return 2; }
        using var file = o.Markdown is null ? null : new StreamWriter(o.Markdown, append: true);
        var report = new Report(file);
        var scratch = o.Keep ?? Path.Combine(Path.GetTempPath(), $"onnxsteer-bench-{Environment.ProcessId}");
        Directory.CreateDirectory(scratch);
        try
        {
            report.Note($"### Run {DateTime.UtcNow:yyyy-MM-dd HH:mm} UTC: `{string.Join(' ', args)}`");
            report.Note($"Machine: {Machine.Describe()}. ONNX Runtime intra-op threads: {(o.Threads?.ToString(CultureInfo.InvariantCulture) ?? "default (all cores)")}. Load average at start: {Machine.Load()}.");
            if (o.Suites.Contains("patch")) PatchBench.Run(scratch, o, report);
            if (o.Suites.Contains("roofline") && !o.Suites.Contains("extract-profile")) ExtractProfileBench.Roofline(o, report);
            if (o.Suites.Contains("tokenizer-load")) TokenizerLoadBench.Run(scratch, o, report);
            foreach (var name in o.Models)
            {
                if (!o.Suites.Any(s => s is "decode" or "prefill" or "alloc" or "extract" or "profile" or "extract-profile" or "lockstep" or "genai" or "peers")) break;
                var m = Models.Prepare(name, scratch, Console.Out);
                report.Note($"Model **{m.Name}**: {m.Description}.");
                var loaded = new Dictionary<string, SteeredModel>();
                SteeredModel Load(string folder)
                {
                    if (!loaded.TryGetValue(folder, out var model))
                        loaded[folder] = model = folder.EndsWith(DecodeBench.PlainSuffix, StringComparison.Ordinal)
                            ? SteeredModel.Load(folder[..^DecodeBench.PlainSuffix.Length], new RuntimeOptions { IntraOpThreads = o.Threads, BoundDecode = false })
                            : SteeredModel.Load(folder, new RuntimeOptions { IntraOpThreads = o.Threads });
                    return model;
                }
                try
                {
                    if (o.Suites.Contains("decode")) DecodeSuite(m, Load, o, report);
                    if (o.Suites.Contains("prefill")) PrefillBench.Run(m, Load, o, report);
                    if (o.Suites.Contains("alloc")) AllocBench.Run(m, Load, o, report);
                    if (o.Suites.Contains("lockstep")) LockstepBench.Run(m, Load, o, report);
                }
                finally
                {
                    foreach (var model in loaded.Values) model.Dispose();
                }
                if (o.Suites.Contains("peers")) PeersBench.Run(m, o, report);
                if (o.Suites.Contains("extract")) ExtractBench.Run(m, o, report);
                if (o.Suites.Contains("genai")) GenAiSteeringBench.Run(m, o, scratch, report);
                if (o.Suites.Contains("profile")) ProfileBench.Run(m, o, scratch, report);
                if (o.Suites.Contains("extract-profile")) ExtractProfileBench.Run(m, o, scratch, report);
            }
            report.Note($"Load average at end: {Machine.Load()}.");
            return 0;
        }
        finally
        {
            if (o.Keep is null)
                try { Directory.Delete(scratch, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    private static void DecodeSuite(BenchModel m, Func<string, SteeredModel> load, Options o, Report report)
    {
        var cases = DecodeBench.Cases(m, o.Full);
        foreach (var batch in o.Batches)
        {
            var prompts = DecodeBench.Prompts(batch, o.Prompt, m.Vocab);
            var samples = cases.Select(_ => new List<DecodeSample>()).ToArray();
            var loads = cases.Select(_ => new List<double>()).ToArray();
            // Round-robin over the cases so that load changes on the shared machine hit every case alike; repeat -1 warms up.
            for (int rep = -1; rep < o.Repeats; rep++)
                for (int c = 0; c < cases.Count; c++)
                {
                    var k = cases[c];
                    var model = load(k.Folder);
                    // The warm-up round is short: it only has to JIT the code and size ONNX Runtime's arenas.
                    int tokens = rep < 0 ? Math.Min(8, o.Tokens) : o.Tokens;
                    var s = k.Bare ? DecodeBench.RunBare(model, prompts, tokens)
                        : k.Bound ? DecodeBench.RunBound(model, prompts, tokens)
                        : DecodeBench.RunOurs(model, prompts, k.Steering(batch), tokens);
                    if (rep < 0) continue;
                    samples[c].Add(s);
                    loads[c].Add(Machine.LoadValue());
                }
            report.Heading($"Decode, {m.Name}, batch {batch}: {o.Tokens} new tokens after a {o.Prompt}-token prompt (median (min-max) of {o.Repeats}; {samples[0][0].Steps} decode steps each)");
            report.Row("case", "wall ms/step", "tokens/s (all rows)", "CPU ms/step", "CPU vs original", "CPU vs bare loop", "wall vs original", "load");
            report.Rule(8);
            var medians = samples.Select(s => Summary.Of(s.Select(x => x.MsPerStep)).Median).ToArray();
            var cpuMedians = samples.Select(s => Summary.Of(s.Select(x => x.CpuMsPerStep)).Median).ToArray();
            int orig = cases.ToList().FindIndex(c => c.Name == "original");
            for (int c = 0; c < cases.Count; c++)
            {
                var ms = Summary.Of(samples[c].Select(x => x.MsPerStep));
                var tps = Summary.Of(samples[c].Select(x => x.TokensPerSecond));
                var cpu = Summary.Of(samples[c].Select(x => x.CpuMsPerStep));
                report.Row(cases[c].Name, ms.Format("F2"), tps.Format("F1"), cpu.Format("F2"),
                    Pct(cpuMedians[c], cpuMedians[orig]), Pct(cpuMedians[c], cpuMedians[0]), Pct(medians[c], medians[orig]), Summary.Of(loads[c]).Format("F1"));
            }
            int bound = cases.ToList().FindIndex(c => c.Bound);
            if (bound >= 0)
                report.Note($"The IOBinding loop spent {Summary.Of(samples[bound].Select(x => x.PrefillMs)).Format("F1")} ms building its {o.Tokens - 1} bindings before decoding (not in ms/step).");
            // Paired ratios: each repeat's case against the original run just before it, which cancels slow load drift.
            report.Note("Paired CPU-time overhead per repeat (case / original in the same round, median (min-max)): " + string.Join("; ",
                cases.Select((k, c) => (k, c)).Where(x => x.c != orig).Select(x =>
                    $"{x.k.Name}: {Summary.Of(samples[x.c].Zip(samples[orig], (a, b) => (a.CpuMsPerStep / b.CpuMsPerStep - 1) * 100)).Format("F1")}%")));
        }
    }

    private static string Pct(double value, double reference) =>
        double.IsNaN(reference) ? "-" : $"{(value / reference - 1) * 100:+0.0;-0.0;0.0}%";
}
