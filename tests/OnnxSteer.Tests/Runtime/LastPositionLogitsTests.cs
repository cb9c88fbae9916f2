using OnnxSteer.Decoder;
using OnnxSteer.Modeling;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;

namespace OnnxSteer.Tests.Runtime;

/// <summary><see cref="LastPositionLogits"/>: the LM head sees only the last position at load, and generation is the same
/// as on the model file as it is (token ids and the mean log-probability of greedy runs, unsteered and steered, batch 1
/// and a left-padded batch of 2).</summary>
public sealed class LastPositionLogitsTests
{
    public static TheoryData<string> Folders => ["bundled", "fp16 export", "optimum fp32"];

    private static string Prepare(string name, TempDir dir) => RewriteEquivalence.Folder(name, dir);

    [Theory]
    [MemberData(nameof(Folders))]
    public void Prefill_computes_one_position_and_generation_is_unchanged(string name)
    {
        using var dir = TestPaths.NewTempDir();
        var source = Prepare(name, dir);
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(source, patched, new PatchOptions { Layers = OnnxSteer.Contract.LayerSelection.Of(1), Expose = OnnxSteer.Contract.LayerSelection.None });
        using var sliced = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1 });
        using var full = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1, LastPositionLogits = false });
        Assert.Equal(1, sliced.Session.OutputMetadata["logits"].Dimensions[1]);
        Assert.NotEqual(1, full.Session.OutputMetadata["logits"].Dimensions[1]);

        RewriteEquivalence.AssertSameGeneration(sliced, full, maxNewTokens: 8);
    }

    /// <summary>A 4-bit LM head (MatMulNBits) runs another kernel for one row, whose logits differ in the last bits: left
    /// alone, so generation stays the model file's byte for byte.</summary>
    [Fact]
    public void An_int4_lm_head_is_left_alone()
    {
        using var dir = TestPaths.NewTempDir();
        var folder = Prepare("genai int4 fp16", dir);
        using var model = SteeredModel.Load(folder, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.NotEqual(1, model.Session.OutputMetadata["logits"].Dimensions[1]);
    }

    [Fact]
    public void A_logits_output_not_made_by_a_matmul_is_left_alone()
    {
        var model = OnnxModelFile.Parse(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"));
        var producer = model.Graph.Node.Single(n => n.Output.Contains("logits"));
        producer.OpType = "Gemm"; // any other producer: the rewrite cannot know its input's rank
        Assert.False(LastPositionLogits.Rewrite(model));
        Assert.DoesNotContain(model.Graph.Node, n => n.Name == LastPositionLogits.SliceNodeName);
    }
}
