using System.CommandLine;
using System.Text.Json.Nodes;
using OnnxSteer.Cli;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.Evaluation;
using OnnxSteer.Vectors;
using static OnnxSteer.Tests.Vectors.VectorTestData;

namespace OnnxSteer.Tests.Architecture;

/// <summary>The CLI answers the same mistake the same way in every verb (issue 13, "CLI, as a user meets it").</summary>
public class CliConsistencyTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    private static string[] Lines(string text) => text.TrimEnd().Split('\n');

    [Theory]
    [InlineData("3,5", "3,5")]
    [InlineData("3, 5", "3,5")]
    [InlineData(" 5-7 ,1", "1,5-7")]
    [InlineData("all", "all")]
    [InlineData("NONE", "none")]
    [InlineData("4,2,3", "2-4")]
    public void OneLayerListSyntax(string text, string canonical)
    {
        var parsed = LayerSelection.Parse(text);
        Assert.Equal(canonical, parsed.ToString());
        Assert.Equal(parsed, LayerSelection.Parse(parsed.ToString()));
    }

    [Theory]
    [InlineData("-3")]
    [InlineData("3-")]
    [InlineData("5-3")]
    [InlineData("")]
    [InlineData("1,,2")]
    [InlineData("100000")]
    public void LayerListMistakesAreUsageErrors(string text) =>
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => LayerSelection.Parse(text, "--layers")).Kind);

    [Fact]
    public void LayerListsFormatAndClampOneWay()
    {
        Assert.Equal("none", LayerSelection.Format([]));
        Assert.Equal("0-2,7", LayerSelection.Format([7, 1, 0, 2, 1]));
        Assert.Equal([1, 2], LayerSelection.Parse("1-31").Within([0, 1, 2]));
        Assert.Equal([0, 1, 2], LayerSelection.All.Within([2, 0, 1]));
        var e = Assert.Throws<OnnxSteerException>(() => LayerSelection.Parse("1-31").Resolve(6));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("layer 31 requested; the model has 6 layers (0-5)", e.Message);
    }

    [Fact]
    public void ConvertWithoutLayersWritesEveryLayerGgufCanHold()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("x", 8, 0, 1, 2)], Model(8)).Save(path);

        var (code, _, err) = Run("vectors", "convert", path, dir.Combine("all.gguf"));
        Assert.True(code == 0, err);
        Assert.Equal([1, 2], Gguf.Read(dir.Combine("all.gguf")).Directions.Keys.Order());
        Assert.Contains("onnxsteer: note: vector 'x': layer 0 left out", err);

        // The README's "--layers 1-31" on a model with fewer layers keeps what is there.
        (code, _, err) = Run("vectors", "convert", path, dir.Combine("clamped.gguf"), "--layers", "1-31");
        Assert.True(code == 0, err);
        Assert.Equal([1, 2], Gguf.Read(dir.Combine("clamped.gguf")).Directions.Keys.Order());
        Assert.Contains("has no layer 3-31", err);

        (code, _, err) = Run("vectors", "convert", path, dir.Combine("some.safetensors"), "--layers", "0,2");
        Assert.True(code == 0, err);
        Assert.Equal([0, 2], InstructionVectorFile.Load(dir.Combine("some.safetensors")).Get().Layers.Keys.Order());

        // A vector lacking every layer asked for is an invalid vector (7), as in generate.
        (code, _, err) = Run("vectors", "convert", path, dir.Combine("none.gguf"), "--layers", "9");
        Assert.Equal((int)ErrorKind.InvalidVector, code);
        Assert.Single(Lines(err));
        Assert.False(File.Exists(dir.Combine("none.gguf")));
    }

    [Fact]
    public void ParseErrorsAreOneLinePointingAtTheVerbsHelp()
    {
        var (code, _, err) = Run("generate", "m", "--prompt", "x", "--positions", "middle");
        Assert.Equal((int)ErrorKind.Usage, code);
        Assert.Single(Lines(err));
        Assert.Contains("all, prompt, generated", err);
        Assert.EndsWith("(see 'onnxsteer generate --help')", err.TrimEnd());

        (code, _, err) = Run("vectors", "convert", "a.safetensors");
        Assert.Equal((int)ErrorKind.Usage, code);
        Assert.EndsWith("(see 'onnxsteer vectors convert --help')", err.TrimEnd());

        (code, _, err) = Run("vectors", "convert", "a.safetensors", "b.gguf", "--layers", "none");
        Assert.Equal((int)ErrorKind.Usage, code);
        Assert.Contains("--layers none leaves nothing to do", err);

        // A value that does not parse is a usage error in every verb, never an internal error from a validator.
        foreach (var args in new[]
        {
            new[] { "generate", "m", "--prompt", "x", "--max-new-tokens", "z" },
            ["eval", "m", "--data", "d", "--vectors", "v", "--max-new-tokens", "z"],
            ["eval", "m", "--data", "d", "--vectors", "v", "--limit", "z"],
            ["extract", "m", "--pairs", "p", "-o", "o.safetensors", "--batch-size", "z"],
            ["demo", "--eval-per-instruction", "z"],
        })
        {
            (code, _, err) = Run(args);
            Assert.Equal((int)ErrorKind.Usage, code);
            Assert.Single(Lines(err));
            Assert.Contains("'z'", err);
            Assert.Contains("as an integer", err);
        }
        (code, _, err) = Run("generate", "m", "--prompt", "x", "--max-new-tokens", "0");
        Assert.Equal((int)ErrorKind.Usage, code);
        Assert.Contains("--max-new-tokens must be positive", err);

        (code, _, err) = Run("nosuchverb");
        Assert.EndsWith("(see 'onnxsteer --help')", err.TrimEnd());
    }

    [Fact]
    public void EveryOutputRefusesToOverwriteAndCreatesItsFolder()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("x", 8, 1, 2)], Model(8)).Save(path);
        var nested = dir.Combine("new", "sub", "c.safetensors");
        var (code, _, err) = Run("vectors", "combine", path, "-o", nested);
        Assert.True(code == 0, err);
        Assert.True(File.Exists(nested));
        (code, _, err) = Run("vectors", "combine", path, "-o", nested);
        Assert.Equal((int)ErrorKind.Output, code);
        Assert.Contains("--overwrite", err);

        // eval and sweep check --plot/--json-out/-o before opening anything (the model here does not exist).
        File.WriteAllText(dir.Combine("p.svg"), "");
        File.WriteAllText(dir.Combine("r.json"), "");
        foreach (var args in new[]
        {
            new[] { "eval", dir.Combine("nomodel"), "--data", "d", "--vectors", path, "--plot", dir.Combine("p.svg") },
            ["eval", dir.Combine("nomodel"), "--data", "d", "--vectors", path, "--json-out", dir.Combine("r.json")],
            ["sweep", dir.Combine("nomodel"), "--data", "d", "--vectors", path, "-o", dir.Combine("r.json")],
        })
        {
            (code, _, err) = Run(args);
            Assert.Equal((int)ErrorKind.Output, code);
            Assert.Contains("--overwrite", err);
        }

        // A folder that cannot be created: the message names the output, never a temporary file.
        File.WriteAllText(dir.Combine("afile"), "");
        var e = Assert.Throws<OnnxSteerException>(() =>
            InstructionVectorFile.Create([Vector("x", 8, 1)], Model(8)).Save(Path.Combine(dir.Combine("afile"), "a.safetensors")));
        Assert.Equal(ErrorKind.Output, e.Kind);
        Assert.DoesNotContain(".tmp", e.Message);
    }

    [Fact]
    public void AFailedVerificationPrintsItsOneLine()
    {
        var report = new VerificationReport
        {
            PatchedDirectory = "p", SourceDirectory = "s",
            Checks = [new VerificationCheck("a", true, "fine"), new VerificationCheck("b", false, "differs at step 2")],
        };
        var err = new StringWriter();
        Assert.Equal((int)ErrorKind.VerificationFailed, VerifyCommand.Outcome(report, err));
        Assert.Equal("onnxsteer: error: verification failed: b: differs at step 2", err.ToString().TrimEnd());
    }

    [Fact]
    public void EvalNamesVectorsThatMatchNoInstruction()
    {
        var selection = new SteeringSelection
        {
            Instructions = new Dictionary<string, SelectionEntry> { [InstructionIds.Lowercase] = new() { Mode = "add", Vector = "mine.{word}", Layer = 1, Scale = 2 } },
        };
        Assert.Equal(["keywords.existence.", "lowercase"],
            VectorNaming.Unmatched(["change_case.english_lowercase", "keywords.existence.cat", "lowercase", "keywords.existence.", "mine.dog"], selection));
        Assert.Equal(["mine.dog"], VectorNaming.Unmatched(["mine.dog", "punctuation.no_comma"], null));
        // Header-position vectors are used with the vector they belong to.
        Assert.Equal(["lowercase.header-2", "punctuation.no_comma.header-x"],
            VectorNaming.Unmatched(["punctuation.no_comma.header-2", "keywords.existence.cat.header-5", "lowercase.header-2", "punctuation.no_comma.header-x"], null));
        Assert.Contains("change_case.english_lowercase", VectorNaming.Rule);
    }

    [Fact]
    public void SweepSkippedRowsKeepTheTable()
    {
        var result = new SweepResult
        {
            Layers = [1, 2, 3],
            Candidates = [new SweepCandidate { Instruction = InstructionIds.Lowercase, Mode = "none", Accuracy = 0.5, DegenerateRate = 0, Score = 0.5 }],
            Selection = new SteeringSelection { Instructions = new Dictionary<string, SelectionEntry> { [InstructionIds.Lowercase] = new() { Mode = "none" } } },
            Skipped = new Dictionary<string, string> { [InstructionIds.Json] = "no vector 'a|b'" },
        };
        var rows = Lines(result.ToMarkdown());
        Assert.Equal(4, rows.Length);
        var cells = rows.Select(r => r.Replace("\\|", "", StringComparison.Ordinal).Count(c => c == '|')).Distinct();
        Assert.Single(cells);
        Assert.Contains("skipped: no vector 'a\\|b'", rows[^1]);
    }

    [Fact]
    public void VersionNamesTheOnnxRuntimeInUse()
    {
        var (code, stdout, _) = Run("version");
        Assert.Equal(0, code);
        var lines = Lines(stdout);
        Assert.StartsWith("onnxsteer ", lines[0]);
        Assert.StartsWith("onnxruntime 1.32", lines[1]);
        Assert.Contains("CPUExecutionProvider", lines[1]);
        Assert.StartsWith("onnxruntime-genai", lines[2]);
    }

    [Fact]
    public void JsonIsEscapedOneWay()
    {
        var formatted = CliJson.Format("{\"p\":\"\\u003Cb\\u003E \\u00E9 \\\"q\\\"\"}");
        Assert.Contains("\"<b> é \\\"q\\\"\"", formatted);
    }

    [Fact]
    public void HelpStatesEachDefaultOnce()
    {
        var root = CliApp.BuildRoot(TextWriter.Null, TextWriter.Null);
        var offenders = new List<string>();
        void Walk(Command command, string path)
        {
            foreach (var o in command.Options)
                if (o.HasDefaultValue && o.Description is { } d && d.Contains("default", StringComparison.OrdinalIgnoreCase))
                    offenders.Add($"{path} {o.Name}: {d}");
            foreach (var sub in command.Subcommands) Walk(sub, $"{path} {sub.Name}");
        }
        Walk(root, "onnxsteer");
        Assert.True(offenders.Count == 0, "help shows [default: ...] and the description says it again:\n" + string.Join("\n", offenders));
    }

    [Fact]
    public void LibraryErrorsNameNoCliFlags()
    {
        var library = Path.Combine(TestPaths.RepoRoot, "src", "OnnxSteer");
        var offenders = Directory.EnumerateFiles(library, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .SelectMany(f => File.ReadLines(f).Select((line, i) => (f, i, line)))
            .Where(x => x.line.Contains("OnnxSteerException(", StringComparison.Ordinal)
                        && System.Text.RegularExpressions.Regex.IsMatch(x.line, "\"[^\"]*--[a-z]"))
            .Select(x => $"{Path.GetRelativePath(library, x.f)}:{x.i + 1}")
            .ToList();
        Assert.True(offenders.Count == 0, "library errors naming CLI flags:\n" + string.Join("\n", offenders));
    }
}

