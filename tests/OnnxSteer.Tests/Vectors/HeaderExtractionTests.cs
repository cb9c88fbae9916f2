using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Vectors;

/// <summary>extract --header-positions: the k-th vector from the end equals the direct computation at that position
/// (under causal attention, a sequence cut after that position has it as its last token), position 1 is the paper's
/// vector, and pairs whose header tokens differ are refused.</summary>
public sealed class HeaderExtractionTests
{
    private static readonly int[] Header = [3, 17, 5];

    // The toy "chat template": the text's characters, then a fixed three-token answer header.
    private static int[] Encode(string text) => [.. text.Select(c => c % ToyPatchedModel.Vocab), .. Header];

    private static readonly PromptPair[] Pairs =
    [
        new("Write about rivers. Use only lowercase letters.", "Write about rivers."),
        new("Hi. Use only lowercase letters.", "Hi."),
        new("Describe a long and winding mountain road at dusk. Use only lowercase letters.", "Describe a long and winding mountain road at dusk."),
        new("Name three birds. Use only lowercase letters.", "Name three birds."),
    ];

    [Fact]
    public void Each_header_position_gets_the_mean_difference_at_that_position()
    {
        using var dir = TestPaths.NewTempDir();
        var model = ToyPatchedModel.Write(dir.Combine("toy"));
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        var file = extractor.Extract(Pairs, Encode, new ExtractionOptions { Name = "lower", BatchSize = 3, HeaderPositions = 3 });
        Assert.Equal(["lower", "lower.header-2", "lower.header-3"], file.Vectors.Select(v => v.Name).ToArray());
        Assert.Equal(InstructionVector.DiffMeanMethod, file.Get("lower").Method);
        Assert.Equal("diff-mean, prompt position -3", file.Get("lower.header-3").Method);
        for (var k = 1; k <= 3; k++)
        {
            var cut = k - 1;
            var truncated = Pairs.Select(p => (Encode(p.With)[..^cut], Encode(p.Without)[..^cut])).ToList();
            ExtractionTests.AssertMatchesDirect(model, file.Get(OnnxSteer.Contract.HeaderVectors.Name("lower", k)), truncated, [0, 1], 1e-5);
        }
        // Position 1 is exactly what a plain extraction writes.
        var plain = extractor.Extract(Pairs, Encode, new ExtractionOptions { Name = "lower", BatchSize = 3 }).Get("lower");
        Assert.Equal(plain.Layers[1].MeanDiff, file.Get("lower").Layers[1].MeanDiff);
    }

    [Fact]
    public void Pairs_whose_header_tokens_differ_are_refused()
    {
        using var dir = TestPaths.NewTempDir();
        ToyPatchedModel.Write(dir.Combine("toy"));
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        // Without the fixed header the prompts end in their own text: "rivers." and "letters." share their last 3 tokens, but
        // "Hi." and "letters." do not.
        static int[] Raw(string text) => [.. text.Select(c => c % ToyPatchedModel.Vocab)];
        var e = Assert.Throws<OnnxSteerException>(() => extractor.Extract(Pairs, Raw, new ExtractionOptions { HeaderPositions = 3 }));
        Assert.Equal(ErrorKind.InvalidData, e.Kind);
        Assert.Contains("last 3 tokens of the with- and without-prompt differ", e.Message);
        Assert.Contains("pair 2", e.Message);
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => extractor.Extract(Pairs, Encode, new ExtractionOptions { HeaderPositions = -1 })).Kind);
        // "template" counts the encoder's header: here the three fixed tokens.
        Assert.Equal(3, extractor.Extract(Pairs, Encode, new ExtractionOptions { HeaderPositions = ExtractionOptions.TemplateHeader }).Vectors.Count);
    }

    [Fact]
    public void The_template_header_of_the_bundled_model_is_its_five_chatml_tokens()
    {
        var warnings = new List<string>();
        var encode = PromptEncoding.Create(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), chatTemplate: true, warnings);
        Assert.Equal(5, PromptEncoding.HeaderLength(encode)); // <|im_end|> \n <|im_start|> assistant \n
        var raw = PromptEncoding.Create(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), chatTemplate: false, warnings);
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => PromptEncoding.HeaderLength(raw)).Kind);
    }
}
