using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Modeling;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Runtime;

/// <summary><see cref="LastPositionLogits"/>: the LM head sees only the last position at load, and generation is the same
/// as on the model file as it is (token ids and the mean log-probability of greedy runs, unsteered and steered, batch 1
/// and a left-padded batch of 2).</summary>
public sealed class LastPositionLogitsTests
{
    public static TheoryData<string> Folders => ["bundled", "fp16 export", "optimum fp32"];

    private static string Prepare(string name, TempDir dir) => name switch
    {
        "bundled" => Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"),
        "fp16 export" => TestPaths.GenAiTinyLlamaFp16,
        "optimum fp32" => Built(DecoderSpec.Tiny(MbLayout.Optimum), dir.Combine("optimum")),
        _ => Built(DecoderSpec.Tiny(MbLayout.GenAi, DecoderDType.Float16) with { Quantization = WeightQuantization.Int4 }, dir.Combine("int4")),
    };

    private static string Built(DecoderSpec spec, string folder)
    {
        var fixture = DecoderFixtures.Write(spec, folder);
        ByteLevelFixture.Write(folder); // a tokenizer for decoding text; prompts are given as ids
        return fixture.Directory;
    }

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

        int hidden = sliced.HiddenSize ?? throw new InvalidOperationException("hidden size unknown");
        var random = new Random(3);
        var vector = SteeringVector.FromRaw([.. Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() * 2 - 1))], zBar: 2f);
        var vocab = sliced.Signature.VocabularySize ?? 100;
        int[] Ids(int n, int seed) { var r = new Random(seed); return [.. Enumerable.Range(0, n).Select(_ => r.Next(3, Math.Min(vocab, 1000)))]; }
        var options = new GeneratorOptions { MaxNewTokens = 8, UseChatTemplate = false, ComputeLogProbs = true };
        foreach (var steering in new[] { Steering.None, Steering.None.Add(vector, 1, 4f) })
        {
            var batch = new List<GenerationRequest>
            {
                new() { PromptTokenIds = Ids(9, 1), Steering = steering },
                new() { PromptTokenIds = Ids(5, 2), Steering = steering },
            };
            foreach (var requests in new[] { batch.Take(1).ToList(), batch })
            {
                var a = sliced.Generate(requests, options);
                var b = full.Generate(requests, options);
                for (int i = 0; i < requests.Count; i++)
                {
                    Assert.Equal(b[i].TokenIds, a[i].TokenIds);
                    Assert.Equal(b[i].MeanLogProb, a[i].MeanLogProb);
                }
            }
        }
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
