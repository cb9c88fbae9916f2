using System.Diagnostics;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.Evaluation;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;
using OnnxSteer.Modeling;

namespace OnnxSteer.Cli;

/// <summary>Options of <c>onnxsteer demo</c>.</summary>
internal sealed record DemoOptions
{
    /// <summary>The (unpatched) model folder; null for the bundled <c>models/tiny-instruct</c> (a checkout's, else the
    /// copy the installed tool carries).</summary>
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

    /// <summary>The selection file (from <c>onnxsteer sweep</c>) whose steered instructions, layers and modes the demo
    /// uses; null for <c>selection.json</c> in the model folder, else the repository's <c>docs/evaluation/selection.json</c>.</summary>
    public string? SelectionPath { get; init; }
}

/// <summary>The end-to-end demo: patch the bundled model into a temporary folder, extract a few instruction vectors,
/// show responses without and with steering side by side, and print the evaluation table. Needs no network.</summary>
internal static class DemoRunner
{
    /// <summary>Runs the demo, writing progress and results to <paramref name="output"/>.</summary>
    /// <exception cref="OnnxSteerException">The bundled model or its data cannot be found, or a step fails.</exception>
    public static async Task RunAsync(DemoOptions options, TextWriter output, CancellationToken cancellationToken = default)
    {
        var clock = Stopwatch.StartNew();
        var modelDir = ResolveModel(options.ModelDirectory, [AppContext.BaseDirectory, Environment.CurrentDirectory],
            Path.Combine(AppContext.BaseDirectory, ToolDemoFolder));
        var dataDir = options.DataDirectory is { } d ? Path.GetFullPath(d) : Path.Combine(Path.GetDirectoryName(modelDir)!, "data");
        var testPath = Path.Combine(dataDir, "eval", "test.jsonl");
        if (!File.Exists(testPath))
            throw new OnnxSteerException(ErrorKind.NotFound, $"the demo data '{testPath}' does not exist; pass --data-dir (a folder with pairs/ and eval/).");
        var steering = LoadSteering(modelDir, options.SelectionPath, output);
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
            // Header-position vectors only where the selection header-steers: a model without a chat template has no header.
            var header = items.SelectMany(i => i.Checks).Where(c => steering[c.Id].SteerMode == SteerMode.Header)
                .SelectMany(c => VectorNaming.Expand(steering[c.Id].Vector!, c)).ToHashSet(StringComparer.Ordinal);
            var counts = ExtractVectors(patched, Path.Combine(dataDir, "pairs"), names, vectorsDir, options.Threads, cancellationToken, header);
            output.WriteLine($"[2/4] extracted {names.Count} vectors at every layer ({string.Join(", ", names.Select(n => $"{n}: {counts[n]} pairs"))}) ({step.Elapsed.TotalSeconds:0.0} s)");

            var generation = new EvalGenerationOptions { MaxNewTokens = options.MaxNewTokens, BatchSize = 8, Threads = options.Threads, Engine = options.Engine };
            using var backend = ModelBackend.Open(patched, vectorsDir, generation);
            var selection = new SteeringSelection { Instructions = steering };

            step.Restart();
            output.WriteLine("[3/4] the same prompts (no instruction in them), greedy, without and with steering:");
            var examples = steering.Keys.Select(id => items.FirstOrDefault(i => i.Checks[0].Id == id)).OfType<EvalItem>().ToList();
            var requests = examples.SelectMany(i => new[] { new EvalRequest(i.Prompt, []), new EvalRequest(i.Prompt, selection.OpsFor(i, backend.Vectors)) }).ToList();
            var responses = await backend.Generator.GenerateAsync(requests, cancellationToken).ConfigureAwait(false);
            for (var e = 0; e < examples.Count; e++)
            {
                output.WriteLine();
                output.WriteLine($"  prompt:   {examples[e].Prompt}");
                output.WriteLine($"  steering: {string.Join(" + ", requests[2 * e + 1].Steering)}   (for {examples[e].Checks[0]})");
                output.WriteLine($"  without:  {OneLine(responses[2 * e].Text)}{Verdict(examples[e], responses[2 * e].Text)}");
                output.WriteLine($"  with:     {OneLine(responses[2 * e + 1].Text)}{Verdict(examples[e], responses[2 * e + 1].Text)}");
            }
            output.WriteLine($"  ({step.Elapsed.TotalSeconds:0.0} s)");

            step.Restart();
            output.WriteLine();
            output.WriteLine($"[4/4] evaluation on {items.Count} held-out test prompts ({Path.GetFileName(testPath)}, IFEval checks):");
            output.WriteLine();
            var eval = await Evaluator.RunAsync(items, selection, backend.Vectors, backend.Generator, new EvalOptions
            {
                KeepResponses = false,
                HeldOutPhrasings = HeldOutPhrasings.Load(HeldOutPhrasings.FindBeside(testPath)),
            }, cancellationToken).ConfigureAwait(false);
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

    /// <summary>The steered instructions of the selection file, in <see cref="InstructionIds.All"/> order: the one given,
    /// else <c>selection.json</c> in the model folder (so that <c>--model</c> brings its own), else the repository's
    /// <c>docs/evaluation/selection.json</c> beside the <c>models</c> folder.</summary>
    /// <exception cref="OnnxSteerException">(NotFound) no selection file; (InvalidData) one that steers nothing.</exception>
    internal static IReadOnlyDictionary<string, SelectionEntry> LoadSteering(string modelDir, string? selectionPath, TextWriter output)
    {
        var path = selectionPath ?? FindSelection(modelDir)
            ?? throw new OnnxSteerException(ErrorKind.NotFound,
                $"no selection file: pass --selection FILE (made by 'onnxsteer sweep ... -o FILE') or put selection.json in '{modelDir}'.");
        var chosen = SteeringSelection.Load(Path.GetFullPath(path)).Instructions;
        var steering = new Dictionary<string, SelectionEntry>();
        foreach (var id in InstructionIds.All.Concat(chosen.Keys.Order(StringComparer.Ordinal)).Distinct())
            if (chosen.TryGetValue(id, out var e) && e.SteerMode is not null) steering[id] = e;
        if (steering.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidData, $"the selection '{path}' steers no instruction; there is nothing to show.");
        output.WriteLine($"layers and modes from {path}: {string.Join(", ", steering.Select(kv => $"{EvalReport.ShortName(kv.Key)} {kv.Value.Describe()}"))}");
        return steering;
    }

    private static string? FindSelection(string modelDir)
    {
        var own = Path.Combine(modelDir, "selection.json");
        if (File.Exists(own)) return own;
        var root = Path.GetDirectoryName(Path.GetDirectoryName(modelDir));
        var repo = root is null ? null : Path.Combine(root, "docs", "evaluation", "selection.json");
        return repo is not null && File.Exists(repo) ? repo : null;
    }

    private static readonly QualityGuard Guard = new();

    /// <summary>" (degenerate)" or " (off topic: no 'honey')" after a response that the evaluation would fail for it.</summary>
    private static string Verdict(EvalItem item, string response) =>
        Guard.IsDegenerate(response) ? "   (degenerate)"
        : !TopicFidelity.IsOnTopic(item, response) ? $"   (off topic: no '{TopicFidelity.TopicOf(item.Prompt)}')" : "";

    /// <summary>Extracts each named vector from <c>pairs/&lt;name&gt;.jsonl</c> into <c>&lt;name&gt;.safetensors</c>.</summary>
    internal static IReadOnlyDictionary<string, int> ExtractVectors(string patched, string pairsDir, IReadOnlyList<string> names, string outDir,
        int? threads, CancellationToken cancellationToken, IReadOnlySet<string>? headerNames = null)
    {
        using var model = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = threads });
        using var extractor = VectorExtractor.Load(patched, new ExtractionOptions { Threads = threads });
        IReadOnlyList<int> Encode(string prompt) => model.EncodePrompt([new ChatTurn("user", prompt)], cancellationToken: cancellationToken);
        var counts = new Dictionary<string, int>();
        foreach (var name in names)
        {
            var pairs = Path.Combine(pairsDir, name + ".jsonl");
            if (!File.Exists(pairs)) throw new OnnxSteerException(ErrorKind.NotFound, $"no extraction pairs for vector '{name}': '{pairs}' does not exist.");
            var list = PairsFile.Read(pairs).ToList();
            // With the template's answer-header positions where the selection header-steers, so that it finds them.
            var header = headerNames?.Contains(name) == true ? ExtractionOptions.TemplateHeader : 1;
            extractor.Extract(list, Encode, new ExtractionOptions { Name = name, BatchSize = 16, HeaderPositions = header }, null, cancellationToken)
                .Save(Path.Combine(outDir, name + ".safetensors"));
            counts[name] = list.Count;
        }
        return counts;
    }

    /// <summary>The folder, under the application's own, that the packed tool carries the demo in: the bundled model,
    /// its data and the selection file, laid out as in the repository (<c>models/tiny-instruct</c>, <c>models/data</c>,
    /// <c>docs/evaluation/selection.json</c>), so data beside the model and the selection two folders up are found the
    /// same way in both (OnnxSteer.Cli.csproj puts them there on publish and pack, not in a checkout's build output).</summary>
    public const string ToolDemoFolder = "demo";

    /// <summary>Finds the bundled model: <c>models/tiny-instruct</c> in a checkout (above the application's folder or
    /// the current folder), else the copy the installed tool carries under <see cref="ToolDemoFolder"/>.</summary>
    /// <exception cref="OnnxSteerException">(NotFound) neither; one line naming where it looked and what to do.</exception>
    public static string FindBundledModel() =>
        ResolveModel(null, [AppContext.BaseDirectory, Environment.CurrentDirectory], Path.Combine(AppContext.BaseDirectory, ToolDemoFolder));

    /// <summary>The demo's model folder: <paramref name="explicitModel"/> (<c>--model</c>) as given, else a checkout's
    /// <c>models/tiny-instruct</c> above any of <paramref name="checkoutStarts"/>, else the copy in
    /// <paramref name="toolDemoFolder"/>. The checkout wins over the packed copy so that a tool run inside a clone shows
    /// that clone's (possibly retrained) model.</summary>
    /// <exception cref="OnnxSteerException">(NotFound) an explicit model folder that does not exist, or no explicit model
    /// and neither place has one.</exception>
    internal static string ResolveModel(string? explicitModel, IReadOnlyList<string> checkoutStarts, string toolDemoFolder)
    {
        if (explicitModel is not null)
            return Directory.Exists(explicitModel) ? Path.GetFullPath(explicitModel)
                : throw new OnnxSteerException(ErrorKind.NotFound, $"the model folder '{explicitModel}' does not exist.");
        foreach (var start in checkoutStarts)
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
                if (IsModelFolder(Path.Combine(dir.FullName, "models", "tiny-instruct")) is { } found) return found;
        if (IsModelFolder(Path.Combine(toolDemoFolder, "models", "tiny-instruct")) is { } packed) return packed;
        throw new OnnxSteerException(ErrorKind.NotFound,
            $"the demo model was not found: no models/tiny-instruct above {string.Join(" or ", checkoutStarts.Select(s => $"'{s}'"))} "
            + $"and none packed in '{toolDemoFolder}'; pass --model DIR (with --data-dir and --selection), or run inside a clone of the repository.");
    }

    private static string? IsModelFolder(string candidate) =>
        File.Exists(Path.Combine(candidate, "genai_config.json")) || File.Exists(Path.Combine(candidate, "model.onnx")) ? Path.GetFullPath(candidate) : null;

    private static string OneLine(string text) => text.ReplaceLineEndings(" ⏎ ").Trim();
}
