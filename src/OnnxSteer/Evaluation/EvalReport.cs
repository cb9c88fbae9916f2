using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace OnnxSteer.Evaluation;

/// <summary>Scores of one group of responses in one setting.</summary>
public sealed record ScoreSummary
{
    /// <summary>Number of prompts.</summary>
    public required int Count { get; init; }
    /// <summary>IFEval loose accuracy (share of instructions followed under the loose scoring).</summary>
    public required double Loose { get; init; }
    /// <summary>IFEval strict accuracy.</summary>
    public required double Strict { get; init; }
    /// <summary>Prompt-level loose accuracy (every instruction of the prompt followed); for a one-instruction row it equals <see cref="Loose"/>.</summary>
    public double PromptLoose { get; init; }
    /// <summary>Prompt-level strict accuracy.</summary>
    public double PromptStrict { get; init; }
    /// <summary>95% Wilson interval of <see cref="Loose"/>.</summary>
    public double LooseLow { get; init; }
    /// <summary>Upper end of <see cref="LooseLow"/>'s interval.</summary>
    public double LooseHigh { get; init; } = 1;
    /// <summary>95% Wilson interval of <see cref="PromptLoose"/>.</summary>
    public double PromptLooseLow { get; init; }
    /// <summary>Upper end of <see cref="PromptLooseLow"/>'s interval.</summary>
    public double PromptLooseHigh { get; init; } = 1;
    /// <summary>The IFEval loose accuracy alone, counting degenerate and off-topic answers that satisfy the check
    /// (the scoring before the quality guard applied to <c>eval</c>; kept for comparison).</summary>
    public double RawLoose { get; init; }
    /// <summary>Share of responses the <see cref="QualityGuard"/> calls degenerate (the quality figure).</summary>
    public required double DegenerateRate { get; init; }
    /// <summary>Topic fidelity: share of responses that name the prompt's topic (<see cref="TopicFidelity"/>).</summary>
    public double OnTopicRate { get; init; }
    /// <summary>The model's own perplexity of its responses, when the generator reports log-probabilities.</summary>
    public double? Perplexity { get; init; }
}

/// <summary>One scored response.</summary>
public sealed record ItemResult
{
    public required string Key { get; init; }
    public required string Setting { get; init; }
    public required IReadOnlyList<string> Instructions { get; init; }
    /// <summary>Each instruction's arguments (kwargs), in the order of <see cref="Instructions"/>.</summary>
    public IReadOnlyList<IReadOnlyDictionary<string, object>> Args { get; init; } = [];
    public required string Prompt { get; init; }
    public required IReadOnlyList<string> Steering { get; init; }
    public required string Response { get; init; }
    public required IReadOnlyList<bool> Strict { get; init; }
    public required IReadOnlyList<bool> Loose { get; init; }
    public required bool Degenerate { get; init; }
    /// <summary>Whether the response names the prompt's topic.</summary>
    public bool OnTopic { get; init; } = true;
    /// <summary>The IFEval loose checks alone (before the quality guard and topic fidelity).</summary>
    public IReadOnlyList<bool> RawLoose { get; init; } = [];
    /// <summary>Whether the prompt's instruction text is a phrasing held out of the extraction pairs.</summary>
    public bool HeldOutPhrasing { get; init; }
    /// <summary>Null for the evaluation proper; <see cref="Evaluator.RandomControlKey"/> for the random-direction control.</summary>
    public string? Control { get; init; }
    public double? MeanLogProb { get; init; }
}

/// <summary>One row of the report: an instruction id, scored over the prompts that carry it.</summary>
public sealed record EvalRow
{
    public required string Instruction { get; init; }
    public required int Count { get; init; }
    /// <summary>How the instruction was steered ("project lowercase@3", "none").</summary>
    public required string Steering { get; init; }
    /// <summary>Setting key → scores.</summary>
    public required IReadOnlyDictionary<string, ScoreSummary> Scores { get; init; }
    /// <summary>Null for the instruction's own row; "random direction" (steered columns steered along a random
    /// direction of the same norm) or "held-out phrasings" (only prompts phrased as in none of the pairs).</summary>
    public string? Variant { get; init; }
    /// <summary>Steered setting key → McNemar's exact p-value against its unsteered setting, paired by prompt.</summary>
    public IReadOnlyDictionary<string, double> PValues { get; init; } = new Dictionary<string, double>();
}

