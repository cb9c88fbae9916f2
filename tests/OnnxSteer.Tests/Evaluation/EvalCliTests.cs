using OnnxSteer.Cli;

namespace OnnxSteer.Tests.Evaluation;

public class EvalCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }

    [Fact]
    public void EvalNeedsDataAndVectors()
    {
        var (code, _, err) = Run("eval", "somewhere");
        Assert.Equal(2, code);
        Assert.StartsWith("onnxsteer: error: ", err);
        Assert.Single(err.Trim().Split('\n'));
    }

    [Fact]
    public void EvalReportsAMissingDataFile()
    {
        using var dir = TestPaths.NewTempDir();
        var (code, _, err) = Run("eval", dir.Path, "--data", dir.Combine("nope.jsonl"), "--vectors", dir.Path);
        Assert.Equal(3, code);
        Assert.Contains("nope.jsonl", err);
    }

    [Fact]
    public void EvalReportsBadDataWithItsLine()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.Combine("eval.jsonl"), "{\"prompt\": \"p\", \"instruction\": \"i\", \"instruction_id_list\": [\"x:y\"]}\n");
        var (code, _, err) = Run("eval", dir.Path, "--data", dir.Combine("eval.jsonl"), "--vectors", dir.Path);
        Assert.Equal(10, code);
        Assert.Contains("eval.jsonl:1: unknown instruction id 'x:y'", err);
    }

    [Fact]
    public void EvalRejectsANonSvgPlotAndUnknownSettings()
    {
        var (code, _, err) = Run("eval", "m", "--data", "d.jsonl", "--vectors", "v", "--plot", "chart.png");
        Assert.Equal(2, code);
        Assert.Contains("must end in .svg", err);
        (code, _, err) = Run("eval", "m", "--data", "d.jsonl", "--vectors", "v", "--settings", "no_instruction,sideways");
        Assert.Equal(2, code);
        Assert.Contains("unknown setting 'sideways'", err);
    }

    [Fact]
    public void SweepRefusesToOverwriteAndValidatesOptions()
    {
        using var dir = TestPaths.NewTempDir();
        var existing = dir.Combine("sel.json");
        File.WriteAllText(existing, "{}");
        var (code, _, err) = Run("sweep", dir.Path, "--data", "d.jsonl", "--vectors", "v", "-o", existing);
        Assert.Equal(8, code);
        Assert.Contains("--overwrite", err);
        (code, _, err) = Run("sweep", dir.Path, "--data", "d.jsonl", "--vectors", "v", "-o", dir.Combine("new.json"), "--objective", "maybe");
        Assert.Equal(2, code);
        (code, _, err) = Run("sweep", dir.Path, "--data", "d.jsonl", "--vectors", "v", "-o", dir.Combine("new.json"), "--scales", "1,-2");
        Assert.Equal(2, code);
        Assert.Contains("'-2' is not a positive number", err);
        Assert.False(File.Exists(dir.Combine("new.json")));
    }

    [Theory]
    [InlineData("1,3,5", new[] { 1, 3, 5 })]
    [InlineData("2-4,0", new[] { 0, 2, 3, 4 })]
    [InlineData(" 5 , 5 ", new[] { 5 })]
    public void ParsesLayerLists(string text, int[] expected) => Assert.Equal(expected, OnnxSteer.Contract.LayerSelection.Parse(text).Layers);

    [Theory]
    [InlineData("a")]
    [InlineData("4-2")]
    [InlineData(",")]
    public void RejectsBadLayerLists(string text) =>
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => OnnxSteer.Contract.LayerSelection.Parse(text)).Kind);
}
