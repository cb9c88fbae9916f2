using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Cli;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Layouts;

/// <summary>ort-fused, gemma2 and int4 genai: detection (and why the other layouts stop), exact structure, the full
/// verify contract (bit-equal with nothing fed over prefill + 3 decode steps at batch 1 and 2, exact add deltas with
/// earlier layers untouched, projection and ablation against hidden_states, per-row steering) and that the exposed
/// hidden_states.{L} is the residual after block L of the C# reference.</summary>
public sealed class FusedLayoutPatchTests
{
    public static TheoryData<string, MbLayout, DecoderDType, bool, string, string> Layouts => new()
    {
        { "ort-fused fp32", MbLayout.OrtFused, DecoderDType.Float32, false, "ort-fused", "float32" },
        { "ort-fused fp16", MbLayout.OrtFused, DecoderDType.Float16, false, "ort-fused", "float16" },
        { "gemma2 fp32", MbLayout.Gemma2, DecoderDType.Float32, false, "gemma2", "float32" },
        { "gemma2 fp16 (fp32 residual)", MbLayout.Gemma2, DecoderDType.Float16, false, "gemma2", "float32" },
        { "genai int4 fp32", MbLayout.GenAi, DecoderDType.Float32, true, "genai", "float32" },
        { "genai int4 fp16", MbLayout.GenAi, DecoderDType.Float16, true, "genai", "float16" },
        { "gemma2 fp16 GroupQueryAttention", MbLayout.Gemma2, DecoderDType.Float16, false, "gemma2", "float32" },
    };

