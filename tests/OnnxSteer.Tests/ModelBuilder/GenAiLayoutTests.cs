using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.ModelBuilder;

public sealed class GenAiLayoutTests
{
    [Theory]
    [InlineData(DecoderDType.Float32, AttentionKind.MultiHead)]
    [InlineData(DecoderDType.Float16, AttentionKind.MultiHead)]
    [InlineData(DecoderDType.Float32, AttentionKind.GroupQuery)]
    [InlineData(DecoderDType.Float16, AttentionKind.GroupQuery)]
    public void KvCacheDecodeMatchesFullRun(DecoderDType dtype, AttentionKind attention)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, dtype, attention) with { Heads = 4, KvHeads = attention == AttentionKind.GroupQuery ? 2 : 4 };
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, dtype == DecoderDType.Float32 ? 1e-4 : 2e-2);
    }

    [Theory]
    [InlineData(DecoderDType.Float32)]
    [InlineData(DecoderDType.Float16)]
    public void LeftPaddedBatchMatchesSingleRows(DecoderDType dtype)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, dtype);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.LeftPaddedBatchMatchesRows(fixture.ModelPath, spec, dtype == DecoderDType.Float32 ? 1e-4 : 2e-2);
    }

    [Theory]
    [InlineData(DecoderDType.Float32, AttentionKind.MultiHead, 1e-4)]
    [InlineData(DecoderDType.Float16, AttentionKind.MultiHead, 5e-2)]
    [InlineData(DecoderDType.Float32, AttentionKind.GroupQuery, 1e-4)]
    public void MatchesReferenceForward(DecoderDType dtype, AttentionKind attention, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, dtype, attention) with { Heads = 4, KvHeads = attention == AttentionKind.GroupQuery ? 2 : 4 };
        var weights = new RandomWeights(7);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        LayoutChecks.MatchesReference(fixture.ModelPath, spec, weights, tol);
    }

    /// <summary>kv_heads &lt; heads with MultiHeadAttention (the builder's make_repeat_kv) and a head size that
    /// GroupQueryAttention on CPU refuses.</summary>
    [Theory]
    [InlineData(DecoderDType.Float32, 1e-4)]
    [InlineData(DecoderDType.Float16, 2e-2)]
    public void MultiHeadAttentionWithFewerKvHeadsRepeatsKv(DecoderDType dtype, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, dtype) with { Heads = 4, KvHeads = 2, HeadDim = 10 };
        var weights = new RandomWeights(3);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, tol);
        LayoutChecks.LeftPaddedBatchMatchesRows(fixture.ModelPath, spec, tol);
        LayoutChecks.MatchesReference(fixture.ModelPath, spec, weights, dtype == DecoderDType.Float32 ? 1e-4 : 5e-2);
        var nodes = OnnxModelFile.Load(fixture.ModelPath).Proto.Graph.Node;
        Assert.Equal(spec.Layers, nodes.Count(n => n.OpType == "MultiHeadAttention"));
        Assert.Equal("Concat", nodes.Single(n => n.Output.Contains("present.1.value")).OpType);
    }

    [Fact]
    public void GraphMirrorsTheRealBuilderExport()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny() with { Layers = 3 };
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        var model = OnnxModelFile.Load(fixture.ModelPath);
        var nodes = model.Proto.Graph.Node;
        Assert.Equal(["model.onnx.data"], model.ExternalDataFiles);
        Assert.True(File.Exists(Path.Combine(dir.Path, "genai_config.json")));

        var first = Assert.Single(nodes, n => n.OpType == "SimplifiedLayerNormalization");
        Assert.Equal("", first.Domain);
        Assert.Equal("Gather", nodes.Single(n => n.Output.Contains(first.Input[0])).OpType);
        var skips = nodes.Where(n => n.OpType == "SkipSimplifiedLayerNormalization").ToList();
        Assert.Equal(2 * spec.Layers, skips.Count);
        Assert.All(skips, n => Assert.Equal("com.microsoft", n.Domain));
        Assert.All(skips.Take(skips.Count - 1), n => { Assert.Equal(4, n.Output.Count); Assert.NotEqual("", n.Output[3]); });
        var final = skips[^1];
        Assert.Single(final.Output);
        var lm = nodes.Single(n => n.Output.Contains("logits"));
        Assert.Equal("MatMul", lm.OpType);
        Assert.Equal(final.Output[0], lm.Input[0]);
        Assert.Equal(spec.Layers, nodes.Count(n => n.OpType == "MultiHeadAttention" && n.Domain == "com.microsoft"));
        Assert.Equal(2 * spec.Layers, nodes.Count(n => n.OpType == "RotaryEmbedding" && n.Domain == "com.microsoft"));
        Assert.Equal(["input_ids", "attention_mask", "position_ids", .. Enumerable.Range(0, spec.Layers).SelectMany(i => new[] { $"past_key_values.{i}.key", $"past_key_values.{i}.value" })],
            model.Proto.Graph.Input.Select(i => i.Name));
        Assert.Equal(["logits", .. Enumerable.Range(0, spec.Layers).SelectMany(i => new[] { $"present.{i}.key", $"present.{i}.value" })],
            model.Proto.Graph.Output.Select(i => i.Name));
    }
}

