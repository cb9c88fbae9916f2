using System.Buffers.Binary;
using System.Text;
using System.Text.Json;
using OnnxSteer.ModelBuilder;

namespace OnnxSteer.Tests.ModelBuilder;

public sealed class LlamaExportTests
{
    private static readonly DecoderSpec Trained = new() { Layers = 2, Hidden = 32, Heads = 2, KvHeads = 2, HeadDim = 16, Intermediate = 48, Vocab = 96, MaxPositions = 64, RopeTheta = 500000, RmsEps = 1e-5 };

    /// <summary>A fake "trained" model folder: safetensors + config + a tokenizer file + reference.json from the C# reference.</summary>
    private static (string Weights, string Config, string Reference) WriteTrained(TempDir dir, DecoderSpec spec, bool tie = false, float perturb = 0)
    {
        var src = dir.Combine("trained");
        Directory.CreateDirectory(src);
        var weights = new RandomWeights(42);
        var w = Path.Combine(src, "model.safetensors");
        LlamaExport.WriteSafetensors(spec, weights, w, tie);
        var c = Path.Combine(src, "config.json");
        LlamaExport.WriteConfig(spec, c);
        File.WriteAllText(Path.Combine(src, "tokenizer.json"), "{}");
        var reference = new ReferenceDecoder(spec, tie ? new TiedWeights(weights) : weights);
        var rows = new[] { LayoutChecks.Tokens(7, spec.Vocab, 1), LayoutChecks.Tokens(4, spec.Vocab, 2) };
        var logits = rows.Select(r => new[] { reference.Forward(r)[^1].Select(v => v + perturb).ToArray() }).ToArray();
        // Greedy continuation from the C# reference (full recompute each step, as the trainer does).
        var prompt = LayoutChecks.Tokens(5, spec.Vocab, 3).ToList();
        var generated = new List<long>();
        for (var i = 0; i < 6; i++)
        {
            var last = reference.Forward(prompt)[^1];
            var next = Array.IndexOf(last, last.Max());
            generated.Add(next);
            prompt.Add(next);
        }
        var r = Path.Combine(src, "reference.json");
        File.WriteAllText(r, JsonSerializer.Serialize(new { input_ids = rows, logits, greedy = new { prompt_ids = prompt.Take(5), generated_ids = generated } }));
        return (w, c, r);
    }

    private sealed class TiedWeights(IWeightSource inner) : IWeightSource
    {
        public FloatTensor Get(string name, int[] shape) => inner.Get(name == LlamaNames.LmHead ? LlamaNames.Embed : name, shape);
    }

    [Theory]
    [InlineData("genai", "fp32", null)]
    [InlineData("genai", "fp32", "gqa")]
    [InlineData("optimum", "fp32", null)]
    [InlineData("genai", "fp16", null)]
    public void ExportPassesTheReferenceCheck(string layout, string dtype, string? attention)
    {
        using var dir = TestPaths.NewTempDir();
        var (w, c, r) = WriteTrained(dir, Trained);
        var outDir = dir.Combine("out");
        var stdout = new StringWriter();
        string[] args = ["export-llama", "--weights", w, "--config", c, "--layout", layout, "--dtype", dtype, "--reference", r, "-o", outDir,
            .. attention is null ? Array.Empty<string>() : ["--attention", attention]];
        Assert.Equal(0, BuilderCli.Run(args, stdout, new StringWriter()));
        Assert.Contains("reference check: 2 rows", stdout.ToString());
        Assert.Contains(": ok", stdout.ToString());
        Assert.Contains("greedy 6/6 tokens match", stdout.ToString());
        Assert.True(File.Exists(Path.Combine(outDir, "tokenizer.json")));
        Assert.True(File.Exists(Path.Combine(outDir, layout == "genai" ? "genai_config.json" : "config.json")));
    }

    /// <summary>The bundled model's shape class: kv_heads &lt; heads and head_dim 40 (not a multiple of 16, so no
    /// GroupQueryAttention on CPU): the default genai export uses MultiHeadAttention with repeated KV heads.</summary>
    [Fact]
    public void GroupedKvWithOddHeadSizeExportsWithMultiHeadAttention()
    {
        using var dir = TestPaths.NewTempDir();
        var spec = Trained with { Heads = 4, KvHeads = 2, HeadDim = 40, Hidden = 48 };
        var (w, c, r) = WriteTrained(dir, spec);
        var result = LlamaExport.Export(new LlamaExportOptions(w, c, dir.Combine("out"), ReferencePath: r));
        Assert.Equal(AttentionKind.MultiHead, result.Fixture.Spec.Attention);
        Assert.True(result.Check!.Passed, $"{result.Check.MaxAbsDiff}");
        var e = Assert.Throws<OnnxSteerException>(() => LlamaExport.Export(new LlamaExportOptions(w, c, dir.Combine("gqa"), Attention: AttentionKind.GroupQuery)));
        Assert.Equal(ErrorKind.Usage, e.Kind);
    }

