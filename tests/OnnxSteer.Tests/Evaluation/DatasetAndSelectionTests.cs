using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

public class DatasetAndSelectionTests
{
    private static OnnxSteerException Bad(string data) =>
        Assert.Throws<OnnxSteerException>(() => EvalDataset.Parse(new StringReader(data), "eval.jsonl"));

    [Fact]
    public void LoadsItemsWithKwargs()
    {
        var items = EvaluationTests.Items();
        Assert.Equal(7, items.Count);
        Assert.Equal("Tell me about the river. Write in lowercase letters only.", items[0].PromptWithInstruction);
        Assert.Equal("change_case:english_lowercase+length_constraints:number_sentences", items[6].IdSignature);
        Assert.Equal(["ocean"], items[4].Checks[0].Args.ForbiddenWords);
        Assert.Equal(1, items[5].Checks[0].Args.NumSentences);
    }

    [Fact]
    public void AcceptsIfEvalStyleNullKwargsNumericKeysAndBlankLines()
    {
        var items = EvalDataset.Parse(new StringReader("""

            {"key": 1001, "prompt": "p", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{"num_bullets": null, "keywords": null}]}

            """), "x");
        Assert.Equal("1001", items.Single().Key);
    }

    [Fact]
    public void ErrorsNameTheLine()
    {
        var e = Bad("""
            {"key": "1", "prompt": "p", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]}
            {"key": "2", "prompt": "p", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]
            """);
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.StartsWith("eval.jsonl:2: ", e.Message);
    }

    [Theory]
    [InlineData("""{"prompt": "p", "instruction": "i", "instruction_id_list": ["nope:x"], "kwargs": [{}]}""", "unknown instruction id 'nope:x'")]
    [InlineData("""{"prompt": "p", "instruction": "i", "instruction_id_list": ["startend:end_checker"], "kwargs": [{}]}""", "end_phrase")]
    [InlineData("""{"prompt": "", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"]}""", "\"prompt\"")]
    [InlineData("""{"prompt": "p", "instruction_id_list": ["punctuation:no_comma"]}""", "\"instruction\"")]
    [InlineData("""{"prompt": "p", "instruction": "i", "instruction_id_list": []}""", "instruction_id_list")]
    [InlineData("""{"prompt": "p", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]}""", "has 2 entries")]
    [InlineData("""{"prompt": "p", "instruction": "i", "instruction_id_list": ["detectable_format:number_bullet_lists"], "kwargs": [{"num_bullets": "three"}]}""", "num_bullets must be an integer")]
    [InlineData("""[1, 2]""", "expected a JSON object")]
    public void RejectsBadLines(string line, string expected)
    {
        var e = Bad(line);
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.StartsWith("eval.jsonl:1: ", e.Message);
        Assert.Contains(expected, e.Message);
    }

    [Fact]
    public void RejectsDuplicateKeysAndEmptyFiles()
    {
        var line = """{"key": "a", "prompt": "p", "instruction": "i", "instruction_id_list": ["punctuation:no_comma"]}""";
        Assert.Contains("duplicate key", Bad(line + "\n" + line).Message);
        Assert.Contains("no evaluation items", Bad("\n\n").Message);
        var missing = Assert.Throws<OnnxSteerException>(() => EvalDataset.Load("/nonexistent/eval.jsonl"));
        Assert.Equal(ErrorKind.NotFound, missing.Kind);
    }

