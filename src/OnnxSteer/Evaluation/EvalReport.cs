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
    /// <summary>Share of responses the <see cref="QualityGuard"/> calls degenerate (the quality figure).</summary>
    public required double DegenerateRate { get; init; }
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
}

/// <summary>The result of an evaluation: per instruction and overall, in each setting; Markdown, JSON and SVG views.</summary>
public sealed record EvalReport
{
    /// <summary>Setting keys in column order.</summary>
    public required IReadOnlyList<string> Settings { get; init; }
    public required IReadOnlyList<EvalRow> Rows { get; init; }
    /// <summary>Setting key → scores over every prompt (prompt- and instruction-level).</summary>
    public required IReadOnlyDictionary<string, ScoreSummary> Overall { get; init; }
    /// <summary>Every response (empty when responses were not kept).</summary>
    public required IReadOnlyList<ItemResult> Items { get; init; }
    /// <summary>The generation engine that produced the responses ("ort" or "genai"), when known.</summary>
    public string? Engine { get; init; }

    internal static EvalReport Build(IReadOnlyList<EvalItem> items, IReadOnlyList<EvalSetting> settings, IReadOnlyList<ItemResult> results,
        Func<string, string> describeSteering, bool keepResponses)
    {
        var present = items.SelectMany(i => i.Checks.Select(c => c.Id)).Distinct().ToHashSet();
        var ids = InstructionIds.All.Where(present.Contains).ToList();
        var rows = ids.Select(id => new EvalRow
        {
            Instruction = id,
            Count = items.Count(i => i.Checks.Any(c => c.Id == id)),
            Steering = describeSteering(id),
            Scores = settings.ToDictionary(s => s.Key(), s => Summarise(results.Where(r => r.Setting == s.Key()), id)),
        }).ToList();
        return new EvalReport
        {
            Settings = [.. settings.Select(s => s.Key())],
            Rows = rows,
            Overall = settings.ToDictionary(s => s.Key(), s => Summarise(results.Where(r => r.Setting == s.Key()), null)),
            Items = keepResponses ? results : [],
        };
    }

    /// <summary>Scores of results; with <paramref name="id"/>, only that instruction of the prompts that carry it.</summary>
    internal static ScoreSummary Summarise(IEnumerable<ItemResult> results, string? id)
    {
        var loose = new List<bool>();
        var strict = new List<bool>();
        var promptLoose = new List<bool>();
        var promptStrict = new List<bool>();
        var degenerate = new List<bool>();
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
            if (r.MeanLogProb is { } lp) logProbs.Add(lp); else allHaveLogProbs = false;
        }
        static double Mean(List<bool> xs) => xs.Count == 0 ? 0 : xs.Count(x => x) / (double)xs.Count;
        return new ScoreSummary
        {
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

    /// <summary>A Markdown table: one row per instruction plus the overall rows; cells are loose accuracy, with
    /// strict accuracy in parentheses where it differs; then the quality figure per setting.</summary>
    public string ToMarkdown()
    {
        var settings = Settings.Select(k => EvalSettings.Parse(k)).ToList();
        var sb = new StringBuilder();
        sb.Append("| instruction | n | steering |");
        foreach (var s in settings) sb.Append(' ').Append(s.Label()).Append(" |");
        sb.AppendLine();
        sb.Append("|---|--:|---|");
        foreach (var _ in settings) sb.Append("--:|");
        sb.AppendLine();
        foreach (var row in Rows)
        {
            sb.Append($"| {row.Instruction} | {row.Count} | {row.Steering} |");
            foreach (var s in settings) sb.Append(' ').Append(Cell(row.Scores[s.Key()].Loose, row.Scores[s.Key()].Strict)).Append(" |");
            sb.AppendLine();
        }
        var n = Overall.Values.FirstOrDefault()?.Count ?? 0;
        sb.Append($"| **all, prompt-level** | {n} | |");
        foreach (var s in settings) sb.Append(' ').Append(Cell(Overall[s.Key()].PromptLoose, Overall[s.Key()].PromptStrict)).Append(" |");
        sb.AppendLine();
        sb.Append($"| **all, instruction-level** | {n} | |");
        foreach (var s in settings) sb.Append(' ').Append(Cell(Overall[s.Key()].Loose, Overall[s.Key()].Strict)).Append(" |");
        sb.AppendLine();
        sb.Append("| degenerate responses | | |");
        foreach (var s in settings) sb.Append(' ').Append(F(Overall[s.Key()].DegenerateRate)).Append(" |");
        sb.AppendLine();
        if (settings.All(s => Overall[s.Key()].Perplexity is not null))
        {
            sb.Append("| perplexity of responses | | |");
            foreach (var s in settings) sb.Append(' ').Append(Overall[s.Key()].Perplexity!.Value.ToString("0.00", CultureInfo.InvariantCulture)).Append(" |");
            sb.AppendLine();
        }
        sb.AppendLine();
        sb.AppendLine("Cells: IFEval loose accuracy (strict in parentheses where it differs). Degenerate: share of responses that are blank, repeat a 4-word phrase 3+ times, or loop on characters (QualityGuard).");
        return sb.ToString();
    }

    private static string Cell(double loose, double strict) =>
        Math.Abs(loose - strict) < 1e-9 ? F(loose) : $"{F(loose)} ({F(strict)})";

    internal static string F(double v) => v.ToString("0.00", CultureInfo.InvariantCulture);

    /// <summary>A grouped bar chart (SVG) of loose accuracy per instruction and setting.</summary>
    public string ToSvg(string title)
    {
        var groups = Rows.Select(r => ShortName(r.Instruction)).Append("all (prompt)").ToList();
        var series = Settings.Select(k => EvalSettings.Parse(k).Label()).ToList();
        var values = Settings.Select(k => Rows.Select(r => r.Scores[k].Loose).Append(Overall[k].PromptLoose).ToArray()).ToArray();
        return SvgCharts.GroupedBars(title, groups, series, values);
    }

    /// <summary>The part of an instruction id after the colon ("english_lowercase").</summary>
    public static string ShortName(string id) => id.Contains(':') ? id[(id.IndexOf(':') + 1)..] : id;
}