    private static DecoderSpec Spec(MbLayout layout, DecoderDType dtype, bool int4, string name = "") =>
        DecoderSpec.Tiny(layout, dtype, name.Contains("GroupQuery", StringComparison.Ordinal) ? AttentionKind.GroupQuery : AttentionKind.MultiHead)
            with { Layers = 3, Quantization = int4 ? WeightQuantization.Int4 : WeightQuantization.None };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void DetectedAsItsOwnLayoutOnly(string name, MbLayout layout, DecoderDType dtype, bool int4, string expected, string residualDtype)
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(Spec(layout, dtype, int4, name), dir.Path);
        var graph = GraphView.Create(OnnxModelFile.Load(fixture.ModelPath).Proto.Graph);
        var results = LayoutMatchers.Explain(graph);
        var match = Assert.Single(results, r => r.IsMatch);
        Assert.True(expected == match.LayoutName, $"{name}: {match.LayoutName}: {match.Reason}");
        Assert.Equal(3, match.Decoder!.NumLayers);
        Assert.Equal(32, match.Decoder.HiddenSize);
        Assert.Equal(residualDtype, match.Decoder.ResidualDtype);
        Assert.All(match.Decoder.Points, p => Assert.IsType<FusedNormResidualPoint>(p));
        Assert.Null(match.Decoder.Points[^1].ExistingValue); // the final norm never materialises the last residual
        Assert.All(results.Where(r => !r.IsMatch), r => Assert.False(string.IsNullOrWhiteSpace(r.Reason)));
        if (layout == MbLayout.OrtFused)
        {
            Assert.Equal(4, ((FusedNormResidualPoint)match.Decoder.Points[0]).BiasInputIndex); // projection bias fused into the norm
            Assert.Contains("EmbedLayerNormalization", results.Single(r => r.LayoutName == "genai").Reason);
            Assert.Contains("EmbedLayerNormalization", results.Single(r => r.LayoutName == "gemma2").Reason);
        }
        if (layout == MbLayout.Gemma2)
        {
            Assert.Contains("gemma2", results.Single(r => r.LayoutName == "genai").Reason);
            Assert.Contains("no com.microsoft EmbedLayerNormalization", results.Single(r => r.LayoutName == "ort-fused").Reason);
        }
        if (int4)
            Assert.Contains("no post_attention_layernorm sandwich", results.Single(r => r.LayoutName == "gemma2").Reason);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void InspectExplainNamesTheLayoutAndWhyOthersStopped(string name, MbLayout layout, DecoderDType dtype, bool int4, string expected, string residualDtype)
    {
        using var dir = TestPaths.NewTempDir();
        DecoderFixtures.Write(Spec(layout, dtype, int4, name), dir.Path);
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        Assert.True(0 == CliApp.Run(["inspect", dir.Path, "--explain"], stdout, stderr), name + stderr);
        var text = stdout.ToString();
        Assert.Contains($"layout:      {expected}", text);
        Assert.Contains($"residual dtype: {residualDtype}", text);
        Assert.Contains($"  {expected}: matched: ", text);
        foreach (var other in LayoutMatchers.All.Select(m => m.Name).Where(n => n != expected))
            Assert.Contains($"  {other}: no: ", text);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void PatchesAndVerifies(string name, MbLayout layout, DecoderDType dtype, bool int4, string expected, string residualDtype)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype, int4, name);
        var fixture = DecoderFixtures.Write(spec, dir.Combine("source"));
        var before = ModelPatcher.Sha256Hex(fixture.ModelPath);

        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());

        var m = report.Manifest;
        Assert.Equal(expected, m.Layout);
        Assert.Equal(3, m.NumLayers);
        Assert.Equal(spec.Hidden, m.HiddenSize);
        Assert.Equal(residualDtype, m.ResidualDtype);
        Assert.Equal(before, ModelPatcher.Sha256Hex(fixture.ModelPath));

        var patched = OnnxModelFile.Load(report.OutputDirectory);
        var source = OnnxModelFile.Load(fixture.Directory);
        var g = patched.Proto.Graph;
        Assert.Equal(source.Proto.Graph.Input.Count + 9, g.Input.Count);
        Assert.Equal(source.Proto.Graph.Output.Count + 3, g.Output.Count);
        Assert.Equal(source.Proto.IrVersion, patched.Proto.IrVersion);
        Assert.Equal(source.Proto.OpsetImport.Select(o => (o.Domain, o.Version)), patched.Proto.OpsetImport.Select(o => (o.Domain, o.Version)));
        Assert.Equal(source.ExternalDataFiles, patched.ExternalDataFiles);
        Assert.Equal(3, g.Node.Count(n => n.Name.EndsWith("/steer", StringComparison.Ordinal)));
        // Steering enters through each closing norm's skip operand; the fused norms themselves stay (and keep their bias).
        var skipOp = layout == MbLayout.OrtFused ? "SkipLayerNormalization" : "SkipSimplifiedLayerNormalization";
        Assert.Equal(source.Proto.Graph.Node.Count(n => n.OpType == skipOp), g.Node.Count(n => n.OpType == skipOp));
        Assert.Equal(3, g.Node.Count(n => n.OpType == skipOp && n.Input[1].EndsWith("/steer/output_0", StringComparison.Ordinal)));
        // Steering inputs take the residual's dtype (float32 in the float16 gemma2 model), not the model's.
        var elem = residualDtype == "float32" ? 1 : 10;
        Assert.All(g.Input.Where(i => i.Name.StartsWith("steering.", StringComparison.Ordinal)), i => Assert.Equal(elem, i.Type.TensorType.ElemType));
        Assert.All(g.Output.Where(o => o.Name.StartsWith("hidden_states.", StringComparison.Ordinal)), o => Assert.Equal(elem, o.Type.TensorType.ElemType));
        if (int4) Assert.Equal(7 * 3 + 1, g.Node.Count(n => n.OpType == "MatMulNBits" && n.Domain == "com.microsoft"));

        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.Equal(1 + 2 + 4 * 3 + 2, verification.Checks.Count);
        Assert.True(verification.Passed, name + ": " + verification.ToJson());
    }

    [Theory]
    [InlineData(MbLayout.OrtFused, DecoderDType.Float32, 1e-4)]
    [InlineData(MbLayout.OrtFused, DecoderDType.Float16, 0.1)]
    [InlineData(MbLayout.Gemma2, DecoderDType.Float32, 1e-4)]
    [InlineData(MbLayout.Gemma2, DecoderDType.Float16, 0.1)]
    public void HiddenStatesAreTheReferenceResidualAfterEachBlock(MbLayout layout, DecoderDType dtype, double tol)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype, false);
        var weights = new RandomWeights(3);
        var fixture = DecoderFixtures.Write(spec, dir.Combine("source"), weights);
        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());
        var ids = ModelBuilder.LayoutChecks.Tokens(6, spec.Vocab, 5);
        var reference = FusedReference.Forward(spec, weights, ids).Residuals;

        using var runner = DecoderRunner.Load(Path.Combine(report.OutputDirectory, "model.onnx"));
        var session = runner.Session;
        var feeds = new Dictionary<string, OrtValue>();
        try
        {
            feeds["input_ids"] = OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]);
            feeds["attention_mask"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), [1, ids.Length]);
            feeds["position_ids"] = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray(), [1, ids.Length]);
            foreach (var (input, meta) in session.InputMetadata.Where(kv => kv.Key.StartsWith("past", StringComparison.Ordinal)))
            {
                long[] shape = meta.Dimensions.Length == 5 ? [2, 1, meta.Dimensions[2], 0, meta.Dimensions[4]] : [1, meta.Dimensions[1], 0, meta.Dimensions[3]];
                feeds[input] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, meta.ElementDataType, shape);
            }
            var names = Enumerable.Range(0, spec.Layers).Select(l => $"hidden_states.{l}").ToArray();
            using var outputs = session.Run(new RunOptions(), feeds.Keys.ToArray(), feeds.Values.ToArray(), names);
            for (var l = 0; l < spec.Layers; l++)
            {
                var actual = DecoderRunner.ReadFloats(outputs[l]);
                for (var t = 0; t < ids.Length; t++)
                {
                    var d = ModelBuilder.LayoutChecks.MaxAbsDiff(reference[l][t], actual.AsSpan(t * spec.Hidden, spec.Hidden).ToArray());
                    Assert.True(d <= tol, $"layer {l} position {t}: |hidden_states - reference residual| {d} > {tol}");
                }
            }
        }
        finally
        {
            foreach (var v in feeds.Values) v.Dispose();
        }
    }

    /// <summary>When ONNX Runtime's optimizer leaves the last residual Add unfused, the final norm is a plain
    /// LayerNormalization after Add(residual, mlp) and Add(bias): the last layer's residual is then that Add's value.</summary>
    [Fact]
    public void OrtFusedWithPlainFinalLayerNormIsDetectedPatchedAndVerified()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(MbLayout.OrtFused, DecoderDType.Float32, false);
        var weights = new RandomWeights(8);
        var fixture = DecoderFixtures.Write(spec, dir.Combine("source"), weights);
        UnfuseFinalNorm(fixture.ModelPath);
        ModelBuilder.LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, 1e-4);
        var ids = ModelBuilder.LayoutChecks.Tokens(6, spec.Vocab, 9);
        using (var runner = DecoderRunner.Load(fixture.ModelPath))
        {
            var onnx = runner.Forward([ids])[0];
            var reference = FusedReference.Forward(spec, weights, ids).Logits;
            for (var t = 0; t < ids.Length; t++) Assert.True(ModelBuilder.LayoutChecks.MaxAbsDiff(reference[t], onnx[t]) <= 1e-4);
        }

        var layout = LayoutMatchers.Detect(GraphView.Create(OnnxModelFile.Load(fixture.ModelPath).Proto.Graph));
        Assert.Equal("ort-fused", layout.Name);
        Assert.Equal(3, layout.NumLayers);
        Assert.IsType<FusedNormResidualPoint>(layout.Points[1]);
        var last = Assert.IsType<ValueResidualPoint>(layout.Points[2]);
        Assert.Equal("final_residual", last.Residual.Name);

        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());
        Assert.Equal("ort-fused", report.Manifest.Layout);
        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
        Assert.Equal(1 + 2 + 4 * 3 + 2, verification.Checks.Count);
    }

    /// <summary>Replaces the final SkipLayerNormalization [input, skip, gamma, beta, bias] by Add, Add(bias), LayerNormalization.</summary>
    private static void UnfuseFinalNorm(string modelPath)
    {
        var model = OnnxModelFile.Load(modelPath).Proto;
        var g = model.Graph;
        var final = g.Node.Last(n => n.OpType == "SkipLayerNormalization");
        var at = g.Node.IndexOf(final);
        var sum = new NodeProto { OpType = "Add", Name = "Add_final_residual" };
        sum.Input.AddRange([final.Input[0], final.Input[1]]);
        sum.Output.Add("final_residual_no_bias");
        var bias = new NodeProto { OpType = "Add", Name = "Add_final_bias" };
        bias.Input.AddRange(["final_residual_no_bias", final.Input[4]]);
        bias.Output.Add("final_residual");
        var norm = new NodeProto { OpType = "LayerNormalization", Name = "LayerNorm_final" };
        norm.Input.AddRange(["final_residual", final.Input[2], final.Input[3]]);
        norm.Output.Add(final.Output[0]);
        norm.Attribute.Add(new AttributeProto { Name = "epsilon", Type = AttributeProto.Types.AttributeType.Float, F = 1e-5f });
        norm.Attribute.Add(new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = -1 });
        g.Node.RemoveAt(at);
        g.Node.Insert(at, norm);
        g.Node.Insert(at, bias);
        g.Node.Insert(at, sum);
        OnnxModelFile.SaveAtomic(model, modelPath);
    }
}
