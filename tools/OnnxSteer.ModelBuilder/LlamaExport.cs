using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxSteer.ModelBuilder;

/// <summary>Options of <see cref="LlamaExport.Export"/>.</summary>
/// <param name="WeightsPath">HF <c>model.safetensors</c> (F32/F16/BF16, Llama names).</param>
/// <param name="ConfigPath">HF <c>config.json</c>.</param>
/// <param name="OutputDirectory">Folder to write (created; files of the same names are replaced).</param>
/// <param name="Layout">GenAi, Optimum or OptimumMerged.</param>
/// <param name="DType">Element type of the exported model.</param>
/// <param name="Attention">GenAi attention operator; null picks MultiHead (any head size, left padding; KV heads repeated when fewer).</param>
/// <param name="ReferencePath">Optional reference.json to check the export against (see <see cref="LlamaExport.CheckReference"/>).</param>
/// <param name="Tolerance">Max abs logit difference allowed by the reference check; null: 1e-3 (fp32) or 2e-2 x max(1, max |logit|) (fp16, int4).</param>
/// <param name="Quantization">Int4 writes MatMulNBits (genai layout only).</param>
/// <param name="Overwrite">Replace an output folder that holds files other than a previous export's.</param>
internal sealed record LlamaExportOptions(string WeightsPath, string ConfigPath, string OutputDirectory, DecoderLayout Layout = DecoderLayout.GenAi,
    DecoderDType DType = DecoderDType.Float32, AttentionKind? Attention = null, string? ReferencePath = null, double? Tolerance = null,
    WeightQuantization Quantization = WeightQuantization.None, bool Overwrite = false);

/// <summary>Result of a reference check.</summary>
/// <param name="Rows">Rows compared.</param>
/// <param name="MaxAbsDiff">Largest |ONNX - reference| over the last-position logits of all rows.</param>
/// <param name="Tolerance">The tolerance applied.</param>
/// <param name="ArgmaxAgreement">Rows whose argmax token agrees.</param>
/// <param name="GreedyMatched">Leading greedy tokens (KV-cache decode in ONNX Runtime) equal to the reference's
/// <c>greedy.generated_ids</c>; null when the reference has none.</param>
/// <param name="GreedyTotal">Length of the reference's greedy continuation.</param>
/// <param name="RequireGreedy">Whether a greedy mismatch fails the check (float32 exports; float16/int4 may flip near-ties).</param>
internal sealed record ReferenceCheck(int Rows, double MaxAbsDiff, double Tolerance, int ArgmaxAgreement,
    int? GreedyMatched = null, int GreedyTotal = 0, bool RequireGreedy = false)
{
    /// <summary>Whether <see cref="MaxAbsDiff"/> is within <see cref="Tolerance"/> and, when required, the greedy
    /// continuation matches.</summary>
    public bool Passed => MaxAbsDiff <= Tolerance && (!RequireGreedy || GreedyMatched is null || GreedyMatched == GreedyTotal);
}

/// <summary>What an export wrote.</summary>
/// <param name="Fixture">The model folder and spec.</param>
/// <param name="CopiedFiles">Tokenizer/generation files copied from beside the weights.</param>
/// <param name="Check">The reference check, when asked for.</param>
internal sealed record LlamaExportResult(DecoderFixture Fixture, IReadOnlyList<string> CopiedFiles, ReferenceCheck? Check);

/// <summary>Exports Hugging Face Llama safetensors weights to an ONNX model folder in one of the exporter layouts.</summary>
internal static class LlamaExport
{
    private static readonly HashSet<string> ExportFileNames = new(StringComparer.Ordinal)
    {
        "model.onnx", "model.onnx.data", "model.onnx_data", "decoder_model_merged.onnx", "decoder_model_merged.onnx_data",
        "genai_config.json", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "generation_config.json", "tokenizer.model",
    };

    /// <summary>Files copied from beside the weights when present.</summary>
    public static readonly string[] CompanionFiles = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json", "tokenizer.model"];

    /// <summary>Writes a Hugging Face LlamaConfig <c>config.json</c> describing <paramref name="spec"/>.</summary>
    public static void WriteConfig(DecoderSpec spec, string path) => OptimumWriter.WriteHfConfig(spec, path);

