using OnnxSteer.ModelBuilder;
using OnnxSteer.Runtime;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The check every load-time rewrite (<c>LastPositionLogits</c>, <c>MatMulFusion</c>) must pass against the model
/// file: greedy generation, unsteered and steered, batch 1 and 2 (left padding), gives the same tokens and the same mean
/// log-probabilities bit for bit.</summary>
internal static class RewriteEquivalence
{
    /// <summary>The model folders the rewrite tests run on, by name: the bundled model, the real fp16 GenAI export, and
    /// tiny fixtures (genai fp32 with grouped-query attention, Optimum fp32, genai int4 for any other name).</summary>
    public static string Folder(string name, TempDir dir) => name switch
    {
        "bundled" => Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"),
        "fp16 export" => TestPaths.GenAiTinyLlamaFp16,
        "genai fp32 gqa" => Built(DecoderSpec.Tiny(MbLayout.GenAi, attention: AttentionKind.GroupQuery), dir.Combine("gqa")),
        "optimum fp32" => Built(DecoderSpec.Tiny(MbLayout.Optimum), dir.Combine("optimum")),
        _ => Built(DecoderSpec.Tiny(MbLayout.GenAi, DecoderDType.Float16) with { Quantization = WeightQuantization.Int4 }, dir.Combine("int4")),
    };

    private static string Built(DecoderSpec spec, string folder)
    {
        var fixture = DecoderFixtures.Write(spec, folder);
        ByteLevelFixture.Write(folder); // a tokenizer for decoding text; prompts are given as ids
        return fixture.Directory;
    }

    public static void AssertSameGeneration(SteeredModel rewritten, SteeredModel file, int maxNewTokens)
    {
        int hidden = rewritten.HiddenSize ?? throw new InvalidOperationException("hidden size unknown");
        var random = new Random(3);
        var vector = SteeringVector.FromRaw([.. Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() * 2 - 1))], zBar: 2f);
        var vocab = rewritten.Signature.VocabularySize ?? 100;
        int[] Ids(int n, int seed) { var r = new Random(seed); return [.. Enumerable.Range(0, n).Select(_ => r.Next(3, Math.Min(vocab, 1000)))]; }
        var options = new GeneratorOptions { MaxNewTokens = maxNewTokens, UseChatTemplate = false, ComputeLogProbs = true };
        foreach (var steering in new[] { Steering.None, Steering.None.Add(vector, 1, 4f) })
        {
            var batch = new List<GenerationRequest>
            {
                new() { PromptTokenIds = Ids(9, 1), Steering = steering },
                new() { PromptTokenIds = Ids(5, 2), Steering = steering },
            };
            foreach (var requests in new[] { batch.Take(1).ToList(), batch })
            {
                var a = rewritten.Generate(requests, options);
                var b = file.Generate(requests, options);
                for (int i = 0; i < requests.Count; i++)
                {
                    Assert.Equal(b[i].TokenIds, a[i].TokenIds);
                    Assert.Equal(b[i].MeanLogProb, a[i].MeanLogProb);
                }
            }
        }
    }
}
