using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Runtime;
using OnnxSteer.Tests.Runtime;
using DecoderLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Perf;

/// <summary>The bound decode path (IO binding over a loop-owned KV cache): the same tokens as plain <c>Run</c> calls on
/// every layout, fallback where it cannot apply, cache growth, and no managed allocation per decode step in steady state.
/// Allocation counts are exact byte counts of the generating thread, not timings, so they do not flake.</summary>
public sealed class BoundDecodeTests
{
    private static DecoderSpec Spec(string name) => LayoutTests.Spec(name);

    public static TheoryData<string, bool> Layouts() => new()
    {
        // layout, whether the bound path applies
        { "genai-mha-fp32", true }, { "genai-mha-fp16", true }, { "genai-gqa-fp32", true }, { "optimum-fp32", true },
        { "optimum-fp16", true }, { "optimum-noposition-fp32", true }, { "merged-fp32", true }, { "ortfused-gpt2-fp32", true },
    };

    private static readonly int[][] Prompts = [[5, 17, 42, 9, 100, 3], [7, 8], [60, 61, 62, 63]];

    internal static string WritePatched(string layout, TempDir dir)
    {
        var source = dir.Combine("source");
        DecoderFixtures.Write(Spec(layout) with { EosTokenId = 127 }, source);
        ByteLevelFixture.Write(source);
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(source, patched, new PatchOptions());
        return patched;
    }

    internal static List<GenerationRequest> Requests(int hidden, bool steer)
    {
        var random = new Random(11);
        SteeringVector Vector() => SteeringVector.FromRaw(Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() - 0.5)).ToArray(), zBar: 3f);
        var v = Vector();
        var w = Vector();
        return
        [
            new GenerationRequest { PromptTokenIds = Prompts[0], Steering = steer ? Steering.None.Add(v, 0, 20f) : null },
            new GenerationRequest { PromptTokenIds = Prompts[1], Steering = steer ? Steering.None.Project(w, 1) : null },
            new GenerationRequest { PromptTokenIds = Prompts[2] },
        ];
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Bound_decode_gives_the_plain_loops_tokens_per_row_with_steering(string layout, bool applies)
    {
        using var dir = TestPaths.NewTempDir();
        var path = WritePatched(layout, dir);
        using var bound = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1 });
        using var plain = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        var options = new GeneratorOptions { MaxNewTokens = 10, UseChatTemplate = false };
        foreach (bool steer in new[] { false, true })
        {
            var requests = Requests(bound.HiddenSize!.Value, steer);
            var a = bound.Generate(requests, options);
            var b = plain.Generate(requests, options);
            for (int i = 0; i < requests.Count; i++)
            {
                Assert.Equal(b[i].TokenIds, a[i].TokenIds);
                Assert.Equal(b[i].Text, a[i].Text);
                Assert.False(b[i].BoundDecode);
                if (a[i].DecodeSteps > 0) Assert.Equal(applies, a[i].BoundDecode);
            }
        }
    }

    [Fact]
    public void Cache_buffers_grow_past_their_first_capacity_without_changing_tokens()
    {
        using var dir = TestPaths.NewTempDir();
        var path = WritePatched("genai-mha-fp32", dir);
        // A headroom of 1 position makes the buffers double at steps 1, 2, 4, 8 and 16.
        using var bound = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundCacheHeadroom = 1 });
        using var plain = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        var options = new GeneratorOptions { MaxNewTokens = 24, UseChatTemplate = false };
        var requests = Requests(bound.HiddenSize!.Value, steer: true);
        var a = bound.Generate(requests, options);
        var b = plain.Generate(requests, options);
        for (int i = 0; i < requests.Count; i++) Assert.Equal(b[i].TokenIds, a[i].TokenIds);
        Assert.True(a[0].BoundDecode);
    }

    public static TheoryData<string> AllocationCases() => ["greedy", "greedy-batch", "sampled", "stop-strings", "steered", "steered-batch", "fp16", "optimum-merged", "gpt2-combined-cache", "steered-fused-matmuls"];

    /// <summary>Issue 6: zero managed allocations per generated token in steady state. Measured inside the loop from the
    /// second decode step to the last, on the thread that runs it (no listener for pieces: a streaming caller gets one
    /// string per piece, which is the product it asked for).</summary>
    [Theory]
    [MemberData(nameof(AllocationCases))]
    public void A_decode_step_allocates_no_managed_memory_in_steady_state(string name)
    {
        using var dir = TestPaths.NewTempDir();
        var path = WritePatched(name switch
        {
            "fp16" => "genai-mha-fp16",
            "optimum-merged" => "merged-fp32",
            "gpt2-combined-cache" => "ortfused-gpt2-fp32",
            _ => "genai-mha-fp32",
        }, dir);
        using var model = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, FuseMatMuls = name.EndsWith("fused-matmuls", StringComparison.Ordinal) });
        var options = new GeneratorOptions { MaxNewTokens = 40, UseChatTemplate = false };
        options = name switch
        {
            "sampled" => options with { Temperature = 0.8f, TopK = 20, TopP = 0.9f, Seed = 3, ComputeLogProbs = true },
            "stop-strings" => options with { StopStrings = ["never appears \u00e9\u00e9", "zz"] },
            _ => options,
        };
        var requests = Requests(model.HiddenSize!.Value, steer: name.StartsWith("steered", StringComparison.Ordinal));
        if (!name.EndsWith("batch", StringComparison.Ordinal)) requests = [requests[0]];
        // The model's EOS may end a row early; only steps after the first count, so run until there are enough.
        model.Generate(requests, options); // warm-up: JIT, ONNX Runtime's arenas, the tokenizer's byte cache
        var results = model.Generate(requests, options);
        Assert.True(results[0].BoundDecode);
        Assert.True(results[0].SteadySteps >= 5, $"only {results[0].SteadySteps} steady steps");
        Assert.Equal(0, results[0].SteadyAllocatedBytes);
    }

    [Fact]
    public void The_plain_loop_does_allocate_which_is_why_binding_is_the_default()
    {
        using var dir = TestPaths.NewTempDir();
        var path = WritePatched("genai-mha-fp32", dir);
        using var model = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        var options = new GeneratorOptions { MaxNewTokens = 20, UseChatTemplate = false };
        var request = Requests(model.HiddenSize!.Value, steer: false)[0];
        model.Generate([request], options);
        var result = model.Generate([request], options)[0];
        Assert.False(result.BoundDecode);
        Assert.True(result.SteadySteps > 0);
        Assert.True(result.SteadyAllocatedBytes > 0); // ONNX Runtime's managed Run wrappers
    }
}

