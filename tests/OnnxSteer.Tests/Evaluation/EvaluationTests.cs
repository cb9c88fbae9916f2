using System.Text.Json;
using System.Xml.Linq;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

public class EvaluationTests
{
    internal const string Data = """
        {"key": "1", "prompt": "Tell me about the river.", "instruction": "Write in lowercase letters only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "2", "prompt": "Tell me about the mountain.", "instruction": "Write in lowercase letters only.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "3", "prompt": "Describe the river.", "instruction": "Answer in capital letters.", "instruction_id_list": ["change_case:english_capital"], "kwargs": [{}]}
        {"key": "4", "prompt": "Describe the mountain.", "instruction": "Answer in json.", "instruction_id_list": ["detectable_format:json_format"], "kwargs": [{}]}
        {"key": "5", "prompt": "Talk about the ocean.", "instruction": "Do not use the word ocean.", "instruction_id_list": ["keywords:forbidden_words"], "kwargs": [{"forbidden_words": ["ocean"]}]}
        {"key": "6", "prompt": "Talk about the river.", "instruction": "Answer in at most 1 sentence.", "instruction_id_list": ["length_constraints:number_sentences"], "kwargs": [{"num_sentences": 1, "relation": "at most"}]}
        {"key": "7", "prompt": "Tell me about the mountain.", "instruction": "Write in lowercase letters only. Answer in at most 1 sentence.", "instruction_id_list": ["change_case:english_lowercase", "length_constraints:number_sentences"], "kwargs": [{}, {"num_sentences": 1, "relation": "at most"}]}
        """;

    internal static IReadOnlyList<EvalItem> Items(string data = Data) => EvalDataset.Parse(new StringReader(data), "test.jsonl");

    private static readonly SteeringSelection Selection = new()
    {
        Instructions = new Dictionary<string, SelectionEntry>
        {
            [InstructionIds.Lowercase] = new() { Mode = "project", Vector = "change_case.english_lowercase", Layer = 3 },
            [InstructionIds.Capital] = new() { Mode = "project", Vector = "change_case.english_capital", Layer = 3 },
            [InstructionIds.Json] = new() { Mode = "none" },
            [InstructionIds.ForbiddenWords] = new() { Mode = "add", Vector = "keywords.existence.{word}", Layer = 5, Scale = -4 },
            [InstructionIds.NumberSentences] = new() { Mode = "add", Vector = "length_constraints.number_sentences.at_most", Layer = 4, Weight = 4 },
        },
    };

    [Fact]
    public async Task FourSettingsScoreAsTheModelBehaves()
    {
        var model = new FakeModel();
        var report = await Evaluator.RunAsync(Items(), Selection, model, model);
        Assert.Equal(["no_instruction", "no_instruction_steered", "with_instruction", "with_instruction_steered"], report.Settings);
        var lower = report.Rows.Single(r => r.Instruction == InstructionIds.Lowercase);
        Assert.Equal(3, lower.Count);
        Assert.Equal("project change_case.english_lowercase@3", lower.Steering);
        Assert.Equal(0, lower.Scores["no_instruction"].Loose);
        Assert.Equal(1, lower.Scores["no_instruction_steered"].Loose);
        Assert.Equal(1, lower.Scores["with_instruction"].Loose);
        Assert.Equal(1, lower.Scores["with_instruction_steered"].Loose);

        var json = report.Rows.Single(r => r.Instruction == InstructionIds.Json);
        Assert.Equal("none", json.Steering);
        Assert.Equal(0, json.Scores["no_instruction_steered"].Loose);
        Assert.Equal(1, json.Scores["with_instruction"].Loose);

        var forbidden = report.Rows.Single(r => r.Instruction == InstructionIds.ForbiddenWords);
        Assert.Equal(0, forbidden.Scores["no_instruction"].Loose);
        Assert.Equal(1, forbidden.Scores["no_instruction_steered"].Loose); // -4 x |u| (=2) = -8 at layer 5

        var length = report.Rows.Single(r => r.Instruction == InstructionIds.NumberSentences);
        Assert.Equal(2, length.Count);
        Assert.Equal(1, length.Scores["no_instruction_steered"].Loose);

        // Prompt 7 composes lowercase@3 and conciseness@4: both followed when steered.
        var composed = report.Items.Single(i => i.Key == "7" && i.Setting == "no_instruction_steered");
        Assert.Equal(["project change_case.english_lowercase@3", "add length_constraints.number_sentences.at_most@4 w=4"], composed.Steering);
        Assert.Equal([true, true], composed.Loose);

        Assert.Equal(0, report.Overall["no_instruction"].PromptLoose);
        Assert.Equal(6 / 7.0, report.Overall["no_instruction_steered"].PromptLoose, 6); // only JSON fails
        Assert.Equal(1, report.Overall["with_instruction"].PromptLoose);
        Assert.Equal(Math.E, report.Overall["with_instruction"].Perplexity!.Value, 6);
        Assert.Equal(0, report.Overall["with_instruction"].DegenerateRate);
    }

