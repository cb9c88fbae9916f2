using System.Text.Json.Nodes;
using OnnxSteer.Cli;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using DecoderLayout = OnnxSteer.ModelBuilder.DecoderLayout;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Vectors;

/// <summary>The real onnxruntime-genai export (fp16, MultiHeadAttention), patched once for the whole class.</summary>
public sealed class PatchedGenAiFixture : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-extract");

    public PatchedGenAiFixture()
    {
        Directory = _dir.Combine("patched");
        ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, Directory, new PatchOptions());
        Tokenizer = TextTokenizer.Load(Directory);
    }

    public string Directory { get; }
    public string ModelPath => Path.Combine(Directory, "model.onnx");
    public TextTokenizer Tokenizer { get; }

    public void Dispose() => _dir.Dispose();
}

/// <summary>The proof on real patched models: extract equals a direct computation from the hidden_states outputs
/// of single batch-1 runs, for batch sizes 1 and 8 with prompts of different lengths; plus the CLI end to end.</summary>
public sealed class PatchedFixtureExtractionTests(PatchedGenAiFixture fixture) : IClassFixture<PatchedGenAiFixture>
{
    internal static readonly PromptPair[] Pairs =
    [
        new("Write a short poem about the sea. Your entire response should be in lowercase letters.", "Write a short poem about the sea."),
        new("Hi. Answer in lowercase.", "Hi."),
        new("List three facts about Jupiter, the largest planet of the solar system, for a school report. Use only lowercase letters.",
            "List three facts about Jupiter, the largest planet of the solar system, for a school report."),
        new("What is the capital of France? Respond in lowercase only.", "What is the capital of France?"),
        new("Explain photosynthesis. Use lowercase.", "Explain photosynthesis."),
        new("Tell me a joke about cats and dogs living together. Your answer must be all lowercase.", "Tell me a joke about cats and dogs living together."),
    ];

    [Theory]
    [InlineData(1)]
    [InlineData(8)]
    public void RealFixtureExtractionEqualsSingleRuns(int batchSize)
    {
        IReadOnlyList<int> Encode(string s) => fixture.Tokenizer.Encode(s, addSpecialTokens: true);
        using var extractor = VectorExtractor.Load(fixture.Directory);
        var file = extractor.Extract(Pairs, Encode, new ExtractionOptions { Name = "lower", BatchSize = batchSize });
        Assert.Equal("llama", file.Model!.ModelType);
        Assert.Equal(16, file.Model.HiddenSize);
        var lengths = Pairs.SelectMany(p => new[] { Encode(p.With).Count, Encode(p.Without).Count }).Distinct().Count();
        Assert.True(lengths > 6, "prompts must have different lengths so that batches are padded");
        // Right padding leaves every real token's computation unchanged, so even the fp16 states agree; the tolerance only
        // covers the order of double-precision sums.
        ExtractionTests.AssertMatchesDirect(fixture.ModelPath, file.Get("lower"),
            Pairs.Select(p => (Encode(p.With).ToArray(), Encode(p.Without).ToArray())).ToList(), [0, 1], 1e-5);
    }

    [Theory]
    [InlineData(AttentionKind.GroupQuery, DecoderLayout.GenAi)]
    [InlineData(AttentionKind.MultiHead, DecoderLayout.Optimum)]
    public void BuiltFixtureExtractionEqualsSingleRuns(AttentionKind attention, DecoderLayout layout)
    {
        using var dir = TestPaths.NewTempDir();
        var built = DecoderFixtures.Write(DecoderSpec.Tiny(layout, DecoderDType.Float32, attention), dir.Combine("src"));
        ModelPatcher.Patch(built.Directory, dir.Combine("patched"), new PatchOptions());
        var rng = new Random(3);
        var pairs = Enumerable.Range(0, 7).Select(i =>
        {
            var baseIds = Enumerable.Range(0, 3 + (i * 5) % 11).Select(_ => rng.Next(3, 128)).ToArray();
            var extra = Enumerable.Range(0, 2 + i % 4).Select(_ => rng.Next(3, 128)).ToArray();
            return (With: baseIds.Concat(extra).ToArray(), Without: baseIds);
        }).ToList();
        var byText = pairs.SelectMany(p => new[] { p.With, p.Without }).Distinct().ToDictionary(ids => string.Join(",", ids));
        using var extractor = VectorExtractor.Load(dir.Combine("patched"));
        var file = extractor.Extract(pairs.Select(p => new PromptPair(string.Join(",", p.With), string.Join(",", p.Without))),
            s => byText[s], new ExtractionOptions { BatchSize = 8 });
        ExtractionTests.AssertMatchesDirect(Path.Combine(dir.Combine("patched"), Path.GetFileName(built.ModelPath)), file.Get(), pairs, [0, 1], 1e-4);
    }

