using System.Diagnostics;
using System.Text.Json.Nodes;
using OnnxSteer.Cli;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Reliability;

/// <summary>Faults: the CLI killed at random moments, a full disk, a read-only output folder. Outputs are complete or
/// absent, temporary siblings of a killed run are removed by the next run, and inputs are never modified.
/// Kills per verb scale with <c>ONNXSTEER_KILL_RUNS</c> (CI: 3).</summary>
public sealed class FaultTests(Xunit.Abstractions.ITestOutputHelper log)
{
    private static int KillRuns => int.TryParse(Environment.GetEnvironmentVariable("ONNXSTEER_KILL_RUNS"), out var n) && n > 0 ? n : 3;

    /// <summary>The built CLI, copied beside the test binaries by the project reference (same configuration).</summary>
    private static string CliDll()
    {
        var dll = Path.Combine(AppContext.BaseDirectory, "OnnxSteer.Cli.dll");
        Assert.True(File.Exists(dll), $"build the tests first: {dll}");
        return dll;
    }

    private static Process Start(params string[] args)
    {
        var info = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        info.ArgumentList.Add(CliDll());
        foreach (var a in args) info.ArgumentList.Add(a);
        var p = Process.Start(info)!;
        p.OutputDataReceived += (_, _) => { };
        p.ErrorDataReceived += (_, _) => { };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        return p;
    }

    private static Dictionary<string, string> Hashes(string dir) =>
        Directory.GetFiles(dir).ToDictionary(f => Path.GetFileName(f), ModelPatcher.Sha256Hex);

    private static string[] Leftovers(string parent, string name) =>
        Directory.GetFileSystemEntries(parent, $".{name}.*").Select(Path.GetFileName).ToArray()!;

    /// <summary>Runs the verb once to measure it, then kills it after delays spread over that duration. After each kill the
    /// output is absent or complete; a rerun succeeds and leaves no temporary sibling.</summary>
    private void KillAtRandomMoments(string[] args, string output, Action<string> checkComplete, int seed)
    {
        var parent = Path.GetDirectoryName(output)!;
        var name = Path.GetFileName(output);
        var clock = Stopwatch.StartNew();
        using (var p = Start([.. args, "--overwrite"]))
        {
            Assert.True(p.WaitForExit(TimeSpan.FromMinutes(3)), "reference run hung");
            Assert.Equal(0, p.ExitCode);
        }
        var full = clock.Elapsed;
        checkComplete(output);
        var rng = new Random(seed);
        for (var i = 0; i < KillRuns; i++)
        {
            var delay = TimeSpan.FromMilliseconds(rng.NextDouble() * full.TotalMilliseconds * 1.1);
            // Start from nothing, so an output present after the kill is the killed run's own.
            if (Directory.Exists(output)) Directory.Delete(output, recursive: true);
            File.Delete(output);
            using var p = Start([.. args, "--overwrite"]);
            var killed = !p.WaitForExit(delay);
            if (killed) p.Kill(entireProcessTree: true);
            p.WaitForExit();
            var present = Directory.Exists(output) || File.Exists(output);
            if (present) checkComplete(output);
            log.WriteLine($"{args[0]} kill {i}: after {delay.TotalMilliseconds:F0} ms of a {full.TotalMilliseconds:F0} ms run: " +
                          $"{(killed ? "killed" : "finished first")}, output {(present ? "complete" : "absent")}, temp siblings {Leftovers(parent, name).Length}");
            // The next run cleans what the killed one could not.
            var (o, e) = (new StringWriter(), new StringWriter());
            Assert.True(CliApp.Run([.. args, "--overwrite"], o, e) == 0, e.ToString());
            checkComplete(output);
            Assert.Empty(Leftovers(parent, name));
        }
    }

    [Fact]
    public void KillingPatchLeavesNoPartialOutputAndTheSourceUnchanged()
    {
        using var dir = TestPaths.NewTempDir();
        var before = Hashes(TestPaths.GenAiTinyLlamaFp16);
        var output = dir.Combine("patched");
        KillAtRandomMoments(["patch", TestPaths.GenAiTinyLlamaFp16, "-o", output], output, o =>
        {
            OnnxModelFile.Load(o);
            Assert.True(File.Exists(Path.Combine(o, "steering.json")));
        }, seed: 11);
        Assert.Equal(before, Hashes(TestPaths.GenAiTinyLlamaFp16));
    }

