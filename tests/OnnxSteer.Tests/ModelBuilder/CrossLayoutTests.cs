using OnnxSteer.ModelBuilder;

namespace OnnxSteer.Tests.ModelBuilder;

public sealed class CrossLayoutTests
{
    [Fact]
    public void AllLayoutsAndTheReferenceAgreeOnLogits()
    {
        var weights = new RandomWeights(5);
        var spec = DecoderSpec.Tiny() with { Layers = 3, Heads = 4, KvHeads = 4 };
        var ids = LayoutChecks.Tokens(9, spec.Vocab, 3);
        var reference = new ReferenceDecoder(spec, weights).Forward(ids);
        LayoutChecks.AssertNotDegenerate(reference[^1]);
        foreach (var (layout, attention) in new[] { (DecoderLayout.GenAi, AttentionKind.MultiHead), (DecoderLayout.GenAi, AttentionKind.GroupQuery),
                     (DecoderLayout.Optimum, AttentionKind.MultiHead), (DecoderLayout.OptimumMerged, AttentionKind.MultiHead) })
        {
            using var dir = TestPaths.NewTempDir();
            var fixture = DecoderFixtures.Write(spec with { Layout = layout, Attention = attention }, dir.Path, weights);
            using var runner = DecoderRunner.Load(fixture.ModelPath);
            var logits = runner.Forward([ids])[0];
            for (var t = 0; t < ids.Length; t++)
                Assert.True(LayoutChecks.MaxAbsDiff(reference[t], logits[t]) <= 1e-4, $"{layout}/{attention} position {t}");
        }
    }
}

public sealed class FixtureTokenizerTests
{
    [Fact]
    public void RealTokenizerCanBeCopiedIntoAFullVocabularyFixture()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny() with { Vocab = 32000, Layers = 1, BosTokenId = 0, EosTokenId = 1, PadTokenId = 2 }, dir.Path);
        var copied = DecoderFixtures.CopyTokenizerFiles(TestPaths.GenAiTinyLlamaFp16, fixture.Directory);
        Assert.Contains("tokenizer.json", copied);
        Assert.True(File.Exists(Path.Combine(dir.Path, "tokenizer.json")));
        using var runner = DecoderRunner.Load(fixture.ModelPath);
        Assert.Equal(32000, runner.Forward([[1, 31999]])[0][1].Length);
    }
}

public sealed class OpsetVariantTests
{
    [Theory]
    [InlineData(DecoderLayout.GenAi, 14, 7)]
    [InlineData(DecoderLayout.GenAi, 17, 8)]
    [InlineData(DecoderLayout.Optimum, 18, 9)]
    [InlineData(DecoderLayout.OptimumMerged, 21, 10)]
    public void OtherOpsetsRunAndMatchTheReference(DecoderLayout layout, int opset, int ir)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(layout) with { Opset = opset };
        var weights = new RandomWeights(2);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        var model = OnnxSteer.Onnx.OnnxModelFile.Load(fixture.ModelPath).Proto;
        Assert.Equal(ir, model.IrVersion);
        Assert.Equal(opset, model.OpsetImport.Single(o => o.Domain == "").Version);
        LayoutChecks.MatchesReference(fixture.ModelPath, spec, weights, 1e-4);
    }
}
