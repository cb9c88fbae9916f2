using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Decoder;

/// <summary>Every layout the ModelBuilder writes: detection, structure, and the full verify contract in ONNX Runtime.</summary>
public class BuiltLayoutPatchTests
{
    public static TheoryData<MbLayout, DecoderDType, AttentionKind, string> Layouts => new()
    {
        { MbLayout.GenAi, DecoderDType.Float32, AttentionKind.MultiHead, "genai" },
        { MbLayout.GenAi, DecoderDType.Float16, AttentionKind.MultiHead, "genai" },
        { MbLayout.GenAi, DecoderDType.Float32, AttentionKind.GroupQuery, "genai" },
        { MbLayout.GenAi, DecoderDType.Float16, AttentionKind.GroupQuery, "genai" },
        { MbLayout.Optimum, DecoderDType.Float32, AttentionKind.MultiHead, "optimum" },
        { MbLayout.Optimum, DecoderDType.Float16, AttentionKind.MultiHead, "optimum" },
        { MbLayout.OptimumMerged, DecoderDType.Float32, AttentionKind.MultiHead, "optimum-merged" },
        { MbLayout.OptimumMerged, DecoderDType.Float16, AttentionKind.MultiHead, "optimum-merged" },
        { MbLayout.OrtFused, DecoderDType.Float32, AttentionKind.MultiHead, "ort-fused" },
        { MbLayout.OrtFused, DecoderDType.Float16, AttentionKind.MultiHead, "ort-fused" },
        { MbLayout.Gemma2, DecoderDType.Float32, AttentionKind.MultiHead, "gemma2" },
        { MbLayout.Gemma2, DecoderDType.Float16, AttentionKind.MultiHead, "gemma2" },
    };

    [Theory]
    [MemberData(nameof(Layouts))]
    public void PatchesAndVerifies(MbLayout layout, DecoderDType dtype, AttentionKind attention, string expectedLayout)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(layout, dtype, attention) with { Layers = 3 };
        var fixture = DecoderFixtures.Write(spec, dir.Combine("source"));
        var before = ModelPatcher.Sha256Hex(fixture.ModelPath);

        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());

        var m = report.Manifest;
        Assert.Equal(expectedLayout, m.Layout);
        Assert.Equal(3, m.NumLayers);
        Assert.Equal(spec.Hidden, m.HiddenSize);
        // Gemma 2 keeps its residual in float32 inside a float16 model; the steering inputs follow the residual.
        Assert.Equal(dtype == DecoderDType.Float16 && layout != MbLayout.Gemma2 ? "float16" : "float32", m.ResidualDtype);
        Assert.Equal(before, ModelPatcher.Sha256Hex(fixture.ModelPath)); // source untouched

        var patched = OnnxModelFile.Load(report.OutputDirectory);
        var source = OnnxModelFile.Load(fixture.Directory);
        var g = patched.Proto.Graph;
        Assert.Equal(source.Proto.Graph.Input.Count + 9, g.Input.Count);
        Assert.Equal(source.Proto.Graph.Output.Count + 3, g.Output.Count);
        Assert.Equal(source.Proto.IrVersion, patched.Proto.IrVersion);
        Assert.Equal(source.Proto.OpsetImport.Select(o => (o.Domain, o.Version)), patched.Proto.OpsetImport.Select(o => (o.Domain, o.Version)));
        Assert.Equal(source.ExternalDataFiles, patched.ExternalDataFiles);
        var steerNodes = GraphWalker.AllGraphs(g).SelectMany(x => x.Node).Count(n => n.Name.EndsWith("/steer", StringComparison.Ordinal));
        Assert.Equal(layout == MbLayout.OptimumMerged ? 6 : 3, steerNodes); // one tap per layer (per branch)

        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
        Assert.Equal(1 + 2 + 4 * 3 + 2, verification.Checks.Count); // fingerprint, 2 exact, 4 per steered layer, 2 tolerance
        // The tolerance checks (default optimizations) report whether the outputs were bit-identical there too: they are.
        Assert.All(verification.Checks.Where(c => c.Name.Contains("default optimizations", StringComparison.Ordinal)),
            c => Assert.EndsWith("; bit-identical", c.Detail));
    }

    /// <summary>int4 (MatMulNBits) exports in float32 and float16 pass every verify check, the bit-identity ones included.
    /// Float16 used to differ by about one ulp: see <see cref="NoOpExactnessTests"/>.</summary>
    [Theory]
    [InlineData(MbLayout.GenAi, DecoderDType.Float32, "genai")]
    [InlineData(MbLayout.GenAi, DecoderDType.Float16, "genai")]
    [InlineData(MbLayout.OrtFused, DecoderDType.Float32, "ort-fused")]
    [InlineData(MbLayout.OrtFused, DecoderDType.Float16, "ort-fused")]
    public void Int4MatMulNBitsPatchesAndVerifies(MbLayout layout, DecoderDType dtype, string expectedLayout)
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny(layout, dtype) with { Quantization = WeightQuantization.Int4 }, dir.Combine("source"));
        Assert.Contains(OnnxModelFile.Load(fixture.Directory).Proto.Graph.Node, n => n.OpType == "MatMulNBits");
        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions());
        Assert.Equal(expectedLayout, report.Manifest.Layout);
        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
    }

    [Fact]
    public void RequiredSteerInputsHaveNoDefaultsAndStillVerify()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny(MbLayout.Optimum), dir.Combine("source"));
        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions { SteerInput = SteerInputMode.Required, Layers = LayerSelection.Of(1) });
        var g = OnnxModelFile.Load(report.OutputDirectory).Proto.Graph;
        Assert.Equal(3, g.Input.Count(i => i.Name.StartsWith("steering.", StringComparison.Ordinal)));
        Assert.DoesNotContain(g.Initializer, t => t.Name.StartsWith("steering.", StringComparison.Ordinal));
        Assert.Equal(SteerInputMode.Required, report.Manifest.SteerInput);
        Assert.True(PatchVerifier.Verify(report.OutputDirectory).Passed);
    }

    [Fact]
    public void ExposeNoneAndLayerSubset()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny(MbLayout.GenAi) with { Layers = 4 }, dir.Combine("source"));
        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"),
            new PatchOptions { Layers = LayerSelection.Parse("1,3"), Expose = LayerSelection.None });
        var g = OnnxModelFile.Load(report.OutputDirectory).Proto.Graph;
        Assert.Equal(["steering.1.add", "steering.1.direction", "steering.1.target", "steering.3.add", "steering.3.direction", "steering.3.target"],
            g.Input.Select(i => i.Name).Where(n => n.StartsWith("steering.", StringComparison.Ordinal)));
        Assert.DoesNotContain(g.Output, o => o.Name.StartsWith("hidden_states.", StringComparison.Ordinal));
        Assert.Equal([1, 3], report.Manifest.SteeredLayers);
        Assert.Empty(report.Manifest.ExposedLayers);
        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
    }
}
