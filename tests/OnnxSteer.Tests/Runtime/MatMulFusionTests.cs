using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Modeling;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using OnnxSteer.Runtime;
using Xunit.Abstractions;

namespace OnnxSteer.Tests.Runtime;

/// <summary><see cref="MatMulFusion"/>: parallel MatMuls run as one at load, and the logits are those of the model file
/// bit for bit (prefill at every position and 64 greedy steps), unsteered and steered.</summary>
public sealed class MatMulFusionTests(ITestOutputHelper output)
{
    public static TheoryData<string> Folders => ["bundled", "genai fp32 gqa", "optimum fp32"];

    private static string Prepare(string name, TempDir dir) => RewriteEquivalence.Folder(name, dir);

    private static string ModelFile(string folder) => Directory.GetFiles(folder, "*.onnx").Single();

    private static SessionOptions Options(string folder, int threads = 1)
    {
        var so = new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR, IntraOpNumThreads = threads };
        so.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", folder);
        return so;
    }

    /// <summary>Every group is the q/k/v or the gate/up of one layer: the two per layer in these exports.</summary>
    [Theory]
    [MemberData(nameof(Folders))]
    public void Each_layer_fuses_qkv_and_gate_up(string name)
    {
        using var dir = TestPaths.NewTempDir();
        var model = OnnxModelFile.Parse(ModelFile(Prepare(name, dir)));
        int matmuls = model.Graph.Node.Count(n => n.OpType == "MatMul");
        int layers = model.Graph.Output.Count(o => o.Name.StartsWith("present", StringComparison.Ordinal) && o.Name.EndsWith(".key", StringComparison.Ordinal));
        int groups = MatMulFusion.Rewrite(model);
        var fused = model.Graph.Node.Where(n => n.OpType == "MatMul" && n.Name.StartsWith(MatMulFusion.NamePrefix, StringComparison.Ordinal)).ToList();
        output.WriteLine($"{name}: {layers} layers, {matmuls} MatMuls before, {groups} groups, {model.Graph.Node.Count(n => n.OpType == "MatMul")} after");
        Assert.Equal(2 * layers, groups);
        Assert.Equal(groups, fused.Count);
        // Three projections (q, k, v) and two (gate, up) per layer go; one MatMul per group comes.
        Assert.Equal(matmuls - 5 * layers + groups, model.Graph.Node.Count(n => n.OpType == "MatMul"));
        Assert.Equal(2 * layers, model.Graph.Node.Count(n => n.OpType == "Split" && n.Name.StartsWith(MatMulFusion.NamePrefix, StringComparison.Ordinal)));
    }

    public static TheoryData<string, int> FoldersAndThreads => new() { { "bundled", 1 }, { "bundled", 2 }, { "genai fp32 gqa", 1 }, { "optimum fp32", 2 } };

    /// <summary>Prefill logits at every position, then 64 greedy steps: the fused graph's logits equal the file's bit for
    /// bit (MLAS computes each output column from the same row and column, whatever N is and however the threads split
    /// it). Swapping two Split outputs or concatenating along the wrong axis fails here (the first by value, the second at
    /// load).</summary>
    [Theory]
    [MemberData(nameof(FoldersAndThreads))]
    public void Logits_equal_the_unfused_model_bit_for_bit(string name, int threads)
    {
        using var dir = TestPaths.NewTempDir();
        var folder = Prepare(name, dir);
        var path = ModelFile(folder);
        var model = OnnxModelFile.Parse(path);
        Assert.True(MatMulFusion.Rewrite(model) > 0);
        using var fusedOptions = Options(folder, threads);
        using var plainOptions = Options(folder, threads);
        using var fused = DecoderRunner.Load(model.ToByteArray(), fusedOptions);
        using var plain = DecoderRunner.Load(path, plainOptions);
        int vocab = fused.Session.OutputMetadata["logits"].Dimensions[2] is > 0 and var v ? v : 100;
        var random = new Random(5);
        long[][] ids = [[.. Enumerable.Range(0, 9).Select(_ => (long)random.Next(3, Math.Min(vocab, 1000)))]];
        var a = fused.Forward(ids);
        var b = plain.Forward(ids);
        for (int t = 0; t < ids[0].Length; t++) AssertBits(b[0][t], a[0][t], $"prefill position {t}");
        var mask = new List<long>(Enumerable.Repeat(1L, ids[0].Length));
        for (int step = 0; step < 64; step++)
        {
            long next = ArgMax(a[0][^1]);
            Assert.Equal(ArgMax(b[0][^1]), next);
            mask.Add(1);
            a = fused.Step([[next]], [[.. mask]]);
            b = plain.Step([[next]], [[.. mask]]);
            AssertBits(b[0][0], a[0][0], $"decode step {step}");
        }
    }

    /// <summary>The Concat over the weights is folded at session creation: the optimized graph reads one initializer per
    /// fused MatMul and computes no Concat per step.</summary>
    [Fact]
    public void The_weight_concatenation_is_folded_at_load()
    {
        using var dir = TestPaths.NewTempDir();
        var folder = Prepare("genai fp32 gqa", dir);
        var model = OnnxModelFile.Parse(ModelFile(folder));
        Assert.True(MatMulFusion.Rewrite(model) > 0);
        var optimized = dir.Combine("optimized.onnx");
        using var so = Options(folder);
        so.OptimizedModelFilePath = optimized;
        using (new InferenceSession(model.ToByteArray(), so)) { }
        var graph = OnnxModelFile.Parse(optimized).Graph;
        Assert.DoesNotContain(graph.Node, n => n.OpType == "Concat" && n.Name.StartsWith(MatMulFusion.NamePrefix, StringComparison.Ordinal));
        var initializers = graph.Initializer.Select(i => i.Name).ToHashSet(StringComparer.Ordinal);
        var fusedMatMuls = graph.Node.Where(n => n.Name.StartsWith(MatMulFusion.NamePrefix, StringComparison.Ordinal) && n.OpType == "MatMul").ToList();
        Assert.NotEmpty(fusedMatMuls);
        Assert.All(fusedMatMuls, n => Assert.Contains(n.Input[1], initializers));
        // The originals are gone: nothing reads them any more.
        Assert.DoesNotContain("model.layers.0.attn.q_proj.MatMul.weight", initializers);
    }

    /// <summary>Through <see cref="SteeredModel"/>: a patched model generates the same tokens and mean log-probability fused
    /// and unfused, unsteered and steered, batch 1 and a left-padded batch of 2 (the bound decode loop, so the
    /// zero-allocation path too).</summary>
    [Theory]
    [MemberData(nameof(Folders))]
    public void Steered_generation_is_unchanged(string name)
    {
        using var dir = TestPaths.NewTempDir();
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(Prepare(name, dir), patched, new PatchOptions { Layers = OnnxSteer.Contract.LayerSelection.Of(1) });
        var fusedGroups = MatMulFusion.Rewrite(OnnxModelFile.Parse(ModelFile(patched)));
        Assert.True(fusedGroups > 0);
        using var fused = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1, FuseMatMuls = true });
        using var plain = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1 });
        RewriteEquivalence.AssertSameGeneration(fused, plain, maxNewTokens: 16);
    }

    [Fact]
    public void Quantized_float16_and_shared_weights_are_left_alone()
    {
        using var dir = TestPaths.NewTempDir();
        var int4 = OnnxModelFile.Parse(ModelFile(Prepare("genai int4 fp16", dir)));
        Assert.Equal(0, MatMulFusion.Rewrite(int4));
        // Float16 runs in float32 between Casts on the CPU, and the Split would round where ONNX Runtime does not.
        var fp16 = OnnxModelFile.Parse(ModelFile(Prepare("fp16 export", dir)));
        Assert.Equal(0, MatMulFusion.Rewrite(fp16));

        // A weight another node also reads would stay resident beside its concatenated copy: that group is not fused.
        var model = OnnxModelFile.Parse(ModelFile(Prepare("bundled", dir)));
        var q = model.Graph.Node.First(n => n.OpType == "MatMul" && n.Name.Contains("q_proj", StringComparison.Ordinal));
        var k = model.Graph.Node.First(n => n.OpType == "MatMul" && n.Name.Contains("k_proj", StringComparison.Ordinal));
        var v = model.Graph.Node.First(n => n.OpType == "MatMul" && n.Name.Contains("v_proj", StringComparison.Ordinal));
        var reader = new NodeProto { OpType = "Sum", Name = "reader" };
        reader.Input.Add(k.Input[1]);
        reader.Input.Add(v.Input[1]);
        model.Graph.Node.Add(reader);
        int layers = model.Graph.Output.Count(o => o.Name.StartsWith("present", StringComparison.Ordinal) && o.Name.EndsWith(".key", StringComparison.Ordinal));
        Assert.Equal(2 * layers - 1, MatMulFusion.Rewrite(model));
        Assert.Contains(q, model.Graph.Node);
    }

    private static long ArgMax(float[] v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static void AssertBits(float[] expected, float[] actual, string where)
    {
        Assert.Equal(expected.Length, actual.Length);
        int differ = 0;
        double max = 0;
        for (int i = 0; i < expected.Length; i++)
        {
            if (BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i])) continue;
            differ++;
            max = Math.Max(max, Math.Abs((double)expected[i] - actual[i]));
        }
        Assert.True(differ == 0, $"{where}: {differ} of {expected.Length} logits differ (max |diff| {max:G3})");
    }
}