/// <summary>The result of an evaluation: per instruction and overall, in each setting; Markdown, JSON and SVG views.</summary>
public sealed record EvalReport
{
    /// <summary>Setting keys in column order.</summary>
    public required IReadOnlyList<string> Settings { get; init; }
    public required IReadOnlyList<EvalRow> Rows { get; init; }
    /// <summary>Setting key → scores over every prompt (prompt- and instruction-level).</summary>
    public required IReadOnlyDictionary<string, ScoreSummary> Overall { get; init; }
    /// <summary>Steered setting key → McNemar's exact p-value against its unsteered setting over every prompt (prompt level).</summary>
    public IReadOnlyDictionary<string, double> OverallPValues { get; init; } = new Dictionary<string, double>();
    /// <summary>Every response (empty when responses were not kept).</summary>
    public required IReadOnlyList<ItemResult> Items { get; init; }
    /// <summary>The generation engine that produced the responses ("ort" or "genai"), when known.</summary>
    public string? Engine { get; init; }

    /// <summary>The <see cref="EvalRow.Variant"/> of random-direction control rows.</summary>
    public const string RandomVariant = "random direction";
    /// <summary>The <see cref="EvalRow.Variant"/> of held-out-phrasing rows.</summary>
    public const string HeldOutVariant = "held-out phrasings";

    internal static EvalReport Build(IReadOnlyList<EvalItem> items, IReadOnlyList<EvalSetting> settings, IReadOnlyList<ItemResult> results,
        Func<string, string> describeSteering, bool keepResponses)
    {
        var present = items.SelectMany(i => i.Checks.Select(c => c.Id)).Distinct().ToHashSet();
        var ids = InstructionIds.All.Where(present.Contains).ToList();
        var main = results.Where(r => r.Control is null).ToList();
        var random = results.Where(r => r.Control == Evaluator.RandomControlKey).ToList();
        var rows = new List<EvalRow>();
        foreach (var id in ids)
        {
            rows.Add(MakeRow(id, null, describeSteering(id), settings, main));
            // Control row: the unsteered columns are the same prompts' own unsteered answers; the steered columns the random direction's.
            var controlled = random.Where(r => r.Instructions.Contains(id)).Select(r => r.Key).ToHashSet();
            if (controlled.Count > 0)
                rows.Add(MakeRow(id, RandomVariant, "random direction, same norm/layer/mode", settings,
                    [.. main.Where(r => !EvalSettings.Parse(r.Setting).IsSteered() && controlled.Contains(r.Key)), .. random.Where(r => controlled.Contains(r.Key))]));
            var heldOut = main.Where(r => r.HeldOutPhrasing && r.Instructions.Contains(id)).ToList();
            if (heldOut.Count > 0) rows.Add(MakeRow(id, HeldOutVariant, describeSteering(id), settings, heldOut));
        }
        return new EvalReport
        {
            Settings = [.. settings.Select(s => s.Key())],
            Rows = rows,
            Overall = settings.ToDictionary(s => s.Key(), s => Summarise(main.Where(r => r.Setting == s.Key()), null)),
            OverallPValues = PValues(settings, main, null),
            Items = keepResponses ? results : [],
        };
    }

    private static EvalRow MakeRow(string id, string? variant, string steering, IReadOnlyList<EvalSetting> settings, IReadOnlyList<ItemResult> results) => new()
    {
        Instruction = id,
        Variant = variant,
        Count = results.Where(r => r.Instructions.Contains(id)).Select(r => r.Key).Distinct().Count(),
        Steering = steering,
        Scores = settings.ToDictionary(s => s.Key(), s => Summarise(results.Where(r => r.Setting == s.Key()), id)),
        PValues = PValues(settings, results, id),
    };

    /// <summary>McNemar's exact test of each steered setting against its unsteered counterpart, paired by prompt key;
    /// a prompt counts as passed when it follows every instruction considered (<paramref name="id"/>, or all).</summary>
    internal static IReadOnlyDictionary<string, double> PValues(IReadOnlyList<EvalSetting> settings, IReadOnlyList<ItemResult> results, string? id)
    {
        var p = new Dictionary<string, double>();
        foreach (var steered in settings.Where(s => s.IsSteered()))
        {
            var plain = steered == EvalSetting.NoInstructionSteered ? EvalSetting.NoInstruction : EvalSetting.WithInstruction;
            if (!settings.Contains(plain)) continue;
            Dictionary<string, bool> Outcomes(EvalSetting s) => results.Where(r => r.Setting == s.Key())
                .Select(r => (r.Key, Idx: Enumerable.Range(0, r.Instructions.Count).Where(i => id is null || r.Instructions[i] == id).ToList(), r))
                .Where(x => x.Idx.Count > 0)
                .ToDictionary(x => x.Key, x => x.Idx.All(i => x.r.Loose[i]));
            var a = Outcomes(plain);
            var b = Outcomes(steered);
            var keys = a.Keys.Where(b.ContainsKey).ToList();
            p[steered.Key()] = Statistics.McNemarExact([.. keys.Select(k => a[k])], [.. keys.Select(k => b[k])]);
        }
        return p;
    }

