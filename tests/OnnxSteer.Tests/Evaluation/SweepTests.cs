using System.Xml.Linq;
using OnnxSteer.Contract;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

public class SweepTests
{
    private const string Validation = """
        {"key": "v1", "prompt": "Tell me about the river.", "instruction": "Write in lowercase letters only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "v2", "prompt": "Tell me about the mountain.", "instruction": "Write in lowercase letters only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "v3", "prompt": "Describe the river.", "instruction": "Answer in capital letters.", "instruction_id_list": ["change_case:english_capital"], "kwargs": [{}]}
        {"key": "v4", "prompt": "Describe the mountain.", "instruction": "Answer in json.", "instruction_id_list": ["detectable_format:json_format"], "kwargs": [{}]}
        {"key": "v5", "prompt": "Talk about the ocean.", "instruction": "Do not use the word ocean.", "instruction_id_list": ["keywords:forbidden_words"], "kwargs": [{"forbidden_words": ["ocean"]}]}
        {"key": "v6", "prompt": "Talk about the river.", "instruction": "Answer in at most 1 sentence.", "instruction_id_list": ["length_constraints:number_sentences"], "kwargs": [{"num_sentences": 1, "relation": "at most"}]}
        {"key": "v7", "prompt": "Speak about the mountain.", "instruction": "Include the word ocean.", "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["ocean"]}]}
        {"key": "v8", "prompt": "Tell me about the mountain.", "instruction": "Write in lowercase letters only. Answer in at most 1 sentence.", "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_sentences"], "kwargs": [{}, {"num_sentences": 1, "relation": "at most"}]}
        """;

    [Theory]
    [InlineData(6, new[] { 0, 1, 2, 3, 4, 5 })]
    [InlineData(4, new[] { 0, 1, 2, 3 })]
    [InlineData(10, new[] { 2, 4, 6, 8, 9 })]
    [InlineData(32, new[] { 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30, 31 })]
    [InlineData(15, new[] { 3, 5, 7, 9, 11, 13, 14 })]
    public void CandidateLayersFollowThePaper(int layers, int[] expected) => Assert.Equal(expected, Sweeper.CandidateLayers(layers));

    [Fact]
    public async Task PicksLayerModeAndWeightPerInstruction()
    {
        var model = new FakeModel();
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model);
        var sel = result.Selection.Instructions;

        Assert.Equal(new SelectionEntry { Mode = "project", Vector = "change_case.english_lowercase", Layer = 2, Score = 1, Baseline = 0 }, sel[InstructionIds.Lowercase]);
        Assert.Equal(3, sel[InstructionIds.Capital].Layer);
        Assert.Equal("none", sel[InstructionIds.Json].Mode); // never steers: the tie goes to no steering
        // Conciseness works from 2 x |u| at layer 4; 8 x |u| collapses into repetition and scores 0.
        Assert.Equal(new SelectionEntry { Mode = "add", Vector = "length_constraints.number_sentences.at_most", Layer = 4, Scale = 2, Score = 1, Baseline = 0 }, sel[InstructionIds.NumberSentences]);
        Assert.All(result.Candidates.Where(c => c.Vector == "length_constraints.number_sentences.at_most" && c.Scale == 8), c => { Assert.Equal(0, c.Score); Assert.Equal(1, c.DegenerateRate); });
        // Exclusion subtracts the inclusion vector of the word.
        Assert.Equal(new SelectionEntry { Mode = "add", Vector = "keywords.existence.{word}", Layer = 5, Scale = -4, Score = 1, Baseline = 0 }, sel[InstructionIds.ForbiddenWords]);
        Assert.Equal(new SelectionEntry { Mode = "add", Vector = "keywords.existence.{word}", Layer = 1, Scale = 2, Score = 1, Baseline = 0 }, sel[InstructionIds.KeywordExistence]);
        Assert.DoesNotContain(result.Candidates, c => c.Instruction == InstructionIds.ForbiddenWords && c.Scale > 0);
        Assert.Empty(result.Skipped);