public sealed class GenAiInt4Tests
{
    [Theory]
    [InlineData(DecoderDType.Float32, AttentionKind.MultiHead, 1e-4)]
    [InlineData(DecoderDType.Float16, AttentionKind.MultiHead, 5e-2)]
    [InlineData(DecoderDType.Float32, AttentionKind.GroupQuery, 1e-4)]
    public void MatMulNBitsModelMatchesDequantizedReference(DecoderDType dtype, AttentionKind attention, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, dtype, attention) with { Quantization = WeightQuantization.Int4, Intermediate = 80 };
        var weights = new RandomWeights(9);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        LayoutChecks.MatchesReference(fixture.ModelPath, spec, weights, tol);
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, dtype == DecoderDType.Float32 ? 1e-4 : 2e-2);
        var nodes = OnnxSteer.Onnx.OnnxModelFile.Load(fixture.ModelPath).Proto.Graph.Node;
        Assert.Equal(7 * spec.Layers + 1, nodes.Count(n => n.OpType == "MatMulNBits" && n.Domain == "com.microsoft"));
        Assert.DoesNotContain(nodes, n => n.OpType == "MatMul");
        Assert.Equal("/lm_head/MatMul_Q4", nodes.Single(n => n.Output.Contains("logits")).Name);
    }

    [Fact]
    public void QuantizeDequantizeRoundTripsWithinHalfAStep()
    {
        var w = new RandomWeights(3).Get("x", [5, 40]).Data;
        var q = Int4.Quantize(w, 5, 40, 16);
        Assert.Equal(3, q.BlocksPerRow);
        var d = Int4.Dequantize(q, 5, 40, 16, roundScalesToHalf: false);
        for (var i = 0; i < w.Length; i++)
            Assert.True(Math.Abs(w[i] - d[i]) <= q.Scales[(i / 40) * 3 + (i % 40) / 16] / 2 + 1e-6);
    }
}

public sealed class GenAiGqaPaddingTests
{
    /// <summary>GroupQueryAttention on CPU takes each row's length from seqlens_k (attention_mask sum - 1) and assumes the
    /// valid tokens start at position 0: right padding works in prefill, left padding does not (documented limitation).</summary>
    [Fact]
    public void RightPaddedPrefillMatchesSingleRows()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, attention: AttentionKind.GroupQuery) with { Heads = 4, KvHeads = 2 };
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        var a = LayoutChecks.Tokens(6, spec.Vocab, 1);
        var b = LayoutChecks.Tokens(3, spec.Vocab, 2);
        using var runner = DecoderRunner.Load(fixture.ModelPath);
        var aloneA = runner.Forward([a])[0];
        var aloneB = runner.Forward([b])[0];
        var batch = runner.Forward([a, [.. b, 0, 0, 0]], [[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]]);
        for (var t = 0; t < 6; t++) Assert.True(LayoutChecks.MaxAbsDiff(aloneA[t], batch[0][t]) <= 1e-4, $"row 0 position {t}");
        for (var t = 0; t < 3; t++) Assert.True(LayoutChecks.MaxAbsDiff(aloneB[t], batch[1][t]) <= 1e-4, $"row 1 position {t}");
    }
}

public sealed class GenAiFidelityTests
{
    private static List<string> MainPath(OnnxSteer.Onnx.Proto.GraphProto g) => g.Node
        .Where(n => n.OpType != "Constant" && !n.Name.StartsWith("/model/attn_mask_reformat", StringComparison.Ordinal))
        .Select(n => $"{n.Domain}::{n.OpType}:{n.Input.Count}>{n.Output.Count}").ToList();

    /// <summary>The fixture of the real export's shape has the same main-path ops, in the same order, with the same input
    /// and output arity, the same graph inputs/outputs (names, element types, dims) and the same key attributes.</summary>
    [Fact]
    public void MatchesTheRealExportOpForOp()
    {
        var real = OnnxModelFile.Load(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx")).Proto.Graph;
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.GenAi, DecoderDType.Float16) with { Hidden = 16, Heads = 1, KvHeads = 1, HeadDim = 16, Intermediate = 64, Vocab = 32000, MaxPositions = 2048 };
        var ours = OnnxModelFile.Load(DecoderFixtures.Write(spec, dir.Path).ModelPath).Proto.Graph;

        Assert.Equal(MainPath(real), MainPath(ours));
        Assert.Equal(real.Input.Select(i => i.ToString()), ours.Input.Select(i => i.ToString()));
        Assert.Equal(real.Output.Select(i => i.ToString()), ours.Output.Select(i => i.ToString()));
        foreach (var op in new[] { "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RotaryEmbedding", "MultiHeadAttention" })
        {
            var r = real.Node.First(n => n.OpType == op);
            var o = ours.Node.First(n => n.OpType == op);
            Assert.Equal(r.Attribute.Select(a => a.Name).Order(), o.Attribute.Select(a => a.Name).Order());
            // Which input slots are wired (MultiHeadAttention: q, k, v, -, -, attention_bias, past_key, past_value).
            Assert.Equal(r.Input.Select(x => x.Length > 0), o.Input.Select(x => x.Length > 0));
            Assert.Equal(r.Output.Select(x => x.Length > 0), o.Output.Select(x => x.Length > 0));
        }
        static IEnumerable<string> Inits(OnnxSteer.Onnx.Proto.GraphProto g) => g.Initializer.Select(t => $"{t.Name} {t.DataType} [{string.Join(",", t.Dims)}]").Order();
        Assert.Equal(Inits(real), Inits(ours));
    }
}