    /// <summary>Scores of results; with <paramref name="id"/>, only that instruction of the prompts that carry it.</summary>
    internal static ScoreSummary Summarise(IEnumerable<ItemResult> results, string? id)
    {
        var loose = new List<bool>();
        var strict = new List<bool>();
        var promptLoose = new List<bool>();
        var promptStrict = new List<bool>();
        var degenerate = new List<bool>();
        var onTopic = new List<bool>();
        var raw = new List<bool>();
        var logProbs = new List<double>();
        var allHaveLogProbs = true;
        foreach (var r in results)
        {
            var indices = Enumerable.Range(0, r.Instructions.Count).Where(i => id is null || r.Instructions[i] == id).ToList();
            if (indices.Count == 0) continue;
            loose.AddRange(indices.Select(i => r.Loose[i]));
            strict.AddRange(indices.Select(i => r.Strict[i]));
            promptLoose.Add(indices.All(i => r.Loose[i]));
            promptStrict.Add(indices.All(i => r.Strict[i]));
            degenerate.Add(r.Degenerate);
            onTopic.Add(r.OnTopic);
            if (r.RawLoose.Count == r.Instructions.Count) raw.AddRange(indices.Select(i => r.RawLoose[i]));
            if (r.MeanLogProb is { } lp) logProbs.Add(lp); else allHaveLogProbs = false;
        }
        static double Mean(List<bool> xs) => xs.Count == 0 ? 0 : xs.Count(x => x) / (double)xs.Count;
        var looseCi = Statistics.Wilson(loose.Count(x => x), loose.Count);
        var promptCi = Statistics.Wilson(promptLoose.Count(x => x), promptLoose.Count);
        return new ScoreSummary
        {
            LooseLow = looseCi.Low,
            LooseHigh = looseCi.High,
            PromptLooseLow = promptCi.Low,
            PromptLooseHigh = promptCi.High,
            RawLoose = Mean(raw),
            OnTopicRate = Mean(onTopic),
            Count = degenerate.Count,
            Loose = Mean(loose),
            Strict = Mean(strict),
            PromptLoose = Mean(promptLoose),
            PromptStrict = Mean(promptStrict),
            DegenerateRate = Mean(degenerate),
            Perplexity = allHaveLogProbs && logProbs.Count > 0 ? Math.Exp(-logProbs.Average()) : null,
        };
    }

