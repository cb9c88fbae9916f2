using System.Text.Json.Nodes;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using DecoderLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Benchmarks;

/// <summary>The model folders one benchmark run uses: the original, patched copies with every layer steerable and hidden
/// states exposed at every layer (the default patch) and at none (<c>--expose none</c>), and the copy a user deploys after
/// choosing a layer: only the middle layer (<see cref="SteeredLayer"/>) steerable, nothing exposed
/// (<c>--layers M --expose none</c>), and the same for additive steering only (<c>--additive-only</c>).</summary>
internal sealed record BenchModel(string Name, string Description, string Original, string PatchedExposeAll, string PatchedExposeNone,
    string PatchedOneLayer, string PatchedOneLayerAdditive, int Layers, int Hidden, int Vocab, int Context)
{
    /// <summary>The layer <see cref="PatchedOneLayer"/> steers, the one the suites steer when they steer one layer.</summary>
    public int SteeredLayer => Layers / 2;
}

/// <summary>Writes or copies the benchmark models into a scratch folder (deleted at exit; nothing is committed).</summary>
internal static class Models
{
    /// <summary>The repository root (the folder holding OnnxSteer.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    private static string SharedTokenizer => Path.Combine(RepoRoot, "..", "shared", "fixtures", "genai-tiny-llama-fp16", "tokenizer.json");

    /// <summary>Stand-in for models/tiny-instruct until it lands: its shape (tools/train/README.md) in the genai layout.</summary>
    public static DecoderSpec TinySpec => new()
    {
        Layers = 6, Hidden = 160, Heads = 4, KvHeads = 4, HeadDim = 40, Intermediate = 432, Vocab = 1536, MaxPositions = 2048,
        Layout = DecoderLayout.GenAi, DType = DecoderDType.Float32,
    };

