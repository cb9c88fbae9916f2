using System.Globalization;
using System.Text;
using System.Text.Json;

namespace OnnxSteer.Evaluation;

/// <summary>What a sweep maximises.</summary>
public enum SweepObjective
{
    /// <summary>Loose accuracy without the instruction in the prompt, steered (the paper's layer selection).</summary>
    WithoutInstruction,
    /// <summary>The mean of the steered accuracies without and with the instruction.</summary>
    Both,
    /// <summary>Accuracy without the instruction, among candidates whose accuracy with the instruction drops at most
    /// <see cref="SweepOptions.MaxWithInstructionDrop"/> below the unsteered one, and whose share of acceptable answers
    /// without the instruction (not degenerate, on topic) drops at most as much (others score 0): steering must not hurt
    /// prompts that already carry the instruction, nor break the answers it is meant to shape.</summary>
    Guarded,
}

/// <summary>Options of <see cref="Sweeper"/>.</summary>
public sealed record SweepOptions
{
    /// <summary>Candidate layers; null for <see cref="Sweeper.CandidateLayers"/> of the model.</summary>
    public OnnxSteer.Contract.LayerSelection? Layers { get; init; }

    /// <summary>Additive weights tried for length and word inclusion, as multiples of |u_L| (default 1, 2, 4, 8).</summary>
    public IReadOnlyList<float> AddScales { get; init; } = [1, 2, 4, 8];

    /// <summary>Weights tried for word exclusion with the subtracted inclusion vector, as multiples of its |u_L| (default
    /// −1, −2, −4, −8). The exclusion vector (<see cref="VectorNaming.ExclusionTemplate"/>) is added with <see cref="AddScales"/>.</summary>
    public IReadOnlyList<float> ExclusionScales { get; init; } = [-1, -2, -4, -8];

    /// <summary>Header-steering scales tried (negated for the subtracted inclusion vector of word exclusion), as multiples of each header position's |u_k|,
    /// for every instruction whose vectors have header positions (<c>extract --header-positions</c>; default 1, 2).</summary>
    public IReadOnlyList<float> HeaderScales { get; init; } = [1, 2];

    /// <summary>What is maximised (default: without the instruction, as the paper does).</summary>
    public SweepObjective Objective { get; init; } = SweepObjective.WithoutInstruction;

    /// <summary>For <see cref="SweepObjective.Guarded"/>: the largest allowed drop of with-instruction accuracy, and of the
    /// share of acceptable answers without the instruction (default 0.1, one prompt in ten).</summary>
    public double MaxWithInstructionDrop { get; init; } = 0.1;

    /// <summary>Degenerate responses score 0.</summary>
    public QualityGuard Quality { get; init; } = new();

    /// <summary>Vector name (template) per instruction id, replacing <see cref="VectorNaming.SweepVectors"/>.</summary>
    public IReadOnlyDictionary<string, string>? VectorNames { get; init; }

    /// <summary>Instruction ids to sweep (default: every id with single-instruction prompts in the data).</summary>
    public IReadOnlyList<string>? Instructions { get; init; }

    /// <summary>Receives progress after each batch.</summary>
    public IProgress<EvalProgress>? Progress { get; init; }
}

/// <summary>One configuration tried for one instruction.</summary>
public sealed record SweepCandidate
{
    public required string Instruction { get; init; }
    /// <summary>"none", "project", "add" or "header".</summary>
    public required string Mode { get; init; }
    public string? Vector { get; init; }
    public int? Layer { get; init; }
    /// <summary>Additive weight as a multiple of |u_L| (add mode only).</summary>
    public float? Scale { get; init; }
    /// <summary>Loose accuracy without the instruction, degenerate responses counted as failures.</summary>
    public required double Accuracy { get; init; }
    /// <summary>Loose accuracy with the instruction (only for the <see cref="SweepObjective.Both"/> and <see cref="SweepObjective.Guarded"/> objectives).</summary>
    public double? AccuracyWithInstruction { get; init; }
    /// <summary>Share of degenerate responses.</summary>
    public required double DegenerateRate { get; init; }
    /// <summary>Share of the responses without the instruction that are acceptable answers: not degenerate and on topic
    /// (<see cref="QualityGuard.Accepts"/>), whatever the instruction's check says.</summary>
    public double AcceptedRate { get; init; }
    /// <summary>The objective's value.</summary>
    public required double Score { get; init; }

