using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Runtime;

/// <summary>Shares one loaded fixture model between tests (ONNX Runtime sessions are thread-safe).</summary>
public sealed class FixtureModel : IDisposable
{
    public SteeredModel Model { get; } = SteeredModel.Load(TestPaths.GenAiTinyLlamaFp16, new RuntimeOptions { IntraOpThreads = 1 });
    public void Dispose() => Model.Dispose();
}

/// <summary>Generation on the real onnxruntime-genai export (fp16, GroupQueryAttention/MultiHeadAttention, external data).</summary>
public sealed class GenerationTests(FixtureModel fixture) : IClassFixture<FixtureModel>
{
    private SteeredModel Model => fixture.Model;

    private static readonly GeneratorOptions Raw = new() { MaxNewTokens = 12, UseChatTemplate = false };

    [Fact]
    public void Discovers_the_fixture_signature()
    {
        Assert.Equal(CacheLayout.PerLayerKeyValue, Model.Signature.Layout);
        Assert.Equal(4, Model.Signature.Cache.Count);
        Assert.NotNull(Model.Signature.PositionIds);
        Assert.Null(Model.Manifest);
        Assert.Empty(Model.SteeredLayers);
        Assert.Equal(16, Model.HiddenSize);
        Assert.Contains(2, Model.EosTokenIds); // </s> from the tokenizer
    }

