using OnnxSteer.Cli;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Tests.Decoder;

/// <summary>Bad inputs: each gives the right error kind, one line on stderr, and leaves no output folder.</summary>
public class PatchRefusalTests
{
    private static string CopyFixture(TempDir dir, string name = "source")
    {
        var target = dir.Combine(name);
        Directory.CreateDirectory(target);
        foreach (var file in Directory.GetFiles(TestPaths.GenAiTinyLlamaFp16))
            File.Copy(file, Path.Combine(target, Path.GetFileName(file)));
        return target;
    }

    private static void AssertRefused(TempDir dir, string source, ErrorKind kind, string? messagePart = null, params string[] extra)
    {
        var output = dir.Combine("out");
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(["patch", source, "-o", output, .. extra], stdout, stderr);
        Assert.Equal((int)kind, code);
        var lines = stderr.ToString().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("onnxsteer: error: ", lines[0]);
        if (messagePart is not null) Assert.Contains(messagePart, lines[0]);
        Assert.False(Directory.Exists(output), "no output folder may be left behind");
        Assert.DoesNotContain(Directory.GetDirectories(dir.Path), d => Path.GetFileName(d).Contains(".partial"));
    }

    [Fact]
    public void NotAnOnnxFile()
    {
        using var dir = TestPaths.NewTempDir();
        var source = dir.Combine("source");
        Directory.CreateDirectory(source);
        File.WriteAllText(Path.Combine(source, "model.onnx"), "not a model");
        AssertRefused(dir, source, ErrorKind.InvalidModel);
    }

    [Fact]
    public void TruncatedProtobuf()
    {
        using var dir = TestPaths.NewTempDir();
        var source = CopyFixture(dir);
        var file = Path.Combine(source, "model.onnx");
        var bytes = File.ReadAllBytes(file);
        File.WriteAllBytes(file, bytes[..(bytes.Length / 2)]);
        AssertRefused(dir, source, ErrorKind.InvalidModel, "truncated or corrupt");
    }

    [Fact]
    public void NotADecoderNamesTheClosestLayout()
    {
        using var dir = TestPaths.NewTempDir();
        var source = CopyFixture(dir);
        var file = Path.Combine(source, "model.onnx");
        var proto = OnnxModelFile.Parse(file);
        // Turn every skip norm into a plain Add-free graph: drop the attention so no layout can match.
        foreach (var node in proto.Graph.Node.Where(n => n.OpType == "MultiHeadAttention")) node.OpType = "GroupNorm";
        OnnxModelFile.SaveAtomic(proto, file);
        AssertRefused(dir, source, ErrorKind.UnsupportedModel, "closest layout is 'genai'");
    }

    [Fact]
    public void AlreadyPatched()
    {
        using var dir = TestPaths.NewTempDir();
        var first = dir.Combine("first");
        Assert.Equal(0, CliApp.Run(["patch", TestPaths.GenAiTinyLlamaFp16, "-o", first], new StringWriter(), new StringWriter()));
        AssertRefused(dir, first, ErrorKind.UnsupportedModel, "already patched");
    }

    [Fact]
    public void AbsoluteExternalDataLocation()
    {
        using var dir = TestPaths.NewTempDir();
        var source = CopyFixture(dir);
        var file = Path.Combine(source, "model.onnx");
        var proto = OnnxModelFile.Parse(file);
        GraphWalker.AllInitializers(proto.Graph).First(t => t.ExternalData.Count > 0).ExternalData.First(e => e.Key == "location").Value = "/etc/passwd";
        OnnxModelFile.SaveAtomic(proto, file);
        AssertRefused(dir, source, ErrorKind.UnsafePath, "absolute");
    }

    [Fact]
    public void MissingAndShortDataFile()
    {
        using var dir = TestPaths.NewTempDir();
        var source = CopyFixture(dir);
        var data = Path.Combine(source, "model.onnx.data");
        var bytes = File.ReadAllBytes(data);
        File.WriteAllBytes(data, bytes[..100]);
        AssertRefused(dir, source, ErrorKind.InvalidModel, "too short");
        File.Delete(data);
        AssertRefused(dir, source, ErrorKind.NotFound, "missing");
    }

    [Fact]
    public void LayerOutsideTheModel()
    {
        using var dir = TestPaths.NewTempDir();
        AssertRefused(dir, TestPaths.GenAiTinyLlamaFp16, ErrorKind.UnsupportedModel, "layer 40 requested; the model has 2 layers (0-1)", "--layers", "1,40");
        AssertRefused(dir, TestPaths.GenAiTinyLlamaFp16, ErrorKind.UnsupportedModel, "layer 2 requested", "--expose", "0-2");
        AssertRefused(dir, TestPaths.GenAiTinyLlamaFp16, ErrorKind.Usage, "--layers: 'x'", "--layers", "x");
        AssertRefused(dir, TestPaths.GenAiTinyLlamaFp16, ErrorKind.Usage, null, "--steer-input", "sometimes");
    }

    [Fact]
    public void ExistingOutputNeedsOverwrite()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("out");
        Directory.CreateDirectory(output);
        File.WriteAllText(Path.Combine(output, "keep.txt"), "mine");
        var stderr = new StringWriter();
        Assert.Equal((int)ErrorKind.Output, CliApp.Run(["patch", TestPaths.GenAiTinyLlamaFp16, "-o", output], new StringWriter(), stderr));
        Assert.Contains("--overwrite", stderr.ToString());
        Assert.Equal("mine", File.ReadAllText(Path.Combine(output, "keep.txt")));
        Assert.Equal(0, CliApp.Run(["patch", TestPaths.GenAiTinyLlamaFp16, "-o", output, "--overwrite"], new StringWriter(), new StringWriter()));
        Assert.False(File.Exists(Path.Combine(output, "keep.txt")));
        Assert.True(File.Exists(Path.Combine(output, "steering.json")));
    }

    [Fact]
    public void SourceFolderIsNeverModified()
    {
        using var dir = TestPaths.NewTempDir();
        var source = CopyFixture(dir);
        var before = Directory.GetFiles(source).ToDictionary(f => f, ModelPatcher.Sha256Hex);
        Assert.Equal(0, CliApp.Run(["patch", source, "-o", dir.Combine("patched")], new StringWriter(), new StringWriter()));
        Assert.Equal(before, Directory.GetFiles(source).ToDictionary(f => f, ModelPatcher.Sha256Hex));
        // Same file system: the weights are hard-linked, not copied.
        var report = ModelPatcher.Patch(source, dir.Combine("patched2"), new PatchOptions());
        Assert.Equal(["model.onnx.data"], report.LinkedFiles);
    }
}
