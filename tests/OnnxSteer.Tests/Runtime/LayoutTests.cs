using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using DecoderLayout = OnnxSteer.ModelBuilder.DecoderLayout;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The decode loop on every exporter layout the ModelBuilder writes (random weights): greedy generation with
/// the KV cache equals a no-cache argmax loop (ModelBuilder's DecoderRunner.Forward), left-padded batches equal rows
/// alone where the attention op supports left padding, and patched models steer.</summary>
public sealed class LayoutTests
{
    public static TheoryData<string> Layouts() => ["genai-mha-fp32", "genai-mha-fp16", "genai-gqa-fp32", "optimum-fp32", "optimum-fp16", "optimum-noposition-fp32", "merged-fp32", "ortfused-gpt2-fp32"];

    /// <summary>The ModelBuilder spec behind each layout name (shared with the bound-decode tests).</summary>
    internal static DecoderSpec Spec(string name) => name switch
    {
        "genai-mha-fp32" => DecoderSpec.Tiny(DecoderLayout.GenAi),
        "genai-mha-fp16" => DecoderSpec.Tiny(DecoderLayout.GenAi, DecoderDType.Float16),
        "genai-gqa-fp32" => DecoderSpec.Tiny(DecoderLayout.GenAi, DecoderDType.Float32, AttentionKind.GroupQuery),
        "optimum-fp32" => DecoderSpec.Tiny(DecoderLayout.Optimum),
        "optimum-fp16" => DecoderSpec.Tiny(DecoderLayout.Optimum, DecoderDType.Float16),
        "optimum-noposition-fp32" => DecoderSpec.Tiny(DecoderLayout.Optimum) with { PositionIds = false },
        "merged-fp32" => DecoderSpec.Tiny(DecoderLayout.OptimumMerged),
        _ => DecoderSpec.Tiny(DecoderLayout.OrtFused),
    };

    private static readonly GeneratorOptions Options = new() { MaxNewTokens = 8, UseChatTemplate = false };
    private static readonly int[][] Prompts = [[5, 17, 42, 9, 100, 3], [7, 8], [60, 61, 62, 63]];

    private static DecoderFixture Write(string name, string dir)
    {
        var fixture = DecoderFixtures.Write(Spec(name) with { EosTokenId = 127 }, dir);
        ByteLevelFixture.Write(dir); // a tokenizer for decoding text; prompts are given as ids below the tiny vocabulary
        return fixture;
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Cached_greedy_equals_no_cache_reference(string layout)
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = Write(layout, dir.Path);
        using var model = SteeredModel.Load(dir.Path, new RuntimeOptions { IntraOpThreads = 1 });
        using var runner = DecoderRunner.Load(fixture.ModelPath);
        foreach (var prompt in Prompts)
        {
            var result = model.Generate([new GenerationRequest { PromptTokenIds = prompt }], Options)[0];
            Assert.Equal(ReferenceGreedy(runner, prompt, Options.MaxNewTokens, model.EosTokenIds), result.TokenIds);
        }
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Left_padded_batch_equals_rows_alone(string layout)
    {
        // ONNX Runtime's GroupQueryAttention supports right padding only: the model runs such rows one at a time.
        using var dir = TestPaths.NewTempDir();
        Write(layout, dir.Path);
        using var model = SteeredModel.Load(dir.Path, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Equal(layout.Contains("gqa"), model.Signature.RightPaddingOnly);
        var batch = model.Generate(Prompts.Select(p => new GenerationRequest { PromptTokenIds = p }).ToList(), Options);
        for (int i = 0; i < Prompts.Length; i++)
            Assert.Equal(model.Generate([new GenerationRequest { PromptTokenIds = Prompts[i] }], Options)[0].TokenIds, batch[i].TokenIds);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Patched_layout_generates_unchanged_without_steering_and_steers_with_it(string layout)
    {
        using var dir = TestPaths.NewTempDir();
        var source = dir.Combine("source");
        Write(layout, source);
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(source, patched, new PatchOptions());
        using var original = SteeredModel.Load(source, new RuntimeOptions { IntraOpThreads = 1 });
        using var model = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Equal(original.Signature.Layout, model.Signature.Layout);
        Assert.Equal(layout.StartsWith("ortfused", StringComparison.Ordinal) ? CacheLayout.Combined : CacheLayout.PerLayerKeyValue, model.Signature.Layout);
        var request = new GenerationRequest { PromptTokenIds = Prompts[0] };
        var plain = model.Generate([request], Options)[0];
        Assert.Equal(original.Generate([request], Options)[0].TokenIds, plain.TokenIds);

        int hidden = model.HiddenSize!.Value;
        var random = new Random(3);
        var vector = SteeringVector.FromRaw(Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray(), zBar: 5f);
        var steered = model.Generate([request with { Steering = Steering.None.Add(vector, 0, 30f).Project(vector, 1) }], Options)[0];
        Assert.NotEqual(plain.TokenIds, steered.TokenIds);
    }

    private static int[] ReferenceGreedy(DecoderRunner runner, int[] prompt, int maxNew, IReadOnlySet<int> eos)
    {
        var tokens = prompt.Select(t => (long)t).ToList();
        var generated = new List<int>();
        for (int step = 0; step < maxNew; step++)
        {
            var logits = runner.Forward([[.. tokens]])[0][^1];
            int best = 0;
            for (int i = 1; i < logits.Length; i++) if (logits[i] > logits[best]) best = i;
            generated.Add(best);
            tokens.Add(best);
            if (eos.Contains(best)) break;
        }
        return [.. generated];
    }
}
