using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.Decoder;

public class GenAiFixturePatchTests
{
    [Fact]
    public void DetectsGenAiLayoutOnRealFixture()
    {
        var model = OnnxModelFile.Load(TestPaths.GenAiTinyLlamaFp16);
        var graph = GraphView.Create(model.Proto.Graph);
        var layout = LayoutMatchers.Detect(graph);
        Assert.Equal("genai", layout.Name);
        Assert.Equal(2, layout.NumLayers);
        Assert.Equal(16, layout.HiddenSize);
        Assert.Equal("float16", layout.ResidualDtype);
        Assert.Equal(2, layout.Points.Count);
        var p0 = Assert.IsType<FusedNormResidualPoint>(layout.Points[0]);
        Assert.Equal("/model/layers.1/input_layernorm/output_3", p0.ExistingValue!.Name);
        var p1 = Assert.IsType<FusedNormResidualPoint>(layout.Points[1]);
        Assert.Null(p1.ExistingValue);
    }

    [Fact]
    public void PatchedFixtureVerifies()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("patched");
        var report = ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, output, new PatchOptions());
        var verification = PatchVerifier.Verify(output);
        Assert.True(verification.Passed, verification.ToJson());
    }
}
