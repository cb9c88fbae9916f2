using LLama;
using LLama.Common;
using LLama.Native;
using OnnxSteer.ModelBuilder;

namespace OnnxSteer.Tests.ModelBuilder;

/// <summary>The GGUF model writer checked by llama.cpp itself (LLamaSharp 0.30's CPU backend): the same random weights
/// written as an ONNX model and as a GGUF must give the same logits in ONNX Runtime and in llama.cpp, at every position
/// (so the rotary permutation of q/k, the names, the norms and the head layout are all right), and the same greedy
/// continuation through each one's KV cache.</summary>
public sealed class GgufLlamaWriterTests
{
    private static readonly string BundledTokenizer = Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct", "tokenizer.json");

    // GQA (4 query heads on 2 KV heads), head_dim 16 with hidden 48 (heads * head_dim != hidden), a non-default rotary
    // base and epsilon: every key the writer sets must reach llama.cpp for the logits to agree. The vocabulary is the
    // bundled tokenizer's (byte-level BPE, 1536 tokens).
    private static DecoderSpec Spec => new()
    {
        Layers = 2, Hidden = 48, Heads = 4, KvHeads = 2, HeadDim = 16, Intermediate = 80, Vocab = 1536, MaxPositions = 128,
        RopeTheta = 50000, RmsEps = 1e-5, BosTokenId = 1, EosTokenId = 2, PadTokenId = 0,
    };

    private static readonly long[] Prompt = [5, 17, 300, 42, 7, 1200, 99, 3, 640, 11, 1535, 256];

    static GgufLlamaWriterTests()
    {
        // llama.cpp logs every key and tensor at load; the test output needs none of it.
        NativeLibraryConfig.All.WithLogCallback((level, message) => { });
    }

    [Fact]
    public void Llama_cpp_reads_the_written_gguf_with_onnx_runtimes_logits_and_greedy_tokens()
    {
        using var dir = TestPaths.NewTempDir();
        var weights = new RandomWeights(7);
        var fixture = DecoderFixtures.Write(Spec, dir.Combine("onnx"), weights);
        var gguf = dir.Combine("model.gguf");
        GgufLlamaWriter.Write(Spec, weights, BundledTokenizer, gguf);

        using var runner = DecoderRunner.Load(fixture.ModelPath);
        var expected = runner.Forward([Prompt])[0];
        var expectedGreedy = LlamaExport.Greedy(runner, Prompt, 16);

        var p = new ModelParams(gguf)
        {
            ContextSize = 64, BatchSize = 64, Threads = 1, BatchThreads = 1,
            // Float32 all the way, like the ONNX model: llama.cpp's default f16 KV cache, and its CPU flash attention
            // (which rounds q to f16), each move logits by ~1e-3 on their own; without them the two runtimes agree to ~2e-6.
            TypeK = GGMLType.GGML_TYPE_F32, TypeV = GGMLType.GGML_TYPE_F32, FlashAttention = false,
        };
        using var model = LLamaWeights.LoadFromFile(p);
        Assert.Equal(Spec.Vocab, model.Vocab.Count);
        Assert.Equal(Spec.Hidden, model.EmbeddingSize);
        using var context = model.CreateContext(p);
        var batch = new LLamaBatch();
        for (var i = 0; i < Prompt.Length; i++) batch.Add((LLamaToken)(int)Prompt[i], i, (LLamaSeqId)0, true);
        Assert.Equal(DecodeResult.Ok, context.Decode(batch));

        double maxDiff = 0;
        for (var i = 0; i < Prompt.Length; i++)
        {
            var got = context.NativeHandle.GetLogitsIth(i);
            Assert.Equal(Spec.Vocab, got.Length);
            for (var v = 0; v < got.Length; v++) maxDiff = Math.Max(maxDiff, Math.Abs(got[v] - expected[i][v]));
        }
        Assert.True(maxDiff < 1e-4, $"llama.cpp and ONNX Runtime logits differ by up to {maxDiff:G4} over {Prompt.Length} positions.");
        // Random weights give logits of order one; a wrong permutation or norm moves them by far more than the tolerance.
        Assert.True(expected.SelectMany(r => r).Max(Math.Abs) > 0.1f);

        var greedy = new long[expectedGreedy.Length];
        var logits = context.NativeHandle.GetLogitsIth(Prompt.Length - 1).ToArray();
        for (var step = 0; step < greedy.Length; step++)
        {
            greedy[step] = ArgMax(logits);
            batch.Clear();
            batch.Add((LLamaToken)(int)greedy[step], Prompt.Length + step, (LLamaSeqId)0, true);
            Assert.Equal(DecodeResult.Ok, context.Decode(batch));
            logits = context.NativeHandle.GetLogitsIth(0).ToArray();
        }
        Assert.Equal(expectedGreedy, greedy);
    }

