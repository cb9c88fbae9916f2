using System.Globalization;

namespace OnnxSteer.ModelBuilder;

/// <summary>The model builder's command line (plain argument parsing: it is a developer tool).
/// <code>
/// build --layout genai|genai-gqa|optimum|optimum-merged|ort-fused|gemma2|gemma2-gqa [--dtype fp32|fp16] [--layers N] [--hidden H] [--heads N]
///       [--kv-heads N] [--head-dim D] [--intermediate I] [--vocab V] [--max-positions P] [--rope-theta T] [--eps E]
///       [--no-position-ids] [--external-data|--embedded] [--quant int4 [--block-size 32]] [--opset 14..21] [--medium] [--seed S] -o OUTDIR
/// export-gguf (--weights model.safetensors --config config.json | --onnx FOLDER | --medium) [--tokenizer tokenizer.json] -o model.gguf
/// dump MODEL.onnx
/// </code></summary>
internal static class BuilderCli
{
    /// <summary>Runs one command; returns the exit code.</summary>
    public static int Run(string[] args, TextWriter stdout, TextWriter stderr)
    {
        if (args.Length == 0 || args[0] is "-h" or "--help")
        {
            stdout.WriteLine(Usage);
            return args.Length == 0 ? 2 : 0;
        }
        var opts = Options.Parse(args.Skip(1).ToArray());
        switch (args[0])
        {
            case "build":
                {
                    var spec = SpecFromOptions(opts);
                    var outDir = opts.Required("-o");
                    var seed = opts.Int("--seed") ?? 1;
                    var sw = System.Diagnostics.Stopwatch.StartNew();
                    var fixture = DecoderFixtures.Write(spec, outDir, new RandomWeights(seed));
                    stdout.WriteLine($"wrote {fixture.ModelPath} ({spec.Layout}, {spec.DType}, {spec.Attention}, {spec.Layers} layers, hidden {spec.Hidden}) in {sw.Elapsed.TotalSeconds:F1} s");
                    return 0;
                }
            case "dump":
                ModelDump.Write(opts.Positional.Single(), stdout);
                return 0;
            case "check":
                {
                    var r = SelfCheck.Run(opts.Positional.Single(), opts.Int("--prefill") ?? 16, opts.Int("--steps") ?? 8);
                    stdout.WriteLine($"prefill {r.Prefill} tokens: {r.PrefillMs:F1} ms; decode: {r.DecodeMsPerToken:F2} ms/token; cached vs full-run logits max |diff| {r.MaxAbsDiff:G3}");
                    return 0;
                }
            case "export-llama":
                return LlamaExport.RunCli(opts, stdout);
            case "export-gguf":
                return GgufExport.RunCli(opts, stdout);
            default:
                stderr.WriteLine(Usage);
                throw new OnnxSteerException(ErrorKind.Usage, $"unknown command '{args[0]}'.");
        }
    }

    /// <summary>Usage text.</summary>
    public const string Usage = """
        usage:
          modelbuilder build --layout genai|genai-gqa|optimum|optimum-merged|ort-fused|gemma2|gemma2-gqa [--dtype fp32|fp16] [--layers N] [--hidden H]
                [--heads N] [--kv-heads N] [--head-dim D] [--intermediate I] [--vocab V] [--max-positions P]
                [--rope-theta T] [--eps E] [--no-position-ids] [--external-data|--embedded] [--quant int4 [--block-size 32]] [--opset 14..21] [--medium] [--seed S] -o OUTDIR
          modelbuilder export-llama --weights model.safetensors --config config.json --layout genai|optimum
                [--dtype fp32|fp16] [--attention mha|gqa] [--quant int4] [--reference reference.json] [--tolerance T] [--overwrite] -o OUTDIR
          modelbuilder export-gguf (--weights model.safetensors --config config.json | --onnx GENAI_FP32_FOLDER | --medium [--seed S])
                [--tokenizer tokenizer.json] -o model.gguf   (F32 GGUF for llama.cpp, same weights)
          modelbuilder dump MODEL.onnx
          modelbuilder check MODEL.onnx [--prefill N] [--steps M]   (KV-cache decode vs full run, timings)
        """;

    /// <summary>Parses a layout name: genai, genai-gqa, optimum, optimum-merged.</summary>
    public static (DecoderLayout Layout, AttentionKind? Attention) ParseLayout(string s) => s switch
    {
        "genai" => (DecoderLayout.GenAi, null),
        "genai-mha" => (DecoderLayout.GenAi, AttentionKind.MultiHead),
        "genai-gqa" => (DecoderLayout.GenAi, AttentionKind.GroupQuery),
        "optimum" => (DecoderLayout.Optimum, null),
        "optimum-merged" => (DecoderLayout.OptimumMerged, null),
        "ort-fused" => (DecoderLayout.OrtFused, null),
        "gemma2" => (DecoderLayout.Gemma2, null),
        "gemma2-gqa" => (DecoderLayout.Gemma2, AttentionKind.GroupQuery),
        _ => throw new OnnxSteerException(ErrorKind.Usage, $"unknown layout '{s}'; expected genai, genai-gqa, optimum, optimum-merged, ort-fused, gemma2 or gemma2-gqa."),
    };

