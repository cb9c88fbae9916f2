using System.Diagnostics;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.Evaluation;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Cli;

/// <summary>Options of <c>onnxsteer demo</c>.</summary>
internal sealed record DemoOptions
{
    /// <summary>The (unpatched) model folder; null for the bundled <c>models/tiny-instruct</c>.</summary>
    public string? ModelDirectory { get; init; }

    /// <summary>The data folder with <c>pairs/</c> and <c>eval/</c>; null for <c>data</c> beside the model folder.</summary>
    public string? DataDirectory { get; init; }

    /// <summary>Test prompts per instruction in the evaluation table (default 8).</summary>
    public int EvalPerInstruction { get; init; } = 8;

    /// <summary>Maximum new tokens per response (default 96).</summary>
    public int MaxNewTokens { get; init; } = 96;

    /// <summary>ONNX Runtime intra-op threads (null: ONNX Runtime's default).</summary>
    public int? Threads { get; init; }

    /// <summary>The generation engine for the comparison and the table (default ORT); the demo patches with required
    /// steering inputs, which GenAI needs.</summary>
    public GenerationEngine Engine { get; init; } = GenerationEngine.Ort;

    /// <summary>Keep the temporary folder (patched model and vectors) instead of deleting it.</summary>
    public bool Keep { get; init; }
}

/// <summary>The end-to-end demo: patch the bundled model into a temporary folder, extract a few instruction vectors,
/// show responses without and with steering side by side, and print the evaluation table. Needs no network.</summary>
internal static class DemoRunner
{
    /// <summary>The instructions the demo steers, with a fallback layer and mode used when the repository's
    /// <c>docs/evaluation/selection.json</c> (chosen by <c>onnxsteer sweep</c> on the validation split) is not there;
    /// the vectors are named after their pair files.</summary>
    internal static readonly IReadOnlyDictionary<string, SelectionEntry> FallbackSteering = new Dictionary<string, SelectionEntry>
    {
        [InstructionIds.Lowercase] = new() { Mode = "project", Vector = "change_case.english_lowercase", Layer = 1 },
        [InstructionIds.NoComma] = new() { Mode = "project", Vector = "punctuation.no_comma", Layer = 0 },
        [InstructionIds.ForbiddenWords] = new() { Mode = "add", Vector = "keywords.existence.{word}", Layer = 4, Scale = -4 },
    };

