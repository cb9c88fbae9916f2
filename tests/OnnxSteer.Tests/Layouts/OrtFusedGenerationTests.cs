using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Runtime;
using OnnxSteer.Tests.Runtime;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Layouts;

/// <summary>The runtime generates on ONNX Runtime's fused GPT-2 layout, whose cache is one <c>past_{i}</c>
/// [2, batch, heads, past, head] per layer: cached greedy decoding equals a no-cache greedy loop, before and after patching.</summary>
public sealed class OrtFusedGenerationTests
{
    private static readonly GeneratorOptions Raw = new() { MaxNewTokens = 10, UseChatTemplate = false };

    private static DecoderFixture Write(string dir)
    {
        // Vocab covers the byte-level test tokenizer (256 bytes + 20 merges + 3 specials); EOS <|im_end|> = 278.
        var spec = DecoderSpec.Tiny(MbLayout.OrtFused) with { Vocab = 288, EosTokenId = 278, PadTokenId = 276, BosTokenId = 276 };
        var fixture = DecoderFixtures.Write(spec, dir, new RandomWeights(4));
        ByteLevelFixture.Write(dir);
        return fixture;
    }

    /// <summary>Greedy decoding without a cache: the whole sequence every step, argmax of the last position.</summary>
    private static int[] NoCacheGreedy(string modelPath, IReadOnlyList<int> prompt, int maxNew, int eos)
    {
        using var runner = DecoderRunner.Load(modelPath);
        var tokens = prompt.Select(t => (long)t).ToList();
        var generated = new List<int>();
        for (var i = 0; i < maxNew; i++)
        {
            var logits = runner.Forward([tokens.ToArray()])[0][^1];
            var best = Array.IndexOf(logits, logits.Max());
            generated.Add(best);
            if (best == eos) break;
            tokens.Add(best);
        }
        return generated.ToArray();
    }

    [Fact]
    public void CachedGreedyEqualsNoCacheGreedyOnCombinedPast()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = Write(dir.Path);
        using var model = SteeredModel.Load(dir.Path, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Equal(CacheLayout.Combined, model.Signature.Layout);
        Assert.Equal(2, model.Signature.Cache.Count);
        Assert.All(model.Signature.Cache, c => Assert.True(c.Combined));
        foreach (var text in new[] { "Hello world", "the and hello" })
        {
            var prompt = model.Tokenizer.Encode(text);
            var result = model.Generate([new GenerationRequest { PromptTokenIds = prompt }], Raw)[0];
            Assert.NotEmpty(result.TokenIds);
            Assert.Equal(NoCacheGreedy(fixture.ModelPath, prompt, Raw.MaxNewTokens, 278), result.TokenIds);
        }
        // A left-padded batch gives each row what it gives alone.
        string[] prompts = ["Hello", "Hello world and the"];
        var batch = model.Generate(prompts.Select(p => GenerationRequest.FromPrompt(p)).ToList(), Raw);
        for (var i = 0; i < prompts.Length; i++) Assert.Equal(model.Generate(prompts[i], options: Raw).TokenIds, batch[i].TokenIds);
    }

    [Fact]
    public void PatchedModelGeneratesTheSameWithoutSteeringAndDiffersWithIt()
    {
        using var dir = TestPaths.NewTempDir();
        Write(dir.Combine("source"));
        var report = ModelPatcher.Patch(dir.Combine("source"), dir.Combine("patched"), new PatchOptions());
        using var source = SteeredModel.Load(dir.Combine("source"), new RuntimeOptions { IntraOpThreads = 1 });
        using var patched = SteeredModel.Load(report.OutputDirectory, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Equal(CacheLayout.Combined, patched.Signature.Layout);
        Assert.Equal([0, 1], patched.SteeredLayers);
        var plain = source.Generate("Hello world", options: Raw);
        Assert.Equal(plain.TokenIds, patched.Generate("Hello world", options: Raw).TokenIds);
        var vector = SteeringVector.FromRaw(Enumerable.Range(0, 32).Select(i => (float)Math.Sin(i)).ToArray());
        var steered = patched.Generate("Hello world", Steering.None.Add(vector, 0, 8f), Raw);
        Assert.NotEqual(plain.TokenIds, steered.TokenIds);
    }
}
