using System.Runtime.InteropServices;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.ModelBuilder;

/// <summary>Weights of a float32 model in the onnxruntime-genai layout as <see cref="GenAiWriter"/> writes it (also
/// what <c>export-llama</c> made of the bundled models), read back under their Hugging Face names and shapes: the
/// MatMul weights transposed back to [out, in]. This is how a model whose training weights are not at hand (the
/// bundled <c>models/tiny-instruct</c>) gets the identical numbers into a GGUF.</summary>
internal sealed class GenAiOnnxWeights : IWeightSource
{
    private readonly OnnxModelFile _file;
    private readonly Dictionary<string, TensorProto> _initializers;
    private readonly int _layers;

    private GenAiOnnxWeights(OnnxModelFile file, DecoderSpec spec)
    {
        _file = file;
        _initializers = file.Proto.Graph.Initializer.ToDictionary(t => t.Name, StringComparer.Ordinal);
        _layers = spec.Layers;
        Spec = spec;
    }

    /// <summary>The model's shape, from genai_config.json and the graph (RMSNorm epsilon from the norm nodes, rotary
    /// base from the sine cache, SwiGLU width from the gate weight).</summary>
    public DecoderSpec Spec { get; private set; }

    /// <summary>Opens a genai-layout model folder (fp32, unquantized).</summary>
    public static GenAiOnnxWeights Open(string folder)
    {
        var configPath = Path.Combine(folder, "genai_config.json");
        if (!File.Exists(configPath)) throw new OnnxSteerException(ErrorKind.NotFound, $"'{folder}' has no genai_config.json (export-gguf --onnx reads the onnxruntime-genai layout).");
        var model = JsonNode.Parse(File.ReadAllText(configPath))!["model"]!;
        var decoder = model["decoder"]!;
        var file = OnnxModelFile.Load(Path.Combine(folder, decoder["filename"]?.GetValue<string>() ?? GenAiWriter.ModelFile));
        var graph = file.Proto.Graph;
        int Int(JsonNode? n, string what) => n?.GetValue<int>() ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"genai_config.json has no {what}.");
        var layers = Int(decoder["num_hidden_layers"], "num_hidden_layers");
        var hidden = Int(decoder["hidden_size"], "hidden_size");
        var headDim = Int(decoder["head_size"], "head_size");
        var gate = graph.Initializer.FirstOrDefault(t => t.Name == "model.layers.0.mlp.gate_proj.MatMul.weight")
            ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{file.FilePath}' has no float MatMul weight model.layers.0.mlp.gate_proj.MatMul.weight (only unquantized models written like GenAiWriter's are read).");
        var norm = graph.Node.FirstOrDefault(n => n.OpType is "SimplifiedLayerNormalization" or "SkipSimplifiedLayerNormalization");
        var eps = norm?.Attribute.FirstOrDefault(a => a.Name == "epsilon")?.F
            ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{file.FilePath}' has no RMSNorm node with an epsilon.");
        var spec = new DecoderSpec
        {
            Layers = layers,
            Hidden = hidden,
            Heads = Int(decoder["num_attention_heads"], "num_attention_heads"),
            KvHeads = Int(decoder["num_key_value_heads"], "num_key_value_heads"),
            HeadDim = headDim,
            Intermediate = (int)gate.Dims[1],
            Vocab = Int(model["vocab_size"], "vocab_size"),
            MaxPositions = Int(model["context_length"], "context_length"),
            // The attribute is a float; its shortest decimal form is the epsilon the exporter was given (1e-5, not 9.99999974e-6).
            RmsEps = double.Parse(eps.ToString("R", System.Globalization.CultureInfo.InvariantCulture), System.Globalization.CultureInfo.InvariantCulture),
            BosTokenId = model["bos_token_id"]?.GetValue<int>() ?? 1,
            EosTokenId = model["eos_token_id"] is JsonArray a ? a[0]!.GetValue<int>() : model["eos_token_id"]?.GetValue<int>() ?? 2,
            PadTokenId = model["pad_token_id"]?.GetValue<int>() ?? 0,
        };
        var weights = new GenAiOnnxWeights(file, spec);
        weights.Spec = spec with { RopeTheta = weights.RotaryBase() };
        return weights;
    }

    /// <summary>The rotary base the sine cache was built with: row 1 holds sin(theta^(-2j/d)); j = 1 gives theta
    /// (rounded when within 1e-4 of an integer, as every published base is).</summary>
    private double RotaryBase()
    {
        var sin = Read("sin_cache", out var dims);
        var halfDim = (int)dims[1];
        if (halfDim < 2) return 10000.0;
        var angle = Math.Asin(sin[halfDim + 1]);
        var theta = Math.Pow(angle, -Spec.HeadDim / 2.0);
        return Math.Abs(theta - Math.Round(theta)) < 1e-4 * theta ? Math.Round(theta) : theta;
    }

    /// <inheritdoc />
    public FloatTensor Get(string name, int[] shape)
    {
        (string onnx, bool transposed) = name switch
        {
            LlamaNames.Embed => (name, false),
            LlamaNames.FinalNorm => ($"model.layers.{_layers}.final_norm_layernorm.weight", false),
            LlamaNames.LmHead => ("lm_head.MatMul.weight", true),
            _ when name.EndsWith("_proj.weight", StringComparison.Ordinal) =>
                (name.Replace(".self_attn.", ".attn.", StringComparison.Ordinal).Replace("_proj.weight", "_proj.MatMul.weight", StringComparison.Ordinal), true),
            _ => (name, false),
        };
        var data = Read(onnx, out var dims);
        var expected = transposed ? new long[] { shape[1], shape[0] } : shape.Select(x => (long)x).ToArray();
        if (!dims.SequenceEqual(expected))
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"initializer '{onnx}' is [{string.Join(",", dims)}]; [{string.Join(",", expected)}] expected.");
        return new FloatTensor(shape, transposed ? LlamaNames.Transpose(data, shape[1], shape[0]) : data);
    }

    private float[] Read(string name, out long[] dims)
    {
        if (!_initializers.TryGetValue(name, out var t))
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{Path.GetFileName(_file.FilePath)}' has no initializer '{name}'.");
        if (t.DataType != (int)TensorProto.Types.DataType.Float)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"initializer '{name}' is not float32 (data type {t.DataType}); export-gguf --onnx reads fp32 models.");
        dims = t.Dims.ToArray();
        var count = dims.Aggregate(1L, (a, d) => a * d);
        var values = new float[count];
        if (t.FloatData.Count == count) { t.FloatData.CopyTo(values, 0); return values; }
        var bytes = MemoryMarshal.AsBytes(values.AsSpan());
        if (t.DataLocation == TensorProto.Types.DataLocation.External)
        {
            var reference = _file.ExternalData.Single(e => e.TensorName == name);
            using var handle = File.OpenHandle(reference.FullPath);
            if (RandomAccess.Read(handle, bytes, reference.Offset) != bytes.Length)
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"external data of '{name}' is truncated.");
        }
        else if (t.RawData.Length == bytes.Length) t.RawData.Span.CopyTo(bytes);
        else throw new OnnxSteerException(ErrorKind.InvalidModel, $"initializer '{name}' holds {t.RawData.Length} bytes; {bytes.Length} expected.");
        return values;
    }
}