        // Candidates per instruction: none + 6 layers (format) or none + 6 x 4 weights (additive).
        Assert.Equal(7, result.Candidates.Count(c => c.Instruction == InstructionIds.Lowercase));
        Assert.Equal(25, result.Candidates.Count(c => c.Instruction == InstructionIds.NumberSentences));
        // The composition prompt v8 is not used for single-instruction selection.
        Assert.DoesNotContain(model.Batches.SelectMany(b => b), r => r.Prompt.Contains("mountain") && r.Steering.Any(o => o.Vector == "length_constraints.number_sentences.at_most"));
    }

    [Fact]
    public async Task TriesHeaderSteeringWhereTheVectorsHaveHeaderPositions()
    {
        var model = new FakeModel();
        model.Vectors.UnionWith(["detectable_format.json_format.header-2", "keywords.existence.ocean.header-2"]);
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model,
            new SweepOptions { Instructions = [InstructionIds.Json, InstructionIds.Lowercase, InstructionIds.ForbiddenWords] });
        var sel = result.Selection.Instructions;
        Assert.Equal(new SelectionEntry { Mode = "header", Vector = "detectable_format.json_format", Layer = 0, Scale = 1, Score = 1, Baseline = 0 }, sel[InstructionIds.Json]);
        // none + 6 projections + 6 layers x 2 header scales; lowercase has no header vectors, so no header candidates.
        Assert.Equal(19, result.Candidates.Count(c => c.Instruction == InstructionIds.Json));
        Assert.DoesNotContain(result.Candidates, c => c.Instruction == InstructionIds.Lowercase && c.Mode == "header");
        // Exclusion subtracts: header scales are negated.
        Assert.Equal([-1f, -2f], result.Candidates.Where(c => c.Instruction == InstructionIds.ForbiddenWords && c.Mode == "header" && c.Layer == 0).Select(c => c.Scale!.Value).ToArray());
        Assert.Contains(model.Batches.SelectMany(b => b), r => r.Steering.Any(o => o.Mode == SteerMode.Header && o.Vector == "keywords.existence.ocean" && o.Weight == -2));
        Assert.Contains("header detectable_format.json_format@0 1×‖u_k‖ per header position", result.ToMarkdown());
    }

    [Fact]
    public async Task TriesTheExclusionVectorAddedNextToTheSubtractedInclusionVector()
    {
        var model = new FakeModel();
        model.Vectors.UnionWith(["keywords.forbidden_words.ocean", "keywords.forbidden_words.ocean.header-2"]);
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model,
            new SweepOptions { Instructions = [InstructionIds.ForbiddenWords] });
        // Layer 1 header steering with the exclusion vector comes before the subtracted inclusion vector's layer 5.
        Assert.Equal(new SelectionEntry { Mode = "header", Vector = VectorNaming.ExclusionTemplate, Layer = 1, Scale = 1, Score = 1, Baseline = 0 },
            result.Selection.Instructions[InstructionIds.ForbiddenWords]);
        var mine = result.Candidates.Where(c => c.Instruction == InstructionIds.ForbiddenWords).ToList();
        // none + 6 layers x (4 subtracted inclusion weights + 4 added exclusion weights + 2 exclusion header scales).
        Assert.Equal(61, mine.Count);
        Assert.All(mine.Where(c => c.Vector == "keywords.existence.{word}"), c => Assert.True(c.Scale < 0));
        Assert.All(mine.Where(c => c.Vector == VectorNaming.ExclusionTemplate), c => Assert.True(c.Scale > 0));
        Assert.Contains(model.Batches.SelectMany(b => b), r => r.Steering.Any(o => o.Mode == SteerMode.Header && o.Vector == "keywords.forbidden_words.ocean" && o.Weight == 2));
        // The exclusion vectors are a known name, not a misnamed file.
        Assert.Empty(VectorNaming.Unmatched(["keywords.forbidden_words.ocean", "keywords.forbidden_words.ocean.header-2"], null));
    }

    [Fact]
    public async Task MissingVectorsLeaveTheInstructionUnsteered()
    {
        var model = new FakeModel { Vectors = ["change_case.english_lowercase"] };
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model,
            new SweepOptions { Instructions = [InstructionIds.Lowercase, InstructionIds.Json] });
        Assert.Equal("none", result.Selection.Instructions[InstructionIds.Json].Mode);
        Assert.Contains("no vector named detectable_format.json_format", result.Skipped[InstructionIds.Json]);
        Assert.Equal(2, result.Selection.Instructions.Count);
    }

    [Fact]
    public async Task BothObjectiveScoresWithInstructionToo()
    {
        var model = new FakeModel();
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model,
            new SweepOptions { Instructions = [InstructionIds.Capital], Objective = SweepObjective.Both, Layers = LayerSelection.Of(2, 3) });
        var chosen = result.Candidates.Single(c => c.Layer == 3);
        Assert.Equal(1, chosen.Accuracy);
        Assert.Equal(1, chosen.AccuracyWithInstruction);
        Assert.Equal(0.5, result.Candidates.Single(c => c.Mode == "none").Score);
        Assert.Equal(3, result.Selection.Instructions[InstructionIds.Capital].Layer);
        Assert.Equal(6, model.Generated); // (none, L2, L3) x (without, with)
    }

    [Fact]
    public async Task GuardedObjectiveSkipsLayersThatHurtTheInstructedPrompt()
    {
        var model = new FakeModel();
        var items = EvaluationTests.Items(Validation);
        var plain = await Sweeper.RunAsync(items, model, model, new SweepOptions { Instructions = [InstructionIds.Lowercase] });
        Assert.Equal(2, plain.Selection.Instructions[InstructionIds.Lowercase].Layer);
        var guarded = await Sweeper.RunAsync(items, model, model, new SweepOptions { Instructions = [InstructionIds.Lowercase], Objective = SweepObjective.Guarded });
        var l2 = guarded.Candidates.Single(c => c.Layer == 2);
        Assert.Equal(1, l2.Accuracy);
        Assert.Equal(0, l2.AccuracyWithInstruction);
        Assert.Equal(0, l2.Score);
        Assert.Equal(3, guarded.Selection.Instructions[InstructionIds.Lowercase].Layer);
        Assert.Contains("at most 0.1 below unsteered", guarded.Selection.Objective);
        // Layer 1 lowercases both answers but one loses its topic: half the answers are no longer acceptable, so the
        // guard scores it 0 although it passes half the prompts.
        var l1 = guarded.Candidates.Single(c => c.Layer == 1);
        Assert.Equal((0.5, 0.5, 0.0), (l1.Accuracy, l1.AcceptedRate, l1.Score));
        Assert.Equal(1.0, guarded.Candidates.Single(c => c.Mode == "none").AcceptedRate);
        Assert.Equal(0.5, plain.Candidates.Single(c => c.Layer == 1).Score);
    }

    [Fact]
    public async Task RejectsLayersTheModelLacks()
    {
        var model = new FakeModel();
        var e = await Assert.ThrowsAsync<OnnxSteerException>(() =>
            Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model, new SweepOptions { Layers = LayerSelection.Of(7) }));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind); // a layer the model lacks is exit 5 in every verb
        Assert.Contains("layer 7", e.Message);
    }

    [Fact]
    public async Task RendersTableAndPlot()
    {
        var model = new FakeModel();
        var result = await Sweeper.RunAsync(EvaluationTests.Items(Validation), model, model);
        var md = result.ToMarkdown();
        Assert.Contains("| instruction | none | L0 | L1 | L2 | L3 | L4 | L5 | chosen |", md);
        Assert.Contains("| change_case:english_capital | 0.00 | 0.00 | 0.00 | 0.00 | 1.00 | 0.00 | 0.00 | project change_case.english_capital@3 |", md);
        var svg = XDocument.Parse(result.ToSvg("sweep"));
        XNamespace ns = "http://www.w3.org/2000/svg";
        Assert.Equal(6, svg.Descendants(ns + "polyline").Count()); // one line per swept instruction
        Assert.Contains("\"selection\"", result.ToJson());
    }
}