    [Fact]
    public void TiedEmbeddingsExportWithoutLmHead()
    {
        using var dir = TestPaths.NewTempDir();
        var (w, c, r) = WriteTrained(dir, Trained, tie: true);
        var result = LlamaExport.Export(new LlamaExportOptions(w, c, dir.Combine("out"), ReferencePath: r));
        Assert.True(result.Check!.Passed, $"{result.Check.MaxAbsDiff}");
        Assert.Equal(2, result.Check.ArgmaxAgreement);
    }

    [Fact]
    public void ReferenceMismatchFailsWithVerificationError()
    {
        using var dir = TestPaths.NewTempDir();
        var (w, c, r) = WriteTrained(dir, Trained, perturb: 0.01f);
        var e = Assert.Throws<OnnxSteerException>(() => LlamaExport.Export(new LlamaExportOptions(w, c, dir.Combine("out"), ReferencePath: r)));
        Assert.Equal(ErrorKind.VerificationFailed, e.Kind);
        Assert.Contains("max |logit diff|", e.Message);
    }

    [Fact]
    public void ReexportReplacesAPreviousExportButNotForeignFolders()
    {
        using var dir = TestPaths.NewTempDir();
        var (w, c, _) = WriteTrained(dir, Trained);
        var outDir = dir.Combine("out");
        LlamaExport.Export(new LlamaExportOptions(w, c, outDir, DecoderLayout.OptimumMerged));
        LlamaExport.Export(new LlamaExportOptions(w, c, outDir, DecoderLayout.GenAi));
        Assert.False(File.Exists(Path.Combine(outDir, "decoder_model_merged.onnx")), "stale files of the previous export are gone");
        Assert.True(File.Exists(Path.Combine(outDir, "model.onnx.data")));
        File.WriteAllText(Path.Combine(outDir, "notes.txt"), "mine");
        var e = Assert.Throws<OnnxSteerException>(() => LlamaExport.Export(new LlamaExportOptions(w, c, outDir)));
        Assert.Equal(ErrorKind.Output, e.Kind);
        Assert.Contains("notes.txt", e.Message);
        LlamaExport.Export(new LlamaExportOptions(w, c, outDir, Overwrite: true));
        Assert.False(File.Exists(Path.Combine(outDir, "notes.txt")));
    }

    [Fact]
    public void ConfigShapeMismatchIsReported()
    {
        using var dir = TestPaths.NewTempDir();
        var (w, _, _) = WriteTrained(dir, Trained);
        var c = dir.Combine("other.json");
        LlamaExport.WriteConfig(Trained with { Intermediate = 40 }, c);
        var e = Assert.Throws<OnnxSteerException>(() => LlamaExport.Export(new LlamaExportOptions(w, c, dir.Combine("out"))));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
        Assert.Contains("model.layers.0.mlp.gate_proj.weight", e.Message);
    }

    [Fact]
    public void SafetensorsReaderRejectsCorruptFiles()
    {
        using var dir = TestPaths.NewTempDir();
        string Write(string name, string header, int dataBytes, ulong? lengthOverride = null)
        {
            var p = dir.Combine(name);
            var h = Encoding.UTF8.GetBytes(header);
            var bytes = new byte[8 + h.Length + dataBytes];
            BinaryPrimitives.WriteUInt64LittleEndian(bytes, lengthOverride ?? (ulong)h.Length);
            h.CopyTo(bytes, 8);
            File.WriteAllBytes(p, bytes);
            return p;
        }
        void Bad(string path, string fragment)
        {
            var e = Assert.Throws<OnnxSteerException>(() => SafetensorsFile.Open(path).Dispose());
            Assert.Equal(ErrorKind.InvalidModel, e.Kind);
            Assert.Contains(fragment, e.Message);
        }
        Bad(Write("len.safetensors", "{}", 0, 1UL << 40), "header length");
        Bad(Write("json.safetensors", "{not json", 0), "not JSON");
        Bad(Write("size.safetensors", """{"a":{"dtype":"F32","shape":[2,2],"data_offsets":[0,12]}}""", 16), "needs 16 bytes");
        Bad(Write("range.safetensors", """{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}""", 8), "outside");
        Bad(Write("overlap.safetensors", """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12), "overlap");
        Bad(dir.Combine("len.safetensors"), "header length");
        using var ok = SafetensorsFile.Open(Write("ok.safetensors", """{"__metadata__":{"format":"pt"},"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}""", 4));
        Assert.Equal(new float[] { 0, 0 }, ok.ReadFloat("a").Data);
        Assert.Equal("pt", ok.Metadata["format"]);
    }
}