    /// <summary>Runs the demo, writing progress and results to <paramref name="output"/>.</summary>
    /// <exception cref="OnnxSteerException">The bundled model or its data cannot be found, or a step fails.</exception>
    public static async Task RunAsync(DemoOptions options, TextWriter output, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var modelDir = options.ModelDirectory is { } m ? Path.GetFullPath(m) : FindBundledModel();
        var dataDir = options.DataDirectory is { } d ? Path.GetFullPath(d) : Path.Combine(Path.GetDirectoryName(modelDir)!, "data");
        var testPath = Path.Combine(dataDir, "eval", "test.jsonl");
        if (!File.Exists(testPath))
            throw new OnnxSteerException(ErrorKind.NotFound, $"the demo data '{testPath}' does not exist; pass --data-dir (a folder with pairs/ and eval/).");
        var steering = LoadSteering(modelDir, output);
        var items = EvalDataset.Load(testPath).Where(i => i.Checks.Count == 1 && steering.ContainsKey(i.Checks[0].Id)).ToList();
        items = [.. EvalWorkflow.Limit(items, options.EvalPerInstruction)];

        var temp = Path.Combine(Path.GetTempPath(), $"onnxsteer-demo-{Guid.NewGuid():N}");
        try
        {
            output.WriteLine($"onnxsteer demo: {modelDir}");
            var patched = Path.Combine(temp, "patched");
            var step = Stopwatch.StartNew();
            // Required steering inputs: every run feeds them explicitly, which also suits onnxruntime-genai's SetModelInput.
            var report = ModelPatcher.Patch(modelDir, patched, new PatchOptions { SteerInput = SteerInputMode.Required });
            output.WriteLine($"[1/4] patched into {patched}: {report.Manifest.NumLayers} layers, hidden {report.Manifest.HiddenSize}, layout {report.Manifest.Layout} ({step.Elapsed.TotalSeconds:0.0} s)");

            step.Restart();
            var vectorsDir = Path.Combine(temp, "vectors");
            Directory.CreateDirectory(vectorsDir);
            var names = items.SelectMany(i => i.Checks).SelectMany(c => VectorNaming.Expand(steering[c.Id].Vector!, c)).Distinct().Order(StringComparer.Ordinal).ToList();
            var counts = ExtractVectors(patched, Path.Combine(dataDir, "pairs"), names, vectorsDir, options.Threads, cancellationToken);
            output.WriteLine($"[2/4] extracted {names.Count} vectors at every layer ({string.Join(", ", names.Select(n => $"{n}: {counts[n]} pairs"))}) ({step.Elapsed.TotalSeconds:0.0} s)");

            var generation = new EvalGenerationOptions { MaxNewTokens = options.MaxNewTokens, BatchSize = 8, Threads = options.Threads, Engine = options.Engine };
            using var backend = ModelBackend.Open(patched, vectorsDir, generation);
            var selection = new SteeringSelection { Instructions = steering };

            step.Restart();
            output.WriteLine("[3/4] the same prompts (no instruction in them), greedy, without and with steering:");
            var examples = steering.Keys.Select(id => items.First(i => i.Checks[0].Id == id)).ToList();
            var requests = examples.SelectMany(i => new[] { new EvalRequest(i.Prompt, []), new EvalRequest(i.Prompt, selection.OpsFor(i, backend.Vectors)) }).ToList();
            var responses = await backend.Generator.GenerateAsync(requests, cancellationToken).ConfigureAwait(false);
            for (var e = 0; e < examples.Count; e++)
            {
                output.WriteLine();
                output.WriteLine($"  prompt:   {examples[e].Prompt}");
                output.WriteLine($"  steering: {string.Join(" + ", requests[2 * e + 1].Steering)}   (for {examples[e].Checks[0]})");
                output.WriteLine($"  without:  {OneLine(responses[2 * e].Text)}");
                output.WriteLine($"  with:     {OneLine(responses[2 * e + 1].Text)}");
            }
            output.WriteLine($"  ({step.Elapsed.TotalSeconds:0.0} s)");

            step.Restart();
            output.WriteLine();
            output.WriteLine($"[4/4] evaluation on {items.Count} held-out test prompts ({Path.GetFileName(testPath)}, IFEval checks):");
            output.WriteLine();
            var eval = await Evaluator.RunAsync(items, selection, backend.Vectors, backend.Generator, new EvalOptions { KeepResponses = false }, cancellationToken).ConfigureAwait(false);
            output.Write(eval.ToMarkdown());
            output.WriteLine($"({step.Elapsed.TotalSeconds:0.0} s; demo total {clock.Elapsed.TotalSeconds:0.0} s)");
            if (options.Keep) output.WriteLine($"kept {temp}");
        }
        finally
        {
            if (!options.Keep)
                try { Directory.Delete(temp, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>The sweep's choice for the demo's instructions from <c>docs/evaluation/selection.json</c> beside the
    /// <c>models</c> folder, where it chose to steer; the fallback otherwise.</summary>
    private static IReadOnlyDictionary<string, SelectionEntry> LoadSteering(string modelDir, TextWriter output)
    {
        var root = Path.GetDirectoryName(Path.GetDirectoryName(modelDir));
        var path = root is null ? null : Path.Combine(root, "docs", "evaluation", "selection.json");
        if (path is null || !File.Exists(path)) return FallbackSteering;
        var chosen = SteeringSelection.Load(path).Instructions;
        var steering = FallbackSteering.ToDictionary(kv => kv.Key, kv =>
            chosen.TryGetValue(kv.Key, out var e) && e.SteerMode is not null ? e : kv.Value);
        output.WriteLine($"layers and modes from {path}");
        return steering;
    }

    /// <summary>Extracts each named vector from <c>pairs/&lt;name&gt;.jsonl</c> into <c>&lt;name&gt;.safetensors</c>.</summary>
    internal static IReadOnlyDictionary<string, int> ExtractVectors(string patched, string pairsDir, IReadOnlyList<string> names, string outDir,
        int? threads, CancellationToken cancellationToken)
    {
        using var model = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = threads });
        using var extractor = VectorExtractor.Load(patched);
        IReadOnlyList<int> Encode(string prompt) => model.EncodePrompt([new ChatTurn("user", prompt)]);
        var counts = new Dictionary<string, int>();
        foreach (var name in names)
        {
            var pairs = Path.Combine(pairsDir, name + ".jsonl");
            if (!File.Exists(pairs)) throw new OnnxSteerException(ErrorKind.NotFound, $"no extraction pairs for vector '{name}': '{pairs}' does not exist.");
            var list = PairsFile.Read(pairs).ToList();
            extractor.Extract(list, Encode, new ExtractionOptions { Name = name, BatchSize = 16 }, null, cancellationToken)
                .Save(Path.Combine(outDir, name + ".safetensors"));
            counts[name] = list.Count;
        }
        return counts;
    }

    /// <summary>Finds <c>models/tiny-instruct</c> above the application's folder or the current folder.</summary>
    /// <exception cref="OnnxSteerException">(NotFound) not found; names where it looked.</exception>
    public static string FindBundledModel()
    {
        var starts = new[] { AppContext.BaseDirectory, Environment.CurrentDirectory };
        foreach (var start in starts)
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, "models", "tiny-instruct");
                if (File.Exists(Path.Combine(candidate, "genai_config.json")) || File.Exists(Path.Combine(candidate, "model.onnx"))) return candidate;
            }
        throw new OnnxSteerException(ErrorKind.NotFound,
            $"the bundled model models/tiny-instruct was not found above '{AppContext.BaseDirectory}' or '{Environment.CurrentDirectory}'; run from the repository or pass --model DIR.");
    }

    private static string OneLine(string text) => text.ReplaceLineEndings(" ⏎ ").Trim();
}
