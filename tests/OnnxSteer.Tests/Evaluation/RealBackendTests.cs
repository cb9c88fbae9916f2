using OnnxSteer.Decoder;
using OnnxSteer.Evaluation;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>The evaluation on the real runtime: the shared genai fixture (random weights, real tokenizer) patched,
/// a vector extracted from it, and eval/sweep run through <see cref="ModelBackend"/>. Random weights cannot follow
/// instructions, so these tests check plumbing (steering reaches the model, batches equal single runs), not accuracy.</summary>
public sealed class RealBackendTests
{
    private const string Data = """
        {"key": "a", "prompt": "Tell me about rivers.", "instruction": "Write in lowercase.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "b", "prompt": "Describe a mountain.", "instruction": "Write in lowercase.", "instruction_id_list": ["change_case:english_lowercase"], "kwargs": [{}]}
        {"key": "c", "prompt": "What is a cat?", "instruction": "Do not use the word cat.", "instruction_id_list": ["keywords:forbidden_words"], "kwargs": [{"forbidden_words": ["cat"]}]}
        """;

    private static (string Model, string Vectors, string Data) Prepare(TempDir dir)
    {
        var patched = dir.Combine("patched");
        // Required steering inputs: the runtime does not yet see optional (initializer-backed) inputs in InputMetadata.
        ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, patched, new PatchOptions { SteerInput = OnnxSteer.Contract.SteerInputMode.Required });
        using var model = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1 });
        using var extractor = VectorExtractor.Load(patched);
        IReadOnlyList<int> Encode(string p) => model.EncodePrompt([new ChatTurn("user", p)]);
        var vectors = dir.Combine("vectors");
        Directory.CreateDirectory(vectors);
        PromptPair[] lower = [new("Tell me about dogs. Write in lowercase.", "Tell me about dogs."), new("Describe snow. Use lowercase only.", "Describe snow.")];
        extractor.Extract(lower, Encode, new ExtractionOptions { Name = "change_case.english_lowercase" }).Save(Path.Combine(vectors, "lower.safetensors"));
        PromptPair[] cat = [new("Tell me about pets. Mention the word cat.", "Tell me about pets."), new("Describe a house. Include the word cat.", "Describe a house.")];
        extractor.Extract(cat, Encode, new ExtractionOptions { Name = "keywords.existence.cat" }).Save(Path.Combine(vectors, "cat.safetensors"));
        var data = dir.Combine("eval.jsonl");
        File.WriteAllText(data, Data);
        return (patched, vectors, data);
    }

    [Fact]
    public async Task EvaluatesWithRealSteeringAndBatchesEqualSingleRuns()
    {
        using var dir = TestPaths.NewTempDir();
        var (model, vectors, data) = Prepare(dir);
        var selection = dir.Combine("sel.json");
        File.WriteAllText(selection, new SteeringSelection
        {
            Instructions = new Dictionary<string, SelectionEntry>
            {
                [InstructionIds.Lowercase] = new() { Mode = "add", Vector = "change_case.english_lowercase", Layer = 1, Scale = 40 },
                [InstructionIds.ForbiddenWords] = new() { Mode = "add", Vector = "keywords.existence.{word}", Layer = 0, Scale = -40 },
            },
        }.ToJson());
        var generation = new EvalGenerationOptions { MaxNewTokens = 8, BatchSize = 4, Threads = 1 };
        var job = new EvalJob { ModelDirectory = model, DataPath = data, VectorsPath = vectors, SelectionPath = selection, Generation = generation };
        var report = await EvalWorkflow.EvaluateAsync(job);
        Assert.Equal(12, report.Items.Count(i => i.Control is null));
        // The random-direction control: the 3 steered prompts again in both steered settings, on vectors of the same norm.
        var control = report.Items.Where(i => i.Control == Evaluator.RandomControlKey).ToList();
        Assert.Equal(6, control.Count);
        Assert.All(control, i => Assert.StartsWith("add random.", i.Steering[0]));
        Assert.Contains(report.Rows, r => r.Variant == EvalReport.RandomVariant);
        var plain = report.Items.Where(i => i.Setting == "no_instruction" && i.Control is null).ToDictionary(i => i.Key, i => i.Response);
        var steered = report.Items.Where(i => i.Setting == "no_instruction_steered" && i.Control is null).ToDictionary(i => i.Key, i => i.Response);
        Assert.All(plain.Keys, k => Assert.NotEqual(plain[k], steered[k]));
        Assert.StartsWith("add keywords.existence.cat@0 w=-", report.Items.Single(i => i.Key == "c" && i.Setting == "with_instruction_steered" && i.Control is null).Steering.Single());
        var randomW = control.Single(i => i.Key == "c" && i.Setting == "with_instruction_steered").Steering.Single();
        Assert.Equal(report.Items.Single(i => i.Key == "c" && i.Setting == "with_instruction_steered" && i.Control is null).Steering.Single().Replace("keywords.", "random.keywords."), randomW);

        // Batch size 1 gives the same responses: batching with per-row steering does not change greedy outputs.
        var single = await EvalWorkflow.EvaluateAsync(job with { Generation = generation with { BatchSize = 1 } });
        Assert.Equal(report.Items.Select(i => i.Response), single.Items.Select(i => i.Response));
    }

    [Fact]
    public async Task SweepsOverRealLayersAndWritesASelection()
    {
        using var dir = TestPaths.NewTempDir();
        var (model, vectors, data) = Prepare(dir);
        var result = await EvalWorkflow.SweepAsync(new SweepJob
        {
            ModelDirectory = model, DataPath = data, VectorsPath = vectors,
            Options = new SweepOptions { AddScales = [8] , ExclusionScales = [-8] },
            Generation = new EvalGenerationOptions { MaxNewTokens = 6, BatchSize = 8, Threads = 1 },
        });
        Assert.Equal([0, 1], result.Layers); // the fixture has 2 layers
        Assert.Equal(3, result.Candidates.Count(c => c.Instruction == InstructionIds.Lowercase)); // none, L0, L1
        Assert.Equal(3, result.Candidates.Count(c => c.Instruction == InstructionIds.ForbiddenWords));
        Assert.Equal("eval.jsonl", result.Selection.Data);
        Assert.Equal(2, result.Selection.Instructions.Count);
    }

    [Fact]
    public void RefusesUnpatchedModelsAndMissingVectors()
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<OnnxSteerException>(() => ModelBackend.Open(TestPaths.GenAiTinyLlamaFp16, dir.Path, new EvalGenerationOptions()));
        Assert.Equal(ErrorKind.NotFound, e.Kind); // the empty vector folder is checked first
        Assert.Contains("holds no .safetensors", e.Message);
    }
}
