using OnnxSteer.Cli;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>The README's main command on the bundled model (shortened: one test prompt per instruction, short answers).</summary>
public sealed class DemoTests
{
    [Fact]
    public void DemoRunsEndToEndOnTheBundledModel()
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(["demo", "--eval-per-instruction", "1", "--max-new-tokens", "24", "--threads", "1"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        var text = stdout.ToString();
        Assert.Contains("[1/4] patched into", text);
        Assert.Contains("[2/4] extracted", text);
        Assert.Contains("  without:  ", text);
        Assert.Contains("  with:     ", text);
        Assert.Contains("| instruction | n | steering | no instr. | no instr. + steer | with instr. | with instr. + steer |", text);
        Assert.Contains("| change_case:english_lowercase | 1 | project change_case.english_lowercase@", text);
    }

    [Fact]
    public void FindsTheBundledModelFromTheTestBinaries() =>
        Assert.Equal(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), DemoRunner.FindBundledModel());

    [Fact]
    public void ReportsAMissingModelFolder()
    {
        using var dir = TestPaths.NewTempDir();
        var stderr = new StringWriter();
        var code = CliApp.Run(["demo", "--model", dir.Combine("nothing")], new StringWriter(), stderr);
        Assert.NotEqual(0, code);
        Assert.StartsWith("onnxsteer: error: ", stderr.ToString());
    }
}
