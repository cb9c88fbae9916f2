using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.Onnx;

public class OnnxModelFileTests
{
    [Fact]
    public void LoadsRealGenAiExportWithoutReadingWeights()
    {
        var model = OnnxModelFile.Load(TestPaths.GenAiTinyLlamaFp16);
        Assert.Equal("model.onnx", Path.GetFileName(model.FilePath));
        Assert.Equal(["model.onnx.data"], model.ExternalDataFiles);
        Assert.True(model.Proto.Graph.Node.Count > 10);
    }

    [Fact]
    public void RejectsFileThatIsNotOnnx()
    {
        using var dir = TestPaths.NewTempDir();
        var file = dir.Combine("model.onnx");
        File.WriteAllText(file, "this is not a protobuf at all, just text");
        var e = Assert.Throws<OnnxSteerException>(() => OnnxModelFile.Load(file));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
    }

    [Fact]
    public void RejectsExternalDataThatEscapesTheFolder()
    {
        using var dir = TestPaths.NewTempDir();
        var proto = OnnxModelFile.Parse(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"));
        foreach (var t in GraphWalker.AllInitializers(proto.Graph))
            foreach (var kv in t.ExternalData)
                if (kv.Key == "location") kv.Value = "../../etc/passwd";
        var file = dir.Combine("model.onnx");
        OnnxModelFile.SaveAtomic(proto, file);
        var e = Assert.Throws<OnnxSteerException>(() => OnnxModelFile.Load(file));
        Assert.Equal(ErrorKind.UnsafePath, e.Kind);
    }
}
