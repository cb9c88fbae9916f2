using OnnxSteer.Cli;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.Reliability;

/// <summary>One test per bug the fuzzer and the fault tests found (docs/reliability.md, "Bugs found").</summary>
public sealed class RegressionTests
{
    [Fact]
    public void ModelListingAnOutputTwiceIsAnInvalidModelNotACrash()
    {
        using var dir = TestPaths.NewTempDir();
        var built = DecoderFixtures.Write(DecoderSpec.Tiny(DecoderLayout.Optimum) with { Hidden = 16, HeadDim = 8, Intermediate = 32, Vocab = 64 }, dir.Combine("m"));
        var proto = OnnxModelFile.ParseBytes(File.ReadAllBytes(built.ModelPath), "m");
        proto.Graph.Output[1].Name = proto.Graph.Output[0].Name;
        File.WriteAllBytes(built.ModelPath, Google.Protobuf.MessageExtensions.ToByteArray(proto));
        var (o, e) = (new StringWriter(), new StringWriter());
        Assert.Equal((int)ErrorKind.InvalidModel, CliApp.Run(["patch", built.Directory, "-o", dir.Combine("p")], o, e));
        Assert.Contains($"lists output '{proto.Graph.Output[0].Name}' twice", e.ToString());
        Assert.False(Directory.Exists(dir.Combine("p")));
    }

    [Theory]
    [InlineData(long.MaxValue)]
    [InlineData(int.MaxValue + 7L)]
    [InlineData(-3L)]
    public void HugeOrNegativeInitializerDimsAreAnInvalidModelNotAnOverflow(long dim)
    {
        using var dir = TestPaths.NewTempDir();
        var built = DecoderFixtures.Write(DecoderSpec.Tiny(DecoderLayout.OrtFused) with { Hidden = 16, HeadDim = 8, Intermediate = 32, Vocab = 64 }, dir.Combine("m"));
        var proto = OnnxModelFile.ParseBytes(File.ReadAllBytes(built.ModelPath), "m");
        foreach (var t in proto.Graph.Initializer.Where(t => t.Dims.Count > 0)) t.Dims[^1] = dim;
        File.WriteAllBytes(built.ModelPath, Google.Protobuf.MessageExtensions.ToByteArray(proto));
        foreach (var verb in new[] { "inspect", "patch" })
        {
            var (o, e) = (new StringWriter(), new StringWriter());
            var code = CliApp.Run(verb == "inspect" ? [verb, built.Directory, "--explain"] : [verb, built.Directory, "-o", dir.Combine("p")], o, e);
            Assert.True(code is (int)ErrorKind.InvalidModel or (int)ErrorKind.UnsupportedModel, $"{verb}: {code} {e}");
        }
    }

    [Fact]
    public void TemporarySiblingsOfAKilledWriterAreRemovedByTheNextWrite()
    {
        using var dir = TestPaths.NewTempDir();
        // No process has this id (Linux pids stay below 2^22), so these are what a killed run leaves behind.
        var deadPartial = dir.Combine($".out.2000000000.{Guid.NewGuid():N}.partial");
        var deadTmp = dir.Combine($".v.bin.2000000000.{Guid.NewGuid():N}.tmp");
        var live = dir.Combine($".out.{Environment.ProcessId}.{Guid.NewGuid():N}.partial");
        var unrelated = dir.Combine(".out.notes");
        foreach (var d in new[] { deadPartial, live }) Directory.CreateDirectory(d);
        File.WriteAllText(deadTmp, "half");
        File.WriteAllText(unrelated, "keep");

        AtomicFile.WriteDirectory(dir.Combine("out"), false, tmp => File.WriteAllText(Path.Combine(tmp, "a"), "x"));
        AtomicFile.Write(dir.Combine("v.bin"), s => s.WriteByte(1));

        Assert.False(Directory.Exists(deadPartial));
        Assert.False(File.Exists(deadTmp));
        Assert.True(Directory.Exists(live));
        Assert.True(File.Exists(unrelated));
    }
}
