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
