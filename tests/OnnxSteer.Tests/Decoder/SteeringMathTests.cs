using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using Layout = OnnxSteer.Decoder.DecoderLayout;

namespace OnnxSteer.Tests.Decoder;

/// <summary>The steering subgraph on its own: with nothing fed it must return x bit for bit, for every finite x
/// including -0.0, subnormals and the largest values; with inputs fed it must compute the contract's formula.</summary>
public class SteeringMathTests
{
    private const int Hidden = 4;

    /// <summary>x -> Identity -> r (the "residual") -> Identity -> y, patched at r.</summary>
    private static string BuildPatched(TempDir dir, int elemType)
    {
        var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "g" } };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        model.Graph.Input.Add(new ValueInfoProto { Name = "x", Type = GraphView.TensorType(elemType, ["batch", "seq", Hidden]) });
        model.Graph.Node.Add(new NodeProto { OpType = "Identity", Name = "n0", Input = { "x" }, Output = { "r" } });
        model.Graph.Node.Add(new NodeProto { OpType = "Identity", Name = "n1", Input = { "r" }, Output = { "y" } });
        model.Graph.Output.Add(new ValueInfoProto { Name = "y", Type = GraphView.TensorType(elemType, ["batch", "seq", Hidden]) });
        var view = GraphView.Create(model.Graph);
        var layout = new Layout("test", 1, Hidden, elemType, [new ValueResidualPoint(0, view, view.FindValue("r")!)]);
        var context = new PatchContext(model, view, layout, new PatchOptions(), [0], [0]);
        foreach (IPatchPass pass in new IPatchPass[] { new AddSteeringInputsPass(), new InsertSteeringPass(), new ExposeHiddenStatesPass(), new CleanupPass() })
            pass.Run(context);
        model.Graph = view.ToProto();
        var path = dir.Combine($"m{elemType}.onnx");
        OnnxModelFile.SaveAtomic(model, path);
        return path;
    }

    public static TheoryData<int, bool> Cases => new() { { 1, false }, { 1, true }, { 10, false }, { 10, true } };

    [Theory]
    [MemberData(nameof(Cases))]
    public void NothingFedGivesXBitForBit(int elemType, bool optimize)
    {
        using var dir = TestPaths.NewTempDir();
        using var session = VerificationSession.Open(BuildPatched(dir, elemType), optimize);
        var t = elemType == 1 ? TensorElementType.Float : TensorElementType.Float16;
        double[] special = elemType == 1
            ? [-0.0, 0.0, 1e-45, -1e-45, 1.17e-38, 3.0e38, -3.0e38, 123.456, -7.25, 1e-7, 65504, -1]
            : [-0.0, 0.0, 6e-8, -6e-8, 6.1e-5, 65504, -65504, 123.5, -7.25, 1e-3, 300, -1];
        var x = HostTensor.FromDoubles(t, [1, 3, Hidden], special);
        var result = session.Run(new Dictionary<string, HostTensor> { ["x"] = x }, ["y", "hidden_states.0"]);
        Assert.Equal(x.Data, result["y"].Data);
        Assert.Equal(x.Data, result["hidden_states.0"].Data);
    }

    /// <summary>a, b -> SkipSimplifiedLayerNormalization (outputs 0 and 3) as source, and the same patched at the norm
    /// (steering through its skip operand b). Returns (source, patched) paths.</summary>
    private static (string Source, string Patched) BuildFusedPair(TempDir dir, int elemType)
    {
        ModelProto Build()
        {
            var model = new ModelProto { IrVersion = 8, Graph = new GraphProto { Name = "g" } };
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
            model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
            foreach (var name in new[] { "a", "b" })
                model.Graph.Input.Add(new ValueInfoProto { Name = name, Type = GraphView.TensorType(elemType, ["batch", "seq", Hidden]) });
            var gamma = new TensorProto { Name = "gamma", DataType = elemType, Dims = { Hidden } };
            gamma.RawData = Google.Protobuf.ByteString.CopyFrom(HostTensor.FromDoubles(elemType == 1 ? TensorElementType.Float : TensorElementType.Float16,
                [Hidden], Enumerable.Repeat(1.0, Hidden).ToList()).Data);
            model.Graph.Initializer.Add(gamma);
            model.Graph.Node.Add(new NodeProto { OpType = "SkipSimplifiedLayerNormalization", Domain = "com.microsoft", Name = "norm",
                Input = { "a", "b", "gamma" }, Output = { "y", "", "", "sum" } });
            foreach (var name in new[] { "y", "sum" })
                model.Graph.Output.Add(new ValueInfoProto { Name = name, Type = GraphView.TensorType(elemType, ["batch", "seq", Hidden]) });
            return model;
        }
        var source = dir.Combine($"source{elemType}.onnx");
        OnnxModelFile.SaveAtomic(Build(), source);
        var model = Build();
        var view = GraphView.Create(model.Graph);
        var layout = new Layout("test", 1, Hidden, elemType, [new FusedNormResidualPoint(0, view, view.Nodes.Single(n => n.Name == "norm"), null)]);
        var context = new PatchContext(model, view, layout, new PatchOptions(), [0], [0]);
        foreach (IPatchPass pass in new IPatchPass[] { new AddSteeringInputsPass(), new InsertSteeringPass(), new ExposeHiddenStatesPass(), new CleanupPass() })
            pass.Run(context);
        model.Graph = view.ToProto();
        var patched = dir.Combine($"patched{elemType}.onnx");
        OnnxModelFile.SaveAtomic(model, patched);
        return (source, patched);
    }

    /// <summary>The fused-norm form (read through Casts to float32, cast back once) feeds the norm the skip operand bit for
    /// bit: the norm's outputs equal the unpatched norm's for signed zeros, subnormals and the largest finite values.</summary>
    [Theory]
    [MemberData(nameof(Cases))]
    public void FusedNormNothingFedGivesTheSourceBitForBit(int elemType, bool optimize)
    {
        using var dir = TestPaths.NewTempDir();
        var (sourcePath, patchedPath) = BuildFusedPair(dir, elemType);
        using var source = VerificationSession.Open(sourcePath, optimize);
        using var patched = VerificationSession.Open(patchedPath, optimize);
        var t = elemType == 1 ? TensorElementType.Float : TensorElementType.Float16;
        double[] special = elemType == 1
            ? [-0.0, 0.0, 1e-45, -1e-45, 1.17e-38, 3.0e38, -3.0e38, 123.456, -7.25, 1e-7, 65504, -1]
            : [-0.0, 0.0, 6e-8, -6e-8, 6.1e-5, 65504, -65504, 123.5, -7.25, 1e-3, 300, -1];
        var feed = new Dictionary<string, HostTensor>
        {
            // a = -b/4 (finite sums; -0.0 + -0.0 keeps the sign, so a lost sign would show).
            ["a"] = HostTensor.FromDoubles(t, [1, 3, Hidden], special.Select(v => v == 0 ? -0.0 : -v / 4).ToList()),
            ["b"] = HostTensor.FromDoubles(t, [1, 3, Hidden], special),
        };
        var expected = source.Run(feed, ["y", "sum"]);
        var actual = patched.Run(feed, ["y", "sum", "hidden_states.0"]);
        Assert.Equal(expected["y"].Data, actual["y"].Data);
        Assert.Equal(expected["sum"].Data, actual["sum"].Data);
        Assert.Equal(expected["sum"].Data, actual["hidden_states.0"].Data);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(10)]
    public void FedInputsFollowTheFormula(int elemType)
    {
        using var dir = TestPaths.NewTempDir();
        using var session = VerificationSession.Open(BuildPatched(dir, elemType), optimize: false);
        var t = elemType == 1 ? TensorElementType.Float : TensorElementType.Float16;
        double[] xs = [1, 2, 3, 4, -1, 0.5, 0, 2];
        double[] add = [0.25, 0, -0.5, 1];
        double[] u = [0.5, 0.5, 0.5, 0.5];
        const double target = 1.5;
        var result = session.Run(new Dictionary<string, HostTensor>
        {
            ["x"] = HostTensor.FromDoubles(t, [1, 2, Hidden], xs),
            ["steering.0.add"] = HostTensor.FromDoubles(t, [1, 1, Hidden], add),
            ["steering.0.direction"] = HostTensor.FromDoubles(t, [1, 1, Hidden], u),
            ["steering.0.target"] = HostTensor.FromDoubles(t, [1, 1, 1], [target]),
        }, ["y"])["y"].ToDoubles();
        for (var pos = 0; pos < 2; pos++)
        {
            var dot = Enumerable.Range(0, Hidden).Sum(i => xs[pos * Hidden + i] * u[i]);
            for (var i = 0; i < Hidden; i++)
                Assert.Equal(xs[pos * Hidden + i] + add[i] + (target - dot) * u[i], result[pos * Hidden + i], 3);
        }
    }
}