    [Fact]
    public void KillingExtractLeavesNoPartialFileAndTheModelUnchanged()
    {
        using var dir = TestPaths.NewTempDir();
        var model = dir.Combine("patched");
        ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, model, new PatchOptions());
        var before = Hashes(model);
        var pairs = dir.Combine("pairs.jsonl");
        File.WriteAllLines(pairs, Enumerable.Range(0, 6).Select(i =>
            new JsonObject { ["prompt"] = $"Describe place number {i}.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()));
        var output = dir.Combine("v.safetensors");
        KillAtRandomMoments(["extract", model, "--pairs", pairs, "-o", output], output, o => InstructionVectorFile.Load(o), seed: 12);
        Assert.Equal(before, Hashes(model));
    }

    [Fact]
    public void WriteThatFailsMidwayLeavesNothing()
    {
        using var dir = TestPaths.NewTempDir();
        var target = dir.Combine("out.bin");
        var e = Assert.Throws<OnnxSteerException>(() => AtomicFile.Write(target, s =>
        {
            s.Write(new byte[4096]);
            throw new IOException("No space left on device");
        }));
        Assert.Equal(ErrorKind.Output, e.Kind);
        Assert.Contains("No space left on device", e.Message);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));

        var folder = dir.Combine("out");
        e = Assert.Throws<OnnxSteerException>(() => AtomicFile.WriteDirectory(folder, false, tmp =>
        {
            File.WriteAllText(Path.Combine(tmp, "a"), "x");
            throw new IOException("No space left on device");
        }));
        Assert.Equal(ErrorKind.Output, e.Kind);
        Assert.Empty(Directory.GetFileSystemEntries(dir.Path));
    }

    /// <summary>Mounts a tmpfs (root only, Linux); returns false where that is not possible, and the test then checks nothing more.</summary>
    private static bool TryMount(string at, string options)
    {
        if (!OperatingSystem.IsLinux() || Environment.UserName != "root") return false;
        Directory.CreateDirectory(at);
        using var p = Process.Start(new ProcessStartInfo("mount", ["-t", "tmpfs", "-o", options, "tmpfs", at]) { RedirectStandardError = true })!;
        p.WaitForExit();
        return p.ExitCode == 0;
    }

    private static void Unmount(string at)
    {
        using var p = Process.Start(new ProcessStartInfo("umount", [at]) { RedirectStandardError = true })!;
        p.WaitForExit();
    }

    [Fact]
    public void FullDiskAndReadOnlyFolderGiveOutputErrorsAndLeaveNothing()
    {
        using var dir = TestPaths.NewTempDir();
        var model = dir.Combine("patched");
        ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, model, new PatchOptions());
        var pairs = dir.Combine("pairs.jsonl");
        File.WriteAllLines(pairs, [new JsonObject { ["prompt"] = "Describe a lake.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()]);
        var full = dir.Combine("full");
        var ro = dir.Combine("ro");
        if (!TryMount(full, "size=64k")) return;
        try
        {
            // Fill the disk so that only a few bytes remain.
            try { File.WriteAllBytes(Path.Combine(full, "filler"), new byte[64 * 1024]); } catch (IOException) { }
            foreach (var args in new[] { new[] { "patch", TestPaths.GenAiTinyLlamaFp16, "-o", Path.Combine(full, "p") },
                                         ["extract", model, "--pairs", pairs, "-o", Path.Combine(full, "v.safetensors")] })
            {
                var (o, e) = (new StringWriter(), new StringWriter());
                Assert.Equal((int)ErrorKind.Output, CliApp.Run(args, o, e));
                Assert.StartsWith("onnxsteer: error: ", e.ToString());
                Assert.Equal(["filler"], Directory.GetFileSystemEntries(full).Select(Path.GetFileName));
            }
        }
        finally { Unmount(full); }

        if (!TryMount(ro, "ro,size=64k")) return;
        try
        {
            foreach (var args in new[] { new[] { "patch", TestPaths.GenAiTinyLlamaFp16, "-o", Path.Combine(ro, "p") },
                                         ["extract", model, "--pairs", pairs, "-o", Path.Combine(ro, "v.safetensors")] })
            {
                var (o, e) = (new StringWriter(), new StringWriter());
                Assert.Equal((int)ErrorKind.Output, CliApp.Run(args, o, e));
                Assert.Empty(Directory.GetFileSystemEntries(ro));
            }
        }
        finally { Unmount(ro); }
    }
}
