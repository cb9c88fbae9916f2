using OnnxSteer.Runtime;

namespace OnnxSteer.Evaluation;

/// <summary>Generation settings shared by <c>eval</c>, <c>sweep</c> and <c>demo</c>.</summary>
public sealed record EvalGenerationOptions
{
    /// <summary>Maximum new tokens per response (default 128).</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>Prompts generated together (default 8).</summary>
    public int BatchSize { get; init; } = 8;

    /// <summary>Wrap prompts in the model's chat template (default true, as extraction does).</summary>
    public bool UseChatTemplate { get; init; } = true;

    /// <summary>ONNX Runtime intra-op threads (null: ONNX Runtime's default).</summary>
    public int? Threads { get; init; }

    /// <summary>The generation engine (default ORT; see <see cref="SteeredGenerator.Load"/>).</summary>
    public GenerationEngine Engine { get; init; } = GenerationEngine.Ort;
}

/// <summary>What <c>onnxsteer eval</c> runs.</summary>
public sealed record EvalJob
{
    /// <summary>The patched model folder.</summary>
    public required string ModelDirectory { get; init; }
    /// <summary>The evaluation .jsonl.</summary>
    public required string DataPath { get; init; }
    /// <summary>A vector file or a folder of them.</summary>
    public required string VectorsPath { get; init; }
    /// <summary>A selection file (from <c>sweep</c>); null for <see cref="EvalWorkflow.DefaultSelection"/>.</summary>
    public string? SelectionPath { get; init; }
    /// <summary>Settings to run.</summary>
    public IReadOnlyList<EvalSetting> Settings { get; init; } = EvalSettings.All;
    /// <summary>Use only the first N prompts of each instruction combination (null: all).</summary>
    public int? LimitPerInstruction { get; init; }
    /// <summary>Generation settings.</summary>
    public EvalGenerationOptions Generation { get; init; } = new();
    /// <summary>Seed of the random-direction control (<see cref="Evaluation.RandomControl"/>); null runs no control.</summary>
    public int? RandomControlSeed { get; init; } = RandomControl.DefaultSeed;
    /// <summary>A <c>splits.json</c> with <c>held_out_phrasings</c>; null looks for one in the data file's folder and
    /// the folder above it (<c>models/data/splits.json</c> for <c>models/data/eval/test.jsonl</c>).</summary>
    public string? SplitsPath { get; init; }
}

/// <summary>What <c>onnxsteer sweep</c> runs.</summary>
public sealed record SweepJob
{
    /// <summary>The patched model folder.</summary>
    public required string ModelDirectory { get; init; }
    /// <summary>Validation .jsonl (disjoint from the extraction pairs).</summary>
    public required string DataPath { get; init; }
    /// <summary>A vector file or a folder of them.</summary>
    public required string VectorsPath { get; init; }
    /// <summary>Use only the first N prompts of each instruction (null: all).</summary>
    public int? LimitPerInstruction { get; init; }
    /// <summary>Sweep options (layers, weights, objective).</summary>
    public SweepOptions Options { get; init; } = new();
    /// <summary>Generation settings.</summary>
    public EvalGenerationOptions Generation { get; init; } = new();
}