    /// <summary>The golden ids are justified by <see cref="ReferenceGreedy"/>: a plain InferenceSession.Run loop that
    /// feeds the whole sequence every step with an empty cache and takes the argmax. The cached decode loop must
    /// reproduce it exactly, and the pinned ids catch any later drift in either.</summary>
    [Fact]
    public void Greedy_generation_matches_golden_ids_and_a_no_cache_reference()
    {
        var prompt = Model.Tokenizer.Encode("Hello world, this is a test");
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = prompt }], Raw)[0];
        var reference = ReferenceGreedy(prompt, Raw.MaxNewTokens, Model.EosTokenIds);
        Assert.Equal(reference, result.TokenIds);
        Assert.Equal(GoldenHelloIds, result.TokenIds);
    }

    internal static readonly int[] GoldenHelloIds = [3931, 14756, 7811, 21645, 17518, 23890, 28733, 8019, 8645, 20610, 24351, 28333];

    [Fact]
    public void Mean_log_prob_is_reported_on_request()
    {
        var plain = Model.Generate("Hello", options: Raw);
        var scored = Model.Generate("Hello", options: Raw with { ComputeLogProbs = true });
        Assert.Null(plain.MeanLogProb);
        Assert.Equal(plain.TokenIds, scored.TokenIds);
        Assert.InRange(scored.MeanLogProb!.Value, -Math.Log(32000) - 1, 0);
    }

    [Fact]
    public void Text_prompt_without_template_equals_token_prompt()
    {
        var a = Model.Generate("Hello world, this is a test", options: Raw);
        var b = Model.Generate([new GenerationRequest { PromptTokenIds = Model.Tokenizer.Encode("Hello world, this is a test") }], Raw)[0];
        Assert.Equal(b.TokenIds, a.TokenIds);
        Assert.Equal(Model.Tokenizer.Decode(a.TokenIds), a.Text);
    }

    [Fact]
    public void Batch_with_left_padding_equals_rows_alone()
    {
        string[] prompts = ["Hello", "The quick brown fox jumps over", "Rivers of the world are long"];
        var batch = Model.Generate(prompts.Select(p => GenerationRequest.FromPrompt(p)).ToList(), Raw);
        for (int i = 0; i < prompts.Length; i++)
        {
            var alone = Model.Generate(prompts[i], options: Raw);
            Assert.Equal(alone.TokenIds, batch[i].TokenIds);
            Assert.Equal(alone.Text, batch[i].Text);
        }
    }

    [Fact]
    public void Sampling_is_deterministic_for_a_seed_and_differs_from_greedy()
    {
        var options = Raw with { Temperature = 1.5f, TopK = 50, TopP = 0.95f, Seed = 7, MaxNewTokens = 16 };
        var a = Model.Generate("Hello", options: options);
        var b = Model.Generate("Hello", options: options);
        var c = Model.Generate("Hello", options: options with { Seed = 8 });
        Assert.Equal(a.TokenIds, b.TokenIds);
        Assert.NotEqual(a.TokenIds, c.TokenIds);
    }

    [Fact]
    public void Sampling_with_top_k_1_or_tiny_top_p_is_greedy()
    {
        var greedy = Model.Generate("Hello", options: Raw);
        Assert.Equal(greedy.TokenIds, Model.Generate("Hello", options: Raw with { Temperature = 0.8f, TopK = 1, Seed = 3 }).TokenIds);
        Assert.Equal(greedy.TokenIds, Model.Generate("Hello", options: Raw with { Temperature = 0.8f, TopP = 1e-6f, Seed = 3 }).TokenIds);
        Assert.Equal(greedy.TokenIds, Model.Generate("Hello", options: Raw with { Temperature = 0.8f, TopK = 40, TopP = 1e-6f, Seed = 3 }).TokenIds);
    }

    [Fact]
    public void Sampler_top_k_keeps_the_k_most_likely()
    {
        var logits = new float[] { 0.1f, 5f, -2f, 4.9f, 3f, 4.95f };
        var sampler = new OnnxSteer.Runtime.Generation.Sampler(new GeneratorOptions { Temperature = 1f, TopK = 3, Seed = 1 }, logits.Length);
        var seen = Enumerable.Range(0, 300).Select(_ => sampler.Next(logits)).ToHashSet();
        Assert.Equal(new HashSet<int> { 1, 3, 5 }, seen);
    }

    [Fact]
    public void Stops_at_max_tokens_stop_strings_and_eos()
    {
        var full = Model.Generate("Hello", options: Raw with { MaxNewTokens = 20 });
        Assert.Equal(FinishReason.Length, full.FinishReason);
        Assert.Equal(20, full.TokenIds.Length);

        // A stop string taken from the middle of the greedy text cuts it there.
        var text = full.Text;
        var stop = text.Substring(text.Length / 2, Math.Min(3, text.Length - text.Length / 2));
        var cut = Model.Generate("Hello", options: Raw with { MaxNewTokens = 20, StopStrings = [stop] });
        Assert.Equal(FinishReason.StopString, cut.FinishReason);
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], cut.Text);

        // Declaring the third greedy token an EOS ends there, with the EOS kept in the ids.
        var eos = Model.Generate("Hello", options: Raw with { MaxNewTokens = 20, ExtraEosTokenIds = [full.TokenIds[2]] });
        Assert.Equal(FinishReason.EndOfSequence, eos.FinishReason);
        Assert.Equal(full.TokenIds[..3], eos.TokenIds[..Math.Min(3, eos.TokenIds.Length)]);
        Assert.True(eos.TokenIds.Length <= 3);
    }

    [Fact]
    public async Task Streaming_yields_the_same_text_and_can_be_cancelled()
    {
        var whole = Model.Generate("Hello", options: Raw with { MaxNewTokens = 16 });
        var pieces = new List<GeneratedPiece>();
        await foreach (var piece in Model.GenerateAsync("Hello", options: Raw with { MaxNewTokens = 16 })) pieces.Add(piece);
        Assert.Equal(whole.TokenIds, pieces.Select(p => p.TokenId));
        Assert.Equal(whole.Text, string.Concat(pieces.Select(p => p.Text)));

        using var cts = new CancellationTokenSource();
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in Model.GenerateAsync("Hello", options: Raw with { MaxNewTokens = 1000 }, cancellationToken: cts.Token))
                if (++seen == 3) cts.Cancel();
        });
        Assert.True(seen < 50);
    }

    [Fact]
    public void Chat_template_is_applied_to_prompts()
    {
        var result = Model.Generate("Hi", options: new GeneratorOptions { MaxNewTokens = 2 });
        Assert.Equal("<s>[INST] Hi [/INST]", result.PromptText);
        Assert.Equal(Model.Tokenizer.Encode("<s>[INST] Hi [/INST]", addSpecialTokens: false), result.PromptTokenIds);
        Assert.Equal(1, result.PromptTokenIds[0]);
        Assert.NotEqual(1, result.PromptTokenIds[1]); // no second BOS
    }

    [Theory]
    [InlineData(ExecutionProvider.Cuda, "Microsoft.ML.OnnxRuntime.Gpu")]
    [InlineData(ExecutionProvider.DirectML, "Microsoft.ML.OnnxRuntime.DirectML")]
    public void Providers_missing_from_the_native_package_name_the_package_to_add(ExecutionProvider provider, string package)
    {
        var e = Assert.Throws<OnnxSteerException>(() => SteeredModel.Load(TestPaths.GenAiTinyLlamaFp16, new RuntimeOptions { Provider = provider }));
        Assert.Equal(ErrorKind.ProviderUnavailable, e.Kind);
        // A package user cannot rebuild the library: the message names the package reference to add, with its version.
        Assert.Contains($"add a PackageReference to {package} {OrtEnv.Instance().GetVersionString()}", e.Message);
        Assert.DoesNotContain("-p:", e.Message);
    }

    [Fact]
    public void Missing_folder_is_not_found() =>
        Assert.Equal(ErrorKind.NotFound, Assert.Throws<OnnxSteerException>(() => SteeredModel.Load(Path.Combine(TestPaths.RepoRoot, "no-such-model"))).Kind);

    [Fact]
    public void Unpatched_model_refuses_steering()
    {
        var vector = SteeringVector.FromRaw(Enumerable.Range(0, 16).Select(i => (float)i).ToArray());
        var e = Assert.Throws<OnnxSteerException>(() => Model.Generate("Hi", Steering.None.Add(vector, 0, 1f), Raw));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("patch", e.Message);
    }

    /// <summary>Managed bytes allocated per decode step, measured as the difference between two run lengths on this
    /// thread (ONNX Runtime's own memory is native and not counted). Reported, not asserted tightly.</summary>
    [Fact]
    public void Decode_steps_allocate_little_managed_memory()
    {
        var prompt = Model.Tokenizer.Encode("Hello world");
        var options = Raw with { MaxNewTokens = 8, ExtraEosTokenIds = [] };
        Model.Generate([new GenerationRequest { PromptTokenIds = prompt }], options); // warm up
        long Measure(int n)
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            Model.Generate([new GenerationRequest { PromptTokenIds = prompt }], options with { MaxNewTokens = n });
            return GC.GetAllocatedBytesForCurrentThread() - before;
        }
        // The fixture does not hit an EOS within 40 greedy tokens of this prompt (checked below), so both runs are full length.
        Assert.Equal(40, Model.Generate([new GenerationRequest { PromptTokenIds = prompt }], options with { MaxNewTokens = 40 })[0].TokenIds.Length);
        long small = Measure(8), large = Measure(40);
        double perToken = (large - small) / 32.0;
        Console.WriteLine($"managed bytes per decode step: {perToken:F0}");
        Assert.True(perToken < 4096, $"{perToken} bytes per token");
    }

    /// <summary>Greedy decoding the plain way: every step runs the whole sequence through the model with an empty
    /// KV cache (no cache reuse, no padding) and takes the argmax of the last position's logits.</summary>
    internal static int[] ReferenceGreedy(int[] prompt, int maxNew, IReadOnlySet<int> eos, string? modelDir = null)
    {
        using var session = new InferenceSession(Path.Combine(modelDir ?? TestPaths.GenAiTinyLlamaFp16, "model.onnx"));
        var tokens = new List<int>(prompt);
        var generated = new List<int>();
        for (int step = 0; step < maxNew; step++)
        {
            int n = tokens.Count;
            using var ids = OrtValue.CreateTensorValueFromMemory(tokens.Select(t => (long)t).ToArray(), [1, n]);
            using var mask = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, n).ToArray(), [1, n]);
            using var pos = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, n).Select(i => (long)i).ToArray(), [1, n]);
            var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
            var values = new List<OrtValue> { ids, mask, pos };
            var pasts = new List<OrtValue>();
            foreach (var (name, meta) in session.InputMetadata)
                if (name.StartsWith("past_key_values", StringComparison.Ordinal))
                {
                    var p = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, meta.ElementDataType, [1, meta.Dimensions[1], 0, meta.Dimensions[3]]);
                    pasts.Add(p); names.Add(name); values.Add(p);
                }
            using var outputs = session.Run(new RunOptions(), names, values, ["logits"]);
            foreach (var p in pasts) p.Dispose();
            var shape = outputs[0].GetTensorTypeAndShape().Shape;
            int vocab = (int)shape[2];
            var logits = outputs[0].GetTensorDataAsSpan<Float16>().Slice((n - 1) * vocab, vocab);
            int best = ArgMaxHalf(logits);
            generated.Add(best);
            tokens.Add(best);
            if (eos.Contains(best)) break;
        }
        return [.. generated];
    }

    /// <summary>The reference loops' argmax over fp16 logits (first index on ties), written apart from the runtime's sampler.</summary>
    internal static int ArgMaxHalf(ReadOnlySpan<Float16> logits)
    {
        int best = 0; float max = float.NegativeInfinity;
        for (int i = 0; i < logits.Length; i++)
        {
            float v = (float)BitConverter.UInt16BitsToHalf(logits[i].value);
            if (v > max) { max = v; best = i; }
        }
        return best;
    }
}
