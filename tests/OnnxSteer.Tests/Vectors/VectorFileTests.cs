using System.Text.Json.Nodes;
using OnnxSteer.Cli;
using OnnxSteer.Vectors;
using static OnnxSteer.Tests.Vectors.VectorTestData;

namespace OnnxSteer.Tests.Vectors;

public sealed class VectorFileTests
{
    private static void AssertSameVector(InstructionVector expected, InstructionVector actual, bool exactMeanDiff = true)
    {
        Assert.Equal(expected.Name, actual.Name);
        Assert.Equal(expected.Method, actual.Method);
        Assert.Equal(expected.PairCount, actual.PairCount);
        Assert.Equal(expected.ChatTemplate, actual.ChatTemplate);
        Assert.Equal(expected.Layers.Keys.Order(), actual.Layers.Keys.Order());
        foreach (var (layer, e) in expected.Layers)
        {
            var a = actual.Layers[layer];
            Assert.Equal(e.Direction, a.Direction);
            if (exactMeanDiff) Assert.Equal(e.MeanDiff, a.MeanDiff);
            else for (var i = 0; i < e.MeanDiff.Length; i++) Assert.Equal(e.MeanDiff[i], a.MeanDiff[i], Math.Abs(e.MeanDiff[i]) * 1e-6 + 1e-7);
            Assert.Equal(e.Norm, a.Norm);
            Assert.Equal(e.ZBar, a.ZBar);
            Assert.Equal(e.MeanProjectionWithout, a.MeanProjectionWithout);
            Assert.Equal(e.Separability, a.Separability);
        }
    }

