using OnnxSteer.Evaluation;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>The evaluation's controls: the quality guard in eval, the random-direction rows, the held-out-phrasing rows
/// and the paired test.</summary>
public sealed class EvaluationControlsTests
{
    private const string Data = """
        {"key": "1", "prompt": "Tell me about the river.", "instruction": "Write in lowercase letters only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "2", "prompt": "Tell me about the mountain.", "instruction": "Make sure your whole answer is in lowercase.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "3", "prompt": "Describe the mountain.", "instruction": "Answer in json.", "instruction_id_list": ["detectable_format:json_format"], "kwargs": [{}]}
        """;

    private static SteeringSelection Lowercase(int layer) => new()
    {
        Instructions = new Dictionary<string, SelectionEntry>
        {
            [InstructionIds.Lowercase] = new() { Mode = "project", Vector = "change_case.english_lowercase", Layer = layer },
            [InstructionIds.Json] = new() { Mode = "none" },
        },
    };

    private static readonly IReadOnlyDictionary<string, IReadOnlyList<string>> HeldOut = new Dictionary<string, IReadOnlyList<string>>
    {
        [InstructionIds.Lowercase] = ["Make sure your whole answer is in lowercase.", "Your reply must contain no capital letters at all."],
        [InstructionIds.BulletLists] = ["Make a bullet list with exactly {N} items."],
    };

    [Fact]
    public async Task RandomDirectionAndHeldOutPhrasingsGetTheirOwnRows()
    {
        var model = new FakeModel();
        var report = await Evaluator.RunAsync(EvaluationTests.Items(Data), Lowercase(3), model, model,
            new EvalOptions { RandomControl = RandomControl.Map, HeldOutPhrasings = HeldOut });
        var rows = report.Rows.Where(r => r.Instruction == InstructionIds.Lowercase).ToList();
        Assert.Equal([null, EvalReport.RandomVariant, EvalReport.HeldOutVariant], rows.Select(r => r.Variant));

        // The fake model lowercases only along the real direction: the control row stays at the unsteered level.
        Assert.Equal(1, rows[0].Scores["no_instruction_steered"].Loose);
        Assert.Equal(0, rows[1].Scores["no_instruction_steered"].Loose);
        Assert.Equal(0, rows[1].Scores["no_instruction"].Loose);
        Assert.Equal(2, rows[1].Count);
        Assert.Contains(report.Items, i => i.Control == Evaluator.RandomControlKey && i.Steering.SequenceEqual(["project random.change_case.english_lowercase@3"]));

        // Only prompt 2 is phrased as held out.
        Assert.Equal(1, rows[2].Count);
        Assert.All(report.Items.Where(i => i.Control is null), i => Assert.Equal(i.Key == "2", i.HeldOutPhrasing));

        // JSON is unsteered: no control row; the overall rows do not count the control's responses.
        Assert.DoesNotContain(report.Rows, r => r.Instruction == InstructionIds.Json && r.Variant == EvalReport.RandomVariant);
        Assert.Equal(3, report.Overall["no_instruction_steered"].Count);
        Assert.Contains("english_lowercase, random direction", report.ToMarkdown());
    }

    [Fact]
    public async Task DegenerateAnswersFailInEval()
    {
        // The fake model answers blank when lowercase is steered at layer 2 on a prompt with the instruction.
        var model = new FakeModel();
        var report = await Evaluator.RunAsync(EvaluationTests.Items(Data), Lowercase(2), model, model);
        var blank = report.Items.Where(i => i.Setting == "with_instruction_steered" && i.Instructions[0] == InstructionIds.Lowercase).ToList();
        Assert.NotEmpty(blank);
        Assert.All(blank, i => Assert.True(i.Degenerate && !i.Loose[0] && !i.Strict[0] && !i.OnTopic));
        Assert.Equal(0, report.Rows[0].Scores["with_instruction_steered"].Loose);
        Assert.Equal(1, report.Rows[0].Scores["with_instruction"].Loose);
        // Both prompts lost: McNemar's exact p with 2 discordant pairs is 0.5.
        Assert.Equal(0.5, report.Rows[0].PValues["with_instruction_steered"], 9);
    }