    internal static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>The whole report as indented JSON (snake_case names).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, JsonOptions);

    /// <summary>A Markdown table: one row per instruction (plus its random-direction and held-out-phrasing rows) and
    /// the overall rows. Cells are loose accuracy under the quality guard (degenerate and off-topic answers fail),
    /// strict in parentheses where it differs, and the 95% Wilson interval; a p column after each steered setting
    /// (McNemar's exact test against the same prompts unsteered); topic fidelity per setting in the last column.</summary>
    public string ToMarkdown()
    {
        var settings = Settings.Select(k => EvalSettings.Parse(k)).ToList();
        var sb = new StringBuilder();
        sb.Append("| instruction | n | steering |");
        foreach (var s in settings) sb.Append(' ').Append(s.Label()).Append(" |").Append(HasP(s, settings) ? " p |" : "");
        sb.Append(" on topic (").Append(string.Join(" / ", settings.Select(s => s.Label()))).AppendLine(") |");
        sb.Append("|---|--:|---|");
        foreach (var s in settings) sb.Append("--:|").Append(HasP(s, settings) ? "--:|" : "");
        sb.AppendLine("---|");
        foreach (var row in Rows)
        {
            var name = row.Variant is null ? row.Instruction : $"&nbsp;&nbsp;{ShortName(row.Instruction)}, {row.Variant}";
            sb.Append($"| {name} | {row.Count} | {row.Steering} |");
            foreach (var s in settings)
            {
                var sc = row.Scores[s.Key()];
                sb.Append(' ').Append(Cell(sc.Loose, sc.Strict, sc.LooseLow, sc.LooseHigh)).Append(" |");
                if (HasP(s, settings)) sb.Append(' ').Append(P(row.PValues, s)).Append(" |");
            }
            sb.Append(' ').Append(string.Join(" / ", settings.Select(s => F(row.Scores[s.Key()].OnTopicRate)))).AppendLine(" |");
        }
        var n = Overall.Values.FirstOrDefault()?.Count ?? 0;
        sb.Append($"| **all, prompt-level** | {n} | |");
        foreach (var s in settings)
        {
            var sc = Overall[s.Key()];
            sb.Append(' ').Append(Cell(sc.PromptLoose, sc.PromptStrict, sc.PromptLooseLow, sc.PromptLooseHigh)).Append(" |");
            if (HasP(s, settings)) sb.Append(' ').Append(P(OverallPValues, s)).Append(" |");
        }
        sb.Append(' ').Append(string.Join(" / ", settings.Select(s => F(Overall[s.Key()].OnTopicRate)))).AppendLine(" |");
        sb.Append($"| **all, instruction-level** | {n} | |");
        foreach (var s in settings)
        {
            var sc = Overall[s.Key()];
            sb.Append(' ').Append(Cell(sc.Loose, sc.Strict, sc.LooseLow, sc.LooseHigh)).Append(" |").Append(HasP(s, settings) ? " |" : "");
        }
        sb.AppendLine(" |");
        Line("all, instruction-level, previous scoring (IFEval check alone)", s => F(Overall[s.Key()].RawLoose));
        Line("degenerate responses", s => F(Overall[s.Key()].DegenerateRate));
        if (settings.All(s => Overall[s.Key()].Perplexity is not null))
            Line("perplexity of responses", s => Overall[s.Key()].Perplexity!.Value.ToString("0.00", CultureInfo.InvariantCulture));
        sb.AppendLine();
        sb.AppendLine("Cells: IFEval loose accuracy counting degenerate and off-topic answers as failures (and titles that do not name the topic), strict in parentheses where it differs, [95% Wilson interval]. "
            + "p: McNemar's exact test, steered against the same prompts unsteered. On topic: share of answers that name the prompt's topic. "
            + "Degenerate: blank, a 4-word phrase repeated 3+ times, or a character loop (QualityGuard). "
            + "Random direction: the same prompts steered along a random direction of the same norm, layer and mode (fixed seed). "
            + "Held-out phrasings: only prompts whose instruction is phrased as in none of the extraction pairs.");
        return sb.ToString();

        void Line(string label, Func<EvalSetting, string> value)
        {
            sb.Append($"| {label} | | |");
            foreach (var s in settings) sb.Append(' ').Append(value(s)).Append(" |").Append(HasP(s, settings) ? " |" : "");
            sb.AppendLine(" |");
        }
    }

    private static bool HasP(EvalSetting s, IReadOnlyList<EvalSetting> settings) =>
        s.IsSteered() && settings.Contains(s == EvalSetting.NoInstructionSteered ? EvalSetting.NoInstruction : EvalSetting.WithInstruction);

    private static string P(IReadOnlyDictionary<string, double> p, EvalSetting s) =>
        p.TryGetValue(s.Key(), out var v) ? (v < 0.001 ? "<0.001" : v.ToString("0.000", CultureInfo.InvariantCulture)) : "";

    private static string Cell(double loose, double strict, double low, double high) =>
        $"{Cell(loose, strict)} [{F(low)}, {F(high)}]";

    private static string Cell(double loose, double strict) =>
        Math.Abs(loose - strict) < 1e-9 ? F(loose) : $"{F(loose)} ({F(strict)})";

    internal static string F(double v) => v.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>A grouped bar chart (SVG) of loose accuracy per instruction and setting.</summary>
    public string ToSvg(string title)
    {
        var groups = Rows.Where(r => r.Variant is null).Select(r => ShortName(r.Instruction)).Append("all (prompt)").ToList();
        var series = Settings.Select(k => EvalSettings.Parse(k).Label()).ToList();
        var main = Rows.Where(r => r.Variant is null).ToList();
        var values = Settings.Select(k => main.Select(r => r.Scores[k].Loose).Append(Overall[k].PromptLoose).ToArray()).ToArray();
        return SvgCharts.GroupedBars(title, groups, series, values);
    }

    /// <summary>The part of an instruction id after the colon ("english_lowercase").</summary>
    public static string ShortName(string id) => id.Contains(':') ? id[(id.IndexOf(':') + 1)..] : id;
}