    [Fact]
    public void SingleVectorFileUsesPlainTensorNamesAndRoundTrips()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        var v = Vector("format.lowercase", 16, 1, 2, 3);
        InstructionVectorFile.Create([v], Model()).Save(path);
        var (tensors, metadata) = Safetensors.Read(path);
        Assert.Equal(["direction.1", "direction.2", "direction.3", "mean_diff.1", "mean_diff.2", "mean_diff.3"], tensors.Select(t => t.Name).Order());
        Assert.Contains("\"format_version\":1", metadata["onnxsteer.vectors"]);
        var loaded = InstructionVectorFile.Load(path);
        AssertSameVector(v, loaded.Get());
        Assert.Equal(Model(), loaded.Model);
        Assert.Empty(loaded.Warnings);
    }

    [Fact]
    public void SeveralVectorsArePrefixedByName()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        var a = Vector("a", 16, 1, 2);
        var b = Vector("b-2", 16, 3);
        InstructionVectorFile.Create([a, b], Model()).Save(path);
        var (tensors, _) = Safetensors.Read(path);
        Assert.Contains(tensors, t => t.Name == "a/direction.1");
        Assert.Contains(tensors, t => t.Name == "b-2/mean_diff.3");
        var loaded = InstructionVectorFile.Load(path);
        AssertSameVector(a, loaded.Get("a"));
        AssertSameVector(b, loaded.Get("b-2"));
        Assert.Contains("name one", Assert.Throws<OnnxSteerException>(() => loaded.Get()).Message);
        Assert.Contains("no vector named", Assert.Throws<OnnxSteerException>(() => loaded.Get("c")).Message);
    }

    [Fact]
    public void CreateRefusesBadVectors()
    {
        Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Create([Vector("a", 16, 1), Vector("a", 16, 2)], null));
        Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Create([Vector("a", 16, 1), Vector("b", 8, 2)], null));
        Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Create([Vector("a", 8, 1)], Model(16)));
        Assert.Throws<OnnxSteerException>(() => Vector("bad/name", 8, 1));
        var zero = Assert.Throws<OnnxSteerException>(() => InstructionVector.FromMeanDiffs("z", "m", new Dictionary<int, float[]> { [1] = new float[4] }));
        Assert.Equal(ErrorKind.InvalidVector, zero.Kind);
        var v = Vector("a", 8, 1);
        var notUnit = v with { Layers = new Dictionary<int, VectorLayer> { [1] = v.Layers[1] with { Direction = v.Layers[1].MeanDiff } } };
        Assert.Contains("unit", Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Create([notUnit], null)).Message);
    }

    [Fact]
    public void TamperedMetadataIsRejected()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("a", 8, 1, 2)], Model(8)).Save(path);
        var (tensors, metadata) = Safetensors.Read(path);
        void Expect(string json, IReadOnlyList<FloatTensor>? ts = null)
        {
            var p = dir.Combine("t.safetensors");
            using (var s = File.Create(p)) Safetensors.Write(s, ts ?? tensors, new Dictionary<string, string> { ["onnxsteer.vectors"] = json });
            Assert.Equal(ErrorKind.InvalidVector, Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load(p)).Kind);
        }
        var json = metadata["onnxsteer.vectors"];
        Expect("{");
        Expect(json.Replace("\"format_version\":1", "\"format_version\":99"));
        Expect(json.Replace("\"hidden_size\":8", "\"hidden_size\":16"));
        Expect(json.Replace("\"2\":{", "\"3\":{"));
        Expect(json, tensors.Where(t => t.Name != "mean_diff.2").ToList());
        Expect(json, [.. tensors, new FloatTensor("extra.1", [8], new float[8])]);
        Expect(json, tensors.Select(t => t.Name == "direction.1" ? t with { Data = t.Data[..4], Shape = [4] } : t).ToList());
    }

    [Fact]
    public void CheckAgainstModel()
    {
        var file = InstructionVectorFile.Create([Vector("a", 16, 1, 3)], Model(16, 4, "llama"));
        Assert.Empty(file.CheckAgainst(Model(16, 4, "llama")));
        var warnings = file.CheckAgainst(Model(16, 4, "mistral"));
        Assert.Contains(warnings, w => w.Contains("'llama'") && w.Contains("'mistral'"));
        var width = Assert.Throws<OnnxSteerException>(() => file.CheckAgainst(Model(32, 4)));
        Assert.Equal(ErrorKind.InvalidVector, width.Kind);
        Assert.Contains("16", width.Message);
        var layers = Assert.Throws<OnnxSteerException>(() => file.CheckAgainst(Model(16, 3)));
        Assert.Equal(ErrorKind.UnsupportedModel, layers.Kind);
        Assert.Contains("layer 3; the model has 3 layers (0-2)", layers.Message);
    }

    [Fact]
    public void SafetensorsToGgufToSafetensorsKeepsDirectionsAndStatistics()
    {
        using var dir = TestPaths.NewTempDir();
        var v = Vector("format.title", 16, 1, 2, 5);
        var file = InstructionVectorFile.Create([v], Model());
        file.SaveGguf(dir.Combine("v.gguf"));
        var back = InstructionVectorFile.Load(dir.Combine("v.gguf"));
        AssertSameVector(v, back.Get(), exactMeanDiff: false);
        Assert.Equal(Model(), back.Model);
        back.Save(dir.Combine("back.safetensors"));
        AssertSameVector(v, InstructionVectorFile.Load(dir.Combine("back.safetensors")).Get(), exactMeanDiff: false);
        // The GGUF holds exactly the unit directions, readable as a plain control vector.
        var g = Gguf.Read(dir.Combine("v.gguf"));
        Assert.Equal("llama", g.ModelHint);
        Assert.Equal(3, g.LayerCount);
        Assert.Equal(v.Layers[5].Direction, g.Directions[5]);
    }

    [Fact]
    public void MeanDiffScaleRoundTripsExactly()
    {
        using var dir = TestPaths.NewTempDir();
        var v = Vector("conciseness", 16, 2, 4);
        InstructionVectorFile.Create([v], Model()).SaveGguf(dir.Combine("v.gguf"), scale: GgufScale.MeanDiff);
        var g = Gguf.Read(dir.Combine("v.gguf"));
        Assert.Equal(v.Layers[2].MeanDiff, g.Directions[2]);
        var back = InstructionVectorFile.Load(dir.Combine("v.gguf")).Get();
        Assert.Equal(v.Layers[4].MeanDiff, back.Layers[4].MeanDiff);
        Assert.Equal(v.Layers[4].ZBar, back.Layers[4].ZBar);
    }

    [Fact]
    public void ForeignGgufToSafetensorsToGgufIsExact()
    {
        using var dir = TestPaths.NewTempDir();
        var raw1 = RandomVector(11, 8, 5);
        var raw3 = RandomVector(13, 8, 5);
        File.WriteAllBytes(dir.Combine("repeng.gguf"), new GgufBuilder().String("general.architecture", "controlvector")
            .String("controlvector.model_hint", "mistral").UInt32("controlvector.layer_count", 2)
            .Tensor("direction.1", raw1).Tensor("direction.3", raw3).Build());
        var file = InstructionVectorFile.Load(dir.Combine("repeng.gguf"));
        file.Save(dir.Combine("r.safetensors"));
        InstructionVectorFile.Load(dir.Combine("r.safetensors")).SaveGguf(dir.Combine("again.gguf"), scale: GgufScale.MeanDiff);
        var g = Gguf.Read(dir.Combine("again.gguf"));
        Assert.Equal(raw1, g.Directions[1]);
        Assert.Equal(raw3, g.Directions[3]);
    }

    [Fact]
    public void GgufExportRefusesLayerZero()
    {
        using var dir = TestPaths.NewTempDir();
        var file = InstructionVectorFile.Create([Vector("a", 8, 0, 1, 2)], Model(8));
        var e = Assert.Throws<OnnxSteerException>(() => file.SaveGguf(dir.Combine("v.gguf")));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("layer 0", e.Message);
        Assert.Contains("1-2", e.Message);
        Assert.False(File.Exists(dir.Combine("v.gguf")));
        file.SaveGguf(dir.Combine("v.gguf"), layers: [1, 2]);
        Assert.Equal([1, 2], Gguf.Read(dir.Combine("v.gguf")).Directions.Keys);
    }

    [Fact]
    public void CombineIsWeightedSumOfMeanDiffsAtSharedLayers()
    {
        using var dir = TestPaths.NewTempDir();
        var a = Vector("a", 8, 1, 2, 3);
        var b = Vector("b", 8, 2, 3, 4);
        InstructionVectorFile.Create([a, b], Model(8)).Save(dir.Combine("ab.safetensors"));
        var combined = VectorTools.Combine(
            [VectorTerm.Parse(dir.Combine("ab.safetensors") + ":a*2"), VectorTerm.Parse(dir.Combine("ab.safetensors") + ":b*-0.5")], "mix").Get();
        Assert.Equal([2, 3], combined.Layers.Keys.Order());
        for (var i = 0; i < 8; i++)
            Assert.Equal((float)(2.0 * a.Layers[3].MeanDiff[i] - 0.5 * b.Layers[3].MeanDiff[i]), combined.Layers[3].MeanDiff[i]);
        Assert.InRange(VectorMath.Norm(combined.Layers[2].Direction), 1 - 1e-6, 1 + 1e-6);
        Assert.Null(combined.Layers[2].ZBar);
        Assert.Equal("combination: 2*a + -0.5*b", combined.Method);
    }

    [Theory]
    [InlineData("a.safetensors", "a.safetensors", null, 1.0)]
    [InlineData("a.safetensors:x", "a.safetensors", "x", 1.0)]
    [InlineData("a.safetensors:word.x*-1", "a.safetensors", "word.x", -1.0)]
    [InlineData("dir/a.gguf*0.25", "dir/a.gguf", null, 0.25)]
    [InlineData(@"C:\v\a.safetensors:x*3", @"C:\v\a.safetensors", "x", 3.0)]
    [InlineData(@"C:\v\a.safetensors", @"C:\v\a.safetensors", null, 1.0)]
    public void ParsesTerms(string text, string path, string? name, double weight)
    {
        Assert.Equal(new VectorTerm(path, name, weight), VectorTerm.Parse(text));
    }

    [Fact]
    public void CliShowConvertCombine()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("x", 8, 1, 2), Vector("y", 8, 2)], Model(8)).Save(path);

        var (code, stdout, stderr) = Run("vectors", "show", path, "--json");
        Assert.Equal(0, code);
        var json = JsonNode.Parse(stdout)!;
        Assert.Equal(8, (int)json["model"]!["hidden_size"]!);
        Assert.Equal("x", (string)json["vectors"]![0]!["name"]!);
        Assert.Equal(2, json["vectors"]![0]!["layers"]!.AsArray().Count);
        Assert.Equal(0.95, (double)json["vectors"]![0]!["layers"]![0]!["separability"]!);

        (code, stdout, _) = Run("vectors", "show", path);
        Assert.Equal(0, code);
        Assert.Contains("vector 'y'", stdout);

        (code, _, stderr) = Run("vectors", "convert", path, dir.Combine("x.gguf"));
        Assert.Equal((int)ErrorKind.InvalidVector, code);
        Assert.StartsWith("onnxsteer: error: ", stderr);

        (code, _, stderr) = Run("vectors", "convert", path + ":x", dir.Combine("x.gguf"));
        Assert.Equal(0, code);
        (code, _, _) = Run("vectors", "convert", path + ":x", dir.Combine("x.gguf"));
        Assert.Equal((int)ErrorKind.Output, code);
        (code, _, _) = Run("vectors", "convert", dir.Combine("x.gguf"), dir.Combine("x2.safetensors"));
        Assert.Equal(0, code);
        Assert.Equal("x", InstructionVectorFile.Load(dir.Combine("x2.safetensors")).Get().Name);

        (code, stdout, _) = Run("vectors", "combine", path + ":x*1", path + ":y*-1", "-o", dir.Combine("c.safetensors"), "--name", "x-minus-y");
        Assert.Equal(0, code);
        Assert.Equal([2], InstructionVectorFile.Load(dir.Combine("c.safetensors")).Get("x-minus-y").Layers.Keys);

        (code, _, stderr) = Run("vectors", "show", dir.Combine("missing.safetensors"));
        Assert.Equal((int)ErrorKind.NotFound, code);
    }

    private static (int Code, string Stdout, string Stderr) Run(params string[] args)
    {
        var stdout = new StringWriter();
        var stderr = new StringWriter();
        var code = CliApp.Run(args, stdout, stderr);
        return (code, stdout.ToString(), stderr.ToString());
    }
}