    /// <summary>Writes <paramref name="weights"/> for <paramref name="spec"/> as a float32 HF <c>model.safetensors</c>
    /// (what the trainer produces; used by tests).</summary>
    public static void WriteSafetensors(DecoderSpec spec, IWeightSource weights, string path, bool tieEmbeddings = false) =>
        SafetensorsFile.WriteFloat32(path, LlamaNames.All(spec)
            .Where(t => !(tieEmbeddings && t.Name == LlamaNames.LmHead))
            .Select(t => (t.Name, t.Shape, weights.Get(t.Name, t.Shape).Data)), new Dictionary<string, string> { ["format"] = "pt" });

    /// <summary>Reads an HF LlamaConfig <c>config.json</c> into a spec (layout/dtype/attention left at defaults).
    /// Refuses what the builders do not implement (rope_scaling, attention/MLP biases, activations other than silu).</summary>
    public static DecoderSpec ReadConfig(string configPath)
    {
        if (!File.Exists(configPath)) throw new OnnxSteerException(ErrorKind.NotFound, $"config '{configPath}' does not exist.");
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(configPath)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{configPath}' is not JSON: {e.Message}"); }
        int Int(string key, int? fallback = null)
        {
            var n = root[key];
            if (n is null) return fallback ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"config.json has no '{key}'.");
            if (n is JsonArray a) n = a.FirstOrDefault() ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"config.json '{key}' is an empty list.");
            return n.GetValueKind() == JsonValueKind.Number ? n.GetValue<int>() : fallback ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"config.json '{key}' is not a number.");
        }
        double Num(string key, double fallback) => root[key] is { } n && n.GetValueKind() == JsonValueKind.Number ? n.GetValue<double>() : fallback;

        if (root["model_type"]?.GetValue<string>() is { } mt && mt != "llama")
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"config.json model_type is '{mt}'; export-llama handles 'llama'.");
        if (root["rope_scaling"] is { } rs && rs.GetValueKind() != JsonValueKind.Null)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, "config.json sets rope_scaling; only plain rotary is implemented.");
        foreach (var flag in new[] { "attention_bias", "mlp_bias" })
            if (root[flag] is { } b && b.GetValueKind() == JsonValueKind.True)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"config.json sets {flag}: true; biases are not implemented.");
        if (root["hidden_act"]?.GetValue<string>() is { } act && act != "silu")
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"config.json hidden_act is '{act}'; only silu is implemented.");

        var hidden = Int("hidden_size");
        var heads = Int("num_attention_heads");
        return new DecoderSpec
        {
            Vocab = Int("vocab_size"),
            Hidden = hidden,
            Intermediate = Int("intermediate_size"),
            Layers = Int("num_hidden_layers"),
            Heads = heads,
            KvHeads = Int("num_key_value_heads", heads),
            HeadDim = Int("head_dim", hidden / heads),
            RmsEps = Num("rms_norm_eps", 1e-6),
            RopeTheta = Num("rope_theta", 10000.0),
            MaxPositions = Int("max_position_embeddings", 2048),
            BosTokenId = Int("bos_token_id", 1),
            EosTokenId = Int("eos_token_id", 2),
            PadTokenId = root["pad_token_id"] is { } p && p.GetValueKind() == JsonValueKind.Number ? p.GetValue<int>() : Int("eos_token_id", 2),
        };
    }

    /// <summary>Writes the model folder (atomically: built beside it and renamed into place, replacing a previous export),
    /// copies tokenizer files, and runs the reference check when asked.</summary>
    /// <exception cref="OnnxSteerException">Bad inputs, or VerificationFailed when the check exceeds the tolerance
    /// (the model folder is left in place for inspection).</exception>
    public static LlamaExportResult Export(LlamaExportOptions o)
    {
        var spec = ReadConfig(o.ConfigPath) with { Layout = o.Layout, DType = o.DType, Quantization = o.Quantization };
        // MultiHeadAttention by default: it takes any head size and left padding (GroupQueryAttention on CPU needs
        // head_dim % 16 == 0 and right padding).
        spec = spec with { Attention = o.Attention ?? AttentionKind.MultiHead };
        using var weights = SafetensorsWeights.Open(o.WeightsPath);
        var outDir = Path.GetFullPath(o.OutputDirectory.TrimEnd('/', '\\'));
        if (Directory.Exists(outDir) && !o.Overwrite)
        {
            // Re-exporting into a folder of a previous export is routine; anything else there is the user's and stays.
            var foreign = Directory.EnumerateFileSystemEntries(outDir).Select(Path.GetFileName).Where(n => !ExportFileNames.Contains(n!)).ToList();
            if (foreign.Count > 0)
                throw new OnnxSteerException(ErrorKind.Output,
                    $"output folder '{o.OutputDirectory}' holds files an export does not write ({string.Join(", ", foreign.Take(5))}); choose another folder or pass --overwrite.");
        }
        IReadOnlyList<string> copied = [];
        // The folder appears complete or not at all (built beside it, then renamed over the old one).
        Onnx.AtomicFile.WriteDirectory(outDir, overwrite: true, tmp =>
        {
            DecoderFixtures.Write(spec, tmp, weights);
            if (o.Layout != DecoderLayout.GenAi)
                File.Copy(o.ConfigPath, Path.Combine(tmp, "config.json"), overwrite: true); // keep the trained model's own config.json
            copied = DecoderFixtures.CopyTokenizerFiles(Path.GetDirectoryName(Path.GetFullPath(o.WeightsPath))!, tmp);
        });
        var fixture = new DecoderFixture(outDir, Path.Combine(outDir, DecoderFixtures.ModelFileName(spec.Layout)), spec);
        ReferenceCheck? check = null;
        if (o.ReferencePath is not null)
        {
            // int4 changes the function (quantization error is not an export bug): report, do not fail, unless a
            // tolerance is given.
            var exact = o.DType == DecoderDType.Float32 && o.Quantization == WeightQuantization.None;
            var tolerance = o.Tolerance ?? (exact ? 1e-3 : o.Quantization == WeightQuantization.None ? -1 : double.PositiveInfinity);
            check = CheckReference(fixture.ModelPath, o.ReferencePath, tolerance) with { RequireGreedy = exact };
            if (!check.Passed)
                throw new OnnxSteerException(ErrorKind.VerificationFailed,
                    $"exported model differs from the reference: max |logit diff| {check.MaxAbsDiff:G4} (tolerance {check.Tolerance:G4}) over {check.Rows} rows ({check.ArgmaxAgreement} argmax agree); greedy tokens matched {check.GreedyMatched?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "-"}/{check.GreedyTotal}.");
        }
        return new LlamaExportResult(fixture, copied, check);
    }

    /// <summary>Runs the model in ONNX Runtime on each row of <paramref name="referencePath"/>
    /// (optionally also <c>"greedy": {"prompt_ids": [...], "generated_ids": [...]}</c>, decoded greedily with the KV cache)
    /// (<c>{"input_ids": [[...], ...], "logits": [[[...last-position logits...]], ...], "attention_mask"?: [[...]]}</c>;
    /// a row's logits may also be a flat list) and compares the last position's logits.
    /// A negative <paramref name="tolerance"/> means 2e-2 x max(1, max |reference logit|) (for float16).</summary>
    public static ReferenceCheck CheckReference(string modelPath, string referencePath, double tolerance)
    {
        if (!File.Exists(referencePath)) throw new OnnxSteerException(ErrorKind.NotFound, $"reference '{referencePath}' does not exist.");
        var root = JsonNode.Parse(File.ReadAllText(referencePath))
            ?? throw new OnnxSteerException(ErrorKind.InvalidData, $"'{referencePath}' is empty.");
        var ids = root["input_ids"]?.AsArray().Select(r => r!.AsArray().Select(x => x!.GetValue<long>()).ToArray()).ToArray()
            ?? throw new OnnxSteerException(ErrorKind.InvalidData, $"'{referencePath}' has no input_ids.");
        var masks = root["attention_mask"]?.AsArray().Select(r => r!.AsArray().Select(x => x!.GetValue<long>()).ToArray()).ToArray();
        var logitsNode = root["logits"]?.AsArray() ?? throw new OnnxSteerException(ErrorKind.InvalidData, $"'{referencePath}' has no logits.");
        if (logitsNode.Count != ids.Length)
            throw new OnnxSteerException(ErrorKind.InvalidData, $"'{referencePath}' has {ids.Length} input_ids rows but {logitsNode.Count} logits rows.");
        var expected = logitsNode.Select(r =>
        {
            var a = r!.AsArray();
            if (a.Count > 0 && a[0] is JsonArray) a = a[^1]!.AsArray();
            return a.Select(x => x!.GetValue<float>()).ToArray();
        }).ToArray();
        if (tolerance < 0) tolerance = 2e-2 * Math.Max(1.0, expected.Max(r => r.Max(Math.Abs)));

        using var runner = DecoderRunner.Load(modelPath);
        double max = 0;
        var agree = 0;
        for (var i = 0; i < ids.Length; i++)
        {
            var mask = masks?[i] ?? Enumerable.Repeat(1L, ids[i].Length).ToArray();
            var got = runner.Forward([ids[i]], [mask])[0][^1];
            if (got.Length != expected[i].Length)
                throw new OnnxSteerException(ErrorKind.InvalidData, $"reference row {i} has {expected[i].Length} logits; the model's vocabulary is {got.Length}.");
            for (var v = 0; v < got.Length; v++) max = Math.Max(max, Math.Abs(got[v] - expected[i][v]));
            if (ArgMax(got) == ArgMax(expected[i])) agree++;
        }
        int? greedyMatched = null;
        var greedyTotal = 0;
        if (root["greedy"] is JsonObject greedy && greedy["prompt_ids"] is JsonArray promptNode && greedy["generated_ids"] is JsonArray genNode)
        {
            var prompt = promptNode.Select(x => x!.GetValue<long>()).ToArray();
            var expectedIds = genNode.Select(x => x!.GetValue<long>()).ToArray();
            greedyTotal = expectedIds.Length;
            var generated = Greedy(runner, prompt, expectedIds.Length);
            greedyMatched = 0;
            while (greedyMatched < greedyTotal && generated[greedyMatched.Value] == expectedIds[greedyMatched.Value]) greedyMatched++;
        }
        return new ReferenceCheck(ids.Length, max, tolerance, agree, greedyMatched, greedyTotal);
    }

    /// <summary>Greedy decoding of <paramref name="count"/> tokens after <paramref name="prompt"/> with the KV cache
    /// (no stop token).</summary>
    public static long[] Greedy(DecoderRunner runner, long[] prompt, int count)
    {
        var result = new long[count];
        var logits = runner.Forward([prompt])[0][^1];
        var length = prompt.Length;
        for (var i = 0; i < count; i++)
        {
            result[i] = ArgMax(logits);
            if (i == count - 1) break;
            length++;
            logits = runner.Step([[result[i]]], [Enumerable.Repeat(1L, length).ToArray()])[0][0];
        }
        return result;
    }

    private static int ArgMax(float[] v)
    {
        var best = 0;
        for (var i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    internal static int RunCli(BuilderCli.Options o, TextWriter stdout)
    {
        var (layout, attention) = BuilderCli.ParseLayout(o.Get("--layout") ?? "genai");
        var options = new LlamaExportOptions(o.Required("--weights"), o.Required("--config"), o.Required("-o"), layout,
            BuilderCli.ParseDType(o.Get("--dtype")), BuilderCli.ParseAttention(o.Get("--attention")) ?? attention, o.Get("--reference"), o.Double("--tolerance"),
            BuilderCli.ParseQuant(o.Get("--quant")), o.Flag("--overwrite"));
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var result = Export(options);
        var s = result.Fixture.Spec;
        stdout.WriteLine($"wrote {result.Fixture.ModelPath} ({s.Layout}, {s.DType}, {s.Attention}; {s.Layers} layers, hidden {s.Hidden}, vocab {s.Vocab}) in {sw.Elapsed.TotalSeconds:F1} s");
        if (result.CopiedFiles.Count > 0) stdout.WriteLine($"copied {string.Join(", ", result.CopiedFiles)}");
        if (result.Check is { } c)
            stdout.WriteLine($"reference check: {c.Rows} rows, max |logit diff| {c.MaxAbsDiff:G4} (tolerance {c.Tolerance:G4}), argmax agrees on {c.ArgmaxAgreement}/{c.Rows}"
                + (c.GreedyMatched is { } g ? $", greedy {g}/{c.GreedyTotal} tokens match" : "") + $": {(c.Passed ? "ok" : "FAILED")}");
        return 0;
    }
}