    /// <summary>The model's scratch folder, always inside <paramref name="scratch"/>: a --model given as a path (absolute,
    /// or with folders) would make Path.Combine return that path itself, and the benchmark would write its copies and
    /// patched models into the user's model folder. A path becomes its last folder name plus a short hash of the full
    /// path, so two folders of the same name do not share scratch space.</summary>
    internal static string ScratchFolder(string scratch, string name)
    {
        if (name.IndexOfAny(['/', '\\']) < 0 && !Path.IsPathRooted(name) && name is not ("." or "..")) return Path.Combine(scratch, name);
        var full = Path.GetFullPath(name).TrimEnd('/', '\\');
        var hash = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(System.Text.Encoding.UTF8.GetBytes(full)))[..8];
        return Path.Combine(scratch, $"{Path.GetFileName(full)}-{hash}");
    }

    public static BenchModel Prepare(string name, string scratch, TextWriter log)
    {
        var root = ScratchFolder(scratch, name);
        Directory.CreateDirectory(root);
        var original = Path.Combine(root, "original");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        string description;
        switch (name)
        {
            case "medium":
            case "medium-optimum":
            {
                // medium-optimum: the same shape in Optimum's decomposed layout (plain Add + SimplifiedLayerNormalization
                // pieces that ONNX Runtime fuses at load), where exposing hidden states could block fusions.
                var spec = name == "medium" ? DecoderSpec.Medium() : DecoderSpec.Medium(DecoderLayout.Optimum);
                DecoderFixtures.Write(spec, original, new RandomWeights(1));
                File.Copy(SharedTokenizer, Path.Combine(original, "tokenizer.json"));
                description = Describe($"{name} (ModelBuilder DecoderSpec.Medium, {spec.Layout} layout, random weights)", spec);
                break;
            }
            case "tiny":
            {
                var spec = TinySpec;
                DecoderFixtures.Write(spec, original, new RandomWeights(1));
                File.Copy(SharedTokenizer, Path.Combine(original, "tokenizer.json"));
                description = Describe("tiny stand-in (tiny-instruct's shape, random weights)", spec);
                break;
            }
            default:
            {
                // A folder (models/tiny-instruct): link its weights and copy its small files, so the original is never touched.
                var source = name == "bundled" ? Path.Combine(RepoRoot, "models", "tiny-instruct") : name;
                if (!Directory.Exists(source)) throw new OnnxSteerException(ErrorKind.NotFound, $"model folder {source} does not exist");
                Directory.CreateDirectory(original);
                foreach (var file in Directory.EnumerateFiles(source))
                {
                    var to = Path.Combine(original, Path.GetFileName(file));
                    // Weights are hard-linked (no copy, no read); the small files are copied because DropEos edits them.
                    if (new FileInfo(file).Length < (1 << 20) || !HardLink.TryCreate(file, to)) File.Copy(file, to, overwrite: true);
                }
                description = $"{Path.GetFullPath(source)}";
                break;
            }
        }
        // Greedy decoding on random (or tiny) weights may hit an end-of-sequence id early; every row must run the full
        // 128 steps, so the copies forget their EOS ids.
        DropEos(original);
        var cfg = ReadShape(original);
        var all = Path.Combine(root, "patched-expose-all");
        var none = Path.Combine(root, "patched-expose-none");
        ModelPatcher.Patch(original, all, new PatchOptions { Expose = LayerSelection.All });
        ModelPatcher.Patch(original, none, new PatchOptions { Expose = LayerSelection.None });
        var one = Path.Combine(root, "patched-one-layer");
        ModelPatcher.Patch(original, one, new PatchOptions { Layers = LayerSelection.Of(cfg.Layers / 2), Expose = LayerSelection.None });
        var additive = Path.Combine(root, "patched-one-layer-additive");
        ModelPatcher.Patch(original, additive, new PatchOptions { Layers = LayerSelection.Of(cfg.Layers / 2), Expose = LayerSelection.None, AdditiveOnly = true });
        log.WriteLine($"# prepared {name} in {sw.Elapsed.TotalSeconds:F1} s: {description}");
        return new BenchModel(name, description, original, all, none, one, additive, cfg.Layers, cfg.Hidden, cfg.Vocab, cfg.Context);
    }

    private static string Describe(string what, DecoderSpec s)
    {
        long perLayer = (long)s.Hidden * (s.QWidth + 2 * s.KvWidth) + (long)s.QWidth * s.Hidden + 3L * s.Hidden * s.Intermediate + 2L * s.Hidden;
        long parameters = s.Layers * perLayer + 2L * s.Vocab * s.Hidden + s.Hidden;
        return $"{what}: {s.Layers} layers, hidden {s.Hidden}, {s.Heads} heads x {s.HeadDim}, ffn {s.Intermediate}, vocab {s.Vocab}, " +
               $"{parameters / 1e6:F1}M parameters, {s.Layout} layout {s.DType}, {s.Attention}";
    }

    private static void DropEos(string dir)
    {
        foreach (var file in Directory.EnumerateFiles(dir, "*.json"))
        {
            var name = Path.GetFileName(file);
            if (name is "tokenizer.json" or "steering.json") continue;
            var node = JsonNode.Parse(File.ReadAllText(file));
            if (node is null || !Strip(node)) continue;
            File.WriteAllText(file, node.ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true }));
        }

        static bool Strip(JsonNode node)
        {
            bool changed = false;
            if (node is JsonObject o)
            {
                foreach (var key in new[] { "eos_token_id", "eos_token" })
                    changed |= o.Remove(key);
                foreach (var (_, child) in o.ToList()) if (child is not null) changed |= Strip(child);
            }
            else if (node is JsonArray a)
                foreach (var child in a) if (child is not null) changed |= Strip(child);
            return changed;
        }
    }

    private static (int Layers, int Hidden, int Vocab, int Context) ReadShape(string dir)
    {
        var hfConfig = Path.Combine(dir, "config.json");
        if (!File.Exists(Path.Combine(dir, "genai_config.json")) && File.Exists(hfConfig))
        {
            // Optimum exports carry Hugging Face's config.json instead.
            var hf = JsonNode.Parse(File.ReadAllText(hfConfig))!;
            return ((int)hf["num_hidden_layers"]!, (int)hf["hidden_size"]!, (int)hf["vocab_size"]!, (int)hf["max_position_embeddings"]!);
        }
        var genai = JsonNode.Parse(File.ReadAllText(Path.Combine(dir, "genai_config.json")))!["model"]!;
        var decoder = genai["decoder"]!;
        return ((int)decoder["num_hidden_layers"]!, (int)decoder["hidden_size"]!, (int)genai["vocab_size"]!, (int)genai["context_length"]!);
    }

    // Above the binaries (a normal build) or above the working directory (a build copied elsewhere with -o).
    private static string FindRepoRoot() =>
        Above(AppContext.BaseDirectory) ?? Above(Directory.GetCurrentDirectory()) ?? Directory.GetCurrentDirectory();

    private static string? Above(string start)
    {
        var dir = new DirectoryInfo(start);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OnnxSteer.sln"))) dir = dir.Parent;
        return dir?.FullName;
    }
}