    internal SelectionEntry ToEntry(double? baseline) => new()
    {
        Mode = Mode, Vector = Vector, Layer = Layer, Scale = Scale, Score = Math.Round(Score, 4), Baseline = baseline is null ? null : Math.Round(baseline.Value, 4),
    };
}

/// <summary>The outcome of a sweep: every candidate's score and the chosen selection.</summary>
public sealed record SweepResult
{
    public required IReadOnlyList<int> Layers { get; init; }
    public required IReadOnlyList<SweepCandidate> Candidates { get; init; }
    public required SteeringSelection Selection { get; init; }
    /// <summary>Instructions that could not be swept, with the reason (e.g. a missing vector).</summary>
    public required IReadOnlyDictionary<string, string> Skipped { get; init; }
    /// <summary>The generation engine that produced the responses ("ort" or "genai"), when known.</summary>
    public string? Engine { get; init; }

    /// <summary>The whole result as JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, EvalReport.JsonOptions);

    /// <summary>Best score per instruction and layer (over modes and weights) against "none", and the choice.</summary>
    public string ToMarkdown()
    {
        var sb = new StringBuilder();
        sb.Append("| instruction | none |");
        foreach (var l in Layers) sb.Append($" L{l} |");
        sb.AppendLine(" chosen |");
        sb.Append("|---|--:|");
        foreach (var _ in Layers) sb.Append("--:|");
        sb.AppendLine("---|");
        foreach (var (id, entry) in Selection.Instructions)
        {
            var mine = Candidates.Where(c => c.Instruction == id).ToList();
            sb.Append($"| {id} | {EvalReport.F(mine.First(c => c.Mode == "none").Score)} |");
            foreach (var l in Layers)
            {
                var best = Best(mine.Where(c => c.Layer == l));
                sb.Append(best is null ? " – |" : $" {EvalReport.F(best.Score)}{(best.Scale is { } s ? $" ({s.ToString("0.##", CultureInfo.InvariantCulture)}×)" : "")} |");
            }
            sb.AppendLine($" {entry.Describe()} |");
        }
        // A skipped row keeps every column, so the table stays one table; a '|' in the reason would start a new cell.
        foreach (var (id, why) in Skipped)
            sb.AppendLine($"| {id} | – |{string.Concat(Layers.Select(_ => " – |"))} skipped: {why.Replace("|", "\\|", StringComparison.Ordinal)} |");
        return sb.ToString();
    }

    /// <summary>Accuracy against layer per instruction (best over modes and weights), with the unsteered score dashed.</summary>
    public string ToSvg(string title)
    {
        var ids = Selection.Instructions.Keys.ToList();
        var series = ids.ToDictionary(EvalReport.ShortName, id =>
            Layers.Select(l => Best(Candidates.Where(c => c.Instruction == id && c.Layer == l))?.Score).ToArray());
        var baselines = ids.ToDictionary(EvalReport.ShortName, id => Candidates.First(c => c.Instruction == id && c.Mode == "none").Score);
        return SvgCharts.Lines(title, Layers, series, baselines);
    }

    // Candidates are ordered "none" first, then by layer, then (per layer) by vector and mode, then by |weight| (Plan):
    // the first maximum wins, so ties go to no steering, then to the earlier layer.
    internal static SweepCandidate? Best(IEnumerable<SweepCandidate> candidates)
    {
        SweepCandidate? best = null;
        foreach (var c in candidates)
            if (best is null || c.Score > best.Score + 1e-9) best = c;
        return best;
    }
}