/// <summary>Fingerprints cover the weights, not only the graph.</summary>
public class WeightsFingerprintTests
{
    [Fact]
    public void SampledFingerprintSeesSizeAndContentAndIgnoresNothingItSamples()
    {
        using var dir = TestPaths.NewTempDir();
        var data = new byte[1 << 20];
        new Random(1).NextBytes(data);
        File.WriteAllBytes(dir.Combine("w.data"), data);
        var first = OnnxSteer.Onnx.WeightsFingerprint.Compute(dir.Path, ["w.data"]);
        Assert.StartsWith("sampled-sha256:", first);
        Assert.Equal(first, OnnxSteer.Onnx.WeightsFingerprint.Compute(dir.Path, ["w.data", "w.data"]));
        Assert.Null(OnnxSteer.Onnx.WeightsFingerprint.Compute(dir.Path, []));

        // A fine-tune changes the bulk of the weights: every sample sees it. Here one byte in the middle sample.
        data[(data.Length - OnnxSteer.Onnx.WeightsFingerprint.ChunkBytes) / 15 * 7 + 10] ^= 1;
        File.WriteAllBytes(dir.Combine("w.data"), data);
        Assert.NotEqual(first, OnnxSteer.Onnx.WeightsFingerprint.Compute(dir.Path, ["w.data"]));
        File.WriteAllBytes(dir.Combine("w.data"), data.AsSpan(0, data.Length - 1).ToArray());
        Assert.NotEqual(first, OnnxSteer.Onnx.WeightsFingerprint.Compute(dir.Path, ["w.data"]));
    }