    [Fact]
    public void RandomControlVectorsKeepNormLayerAndZBarAndAreReproducible()
    {
        var real = InstructionVector.FromMeanDiffs("v", InstructionVector.DiffMeanMethod, new Dictionary<int, float[]>
        {
            [2] = [3, 4, 0, 0],
        });
        real = real with { Layers = new Dictionary<int, VectorLayer> { [2] = real.Layers[2] with { ZBar = 1.5 } } };
        var ops = new[] { new SteerOp("v", 2, SteerMode.Project) };
        var a = RandomControl.Build(ops, _ => real).Single();
        var b = RandomControl.Build(ops, _ => real).Single();
        var c = RandomControl.Build(ops, _ => real, seed: 7).Single();
        Assert.Equal("random.v", a.Name);
        Assert.Equal([2], a.Layers.Keys);
        Assert.Equal(5, a.Layers[2].Norm, 6);
        Assert.Equal(1.5, a.Layers[2].ZBar);
        Assert.Equal(a.Layers[2].Direction, b.Layers[2].Direction);
        Assert.NotEqual(a.Layers[2].Direction, c.Layers[2].Direction);
        Assert.NotEqual(real.Layers[2].Direction, a.Layers[2].Direction);
        Assert.Equal(new SteerOp("random.v", 2, SteerMode.Add, 4), RandomControl.Map(new SteerOp("v", 2, SteerMode.Add, 4)));
    }

    [Fact]
    public void HeaderControlsGetARandomVectorPerHeaderPosition()
    {
        using var dir = TestPaths.NewTempDir();
        var vectors = dir.Combine("kw.safetensors");
        InstructionVectorFile.Create(
        [
            InstructionVector.FromMeanDiffs("kw", InstructionVector.DiffMeanMethod, new Dictionary<int, float[]> { [1] = [3, 4, 0, 0] }),
            InstructionVector.FromMeanDiffs("kw.header-2", InstructionVector.HeaderMethod(2), new Dictionary<int, float[]> { [1] = [0, 0, 6, 8] }),
        ], null).Save(vectors);
        var folder = dir.Combine("control");
        RandomControl.PrepareFolder(vectors, [new SteerOp("kw", 1, SteerMode.Header, 1f)], folder);
        var random = InstructionVectorFile.Load(Path.Combine(folder, "random-control.safetensors"));
        Assert.Equal(["random.kw", "random.kw.header-2"], random.Vectors.Select(v => v.Name).Order(StringComparer.Ordinal).ToArray());
        Assert.Equal(5, random.Get("random.kw").Layers[1].Norm, 5);
        Assert.Equal(10, random.Get("random.kw.header-2").Layers[1].Norm, 5);
        // The control op names random.kw, whose header positions the steering then finds as random.kw.header-K.
        Assert.Equal("random.kw.header-2", OnnxSteer.Contract.HeaderVectors.Name(RandomControl.Map(new SteerOp("kw", 1, SteerMode.Header, 1f)).Vector, 2));
    }

    [Fact]
    public void HeldOutPhrasingsAreReadFromSplitsBesideTheData()
    {
        var path = HeldOutPhrasings.FindBeside(Path.Combine(TestPaths.RepoRoot, "models", "data", "eval", "test.jsonl"));
        Assert.Equal(Path.Combine(TestPaths.RepoRoot, "models", "data", "splits.json"), path);
        var phrasings = HeldOutPhrasings.Load(path);
        Assert.Contains("Make sure there are no commas in your reply.", phrasings[InstructionIds.NoComma]);
        Assert.Empty(HeldOutPhrasings.Load(null));
    }
}
