using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Tests.ModelBuilder;

namespace OnnxSteer.Tests.Layouts;

/// <summary>The ort-fused (GPT-2) and gemma2 fixtures run in ONNX Runtime: KV-cache decode equals the full run, a
/// left-padded batch equals its rows alone, and logits and every block's residual match the plain C# references.</summary>
public sealed class FusedLayoutBuildTests
{
    public static TheoryData<DecoderLayout, DecoderDType> Variants => new()
    {
        { DecoderLayout.OrtFused, DecoderDType.Float32 },
        { DecoderLayout.OrtFused, DecoderDType.Float16 },
        { DecoderLayout.Gemma2, DecoderDType.Float32 },
        { DecoderLayout.Gemma2, DecoderDType.Float16 },
    };

    private static DecoderSpec Spec(DecoderLayout layout, DecoderDType dtype, AttentionKind attention = AttentionKind.MultiHead) =>
        DecoderSpec.Tiny(layout, dtype, attention) with { Layers = 3, Heads = 4, KvHeads = attention == AttentionKind.GroupQuery ? 2 : 4 };

    /// <summary>Gemma 2 with GroupQueryAttention: fused rotary, attention soft-capping and a sliding window on even layers
    /// (window 4, so the 8-token sequences cross it); CPU GQA takes right padding only, so no left-padded batch here.</summary>
    [Theory]
    [InlineData(DecoderDType.Float32, 1e-4)]
    [InlineData(DecoderDType.Float16, 0.15)]
    public void Gemma2GroupQueryWithSoftcapAndSlidingWindow(DecoderDType dtype, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(DecoderLayout.Gemma2, dtype, AttentionKind.GroupQuery);
        var weights = new RandomWeights(12);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        var nodes = OnnxModelFile.Load(fixture.ModelPath).Proto.Graph.Node;
        var gqa = nodes.Where(n => n.OpType == "GroupQueryAttention").ToList();
        Assert.Equal(spec.Layers, gqa.Count);
        Assert.Equal([4L, -1L, 4L], gqa.Select(n => n.Attribute.Single(a => a.Name == "local_window_size").I));
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, Tol(dtype));
        var ids = LayoutChecks.Tokens(8, spec.Vocab, 17);
        using var runner = DecoderRunner.Load(fixture.ModelPath);
        var onnx = runner.Forward([ids])[0];
        var reference = FusedReference.Forward(spec, weights, ids).Logits;
        LayoutChecks.AssertNotDegenerate(reference[^1]);
        for (var t = 0; t < ids.Length; t++)
        {
            var d = LayoutChecks.MaxAbsDiff(reference[t], onnx[t]);
            Assert.True(d <= tol, $"position {t}: max |onnx - reference| {d} > {tol}");
        }
    }

    private static double Tol(DecoderDType dtype) => dtype == DecoderDType.Float32 ? 1e-4 : 2e-2;

    [Theory]
    [MemberData(nameof(Variants))]
    public void KvCacheDecodeMatchesFullRun(DecoderLayout layout, DecoderDType dtype)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, Tol(dtype));
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void LeftPaddedBatchMatchesSingleRows(DecoderLayout layout, DecoderDType dtype)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.LeftPaddedBatchMatchesRows(fixture.ModelPath, spec, Tol(dtype));
    }

    [Theory]
    [InlineData(DecoderLayout.OrtFused, DecoderDType.Float32, 1e-4)]
    [InlineData(DecoderLayout.OrtFused, DecoderDType.Float16, 0.15)]
    [InlineData(DecoderLayout.Gemma2, DecoderDType.Float32, 1e-4)]
    [InlineData(DecoderLayout.Gemma2, DecoderDType.Float16, 0.15)]
    public void MatchesReferenceForward(DecoderLayout layout, DecoderDType dtype, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype);
        var weights = new RandomWeights(7);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        var ids = LayoutChecks.Tokens(7, spec.Vocab, 31);
        using var runner = DecoderRunner.Load(fixture.ModelPath);
        var onnx = runner.Forward([ids])[0];
        var reference = FusedReference.Forward(spec, weights, ids).Logits;
        LayoutChecks.AssertNotDegenerate(reference[^1]);
        for (var t = 0; t < ids.Length; t++)
        {
            var d = LayoutChecks.MaxAbsDiff(reference[t], onnx[t]);
            Assert.True(d <= tol, $"position {t}: max |onnx - reference| {d} > {tol}");
        }
    }

    [Fact]
    public void OrtFusedGraphHasTheOptimizerOps()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(DecoderLayout.OrtFused, DecoderDType.Float32);
        var model = OnnxModelFile.Load(DecoderFixtures.Write(spec, dir.Path).ModelPath).Proto;
        var nodes = model.Graph.Node;
        int Count(string op) => nodes.Count(n => n.OpType == op && n.Domain == "com.microsoft");
        Assert.Equal(1, Count("EmbedLayerNormalization"));
        Assert.Equal(spec.Layers, Count("Attention"));
        Assert.Equal(2 * spec.Layers, Count("SkipLayerNormalization"));
        Assert.Equal(spec.Layers, Count("FastGelu"));
        Assert.DoesNotContain(nodes, n => n.OpType is "Add" or "LayerNormalization" or "Softmax");
        var embed = nodes.Single(n => n.OpType == "EmbedLayerNormalization");
        Assert.Equal("embedding_sum", embed.Output[2]);
        Assert.All(nodes.Where(n => n.OpType == "Attention"), n =>
        {
            Assert.Equal(1, n.Attribute.Single(a => a.Name == "unidirectional").I);
            Assert.StartsWith("past_", n.Input[4]);
            Assert.StartsWith("present_", n.Output[1]);
        });
        var skips = nodes.Where(n => n.OpType == "SkipLayerNormalization").ToList();
        Assert.All(skips, n => Assert.Equal(5, n.Input.Count)); // [input, skip, gamma, beta, bias]
        Assert.Single(skips[^1].Output);
        Assert.Equal(["input_ids", "position_ids", "attention_mask", .. Enumerable.Range(0, spec.Layers).Select(i => $"past_{i}")],
            model.Graph.Input.Select(i => i.Name));
        Assert.Equal(["logits", .. Enumerable.Range(0, spec.Layers).Select(i => $"present_{i}")], model.Graph.Output.Select(o => o.Name));
        Assert.Equal(5, model.Graph.Input.Single(i => i.Name == "past_0").Type.TensorType.Shape.Dim.Count);
    }

    [Fact]
    public void Gemma2GraphKeepsAFloat32ResidualInAFloat16Model()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(DecoderLayout.Gemma2, DecoderDType.Float16);
        var model = OnnxModelFile.Load(DecoderFixtures.Write(spec, dir.Path).ModelPath).Proto;
        var nodes = model.Graph.Node;
        var skips = nodes.Where(n => n.OpType == "SkipSimplifiedLayerNormalization").ToList();
        Assert.Equal(2 * spec.Layers, skips.Count);
        Assert.Equal(2 * spec.Layers + 1, nodes.Count(n => n.OpType == "SimplifiedLayerNormalization"));
        var inits = model.Graph.Initializer.ToDictionary(t => t.Name);
        Assert.All(skips, n => Assert.Equal(1, inits[n.Input[2]].DataType)); // norm weights float32: the norms run in float32
        Assert.Equal(10, inits["model.embed_tokens.weight"].DataType);
        Assert.Equal(10, model.Graph.Output.Single(o => o.Name == "logits").Type.TensorType.ElemType);
        Assert.Contains(nodes, n => n.OpType == "Tanh"); // final logit soft-capping
        Assert.Single(nodes, n => n.Name == "/model/embed_tokens/Mul"); // sqrt(hidden) scaling
    }
}

/// <summary>Dispatches to the plain C# forward of a layout.</summary>
internal static class FusedReference
{
    public static (float[][] Logits, float[][][] Residuals) Forward(DecoderSpec spec, IWeightSource weights, IReadOnlyList<long> ids, IReadOnlyList<long>? mask = null) =>
        spec.Layout switch
        {
            DecoderLayout.OrtFused => new Gpt2Reference(spec, weights).Forward(ids, mask),
            DecoderLayout.Gemma2 => new Gemma2Reference(spec, weights).Forward(ids, mask),
            _ => new ReferenceDecoder(spec, weights).ForwardWithResiduals(ids, mask),
        };
}
