using OnnxSteer.Cli;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>The README's main command on the bundled model (shortened: one test prompt per instruction, short answers).</summary>
public sealed class DemoTests
{
    [Fact]
    public void DemoRunsEndToEndOnTheBundledModel()
    {
        // The committed docs/evaluation/selection.json (written by tools/eval/reproduce.sh for the bundled model).
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(["demo", "--eval-per-instruction", "1", "--max-new-tokens", "24", "--threads", "1"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        var text = stdout.ToString();
        Assert.Contains("[1/4] patched into", text);
        Assert.Contains("[2/4] extracted", text);
        Assert.Contains("  without:  ", text);
        Assert.Contains("  with:     ", text);
        Assert.Contains("layers and modes from ", text);
        Assert.Contains("| instruction | n | steering | no instr. | no instr. + steer | p | with instr. | with instr. + steer | p | on topic", text);
        // The committed selection header-steers lowercase, projects quotation and header-steers word exclusion with the
        // per-word exclusion vectors; the demo extracts them (header positions too) from models/data/pairs itself.
        Assert.Contains("| change_case:english_lowercase | 1 | header change_case.english_lowercase@", text);
        Assert.Contains("| startend:quotation | 1 | project startend.quotation@", text);
        Assert.Contains("| keywords:forbidden_words | 1 | header keywords.forbidden_words.{word}@", text);
    }

    [Fact]
    public void ExtractsHeaderPositionsOnlyForVectorsTheSelectionHeaderSteers()
    {
        using var dir = TestPaths.NewTempDir();
        var patched = dir.Combine("patched");
        OnnxSteer.Decoder.ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), patched, new OnnxSteer.Decoder.PatchOptions());
        var vectors = dir.Combine("vectors");
        Directory.CreateDirectory(vectors);
        DemoRunner.ExtractVectors(patched, Path.Combine(TestPaths.RepoRoot, "models", "data", "pairs"), ["change_case.english_lowercase", "keywords.existence.summer"],
            vectors, 1, CancellationToken.None, new HashSet<string> { "keywords.existence.summer" });
        Assert.Single(OnnxSteer.Vectors.InstructionVectorFile.Load(Path.Combine(vectors, "change_case.english_lowercase.safetensors")).Vectors);
        Assert.Equal(5, OnnxSteer.Vectors.InstructionVectorFile.Load(Path.Combine(vectors, "keywords.existence.summer.safetensors")).Vectors.Count);
    }

    [Fact]
    public void TakesInstructionsLayersAndModesFromTheSelectionFile()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("selection.json");
        File.WriteAllText(path, """
            {"format_version": 1, "instructions": {
              "punctuation:no_comma": {"mode": "project", "vector": "punctuation.no_comma", "layer": 3},
              "change_case:english_lowercase": {"mode": "none"},
              "keywords:existence": {"mode": "add", "vector": "keywords.existence.{word}", "layer": 2, "scale": 6}}}
            """);
        var output = new StringWriter();
        var steering = DemoRunner.LoadSteering(dir.Path, null, output); // found as selection.json in the model folder
        Assert.Equal([InstructionIds.NoComma, InstructionIds.KeywordExistence], steering.Keys); // InstructionIds.All order, unsteered left out
        Assert.Equal(3, steering[InstructionIds.NoComma].Layer);
        Assert.Equal("add", steering[InstructionIds.KeywordExistence].Mode);
        Assert.Equal(2, steering[InstructionIds.KeywordExistence].Layer);
        Assert.Contains(path, output.ToString());
    }

    [Fact]
    public void RefusesASelectionThatSteersNothingOrIsMissing()
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<OnnxSteerException>(() => DemoRunner.LoadSteering(dir.Path, null, new StringWriter()));
        Assert.Equal(ErrorKind.NotFound, e.Kind);
        File.WriteAllText(dir.Combine("none.json"), """{"format_version": 1, "instructions": {"punctuation:no_comma": {"mode": "none"}}}""");
        e = Assert.Throws<OnnxSteerException>(() => DemoRunner.LoadSteering(dir.Path, dir.Combine("none.json"), new StringWriter()));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
    }

    [Fact]
    public void FindsTheBundledModelFromTheTestBinaries() =>
        Assert.Equal(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), DemoRunner.FindBundledModel());

    [Fact]
    public void LooksForTheModelGivenThenInACheckoutThenInTheToolsOwnFolder()
    {
        using var dir = TestPaths.NewTempDir();
        // A checkout (models/tiny-instruct above the start folder) and an installed tool's demo folder, laid out as the
        // packed tool lays them out (models/, models/data, docs/evaluation/selection.json).
        var checkoutModel = Directory.CreateDirectory(dir.Combine("clone", "models", "tiny-instruct")).FullName;
        File.WriteAllText(Path.Combine(checkoutModel, "genai_config.json"), "{}");
        var inClone = Directory.CreateDirectory(dir.Combine("clone", "src", "deep")).FullName;
        var tool = dir.Combine("tool", DemoRunner.ToolDemoFolder);
        var toolModel = Directory.CreateDirectory(Path.Combine(tool, "models", "tiny-instruct")).FullName;
        File.WriteAllText(Path.Combine(toolModel, "model.onnx"), "");
        Directory.CreateDirectory(Path.Combine(tool, "docs", "evaluation"));
        File.WriteAllText(Path.Combine(tool, "docs", "evaluation", "selection.json"),
            """{"format_version": 1, "instructions": {"punctuation:no_comma": {"mode": "project", "vector": "punctuation.no_comma", "layer": 3}}}""");
        var elsewhere = Directory.CreateDirectory(dir.Combine("elsewhere")).FullName;

        var mine = Directory.CreateDirectory(dir.Combine("mine")).FullName;
        Assert.Equal(mine, DemoRunner.ResolveModel(dir.Combine("mine"), [inClone], tool));
        // A --model that does not exist is named as such, not reported as missing demo data beside it.
        var missing = Assert.Throws<OnnxSteerException>(() => DemoRunner.ResolveModel(dir.Combine("nope"), [inClone], tool));
        Assert.Equal(ErrorKind.NotFound, missing.Kind);
        Assert.Contains("model folder", missing.Message);
        Assert.Equal(checkoutModel, DemoRunner.ResolveModel(null, [elsewhere, inClone], tool));
        Assert.Equal(toolModel, DemoRunner.ResolveModel(null, [elsewhere], tool));
        // The packed selection is found from the packed model the same way the repository's is from models/tiny-instruct.
        var output = new StringWriter();
        Assert.Equal([InstructionIds.NoComma], DemoRunner.LoadSteering(toolModel, null, output).Keys);
        Assert.Contains(Path.Combine(tool, "docs", "evaluation", "selection.json"), output.ToString());

        var e = Assert.Throws<OnnxSteerException>(() => DemoRunner.ResolveModel(null, [elsewhere], dir.Combine("no-tool")));
        Assert.Equal(ErrorKind.NotFound, e.Kind);
        Assert.DoesNotContain("\n", e.Message);
        Assert.Contains("pass --model DIR", e.Message);
        Assert.Contains(elsewhere, e.Message);
    }

    [Fact]
    public void ReportsAMissingModelFolder()
    {
        using var dir = TestPaths.NewTempDir();
        var stderr = new StringWriter();
        var code = CliApp.Run(["demo", "--model", dir.Combine("nothing")], new StringWriter(), stderr);
        Assert.NotEqual(0, code);
        Assert.StartsWith("onnxsteer: error: ", stderr.ToString());
        Assert.Contains("the model folder", stderr.ToString());
        Assert.Equal(3, code);
    }
}