/// <summary>The <c>export-gguf</c> command: an F32 GGUF for llama.cpp from the same weights as an ONNX export.</summary>
internal static class GgufExport
{
    internal static int RunCli(BuilderCli.Options o, TextWriter stdout)
    {
        var output = o.Required("-o");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        DecoderSpec spec;
        string tokenizer;
        if (o.Get("--onnx") is { } folder)
        {
            var weights = GenAiOnnxWeights.Open(folder);
            spec = weights.Spec;
            tokenizer = o.Get("--tokenizer") ?? Path.Combine(folder, "tokenizer.json");
            GgufLlamaWriter.Write(spec, weights, tokenizer, output, Path.GetFileName(Path.GetFullPath(folder).TrimEnd('/', '\\')));
        }
        else if (o.Flag("--medium"))
        {
            // The benchmark's medium model: the same seeded random weights `build --medium` writes as ONNX.
            spec = DecoderSpec.Medium();
            tokenizer = o.Required("--tokenizer");
            GgufLlamaWriter.Write(spec, new RandomWeights(o.Int("--seed") ?? 1), tokenizer, output, "modelbuilder-medium");
        }
        else
        {
            var weightsPath = o.Required("--weights");
            spec = LlamaExport.ReadConfig(o.Required("--config"));
            tokenizer = o.Get("--tokenizer") ?? Path.Combine(Path.GetDirectoryName(Path.GetFullPath(weightsPath))!, "tokenizer.json");
            using var weights = SafetensorsWeights.Open(weightsPath);
            GgufLlamaWriter.Write(spec, weights, tokenizer, output);
        }
        stdout.WriteLine($"wrote {output} (llama, F32; {spec.Layers} layers, hidden {spec.Hidden}, heads {spec.Heads}/{spec.KvHeads}, vocab {spec.Vocab}) in {sw.Elapsed.TotalSeconds:F1} s");
        return 0;
    }
}
