using System.Diagnostics;
using System.Globalization;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Modeling.Tokenization;

namespace OnnxSteer.Benchmarks;

/// <summary>Tokenizer load time (issue 12): <see cref="TextTokenizer.Load"/> on the shared Llama export (32k
/// SentencePiece-style BPE), the bundled model, and synthetic Llama 3-shaped byte-level BPE tokenizers of 32k and 128k
/// tokens. Three numbers per tokenizer: a fresh process from its start to the tokenizer being ready (what a CLI verb
/// pays), the first load inside that process (cold: JIT included), and the median in-process load after a warm-up.</summary>
internal static class TokenizerLoadBench
{
    public const string ChildFlag = "--tokenizer-load-child";

    public static void Run(string scratch, Options o, Report report)
    {
        var cases = new List<(string Name, string Folder)>();
        var shared = Path.Combine(Models.RepoRoot, "..", "shared", "fixtures", "genai-tiny-llama-fp16");
        if (File.Exists(Path.Combine(shared, "tokenizer.json"))) cases.Add(("shared Llama export (32000, Metaspace + byte fallback, 3.6 MB)", shared));
        var bundled = Path.Combine(Models.RepoRoot, "models", "tiny-instruct");
        if (File.Exists(Path.Combine(bundled, "tokenizer.json"))) cases.Add(("models/tiny-instruct (byte-level)", bundled));
        foreach (var (size, arrays) in new[] { (32_000, true), (128_000, true), (128_000, false) })
        {
            var dir = Path.Combine(scratch, $"tokenizer-{size}-{(arrays ? "pairs" : "strings")}");
            Directory.CreateDirectory(dir);
            TokenizerFixtures.WriteByteLevelBpe(dir, size, arrayMerges: arrays);
            var mb = new FileInfo(Path.Combine(dir, "tokenizer.json")).Length / 1e6;
            cases.Add(($"synthetic byte-level {size / 1000}k ({(arrays ? "pair" : "string")} merges, {mb:F1} MB)", dir));
        }

        report.Heading($"Tokenizer load (ms; median (min-max) of {o.Repeats})");
        report.Row("tokenizer", "process start to ready: wall / process CPU", "first load in process (cold): wall / thread CPU",
            "warm load: wall / thread CPU", "warm MB allocated", "load");
        report.Rule(6);
        foreach (var (name, folder) in cases)
        {
            var startToReady = new List<double>(); var processCpu = new List<double>();
            var cold = new List<double>(); var coldCpu = new List<double>();
            for (int i = 0; i < o.Repeats; i++)
            {
                var (ready, cpu, first, firstCpu) = RunChild(folder);
                startToReady.Add(ready); processCpu.Add(cpu);
                cold.Add(first); coldCpu.Add(firstCpu);
            }
            TextTokenizer.Load(folder);
            var warm = new List<double>(); var warmCpu = new List<double>();
            var allocated = new List<double>();
            for (int i = 0; i < o.Repeats; i++)
            {
                long before = GC.GetAllocatedBytesForCurrentThread();
                double c0 = ThreadCpu.Ms();
                var sw = Stopwatch.StartNew();
                TextTokenizer.Load(folder);
                warm.Add(sw.Elapsed.TotalMilliseconds);
                warmCpu.Add(ThreadCpu.Ms() - c0);
                allocated.Add((GC.GetAllocatedBytesForCurrentThread() - before) / 1e6);
            }
            report.Row(name, $"{Summary.Of(startToReady).Format("F0")} / {Summary.Of(processCpu).Format("F0")}",
                $"{Summary.Of(cold).Format("F0")} / {Summary.Of(coldCpu).Format("F0")}",
                $"{Summary.Of(warm).Format("F1")} / {Summary.Of(warmCpu).Format("F1")}",
                Summary.Of(allocated).Format("F1"), Machine.Load());
        }
        report.Note("Process start to ready: a fresh `OnnxSteer.Benchmarks` process started with the tokenizer's folder, timed by the parent "
            + "from Process.Start until the child reports the tokenizer loaded (runtime start, JIT and file read included); process CPU is the "
            + "child's CPU time on all its threads at that point. First load: the child's Stopwatch and thread CPU time around its one Load. Warm: "
            + "this process, after one untimed load. On a loaded machine the CPU times are the numbers to compare; wall times include waiting for a core.");
    }

    private static (double Ready, double ProcessCpu, double First, double FirstCpu) RunChild(string folder)
    {
        var self = Environment.ProcessPath ?? throw new InvalidOperationException("no process path");
        var psi = new ProcessStartInfo(self) { RedirectStandardOutput = true, UseShellExecute = false };
        // Launched through the dotnet host, the entry assembly is an argument.
        if (Path.GetFileNameWithoutExtension(self) == "dotnet") psi.ArgumentList.Add(typeof(TokenizerLoadBench).Assembly.Location);
        psi.ArgumentList.Add(ChildFlag);
        psi.ArgumentList.Add(folder);
        var sw = Stopwatch.StartNew();
        using var child = Process.Start(psi)!;
        var line = child.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the child printed nothing");
        double ready = sw.Elapsed.TotalMilliseconds;
        child.WaitForExit();
        var parts = line.Split(' ');
        return (ready, double.Parse(parts[2], CultureInfo.InvariantCulture),
            double.Parse(parts[0], CultureInfo.InvariantCulture), double.Parse(parts[1], CultureInfo.InvariantCulture));
    }

    /// <summary>The child: loads once and prints the load's wall and thread CPU milliseconds.</summary>
    public static int Child(string folder)
    {
        double c0 = ThreadCpu.Ms();
        var sw = Stopwatch.StartNew();
        TextTokenizer.Load(folder);
        double wall = sw.Elapsed.TotalMilliseconds, cpu = ThreadCpu.Ms() - c0;
        double processCpu = Process.GetCurrentProcess().TotalProcessorTime.TotalMilliseconds;
        Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{wall:F1} {cpu:F1} {processCpu:F1}"));
        Console.Out.Flush();
        return 0;
    }
}