    /// <summary>Parses fp32/fp16.</summary>
    public static DecoderDType ParseDType(string? s) => s switch
    {
        null or "fp32" or "float32" => DecoderDType.Float32,
        "fp16" or "float16" => DecoderDType.Float16,
        _ => throw new OnnxSteerException(ErrorKind.Usage, $"unknown dtype '{s}'; expected fp32 or fp16."),
    };

    /// <summary>Parses none/int4.</summary>
    public static WeightQuantization ParseQuant(string? s) => s switch
    {
        null or "none" => WeightQuantization.None,
        "int4" => WeightQuantization.Int4,
        _ => throw new OnnxSteerException(ErrorKind.Usage, $"unknown quantization '{s}'; expected none or int4."),
    };

    /// <summary>Parses mha/gqa.</summary>
    public static AttentionKind? ParseAttention(string? s) => s switch
    {
        null => null,
        "mha" => AttentionKind.MultiHead,
        "gqa" => AttentionKind.GroupQuery,
        _ => throw new OnnxSteerException(ErrorKind.Usage, $"unknown attention '{s}'; expected mha or gqa."),
    };

    private static DecoderSpec SpecFromOptions(Options o)
    {
        var (layout, attention) = ParseLayout(o.Get("--layout") ?? "genai");
        var dtype = ParseDType(o.Get("--dtype"));
        var s = o.Flag("--medium") ? DecoderSpec.Medium(layout, dtype) : DecoderSpec.Tiny(layout, dtype);
        s = s with { Attention = ParseAttention(o.Get("--attention")) ?? attention ?? AttentionKind.MultiHead };
        s = s with
        {
            Layers = o.Int("--layers") ?? s.Layers,
            Hidden = o.Int("--hidden") ?? s.Hidden,
            Heads = o.Int("--heads") ?? s.Heads,
            HeadDim = o.Int("--head-dim") ?? s.HeadDim,
            Intermediate = o.Int("--intermediate") ?? s.Intermediate,
            Vocab = o.Int("--vocab") ?? s.Vocab,
            MaxPositions = o.Int("--max-positions") ?? s.MaxPositions,
            RopeTheta = o.Double("--rope-theta") ?? s.RopeTheta,
            RmsEps = o.Double("--eps") ?? s.RmsEps,
            PositionIds = !o.Flag("--no-position-ids"),
            ExternalData = o.Flag("--external-data") ? true : o.Flag("--embedded") ? false : null,
            Quantization = ParseQuant(o.Get("--quant")),
            QuantBlockSize = o.Int("--block-size") ?? s.QuantBlockSize,
            Opset = o.Int("--opset"),
        };
        // Heads given without kv-heads or head-dim: keep MHA-compatible defaults.
        s = s with { KvHeads = o.Int("--kv-heads") ?? (o.Int("--heads") is { } h ? h : s.KvHeads) };
        if (o.Int("--head-dim") is null && o.Int("--heads") is not null) s = s with { HeadDim = Math.Max(2, s.Hidden / s.Heads) };
        return s;
    }

    /// <summary>Parsed <c>--name value</c> options, flags and positional arguments.</summary>
    public sealed class Options
    {
        private static readonly HashSet<string> Flags = ["--no-position-ids", "--external-data", "--embedded", "--medium", "--overwrite"];
        private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
        private readonly HashSet<string> _flags = new(StringComparer.Ordinal);

        /// <summary>Arguments that are not options.</summary>
        public List<string> Positional { get; } = [];

        /// <summary>Parses <paramref name="args"/>.</summary>
        public static Options Parse(string[] args)
        {
            var o = new Options();
            for (var i = 0; i < args.Length; i++)
            {
                var a = args[i] == "--output" ? "-o" : args[i];
                if (Flags.Contains(a)) o._flags.Add(a);
                else if (a.StartsWith('-'))
                {
                    if (i + 1 >= args.Length) throw new OnnxSteerException(ErrorKind.Usage, $"option {a} needs a value.");
                    o._values[a] = args[++i];
                }
                else o.Positional.Add(a);
            }
            return o;
        }

        /// <summary>The value of an option, or null.</summary>
        public string? Get(string name) => _values.GetValueOrDefault(name);
        /// <summary>The value of a required option.</summary>
        public string Required(string name) => Get(name) ?? throw new OnnxSteerException(ErrorKind.Usage, $"missing required option {name}.");
        /// <summary>Whether a flag was given.</summary>
        public bool Flag(string name) => _flags.Contains(name);
        /// <summary>An integer option.</summary>
        public int? Int(string name) => Get(name) is { } v
            ? int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) ? r : throw new OnnxSteerException(ErrorKind.Usage, $"{name} expects an integer, got '{v}'.")
            : null;
        /// <summary>A number option.</summary>
        public double? Double(string name) => Get(name) is { } v
            ? double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) ? r : throw new OnnxSteerException(ErrorKind.Usage, $"{name} expects a number, got '{v}'.")
            : null;
    }
}
