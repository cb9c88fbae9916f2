using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.ModelBuilder;

public sealed class OptimumLayoutTests
{
    public static TheoryData<DecoderLayout, DecoderDType, bool, int> Variants => new()
    {
        { DecoderLayout.Optimum, DecoderDType.Float32, true, 2 },
        { DecoderLayout.Optimum, DecoderDType.Float16, true, 2 },
        { DecoderLayout.Optimum, DecoderDType.Float32, false, 1 },
        { DecoderLayout.OptimumMerged, DecoderDType.Float32, true, 2 },
        { DecoderLayout.OptimumMerged, DecoderDType.Float16, false, 1 },
    };

    private static DecoderSpec Spec(DecoderLayout layout, DecoderDType dtype, bool positionIds, int kvHeads) =>
        DecoderSpec.Tiny(layout, dtype) with { PositionIds = positionIds, Heads = 2, KvHeads = kvHeads };

    private static double Tol(DecoderDType dtype) => dtype == DecoderDType.Float32 ? 1e-4 : 2e-2;

    [Theory]
    [MemberData(nameof(Variants))]
    public void KvCacheDecodeMatchesFullRun(DecoderLayout layout, DecoderDType dtype, bool positionIds, int kvHeads)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype, positionIds, kvHeads);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.CacheMatchesFullRun(fixture.ModelPath, spec, Tol(dtype));
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void LeftPaddedBatchMatchesSingleRows(DecoderLayout layout, DecoderDType dtype, bool positionIds, int kvHeads)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype, positionIds, kvHeads);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        LayoutChecks.LeftPaddedBatchMatchesRows(fixture.ModelPath, spec, Tol(dtype));
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void MatchesReferenceForward(DecoderLayout layout, DecoderDType dtype, bool positionIds, int kvHeads)
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Spec(layout, dtype, positionIds, kvHeads);
        var weights = new RandomWeights(7);
        var fixture = DecoderFixtures.Write(spec, dir.Path, weights);
        LayoutChecks.MatchesReference(fixture.ModelPath, spec, weights, dtype == DecoderDType.Float32 ? 1e-4 : 5e-2);
    }

    [Fact]
    public void GraphHasTorchScriptStructure()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.Optimum) with { Layers = 3 };
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        var model = OnnxModelFile.Load(fixture.ModelPath);
        Assert.Empty(model.ExternalDataFiles);
        Assert.True(File.Exists(Path.Combine(dir.Path, "config.json")));
        var nodes = model.Proto.Graph.Node;
        Assert.All(nodes, n => Assert.Equal("", n.Domain));
        for (var i = 0; i < spec.Layers; i++)
        {
            Assert.Equal("Add", nodes.Single(n => n.Name == $"/model/layers.{i}/Add").OpType);
            Assert.Equal("Add", nodes.Single(n => n.Name == $"/model/layers.{i}/Add_1").OpType);
            Assert.Equal("ReduceMean", nodes.Single(n => n.Name == $"/model/layers.{i}/input_layernorm/ReduceMean").OpType);
        }
        var lm = nodes.Single(n => n.Name == "/lm_head/MatMul");
        Assert.Equal(["logits"], lm.Output);
        Assert.Equal("/model/norm/Mul_1", nodes.Single(n => n.Output.Contains(lm.Input[0])).Name);
        Assert.Equal(2 * spec.Layers + 1, nodes.Count(n => n.OpType == "Pow"));
        Assert.Equal(spec.Layers, nodes.Count(n => n.OpType == "Softmax"));
    }

    [Fact]
    public void MergedGraphIsOneIfWithTwoFullDecoders()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = DecoderSpec.Tiny(DecoderLayout.OptimumMerged);
        var fixture = DecoderFixtures.Write(spec, dir.Path);
        Assert.EndsWith("decoder_model_merged.onnx", fixture.ModelPath);
        var graph = OnnxModelFile.Load(fixture.ModelPath).Proto.Graph;
        var ifNode = Assert.Single(graph.Node);
        Assert.Equal("If", ifNode.OpType);
        Assert.Equal(["use_cache_branch"], ifNode.Input);
        Assert.Equal(graph.Output.Select(o => o.Name), ifNode.Output);
        Assert.Contains(graph.Input, i => i.Name == "use_cache_branch");
        foreach (var branch in ifNode.Attribute.Select(a => a.G))
        {
            Assert.Equal(graph.Output.Select(o => o.Name), branch.Output.Select(o => o.Name));
            Assert.Equal(2 * spec.Layers, branch.Node.Count(n => System.Text.RegularExpressions.Regex.IsMatch(n.Name, @"^/model/layers\.\d+/Add(_1)?$")));
            Assert.Single(branch.Node, n => n.Name == "/lm_head/MatMul");
        }
    }
}