/// <summary>The bound path on the real onnxruntime-genai export (fp16, external data).</summary>
public sealed class BoundDecodeRealExportTests
{
    [Fact]
    public void Real_export_decodes_bound_with_the_plain_loops_tokens_and_no_steady_allocations()
    {
        using var bound = SteeredModel.Load(TestPaths.GenAiTinyLlamaFp16, new RuntimeOptions { IntraOpThreads = 1 });
        using var plain = SteeredModel.Load(TestPaths.GenAiTinyLlamaFp16, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        var options = new GeneratorOptions { MaxNewTokens = 24, UseChatTemplate = false };
        var prompt = bound.Tokenizer.Encode("Hello world, this is a test");
        var request = new GenerationRequest { PromptTokenIds = prompt };
        bound.Generate([request], options);
        var a = bound.Generate([request], options)[0];
        var b = plain.Generate([request], options)[0];
        Assert.Equal(b.TokenIds, a.TokenIds);
        Assert.Equal(b.Text, a.Text);
        Assert.True(a.BoundDecode);
        Assert.True(a.SteadySteps >= 5);
        Assert.Equal(0, a.SteadyAllocatedBytes);

        // A batch of four over the real 32000-token vocabulary: long tokens must not grow the detokenizer's buffers.
        var batch = Enumerable.Range(0, 4).Select(i => new GenerationRequest { PromptTokenIds = [.. prompt.Take(prompt.Length - 1), 100 + i] }).ToList();
        var long40 = options with { MaxNewTokens = 40 };
        bound.Generate(batch, long40);
        var rows = bound.Generate(batch, long40);
        var plainRows = plain.Generate(batch, long40);
        for (int i = 0; i < 4; i++) Assert.Equal(plainRows[i].TokenIds, rows[i].TokenIds);
        Assert.True(rows[0].SteadySteps >= 5);
        Assert.Equal(0, rows[0].SteadyAllocatedBytes);
    }
}
