using OnnxSteer.Cli;

namespace OnnxSteer.Tests.Reliability;

/// <summary>External data reached through a symlink that leaves the model folder is refused (exit 6) before
/// anything is read; a symlink that stays inside is followed. (Absolute and '..' locations: PatchRefusalTests.)</summary>
public sealed class ExternalDataPathTests
{
    private static int Patch(string model, string output, out string stderr)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(["patch", model, "-o", output], o, e);
        stderr = e.ToString();
        return code;
    }

    [Fact]
    public void SymlinksOutOfTheModelFolderAreRefused()
    {
        if (OperatingSystem.IsWindows()) return; // symlinks need privileges there
        using var dir = TestPaths.NewTempDir();
        var outside = dir.Combine("outside");
        Directory.CreateDirectory(outside);
        File.Copy(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx.data"), Path.Combine(outside, "model.onnx.data"));

        // 1. the data file itself is a symlink to a file outside
        var m1 = dir.Combine("m1");
        Directory.CreateDirectory(m1);
        File.Copy(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"), Path.Combine(m1, "model.onnx"));
        File.CreateSymbolicLink(Path.Combine(m1, "model.onnx.data"), Path.Combine(outside, "model.onnx.data"));
        Assert.Equal((int)ErrorKind.UnsafePath, Patch(m1, dir.Combine("p1"), out var err));
        Assert.Contains("symlink", err);
        Assert.False(Directory.Exists(dir.Combine("p1")));

        // 2. a relative symlink that climbs out
        File.Delete(Path.Combine(m1, "model.onnx.data"));
        File.CreateSymbolicLink(Path.Combine(m1, "model.onnx.data"), "../outside/model.onnx.data");
        Assert.Equal((int)ErrorKind.UnsafePath, Patch(m1, dir.Combine("p2"), out _));

        // 3. a symlink loop ends in an error, not a stack overflow
        File.Delete(Path.Combine(m1, "model.onnx.data"));
        File.CreateSymbolicLink(Path.Combine(m1, "model.onnx.data"), Path.Combine(m1, "loop"));
        File.CreateSymbolicLink(Path.Combine(m1, "loop"), Path.Combine(m1, "model.onnx.data"));
        var code = Patch(m1, dir.Combine("p3"), out err);
        Assert.True(code is (int)ErrorKind.UnsafePath or (int)ErrorKind.NotFound, err);

        // 4. a symlink that stays inside the folder is fine
        File.Delete(Path.Combine(m1, "model.onnx.data"));
        File.Delete(Path.Combine(m1, "loop"));
        File.Copy(Path.Combine(outside, "model.onnx.data"), Path.Combine(m1, "real.data"));
        File.CreateSymbolicLink(Path.Combine(m1, "model.onnx.data"), "real.data");
        Assert.True(Patch(m1, dir.Combine("p4"), out err) == 0, err);
        // The output holds the data itself, not a link that would dangle there.
        var data = new FileInfo(dir.Combine("p4", "model.onnx.data"));
        Assert.Null(data.LinkTarget);
        Assert.Equal(new FileInfo(Path.Combine(outside, "model.onnx.data")).Length, data.Length);
        OnnxSteer.Onnx.OnnxModelFile.Load(dir.Combine("p4"));
    }
}
