using System.Diagnostics;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.GenAI;
using OnnxSteer.Runtime;

namespace OnnxSteer.Benchmarks;

/// <summary>Issue 11: what steering costs inside ONNX Runtime GenAI. GenAI on the original folder (its own loop, nothing
/// of OnnxSteer) against OnnxSteer's genai engine on the original and on the folder patched for GenAI (required
/// inputs) with nothing fed (zeros), one layer steered and all layers steered. Decode only (prefill excluded), batch 1,
/// the cases run round-robin so load changes on the shared machine hit them alike.</summary>
internal static class GenAiSteeringBench
{
    public static void Run(BenchModel m, Options o, string scratch, Report report)
    {
        var patched = Path.Combine(scratch, m.Name, "patched-genai");
        if (!Directory.Exists(patched))
            ModelPatcher.Patch(m.Original, patched, new PatchOptions { SteerInput = SteerInputMode.Required, Expose = LayerSelection.None });
        int mid = m.Layers / 2;
        var rng = new Random(42);
        var vectors = Enumerable.Range(0, m.Layers).Select(_ => DecodeBench.RandomUnit(rng, m.Hidden)).ToArray();
        var one = Steering.None.Add(vectors[mid], mid, 4f, "bench");
        var all = Enumerable.Range(0, m.Layers).Aggregate(Steering.None, (s, l) => s.Add(vectors[l], l, 4f, "bench"));
        var runtime = new RuntimeOptions { IntraOpThreads = o.Threads };
        using var engineOriginal = GenAiSteeredModel.Load(m.Original, runtime);
        using var enginePatched = GenAiSteeredModel.Load(patched, runtime);
        using var rawModel = RawModel(m.Original, o.Threads);
        var prompt = DecodeBench.Prompts(1, o.Prompt, m.Vocab)[0];
        var cases = new (string Name, Func<int, (double DecodeMs, int Steps, double CpuMs)> Run)[]
        {
            ("GenAI on the original (its own Generator loop)", n => RunRaw(rawModel, prompt, n)),
            ("genai engine, original", n => RunEngine(engineOriginal, prompt, Steering.None, n)),
            ("genai engine, patched, nothing fed (zeros)", n => RunEngine(enginePatched, prompt, Steering.None, n)),
            ($"genai engine, patched, add @ layer {mid}", n => RunEngine(enginePatched, prompt, one, n)),
            ($"genai engine, patched, add @ all {m.Layers} layers", n => RunEngine(enginePatched, prompt, all, n)),
        };
        var ms = cases.Select(_ => new List<double>()).ToArray();
        var cpu = cases.Select(_ => new List<double>()).ToArray();
        int steps = 0;
        for (int rep = -1; rep < o.Repeats; rep++)
            for (int c = 0; c < cases.Length; c++)
            {
                var (decodeMs, n, cpuMs) = cases[c].Run(rep < 0 ? Math.Min(8, o.Tokens) : o.Tokens);
                if (rep < 0) continue;
                ms[c].Add(decodeMs / n);
                cpu[c].Add(cpuMs / n);
                steps = n;
            }
        report.Heading($"GenAI steering, {m.Name}, batch 1: {o.Tokens} new tokens after a {o.Prompt}-token prompt (median (min-max) of {o.Repeats}; {steps} decode steps each)");
        report.Row("case", "wall ms/step", "process CPU ms/step", "wall vs GenAI original", "wall vs engine original");
        report.Rule(5);
        var med = ms.Select(x => Summary.Of(x).Median).ToArray();
        for (int c = 0; c < cases.Length; c++)
            report.Row(cases[c].Name, Summary.Of(ms[c]).Format("F3"), Summary.Of(cpu[c]).Format("F3"), Pct(med[c], med[0]), Pct(med[c], med[1]));
        report.Note("Process CPU time covers every thread (GenAI's and ONNX Runtime's). The target: steering through GenAI within 2% of GenAI on the original folder.");
    }

    private static Model RawModel(string dir, int? threads)
    {
        using var config = new Config(dir);
        config.ClearProviders();
        if (threads is int t) config.Overlay($$"""{ "model": { "decoder": { "session_options": { "intra_op_num_threads": {{t}} } } } }""");
        return new Model(config);
    }

    /// <summary>The plain GenAI loop a GenAI app runs: AppendTokens(prompt), then GenerateNextToken until max_length.</summary>
    private static (double, int, double) RunRaw(Model model, int[] prompt, int tokens)
    {
        using var search = new GeneratorParams(model);
        search.SetSearchOption("max_length", prompt.Length + tokens);
        search.SetSearchOption("min_length", prompt.Length + tokens); // no early EOS: every run decodes the same steps
        using var generator = new Generator(model, search);
        generator.AppendTokens(prompt);
        generator.GenerateNextToken(); // samples from the prompt's logits: part of prefill
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        long start = Stopwatch.GetTimestamp();
        int steps = 0;
        while (!generator.IsDone()) { generator.GenerateNextToken(); steps++; }
        return (Stopwatch.GetElapsedTime(start).TotalMilliseconds, steps, (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds);
    }

    private static (double, int, double) RunEngine(GenAiSteeredModel model, int[] prompt, Steering steering, int tokens)
    {
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var r = model.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }], new GeneratorOptions { MaxNewTokens = tokens })[0];
        double cpuMs = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalMilliseconds;
        // The CPU time above includes prefill; scale by the decode share of wall time to compare with the raw loop.
        double total = (r.PrefillTime + r.DecodeTime).TotalMilliseconds;
        return (r.DecodeTime.TotalMilliseconds, r.DecodeSteps, total > 0 ? cpuMs * r.DecodeTime.TotalMilliseconds / total : double.NaN);
    }

    private static string Pct(double a, double b) => double.IsFinite(a) && b > 0 ? $"{(a / b - 1) * 100:+0.0;-0.0;0.0}%" : "-";
}
