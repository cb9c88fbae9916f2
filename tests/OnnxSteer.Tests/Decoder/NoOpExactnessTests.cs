using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Decoder;

/// <summary>The no-op promise on every layout and dtype the ModelBuilder writes: with nothing fed, every output of the
/// patched model (logits and presents) equals the source's byte for byte, at batch 1 and 2, over a prefill and three
/// decode steps with the KV cache, with ONNX Runtime's graph optimizations off and on, for the default patch (steering
/// and hidden states on every layer), for steering alone (<c>--expose none</c>, where a tap's own nodes are the only
/// new readers of the model's values) and for additive steering alone (<c>--additive-only</c>, no projection subgraph).
/// <para>Combinations that do not exist: int4 in the optimum and optimum-merged layouts (the ModelBuilder writes
/// MatMulNBits only in the genai, gemma2 and ort-fused layouts, where onnxruntime-genai's builder and ONNX Runtime's
/// 4-bit quantizer put them). Gemma 2 float16 keeps its residual in float32.</para>
/// <para>The float16 int4 rows are the regression: ONNX Runtime's CPU provider runs a float16 node whose readers all lack
/// float16 kernels in float32 instead, and the earlier float16 steering Subs made a MatMulNBits such a node, changing
/// the logits by about one float16 ulp.</para></summary>
public sealed class NoOpExactnessTests
{
    public static TheoryData<string, MbLayout, DecoderDType, AttentionKind, WeightQuantization> Matrix => new()
    {
        { "genai fp32", MbLayout.GenAi, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.None },
        { "genai fp16", MbLayout.GenAi, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.None },
        { "genai int4 fp32", MbLayout.GenAi, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.Int4 },
        { "genai int4 fp16", MbLayout.GenAi, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.Int4 },
        { "genai gqa fp32", MbLayout.GenAi, DecoderDType.Float32, AttentionKind.GroupQuery, WeightQuantization.None },
        { "genai gqa fp16", MbLayout.GenAi, DecoderDType.Float16, AttentionKind.GroupQuery, WeightQuantization.None },
        { "genai gqa int4 fp16", MbLayout.GenAi, DecoderDType.Float16, AttentionKind.GroupQuery, WeightQuantization.Int4 },
        { "optimum fp32", MbLayout.Optimum, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.None },
        { "optimum fp16", MbLayout.Optimum, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.None },
        { "optimum-merged fp32", MbLayout.OptimumMerged, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.None },
        { "optimum-merged fp16", MbLayout.OptimumMerged, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.None },
        { "ort-fused fp32", MbLayout.OrtFused, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.None },
        { "ort-fused fp16", MbLayout.OrtFused, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.None },
        { "ort-fused int4 fp32", MbLayout.OrtFused, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.Int4 },
        { "ort-fused int4 fp16", MbLayout.OrtFused, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.Int4 },
        { "gemma2 fp32", MbLayout.Gemma2, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.None },
        { "gemma2 fp16", MbLayout.Gemma2, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.None },
        { "gemma2 gqa fp16", MbLayout.Gemma2, DecoderDType.Float16, AttentionKind.GroupQuery, WeightQuantization.None },
        { "gemma2 int4 fp32", MbLayout.Gemma2, DecoderDType.Float32, AttentionKind.MultiHead, WeightQuantization.Int4 },
        { "gemma2 int4 fp16", MbLayout.Gemma2, DecoderDType.Float16, AttentionKind.MultiHead, WeightQuantization.Int4 },
    };

    [Theory]
    [MemberData(nameof(Matrix))]
    public void NothingFedIsBitIdentical(string name, MbLayout layout, DecoderDType dtype, AttentionKind attention, WeightQuantization quant)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(layout, dtype, attention) with { Layers = 3, Quantization = quant };
        var fixture = DecoderFixtures.Write(spec, dir.Combine("source"));
        var full = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());
        var steerOnly = ModelPatcher.Patch(fixture.Directory, dir.Combine("steer-only"), new PatchOptions { Expose = LayerSelection.None });
        var additive = ModelPatcher.Patch(fixture.Directory, dir.Combine("additive-only"), new PatchOptions { Expose = LayerSelection.None, AdditiveOnly = true });
        foreach (var (patched, kind) in new[] { (full, "steer + expose"), (steerOnly, "steer only"), (additive, "additive only") })
            foreach (var optimize in new[] { false, true })
                AssertBitIdentical($"{name}, {kind}, optimizations {(optimize ? "on" : "off")}",
                    fixture.ModelPath, Path.Combine(patched.OutputDirectory, patched.Manifest.ModelFile), optimize);
    }

    /// <summary>The real onnxruntime-genai float16 export, steering only, with optimizations on as well as off
    /// (<see cref="GenAiFixturePatchTests"/> covers the default patch with optimizations off).</summary>
    [Fact]
    public void RealGenAiFp16ExportSteerOnlyIsBitIdentical()
    {
        using var dir = TestPaths.NewTempDir();
        var report = ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, dir.Combine("patched"), new PatchOptions { Expose = LayerSelection.None });
        var additive = ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, dir.Combine("additive-only"), new PatchOptions { Expose = LayerSelection.None, AdditiveOnly = true });
        foreach (var (patched, kind) in new[] { (report, "steer only"), (additive, "additive only") })
            foreach (var optimize in new[] { false, true })
                AssertBitIdentical($"real genai fp16, {kind}, optimizations {(optimize ? "on" : "off")}", Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"),
                    Path.Combine(patched.OutputDirectory, "model.onnx"), optimize);
    }

    /// <summary>Prefill of 5 tokens and 3 decode steps fed from the source's presents, at batch 1 and 2; every source output
    /// compared byte for byte.</summary>
    private static void AssertBitIdentical(string what, string sourceModel, string patchedModel, bool optimize)
    {
        using var source = VerificationSession.Open(sourceModel, optimize);
        using var patched = VerificationSession.Open(patchedModel, optimize);
        var outputs = source.Outputs.Keys.ToList();
        foreach (var batch in new[] { 1, 2 })
        {
            var generator = new InputGenerator(source, 100 + batch);
            Dictionary<string, HostTensor>? previous = null;
            var past = 0;
            for (var step = 0; step < 4; step++)
            {
                var length = step == 0 ? 5 : 1;
                var inputs = generator.Inputs(batch, past, length, previous);
                var expected = source.Run(inputs, outputs);
                var actual = patched.Run(inputs, outputs);
                foreach (var output in outputs)
                {
                    Assert.Equal(expected[output].Shape, actual[output].Shape);
                    Assert.True(expected[output].Data.AsSpan().SequenceEqual(actual[output].Data),
                        $"{what}: '{output}' differs from the source at batch {batch}, step {step}");
                }
                previous = expected;
                past += length;
            }
        }
    }
}
