using System.CommandLine;
using OnnxSteer.Decoder;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer verify &lt;patched-dir&gt; [--source DIR] [--json]</c>: checks the patch contract numerically.</summary>
internal static class VerifyCommand
{
    private static readonly Argument<string> PatchedArgument = new("patched") { Description = "A folder written by 'onnxsteer patch'." };
    private static readonly Option<string?> SourceOption = new("--source") { Description = "The original model folder (default: the path recorded in steering.json)." };
    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print the report as JSON." };

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("verify", "Run a patched model against its source in ONNX Runtime (CPU): bit-identical outputs with nothing fed, exact steering deltas, projection and ablation.");
        command.Arguments.Add(PatchedArgument);
        command.Options.Add(SourceOption);
        command.Options.Add(JsonOption);
        command.SetAction(parse =>
        {
            var report = PatchVerifier.Verify(parse.GetValue(PatchedArgument)!, new VerifyOptions { SourceDirectory = parse.GetValue(SourceOption) });
            if (parse.GetValue(JsonOption)) stdout.WriteLine(CliJson.Format(report.ToJson()));
            else WriteText(report, stdout);
            return Outcome(report, stderr);
        });
        return command;
    }

    /// <summary>The exit code of a verification, with its one error line on stderr when it failed (verify and patch --verify).</summary>
    internal static int Outcome(VerificationReport report, TextWriter stderr)
    {
        if (report.Passed) return 0;
        var failed = report.Checks.First(c => !c.Passed);
        stderr.WriteLine($"onnxsteer: error: verification failed: {failed.Name}: {failed.Detail}");
        return (int)ErrorKind.VerificationFailed;
    }

    internal static void WriteText(VerificationReport report, TextWriter w)
    {
        w.WriteLine($"verify {report.PatchedDirectory} against {report.SourceDirectory}");
        foreach (var c in report.Checks) w.WriteLine($"  [{(c.Passed ? "ok" : "FAIL")}] {c.Name}: {c.Detail}");
        w.WriteLine(report.Passed ? $"all {report.Checks.Count} checks passed" : $"{report.Checks.Count(c => !c.Passed)} of {report.Checks.Count} checks FAILED");
    }
}