    [Fact]
    public void SelectionRoundTripsAndExpandsWords()
    {
        using var dir = TestPaths.NewTempDir();
        var selection = new SteeringSelection
        {
            Data = "validation.jsonl",
            Instructions = new Dictionary<string, SelectionEntry>
            {
                [InstructionIds.Lowercase] = new() { Mode = "project", Vector = "change_case.english_lowercase", Layer = 3, Score = 0.9, Baseline = 0 },
                [InstructionIds.ForbiddenWords] = new() { Mode = "add", Vector = "keywords.existence.{word}", Layer = 5, Scale = -4 },
                [InstructionIds.Json] = new() { Mode = "none" },
            },
        };
        var path = dir.Combine("sel.json");
        File.WriteAllText(path, selection.ToJson());
        var loaded = SteeringSelection.Load(path);
        Assert.Equal(3, loaded.Instructions.Count);
        Assert.Equal("add keywords.existence.{word}@5 -4×‖u‖", loaded.Instructions[InstructionIds.ForbiddenWords].Describe());

        var item = EvalDataset.Parse(new StringReader("""
            {"prompt": "p", "instruction": "i", "instruction_id_list": ["keywords:forbidden_words", "change_case:english_lowercase", "detectable_format:json_format"], "kwargs": [{"forbidden_words": ["Ocean", "salt"]}, {}, {}]}
            """), "x")[0];
        var ops = loaded.OpsFor(item, new FakeModel());
        Assert.Equal([new SteerOp("keywords.existence.ocean", 5, SteerMode.Add, -8), new SteerOp("keywords.existence.salt", 5, SteerMode.Add, -8), new SteerOp("change_case.english_lowercase", 3, SteerMode.Project)], ops);
    }

    [Fact]
    public void HeaderSelectionsCarryTheirScaleToTheOps()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("sel.json");
        File.WriteAllText(path, """{"format_version": 1, "instructions": {"keywords:existence": {"mode": "header", "vector": "keywords.existence.{word}", "layer": 1, "scale": 1.5}}}""");
        var entry = SteeringSelection.Load(path).Instructions[InstructionIds.KeywordExistence];
        Assert.Equal("header keywords.existence.{word}@1 1.5×‖u_k‖ per header position", entry.Describe());
        var item = EvalDataset.Parse(new StringReader("""
            {"prompt": "p", "instruction": "i", "instruction_id_list": ["keywords:existence"], "kwargs": [{"keywords": ["Ocean"]}]}
            """), "x")[0];
        // The scale stays a scale: each header position's own norm is applied when the steering is built.
        Assert.Equal([new SteerOp("keywords.existence.ocean", 1, SteerMode.Header, 1.5f)], SteeringSelection.Load(path).OpsFor(item, null));
    }

    [Theory]
    [InlineData("""{"format_version": 1, "instructions": {"change_case:english_lowercase": {"mode": "project", "layer": 3}}}""", "needs \"vector\"")]
    [InlineData("""{"format_version": 1, "instructions": {"change_case:english_lowercase": {"mode": "project", "vector": "v"}}}""", "needs \"layer\"")]
    [InlineData("""{"format_version": 1, "instructions": {"keywords:existence": {"mode": "add", "vector": "v", "layer": 1}}}""", "\"weight\" or \"scale\"")]
    [InlineData("""{"format_version": 1, "instructions": {"change_case:english_lowercase": {"mode": "shout", "vector": "v", "layer": 1}}}""", "shout")]
    [InlineData("""{"format_version": 1, "instructions": {"made:up": {"mode": "none"}}}""", "made:up")]
    [InlineData("""{"format_version": 1, "instructions": {"keywords:existence": {"mode": "header", "vector": "v", "layer": 1}}}""", "mode header needs a finite \"scale\"")]
    [InlineData("""{"format_version": 1, "instructions": {"keywords:existence": {"mode": "header", "vector": "v", "layer": 1, "scale": 1, "weight": 3}}}""", "no \"weight\"")]
    [InlineData("""{"format_version": 2, "instructions": {}}""", "format_version 2")]
    [InlineData("""{"instructions": 5}""", "not a valid selection file")]
    public void RejectsBadSelections(string json, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("sel.json");
        File.WriteAllText(path, json);
        var e = Assert.Throws<OnnxSteerException>(() => SteeringSelection.Load(path));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.Contains(expected, e.Message);
    }
}