    [Fact]
    public void CliExtractWritesAFileThatShowAndTheRuntimeRead()
    {
        using var dir = TestPaths.NewTempDir();
        var pairs = dir.Combine("pairs.jsonl");
        File.WriteAllLines(pairs, Pairs.Take(4).Select(p => new JsonObject { ["with"] = p.With, ["without"] = p.Without }.ToJsonString())
            .Append(new JsonObject { ["prompt"] = "Describe a forest.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()));
        var output = dir.Combine("lowercase.safetensors");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(["extract", fixture.Directory, "--pairs", pairs, "-o", output, "--batch-size", "4"], stdout, stderr);
        Assert.True(code == 0, stderr.ToString());
        Assert.Contains("5 pairs", stdout.ToString());
        var file = InstructionVectorFile.Load(output);
        var v = file.Get("lowercase");
        Assert.Equal(5, v.PairCount);
        Assert.True(v.ChatTemplate);
        Assert.Equal([0, 1], v.Layers.Keys.Order());
        Assert.Empty(file.CheckAgainst(InstructionVectorFile.FingerprintOf(SteeringManifest.TryLoad(fixture.Directory)!)));

        // --no-prune and --sort-window 0 run the whole graph in input order: the same vector to float rounding.
        var unpruned = dir.Combine("unpruned.safetensors");
        Assert.Equal(0, CliApp.Run(["extract", fixture.Directory, "--pairs", pairs, "-o", unpruned, "--batch-size", "4", "--no-prune", "--sort-window", "0"], new StringWriter(), new StringWriter()));
        var u = InstructionVectorFile.Load(unpruned).Get("unpruned");
        foreach (var (layer, stats) in v.Layers)
            for (int i = 0; i < stats.MeanDiff.Length; i++) Assert.Equal(stats.MeanDiff[i], u.Layers[layer].MeanDiff[i], 1e-5);
        Assert.Equal((int)ErrorKind.Usage, CliApp.Run(["extract", fixture.Directory, "--pairs", pairs, "-o", dir.Combine("neg.safetensors"), "--sort-window", "-1"], new StringWriter(), new StringWriter()));

        // The chat template changes what the model sees: a raw-text extraction of the same pairs differs.
        using (var extractor = VectorExtractor.Load(fixture.Directory))
        {
            var rawVector = extractor.Extract(PairsFile.Read(pairs), t => fixture.Tokenizer.Encode(t, addSpecialTokens: true),
                new ExtractionOptions { Layers = [1], ChatTemplate = false }).Get();
            Assert.NotEqual(v.Layers[1].MeanDiff, rawVector.Layers[1].MeanDiff);
        }

        // The runtime reads the file as a steering-vector source.
        Assert.True(file.TryGet("lowercase", 1, out var sv));
        Assert.Equal(v.Layers[1].Direction, sv.Direction);
        Assert.Equal((float)v.Layers[1].ZBar!.Value, sv.ZBar);
        Assert.False(file.TryGet("lowercase", 5, out _));
        Assert.Single(Steering.From(file).Project("lowercase", 1).Terms);

        // An unpatched model is refused.
        Assert.Equal((int)ErrorKind.UnsupportedModel, CliApp.Run(["extract", TestPaths.GenAiTinyLlamaFp16, "--pairs", pairs, "-o", dir.Combine("x.safetensors")], new StringWriter(), new StringWriter()));
        // A bad line is reported with its number before any model work; an existing output is refused.
        File.AppendAllLines(pairs, ["{\"with\": \"x\"}"]);
        stderr = new StringWriter();
        Assert.Equal((int)ErrorKind.InvalidData, CliApp.Run(["extract", fixture.Directory, "--pairs", pairs, "-o", dir.Combine("bad.safetensors")], new StringWriter(), stderr));
        Assert.Contains("pairs.jsonl:6:", stderr.ToString());
        Assert.Equal((int)ErrorKind.Output, CliApp.Run(["extract", fixture.Directory, "--pairs", pairs, "-o", output], new StringWriter(), new StringWriter()));
    }
}