    [Fact]
    public async Task IdenticalRequestsAreGeneratedOnce()
    {
        var model = new FakeModel { BatchSize = 3 };
        await Evaluator.RunAsync(Items(), Selection, model, model);
        // 7 prompts x 4 settings = 28 requests; JSON's steered settings equal its unsteered ones (mode none), and
        // prompts 2 and 7 share their base query, so their unsteered no-instruction requests are one.
        Assert.Equal(25, model.Generated);
        Assert.All(model.Batches, b => Assert.True(b.Count <= 3));
        var keys = model.Batches.SelectMany(b => b).Select(r => r.CacheKey).ToList();
        Assert.Equal(keys.Count, keys.Distinct().Count());
    }

    [Fact]
    public async Task SettingsCanBeChosen()
    {
        var model = new FakeModel();
        var report = await Evaluator.RunAsync(Items(), Selection, model, model, new EvalOptions { Settings = [EvalSetting.NoInstruction] });
        Assert.Equal(["no_instruction"], report.Settings);
        Assert.Equal(6, model.Generated); // prompts 2 and 7 share their base query
    }

    [Fact]
    public async Task ReportsRenderAsMarkdownJsonAndSvg()
    {
        var model = new FakeModel();
        var report = await Evaluator.RunAsync(Items(), Selection, model, model);
        var md = report.ToMarkdown();
        Assert.Contains("| instruction | n | steering | no instr. | no instr. + steer | p | with instr. | with instr. + steer | p | on topic (no instr. / no instr. + steer / with instr. / with instr. + steer) |", md);
        // 0 of 3 -> 3 of 3: Wilson [0, 0.56] and [0.44, 1]; McNemar exact with 3 discordant pairs: p = 2 x 1/8 = 0.25.
        Assert.Contains("| change_case:english_lowercase | 3 | project change_case.english_lowercase@3 | 0.00 [0.00, 0.56] | 1.00 [0.44, 1.00] | 0.250 | 1.00 [0.44, 1.00] | 1.00 [0.44, 1.00] | 1.000 | 1.00 / 1.00 / 1.00 / 1.00 |", md);
        Assert.Contains("| **all, prompt-level** | 7 |", md);
        Assert.Contains("perplexity", md);

        using var doc = JsonDocument.Parse(report.ToJson());
        Assert.Equal(5, doc.RootElement.GetProperty("rows").GetArrayLength()); // 5 ids present
        Assert.Equal(28, doc.RootElement.GetProperty("items").GetArrayLength());
        Assert.Equal(1.0, doc.RootElement.GetProperty("overall").GetProperty("with_instruction").GetProperty("prompt_loose").GetDouble());

        var svg = XDocument.Parse(report.ToSvg("tiny-instruct, test split"));
        XNamespace ns = "http://www.w3.org/2000/svg";
        Assert.Equal(6 * 4, svg.Descendants(ns + "rect").Count(r => r.Element(ns + "title") is not null)); // 5 rows + all, 4 settings
    }

    [Fact]
    public void DefaultSelectionUsesTheMostSeparableLayerAndFamilyMode()
    {
        var model = new FakeModel { Vectors = ["change_case.english_capital", "keywords.existence.ocean", "length_constraints.number_sentences.at_most"] };
        var sel = EvalWorkflow.DefaultSelection(Items(), model).Instructions;
        Assert.Equal(new SelectionEntry { Mode = "project", Vector = "change_case.english_capital", Layer = 3 }, sel[InstructionIds.Capital]);
        Assert.Equal("none", sel[InstructionIds.Lowercase].Mode); // its vector is missing
        Assert.Equal(new SelectionEntry { Mode = "add", Vector = "keywords.existence.{word}", Layer = 0, Scale = -4 }, sel[InstructionIds.ForbiddenWords]);
        Assert.Equal(4, sel[InstructionIds.NumberSentences].Scale);
    }

    [Fact]
    public void LimitKeepsTheFirstItemsOfEachCombination()
    {
        var items = EvalWorkflow.Limit(Items(), 1);
        Assert.Equal(["1", "3", "4", "5", "6", "7"], items.Select(i => i.Key));
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => EvalWorkflow.Limit(Items(), 0)).Kind);
    }

    [Fact]
    public void QualityGuardFlagsRepetitionAndBlank()
    {
        var q = new QualityGuard();
        Assert.True(q.IsDegenerate(""));
        Assert.True(q.IsDegenerate("the river is long the river is long the river is long"));
        Assert.True(q.IsDegenerate(string.Join(' ', Enumerable.Repeat("sea sky", 15))));
        Assert.False(q.IsDegenerate("The river is old, and it is beautiful. People visit the river often. It has a long history."));
        Assert.False(q.IsDegenerate("{}"));
        Assert.True(q.IsDegenerate(new string('A', 96))); // a token loop without spaces
        Assert.True(q.IsDegenerate("The river is " + new string('!', 12)));
        Assert.True(q.IsDegenerate("Rivers are pondpondpondpondpondpondpondpond."));
        Assert.False(q.IsDegenerate("Wait..... what?"));
        Assert.False(q.IsDegenerate("* the river is long\n* the river is wide\n* the river is deep"));
        Assert.Equal(3, q.MostRepeatedNGram("a b c d a b c d a b c d"));
    }
}
