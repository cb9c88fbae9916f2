using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Tests.Onnx;

public class GraphViewTests
{
    private static ModelProto Fixture() => OnnxModelFile.Parse(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"));

    [Fact]
    public void UnchangedViewRoundTripsTheGraph()
    {
        var graph = Fixture().Graph;
        var back = GraphView.Create(graph).ToProto();
        Assert.Equal(graph, back);
    }

    [Fact]
    public void KnowsProducersUsesAndTypes()
    {
        var view = GraphView.Create(Fixture().Graph);
        var embedding = view.FindValue("/model/embed_tokens/Gather/output_0")!;
        Assert.Equal("Gather", embedding.Producer!.OpType);
        Assert.Equal(0, embedding.ProducerOutputIndex);
        Assert.Equal(["SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"], embedding.Uses.Select(u => u.Node.OpType).Order());
        var ids = view.FindValue("input_ids")!;
        Assert.True(ids.IsGraphInput);
        Assert.Equal((int)TensorProto.Types.DataType.Int64, ids.ElemType);
        var table = view.FindValue("model.embed_tokens.weight")!;
        Assert.NotNull(table.Initializer);
        Assert.Equal([32000L, 16L], table.Dims!.Select(d => d!.Value));
        Assert.True(view.FindValue("logits")!.IsGraphOutput);
    }

    [Fact]
    public void EditsKeepUseListsInStepAndRefuseToRewireOutputs()
    {
        var view = GraphView.Create(Fixture().Graph);
        var embedding = view.FindValue("/model/embed_tokens/Gather/output_0")!;
        var id = view.AddNode("Identity", [embedding], ["copy"]);
        Assert.Equal(3, embedding.Uses.Count);
        var copy = id.Output(0)!;
        var rewired = view.ReplaceAllUses(embedding, copy, use => use.Node == id);
        Assert.Equal(2, rewired);
        Assert.Single(embedding.Uses);
        Assert.Equal(2, copy.Uses.Count);
        Assert.Empty(view.CheckInvariants(requireTopologicalOrder: false));
        var logits = view.FindValue("logits")!;
        var e = Assert.Throws<OnnxSteerException>(() => view.ReplaceAllUses(logits, copy));
        Assert.Contains("graph output", e.Message);
        // The appended node reads a value computed later in node order until sorted.
        Assert.NotEmpty(view.CheckInvariants());
        view.TopologicalSort();
        Assert.Empty(view.CheckInvariants());
        Assert.Equal("copy_1", view.UniqueName("copy"));
    }

    [Fact]
    public void RejectsUndefinedAndDuplicateValues()
    {
        var graph = Fixture().Graph;
        graph.Node[5].Input[0] = "nowhere";
        Assert.Equal(ErrorKind.InvalidModel, Assert.Throws<OnnxSteerException>(() => GraphView.Create(graph)).Kind);
        graph = Fixture().Graph;
        graph.Node[5].Output[0] = graph.Node[6].Output[0];
        Assert.Contains("defined twice", Assert.Throws<OnnxSteerException>(() => GraphView.Create(graph)).Message);
    }

    [Fact]
    public void SubgraphsCaptureOuterValues()
    {
        var branch = new GraphProto { Name = "then" };
        branch.Node.Add(new NodeProto { OpType = "Identity", Name = "inner", Input = { "a" }, Output = { "b" } });
        branch.Output.Add(new ValueInfoProto { Name = "b" });
        var main = new GraphProto { Name = "main" };
        main.Input.Add(new ValueInfoProto { Name = "cond" });
        main.Node.Add(new NodeProto
        {
            OpType = "If", Name = "if", Input = { "cond" }, Output = { "out" },
            Attribute = { new AttributeProto { Name = "then_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch },
                          new AttributeProto { Name = "else_branch", Type = AttributeProto.Types.AttributeType.Graph, G = branch.Clone() } },
        });
        main.Node.Add(new NodeProto { OpType = "Identity", Name = "make_a", Input = { "cond" }, Output = { "a" } }); // after its captor: unsorted
        main.Output.Add(new ValueInfoProto { Name = "out" });
        var view = GraphView.Create(main);
        var a = view.FindValue("a")!;
        Assert.Single(a.CapturedBy);
        var then = view.Nodes[0].Subgraphs["then_branch"][0];
        Assert.True(then.FindValue("b")!.Producer!.Inputs[0]!.IsOuterScope);
        Assert.Throws<OnnxSteerException>(() => view.ReplaceAllUses(a, view.FindValue("cond")!));
        view.TopologicalSort();
        Assert.Equal(["make_a", "if"], view.Nodes.Select(n => n.Name));
        Assert.Equal(main.Node.Count, view.ToProto().Node.Count);
    }
}