/// <summary>The library side of the <c>eval</c> and <c>sweep</c> verbs: opens the model and vectors, runs, returns the result.</summary>
public static class EvalWorkflow
{
    /// <summary>Runs an evaluation.</summary>
    /// <param name="job">What to run.</param>
    /// <param name="progress">Receives generation progress.</param>
    /// <param name="warn">Receives warnings about the vectors (e.g. computed on another model type).</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    public static async Task<EvalReport> EvaluateAsync(EvalJob job, IProgress<EvalProgress>? progress = null, Action<string>? warn = null,
        CancellationToken cancellationToken = default)
    {
        var items = Limit(EvalDataset.Load(job.DataPath), job.LimitPerInstruction);
        var selection = job.SelectionPath is null ? null : SteeringSelection.Load(job.SelectionPath);
        var heldOut = HeldOutPhrasings.Load(job.SplitsPath ?? HeldOutPhrasings.FindBeside(job.DataPath));
        var backend = ModelBackend.Open(job.ModelDirectory, job.VectorsPath, job.Generation);
        string? controlFolder = null;
        try
        {
            foreach (var w in backend.Warnings) warn?.Invoke(w);
            WarnUnmatched(backend, selection, warn);
            selection ??= DefaultSelection(items, backend.Vectors);
            var ops = items.SelectMany(i => selection.OpsFor(i, backend.Vectors)).Distinct().ToList();
            if (job.RandomControlSeed is { } seed && ops.Count > 0)
            {
                // The control vectors must be in the store the generator resolves names in: reopen on a copy of the
                // vectors with the control file beside them.
                controlFolder = Path.Combine(Path.GetTempPath(), $"onnxsteer-control-{Guid.NewGuid():N}");
                RandomControl.PrepareFolder(job.VectorsPath, ops, controlFolder, seed);
                backend.Dispose();
                backend = ModelBackend.Open(job.ModelDirectory, controlFolder, job.Generation);
            }
            var report = await Evaluator.RunAsync(items, selection, backend.Vectors, backend.Generator,
                new EvalOptions
                {
                    Settings = job.Settings,
                    Progress = progress,
                    RandomControl = controlFolder is null ? null : RandomControl.Map,
                    HeldOutPhrasings = heldOut,
                }, cancellationToken).ConfigureAwait(false);
            return report with { Engine = backend.Model.Engine };
        }
        finally
        {
            backend.Dispose();
            if (controlFolder is not null)
                try { Directory.Delete(controlFolder, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
        }
    }

    /// <summary>Runs a sweep.</summary>
    /// <param name="job">What to run.</param>
    /// <param name="progress">Receives generation progress.</param>
    /// <param name="warn">Receives warnings about the vectors.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    public static async Task<SweepResult> SweepAsync(SweepJob job, IProgress<EvalProgress>? progress = null, Action<string>? warn = null,
        CancellationToken cancellationToken = default)
    {
        var items = Limit(EvalDataset.Load(job.DataPath), job.LimitPerInstruction);
        using var backend = ModelBackend.Open(job.ModelDirectory, job.VectorsPath, job.Generation);
        foreach (var w in backend.Warnings) warn?.Invoke(w);
        WarnUnmatched(backend, null, warn);
        var result = await Sweeper.RunAsync(items, backend.Vectors, backend.Generator, job.Options with { Progress = progress }, cancellationToken).ConfigureAwait(false);
        return result with { Selection = result.Selection with { Data = Path.GetFileName(job.DataPath) }, Engine = backend.Model.Engine };
    }

    private static void WarnUnmatched(ModelBackend backend, SteeringSelection? selection, Action<string>? warn)
    {
        foreach (var name in VectorNaming.Unmatched(backend.VectorFiles.Names, selection))
            warn?.Invoke($"{Path.GetFileName(backend.VectorFiles.FileOf(name))}: vector '{name}' matches no instruction id and is not used; {VectorNaming.Rule}.");
    }

    /// <summary>The first <paramref name="limit"/> items of each instruction combination, in file order.</summary>
    public static IReadOnlyList<EvalItem> Limit(IReadOnlyList<EvalItem> items, int? limit)
    {
        if (limit is not { } n) return items;
        if (n <= 0) throw new OnnxSteerException(ErrorKind.Usage, $"the per-instruction limit must be positive, not {n}.");
        var taken = new Dictionary<string, int>();
        return [.. items.Where(i => (taken[i.IdSignature] = taken.GetValueOrDefault(i.IdSignature) + 1) <= n)];
    }

    /// <summary>The steering used when no selection file is given: for each instruction of the data whose default
    /// vector (<see cref="VectorNaming.DefaultFor"/>) exists, the layer where the vector separates the with- and
    /// without-instruction prompts best (ties: the earlier layer), in the family's mode, with additive weights of
    /// 4 × |u_L| (−4 × |u_L| for word exclusion). A sweep on validation data chooses better; this is the fallback.</summary>
    public static SteeringSelection DefaultSelection(IReadOnlyList<EvalItem> items, IVectorCatalog catalog)
    {
        var entries = new Dictionary<string, SelectionEntry>();
        foreach (var id in items.SelectMany(i => i.Checks.Select(c => c.Id)).Distinct())
        {
            var template = VectorNaming.DefaultFor(id);
            var names = items.SelectMany(i => i.Checks.Where(c => c.Id == id)).SelectMany(c => VectorNaming.Expand(template, c)).Distinct().ToList();
            if (names.Count == 0 || names.Any(n => !catalog.Contains(n)))
            {
                entries[id] = new SelectionEntry { Mode = "none" };
                continue;
            }
            var layers = names.Select(n => catalog.Layers(n)).Aggregate((a, b) => [.. a.Intersect(b)]);
            if (layers.Count == 0)
            {
                entries[id] = new SelectionEntry { Mode = "none" };
                continue;
            }
            var best = layers.OrderByDescending(l => names.Average(n => catalog.Separability(n, l) ?? 0)).ThenBy(l => l).First();
            entries[id] = InstructionIds.FamilyOf(id) switch
            {
                InstructionFamily.Format => new SelectionEntry { Mode = "project", Vector = template, Layer = best },
                InstructionFamily.WordExclusion => new SelectionEntry { Mode = "add", Vector = template, Layer = best, Scale = -4 },
                _ => new SelectionEntry { Mode = "add", Vector = template, Layer = best, Scale = 4 },
            };
        }
        return new SteeringSelection { Objective = "default: most separable layer per vector", Instructions = entries };
    }
}