    [Fact]
    public void Reading_a_genai_onnx_model_back_gives_the_weights_and_shape_it_was_written_with()
    {
        using var dir = TestPaths.NewTempDir();
        var weights = new RandomWeights(11);
        DecoderFixtures.Write(Spec, dir.Path, weights);
        var back = GenAiOnnxWeights.Open(dir.Path);
        Assert.Equal(Spec with { }, back.Spec with { MaxPositions = Spec.MaxPositions });
        foreach (var (name, shape) in LlamaNames.All(Spec))
            Assert.Equal(weights.Get(name, shape).Data, back.Get(name, shape).Data);
    }

    [Fact]
    public void Export_gguf_from_safetensors_and_from_the_onnx_folder_writes_the_same_model()
    {
        using var dir = TestPaths.NewTempDir();
        var weights = new RandomWeights(5);
        var trained = Directory.CreateDirectory(dir.Combine("trained")).FullName;
        LlamaExport.WriteSafetensors(Spec, weights, Path.Combine(trained, "model.safetensors"));
        LlamaExport.WriteConfig(Spec, Path.Combine(trained, "config.json"));
        File.Copy(BundledTokenizer, Path.Combine(trained, "tokenizer.json"));
        var onnx = dir.Combine("onnx");
        DecoderFixtures.Write(Spec, onnx, weights);
        File.Copy(BundledTokenizer, Path.Combine(onnx, "tokenizer.json"));
        var direct = dir.Combine("direct.gguf");
        GgufLlamaWriter.Write(Spec, weights, BundledTokenizer, direct, "onnx");

        var stdout = new StringWriter();
        Assert.Equal(0, BuilderCli.Run(["export-gguf", "--weights", Path.Combine(trained, "model.safetensors"), "--config", Path.Combine(trained, "config.json"),
            "-o", dir.Combine("from-safetensors.gguf")], stdout, new StringWriter()));
        Assert.Equal(0, BuilderCli.Run(["export-gguf", "--onnx", onnx, "-o", dir.Combine("from-onnx.gguf")], stdout, new StringWriter()));
        Assert.Contains("llama, F32; 2 layers, hidden 48, heads 4/2, vocab 1536", stdout.ToString());
        // The ONNX folder's name becomes general.name; the safetensors export has the writer's default name.
        Assert.Equal(File.ReadAllBytes(direct), File.ReadAllBytes(dir.Combine("from-onnx.gguf")));
        GgufLlamaWriter.Write(Spec, weights, BundledTokenizer, direct);
        Assert.Equal(File.ReadAllBytes(direct), File.ReadAllBytes(dir.Combine("from-safetensors.gguf")));

        var missing = Assert.Throws<OnnxSteerException>(() => BuilderCli.Run(["export-gguf", "--medium", "-o", dir.Combine("m.gguf")], stdout, new StringWriter()));
        Assert.Equal(ErrorKind.Usage, missing.Kind);
    }

    [Fact]
    public void The_rotary_permutation_moves_each_heads_halves_into_adjacent_pairs()
    {
        // One head of 4 rows, 1 column: HF rows [a0 a1 | b0 b1] rotate (a_i, b_i) together; llama.cpp rotates rows
        // (0,1) and (2,3), so the order must become a0 b0 a1 b1. Two heads: each permuted on its own.
        Assert.Equal([0f, 2, 1, 3, 4, 6, 5, 7], GgufLlamaWriter.PermuteRotaryRows([0f, 1, 2, 3, 4, 5, 6, 7], heads: 2, headDim: 4, cols: 1));
    }

    [Fact]
    public void A_byte_level_tokenizer_becomes_a_gpt2_vocabulary_with_control_tokens_and_placeholders()
    {
        var v = GgufLlamaWriter.ReadVocabulary(BundledTokenizer, 1540);
        Assert.Equal("gpt2", v.Model);
        Assert.Equal(1540, v.Tokens.Length);
        Assert.Equal("<|im_end|>", v.Tokens[2]);
        Assert.Equal(3, v.TokenTypes[2]);
        Assert.Equal(1, v.TokenTypes[3]);
        Assert.Equal(5, v.TokenTypes[1539]);
        Assert.NotEmpty(v.Merges);
        var tooSmall = Assert.Throws<OnnxSteerException>(() => GgufLlamaWriter.ReadVocabulary(BundledTokenizer, 100));
        Assert.Equal(ErrorKind.InvalidData, tooSmall.Kind);
    }

    private static int ArgMax(float[] v)
    {
        var best = 0;
        for (var i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }
}