/// <summary>Chooses, per instruction, the layer, mode and weight on validation prompts (the paper's procedure,
/// with validation prompts disjoint from the extraction pairs and a quality guard).</summary>
internal static class Sweeper
{
    /// <summary>The paper's candidates: every other layer from n_layers/5 to the last. Models of 8 layers or fewer
    /// try every layer, since skipping half of six layers leaves too little to choose from.</summary>
    public static IReadOnlyList<int> CandidateLayers(int numLayers)
    {
        if (numLayers <= 0) throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"a model with {numLayers} layers has nothing to sweep.");
        if (numLayers <= 8) return [.. Enumerable.Range(0, numLayers)];
        var layers = new List<int>();
        for (var l = numLayers / 5; l < numLayers; l += 2) layers.Add(l);
        if (layers[^1] != numLayers - 1) layers.Add(numLayers - 1);
        return layers;
    }

    /// <summary>Runs the sweep on <paramref name="items"/> (validation prompts with one instruction each; others are ignored).</summary>
    public static async Task<SweepResult> RunAsync(IReadOnlyList<EvalItem> items, IVectorCatalog catalog, IResponseGenerator generator,
        SweepOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new SweepOptions();
        var layers = options.Layers?.Resolve(generator.NumLayers) ?? CandidateLayers(generator.NumLayers);
        var single = items.Where(i => i.Checks.Count == 1).ToList();
        var ids = (options.Instructions ?? InstructionIds.All.Where(id => single.Any(i => i.Checks[0].Id == id)).ToList()).ToList();
        var skipped = new Dictionary<string, string>();
        var plans = Plan(single, ids, layers, catalog, options, skipped);

        var both = options.Objective != SweepObjective.WithoutInstruction;
        var requests = new List<(int Plan, EvalItem Item, EvalSetting Setting, EvalRequest Request)>();
        for (var p = 0; p < plans.Count; p++)
            foreach (var item in plans[p].Items)
            {
                var ops = plans[p].Entry.OpsFor(item.Checks[0], catalog);
                requests.Add((p, item, EvalSetting.NoInstruction, new EvalRequest(item.Prompt, ops)));
                if (both) requests.Add((p, item, EvalSetting.WithInstruction, new EvalRequest(item.PromptWithInstruction, ops)));
            }
        var responses = await GenerationPool.RunAsync(requests.Select(r => r.Request), generator, options.Progress, cancellationToken).ConfigureAwait(false);

        var candidates = Score(plans, requests, responses, options, both);

        var selection = new Dictionary<string, SelectionEntry>();
        foreach (var id in ids.Where(id => candidates.Any(c => c.Instruction == id)))
        {
            var mine = candidates.Where(c => c.Instruction == id).ToList();
            var best = SweepResult.Best(mine)!;
            selection[id] = best.ToEntry(mine[0].Score);
        }
        return new SweepResult
        {
            Layers = layers,
            Candidates = candidates,
            Selection = new SteeringSelection
            {
                Objective = options.Objective switch
                {
                    SweepObjective.Both => "mean of loose accuracy without and with the instruction, degenerate = 0",
                    SweepObjective.Guarded => $"loose accuracy without the instruction, degenerate = 0, with-instruction accuracy and acceptable (on-topic, non-degenerate) answers at most {options.MaxWithInstructionDrop:0.##} below unsteered",
                    _ => "loose accuracy without the instruction, degenerate = 0",
                },
                Instructions = selection,
            },
            Skipped = skipped,
        };
    }

    /// <summary>What to score, per instruction: "none" first (the baseline), then each layer the vectors cover with the
    /// family's modes and scales. Instructions without prompts or vectors go to <paramref name="skipped"/>.</summary>
    private static List<(SweepCandidate Template, SelectionEntry Entry, List<EvalItem> Items)> Plan(List<EvalItem> single, List<string> ids,
        IReadOnlyList<int> layers, IVectorCatalog catalog, SweepOptions options, Dictionary<string, string> skipped)
    {
        var plans = new List<(SweepCandidate Template, SelectionEntry Entry, List<EvalItem> Items)>();
        foreach (var id in ids)
        {
            var mine = single.Where(i => i.Checks[0].Id == id).ToList();
            if (mine.Count == 0) { skipped[id] = "no single-instruction prompts in the data"; continue; }
            plans.Add((new SweepCandidate { Instruction = id, Mode = "none", Accuracy = 0, DegenerateRate = 0, Score = 0 }, new SelectionEntry { Mode = "none" }, mine));
            var family = InstructionIds.FamilyOf(id);
            var usable = VectorNaming.SweepVectors(id, options.VectorNames?.GetValueOrDefault(id))
                .Select(a => (a.Template, a.Sign, Names: mine.SelectMany(i => VectorNaming.Expand(a.Template, i.Checks[0])).Distinct().ToList()))
                .ToList();
            var present = usable.Where(u => u.Names.All(catalog.Contains)).ToList();
            if (present.Count == 0)
            {
                var missing = usable[0].Names.Where(n => !catalog.Contains(n)).ToList();
                skipped[id] = $"no vector named {string.Join(", ", missing.Take(5))}{(missing.Count > 5 ? ", ..." : "")}; only \"none\" was scored";
                continue;
            }
            foreach (var layer in layers)
                foreach (var (vector, sign, names) in present)
                {
                    if (names.Any(n => !catalog.Layers(n).Contains(layer))) continue;
                    if (family == InstructionFamily.Format)
                        plans.Add((new SweepCandidate { Instruction = id, Mode = "project", Vector = vector, Layer = layer, Accuracy = 0, DegenerateRate = 0, Score = 0 },
                            new SelectionEntry { Mode = "project", Vector = vector, Layer = layer }, mine));
                    else
                        foreach (var scale in (sign < 0 ? options.ExclusionScales : options.AddScales).OrderBy(Math.Abs))
                            plans.Add((new SweepCandidate { Instruction = id, Mode = "add", Vector = vector, Layer = layer, Scale = scale, Accuracy = 0, DegenerateRate = 0, Score = 0 },
                                new SelectionEntry { Mode = "add", Vector = vector, Layer = layer, Scale = scale }, mine));
                    // Header steering, for any family, where every vector has header positions at this layer (extract
                    // --header-positions); a subtracted vector (the inclusion vector for exclusion) is subtracted here too.
                    if (names.All(n => catalog.Contains(OnnxSteer.Contract.HeaderVectors.Name(n, 2))
                        && catalog.Layers(OnnxSteer.Contract.HeaderVectors.Name(n, 2)).Contains(layer)))
                        foreach (var scale in options.HeaderScales.OrderBy(Math.Abs).Select(s => sign * s))
                            plans.Add((new SweepCandidate { Instruction = id, Mode = "header", Vector = vector, Layer = layer, Scale = scale, Accuracy = 0, DegenerateRate = 0, Score = 0 },
                                new SelectionEntry { Mode = "header", Vector = vector, Layer = layer, Scale = scale }, mine));
                }
        }
        return plans;
    }

    /// <summary>Each plan's accuracy (without and, when the objective needs it, with the instruction), degenerate rate and
    /// score under the objective.</summary>
    private static List<SweepCandidate> Score(List<(SweepCandidate Template, SelectionEntry Entry, List<EvalItem> Items)> plans,
        List<(int Plan, EvalItem Item, EvalSetting Setting, EvalRequest Request)> requests, IReadOnlyDictionary<string, GeneratedResponse> responses,
        SweepOptions options, bool both)
    {
        var candidates = new List<SweepCandidate>();
        double? baselineWith = null;
        double baselineAccepted = 0;
        for (var p = 0; p < plans.Count; p++)
        {
            var scored = requests.Where(r => r.Plan == p).Select(r =>
            {
                var response = responses[r.Request.CacheKey].Text;
                var degenerate = options.Quality.IsDegenerate(response);
                return (r.Setting, Pass: options.Quality.Passes(r.Item, r.Item.Checks[0], response), Degenerate: degenerate,
                    Accepted: options.Quality.Accepts(r.Item, response));
            }).ToList();
            var without = scored.Where(s => s.Setting == EvalSetting.NoInstruction).ToList();
            var with = scored.Where(s => s.Setting == EvalSetting.WithInstruction).ToList();
            var acc = without.Count(s => s.Pass) / (double)without.Count;
            double? accWith = both ? with.Count(s => s.Pass) / (double)with.Count : null;
            var accepted = without.Count(s => s.Accepted) / (double)without.Count;
            if (plans[p].Entry.Mode == "none") (baselineWith, baselineAccepted) = (accWith, accepted); // "none" comes first for each instruction
            var score = options.Objective switch
            {
                SweepObjective.Both => (acc + accWith!.Value) / 2,
                SweepObjective.Guarded => accWith!.Value >= baselineWith!.Value - options.MaxWithInstructionDrop - 1e-9
                    && accepted >= baselineAccepted - options.MaxWithInstructionDrop - 1e-9 ? acc : 0,
                _ => acc,
            };
            candidates.Add(plans[p].Template with
            {
                Accuracy = acc,
                AccuracyWithInstruction = accWith,
                DegenerateRate = scored.Count(s => s.Degenerate) / (double)scored.Count,
                AcceptedRate = accepted,
                Score = score,
            });
        }
        return candidates;
    }
}