    [Fact]
    public void VerifyTellsTwoModelsWithOneGraphApart()
    {
        using var dir = TestPaths.NewTempDir();
        var source = dir.Combine("source");
        Directory.CreateDirectory(source);
        foreach (var f in Directory.GetFiles(TestPaths.GenAiTinyLlamaFp16)) File.Copy(f, Path.Combine(source, Path.GetFileName(f)));
        foreach (var f in Directory.GetFiles(source)) File.SetAttributes(f, FileAttributes.Normal);
        var patched = dir.Combine("patched");
        var (o, e) = (new StringWriter(), new StringWriter());
        Assert.True(CliApp.Run(["patch", source, "-o", patched, "--layers", "1", "--expose", "1"], o, e) == 0, e.ToString());
        Assert.StartsWith("sampled-sha256:", SteeringManifest.TryLoad(patched)!.Source.WeightsFingerprint);

        // "Fine-tune": same graph, the weights' first 4 KiB changed.
        var weights = File.ReadAllBytes(Path.Combine(source, "model.onnx.data"));
        for (var i = 0; i < 4096; i++) weights[i] = 0;
        File.WriteAllBytes(Path.Combine(source, "model.onnx.data"), weights);
        (o, e) = (new StringWriter(), new StringWriter());
        Assert.Equal((int)ErrorKind.VerificationFailed, CliApp.Run(["verify", patched], o, e));
        Assert.Contains("[FAIL] source fingerprint: graph sha256 matches but the weights differ", o.ToString());
    }
}
