using Google.Protobuf;
using OnnxSteer.Contract;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Tests.Vectors;

/// <summary>A tiny causal "decoder" that already follows the patched-model contract (hidden_states.{L} outputs and a
/// steering.json), for testing extraction without the patch code: x = (E[ids] + P[pos]) · mask,
/// h0 = cumsum_t(x), h1 = cumsum_t(tanh(h0)) + h0, logits = h1 · W. Causal like a real decoder, and sensitive to
/// position ids and to the mask, so wrong padding or a wrong "last token" changes the numbers.</summary>
internal static class ToyPatchedModel
{
    public const int Vocab = 40, Hidden = 12, MaxPositions = 128;

    public static string Write(string directory)
    {
        var rng = new Random(5);
        TensorProto Tensor(string name, int rows, int cols)
        {
            var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Float };
            t.Dims.Add(rows);
            t.Dims.Add(cols);
            for (var i = 0; i < rows * cols; i++) t.FloatData.Add((float)(rng.NextDouble() * 2 - 1));
            return t;
        }
        ValueInfoProto Info(string name, TensorProto.Types.DataType type, params object[] dims)
        {
            var shape = new TensorShapeProto();
            foreach (var d in dims)
                shape.Dim.Add(d is string s ? new TensorShapeProto.Types.Dimension { DimParam = s } : new TensorShapeProto.Types.Dimension { DimValue = (int)d });
            return new ValueInfoProto { Name = name, Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)type, Shape = shape } } };
        }
        NodeProto Node(string op, string[] inputs, string[] outputs, params AttributeProto[] attributes)
        {
            var n = new NodeProto { OpType = op, Name = outputs[0] + "_node" };
            n.Input.AddRange(inputs);
            n.Output.AddRange(outputs);
            n.Attribute.AddRange(attributes);
            return n;
        }
        var graph = new GraphProto { Name = "toy" };
        graph.Initializer.Add(Tensor("E", Vocab, Hidden));
        graph.Initializer.Add(Tensor("P", MaxPositions, Hidden));
        graph.Initializer.Add(Tensor("W", Hidden, Vocab));
        var axis = new TensorProto { Name = "axis1", DataType = (int)TensorProto.Types.DataType.Int64 };
        axis.Int64Data.Add(1);
        graph.Initializer.Add(axis);
        var minusOne = new TensorProto { Name = "minus1", DataType = (int)TensorProto.Types.DataType.Int64 };
        minusOne.Dims.Add(1);
        minusOne.Int64Data.Add(-1);
        graph.Initializer.Add(minusOne);
        graph.Input.Add(Info("input_ids", TensorProto.Types.DataType.Int64, "batch", "seq"));
        graph.Input.Add(Info("attention_mask", TensorProto.Types.DataType.Int64, "batch", "total"));
        graph.Input.Add(Info("position_ids", TensorProto.Types.DataType.Int64, "batch", "seq"));
        graph.Node.Add(Node("Gather", ["E", "input_ids"], ["e"]));
        graph.Node.Add(Node("Gather", ["P", "position_ids"], ["p"]));
        graph.Node.Add(Node("Add", ["e", "p"], ["ep"]));
        graph.Node.Add(Node("Unsqueeze", ["attention_mask", "minus1"], ["m3"]));
        graph.Node.Add(Node("Cast", ["m3"], ["mf"], new AttributeProto { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = (int)TensorProto.Types.DataType.Float }));
        graph.Node.Add(Node("Mul", ["ep", "mf"], ["x"]));
        graph.Node.Add(Node("CumSum", ["x", "axis1"], [SteeringContract.HiddenStateOutput(0)]));
        graph.Node.Add(Node("Tanh", [SteeringContract.HiddenStateOutput(0)], ["t"]));
        graph.Node.Add(Node("CumSum", ["t", "axis1"], ["c"]));
        graph.Node.Add(Node("Add", ["c", SteeringContract.HiddenStateOutput(0)], [SteeringContract.HiddenStateOutput(1)]));
        graph.Node.Add(Node("MatMul", [SteeringContract.HiddenStateOutput(1), "W"], ["logits"]));
        graph.Output.Add(Info("logits", TensorProto.Types.DataType.Float, "batch", "seq", Vocab));
        graph.Output.Add(Info(SteeringContract.HiddenStateOutput(0), TensorProto.Types.DataType.Float, "batch", "seq", Hidden));
        graph.Output.Add(Info(SteeringContract.HiddenStateOutput(1), TensorProto.Types.DataType.Float, "batch", "seq", Hidden));
        var model = new ModelProto { IrVersion = 8, Graph = graph, ProducerName = "onnxsteer-tests" };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 17 });
        Directory.CreateDirectory(directory);
        var path = Path.Combine(directory, "model.onnx");
        File.WriteAllBytes(path, model.ToByteArray());
        var manifest = new SteeringManifest
        {
            ModelFile = "model.onnx",
            Source = new ManifestSource { Path = directory, ModelFile = "model.onnx", GraphSha256 = new string('0', 64) },
            Layout = "toy",
            ModelType = "toy",
            NumLayers = 2,
            HiddenSize = Hidden,
            ResidualDtype = "float32",
            SteeredLayers = [],
            ExposedLayers = [0, 1],
            Inputs = new Dictionary<string, LayerSteeringInputs>(),
            Outputs = new Dictionary<string, string> { ["0"] = "hidden_states.0", ["1"] = "hidden_states.1" },
        };
        File.WriteAllText(Path.Combine(directory, SteeringContract.ManifestFileName), manifest.ToJson());
        return path;
    }
}
