using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;

namespace OnnxSteer.Evaluation;

/// <summary>How one instruction is steered: the output of <c>sweep</c>, the input of <c>eval</c>.</summary>
public sealed record SelectionEntry
{
    /// <summary>"project", "add", "ablate", "header" (header steering: <see cref="Scale"/> × each answer-header
    /// position's own mean difference at that position) or "none" (leave the instruction unsteered).</summary>
    [JsonPropertyName("mode")] public required string Mode { get; init; }

    /// <summary>Vector name. <c>{word}</c> stands for each keyword (keywords:existence) or forbidden word
    /// (keywords:forbidden_words) of the prompt, lowercased: one vector per word, as the paper does.</summary>
    [JsonPropertyName("vector")] public string? Vector { get; init; }

    /// <summary>Steered layer (0-based).</summary>
    [JsonPropertyName("layer")] public int? Layer { get; init; }

    /// <summary>Additive weight in absolute units. When absent, <see cref="Scale"/> × |u_L| of the vector is used.</summary>
    [JsonPropertyName("weight")] public float? Weight { get; init; }

    /// <summary>Additive weight as a multiple of the vector's mean-difference norm |u_L| at the layer (negative for
    /// word exclusion). Lets one entry serve per-word vectors of different norms.</summary>
    [JsonPropertyName("scale")] public float? Scale { get; init; }

    /// <summary>Validation score of this choice (informational).</summary>
    [JsonPropertyName("score")] public double? Score { get; init; }

    /// <summary>Validation score without steering (informational).</summary>
    [JsonPropertyName("baseline")] public double? Baseline { get; init; }

    /// <summary>The mode as an enum; null for "none".</summary>
    [JsonIgnore]
    public SteerMode? SteerMode => Mode.ToLowerInvariant() switch
    {
        "none" => null,
        "add" => Evaluation.SteerMode.Add,
        "project" => Evaluation.SteerMode.Project,
        "ablate" => Evaluation.SteerMode.Ablate,
        "header" => Evaluation.SteerMode.Header,
        _ => throw new OnnxSteerException(ErrorKind.InvalidData, $"steering mode '{Mode}' is not one of none, add, project, ablate, header."),
    };

    /// <summary>A short description for reports: "project lowercase@3", "add keyword.{word}@4 ×-8", "none".</summary>
    public string Describe()
    {
        if (SteerMode is not { } mode) return "none";
        var s = $"{Mode.ToLowerInvariant()} {Vector}@{Layer}";
        if (mode == Evaluation.SteerMode.Add)
            s += Weight is { } w ? $" w={w.ToString("0.###", CultureInfo.InvariantCulture)}" : $" {Scale?.ToString("0.###", CultureInfo.InvariantCulture)}×‖u‖";
        if (mode == Evaluation.SteerMode.Header) s += $" {Scale?.ToString("0.###", CultureInfo.InvariantCulture)}×‖u_k‖ per header position";
        return s;
    }
}

/// <summary>The per-instruction steering choice (selection file, JSON). <c>eval --selection</c> reads it;
/// <c>sweep</c> writes it.</summary>
public sealed record SteeringSelection
{
    /// <summary>Version of this file's format.</summary>
    [JsonPropertyName("format_version")] public int FormatVersion { get; init; } = 1;

    /// <summary>Where the choice was made (e.g. the validation file); informational.</summary>
    [JsonPropertyName("data")] public string? Data { get; init; }

    /// <summary>What the sweep maximised; informational.</summary>
    [JsonPropertyName("objective")] public string? Objective { get; init; }

    /// <summary>Instruction id → how it is steered.</summary>
    [JsonPropertyName("instructions")] public required IReadOnlyDictionary<string, SelectionEntry> Instructions { get; init; }

    private static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
        Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Serialises to indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, Options);

    /// <summary>Loads and validates a selection file.</summary>
    /// <exception cref="OnnxSteerException">NotFound, or InvalidData naming the entry at fault.</exception>
    public static SteeringSelection Load(string path)
    {
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"selection file '{path}' does not exist.");
        SteeringSelection? selection;
        try
        {
            selection = JsonSerializer.Deserialize<SteeringSelection>(File.ReadAllText(path), Options);
        }
        catch (JsonException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidData, $"{path} is not a valid selection file: {e.Message}");
        }
        if (selection is null) throw new OnnxSteerException(ErrorKind.InvalidData, $"{path} is empty.");
        if (selection.FormatVersion != 1)
            throw new OnnxSteerException(ErrorKind.InvalidData, $"{path} has format_version {selection.FormatVersion}; this onnxsteer reads version 1.");
        foreach (var (id, entry) in selection.Instructions)
        {
            try
            {
                InstructionIds.FamilyOf(id);
                entry.Validate();
            }
            catch (OnnxSteerException e)
            {
                throw new OnnxSteerException(ErrorKind.InvalidData, $"{path}: instruction \"{id}\": {e.Message}");
            }
        }
        return selection;
    }

    /// <summary>The steering for one evaluation item: every instruction of the item that has a steered entry
    /// contributes its vector(s) at its own layer (composition).</summary>
    /// <param name="item">The prompt.</param>
    /// <param name="catalog">Vector norms, needed for entries given as <see cref="SelectionEntry.Scale"/>.</param>
    public IReadOnlyList<SteerOp> OpsFor(EvalItem item, IVectorCatalog? catalog)
    {
        var ops = new List<SteerOp>();
        foreach (var check in item.Checks)
            if (Instructions.TryGetValue(check.Id, out var entry))
                ops.AddRange(entry.OpsFor(check, catalog));
        return ops;
    }
}

/// <summary>Helpers on <see cref="SelectionEntry"/>.</summary>
internal static class SelectionEntryExtensions
{
    /// <summary>Checks that a steered entry names a vector and a layer, and an additive one a weight or scale.</summary>
    /// <exception cref="OnnxSteerException">(InvalidData) what is missing.</exception>
    public static void Validate(this SelectionEntry entry)
    {
        if (entry.SteerMode is not { } mode) return;
        if (string.IsNullOrWhiteSpace(entry.Vector)) throw new OnnxSteerException(ErrorKind.InvalidData, $"mode {entry.Mode} needs \"vector\".");
        if (entry.Layer is not { } layer || layer < 0) throw new OnnxSteerException(ErrorKind.InvalidData, $"mode {entry.Mode} needs \"layer\" (>= 0).");
        if (mode == SteerMode.Add && entry.Weight is null && entry.Scale is null)
            throw new OnnxSteerException(ErrorKind.InvalidData, "mode add needs \"weight\" or \"scale\".");
        if (mode == SteerMode.Header && (entry.Scale is not { } scale || !float.IsFinite(scale) || entry.Weight is not null))
            throw new OnnxSteerException(ErrorKind.InvalidData, "mode header needs a finite \"scale\" (a multiple of each header position's |u_k|) and no \"weight\".");
    }

    /// <summary>The vector names an entry means for one instruction: <c>{word}</c> expanded to each word.</summary>
    public static IReadOnlyList<string> VectorNamesFor(this SelectionEntry entry, InstructionCheck check) =>
        entry.Vector is null ? [] : VectorNaming.Expand(entry.Vector, check);

    /// <summary>The steering ops of this entry for one instruction of a prompt.</summary>
    public static IReadOnlyList<SteerOp> OpsFor(this SelectionEntry entry, InstructionCheck check, IVectorCatalog? catalog)
    {
        if (entry.SteerMode is not { } mode) return [];
        entry.Validate();
        var layer = entry.Layer!.Value;
        // Header ops carry the scale: each header position's own norm is applied when the steering is built.
        if (mode == SteerMode.Header) return [.. entry.VectorNamesFor(check).Select(v => new SteerOp(v, layer, mode, entry.Scale!.Value))];
        return [.. entry.VectorNamesFor(check).Select(v => new SteerOp(v, layer, mode, mode != SteerMode.Add ? 0
            : entry.Weight ?? entry.Scale!.Value * (catalog ?? throw new OnnxSteerException(ErrorKind.InvalidData,
                $"the steering of {check.Id} is given as a scale of |u|, which needs the vector files")).Norm(v, layer)))];
    }
}

/// <summary>Default vector names per instruction, and the <c>{word}</c> placeholder.</summary>
public static class VectorNaming
{
    /// <summary>The placeholder for a per-word vector.</summary>
    public const string WordPlaceholder = "{word}";

    /// <summary>Default vector name per instruction id: the stem of its extraction-pair file in <c>models/data/pairs/</c>
    /// (the id with ':' replaced by '.'), which is the name <c>demo</c> and docs/evaluation.md extract under. Length uses
    /// the "at most N sentences" (conciseness) vector; both word instructions use the per-word inclusion vector
    /// <c>keywords.existence.{word}</c> (exclusion subtracts it, the paper's choice).</summary>
    public static string DefaultFor(string id) => id switch
    {
        InstructionIds.NumberSentences => "length_constraints.number_sentences.at_most",
        InstructionIds.KeywordExistence or InstructionIds.ForbiddenWords => "keywords.existence." + WordPlaceholder,
        _ when InstructionIds.All.Contains(id) => id.Replace(':', '.'),
        _ => throw new OnnxSteerException(ErrorKind.InvalidData, $"unknown instruction id '{id}'."),
    };

    /// <summary>The per-word exclusion vector (pairs "Do not use the word WORD."): <c>sweep</c> tries it, added, next to
    /// the subtracted inclusion vector for keywords:forbidden_words. The paper preferred subtracting; on a model that
    /// summarises the instruction in the chat template's answer header the exclusion vector itself can carry it.</summary>
    public const string ExclusionTemplate = "keywords.forbidden_words." + WordPlaceholder;

    /// <summary>The vectors <c>sweep</c> tries for an instruction, each with the sign of its weights: the default
    /// (<see cref="DefaultFor"/>, or <paramref name="named"/> in its place; subtracted for word exclusion) and, for word
    /// exclusion without a named vector, <see cref="ExclusionTemplate"/> added.</summary>
    internal static IReadOnlyList<(string Template, int Sign)> SweepVectors(string id, string? named = null)
    {
        var primary = (named ?? DefaultFor(id), InstructionIds.FamilyOf(id) == InstructionFamily.WordExclusion ? -1 : 1);
        return named is null && id == InstructionIds.ForbiddenWords ? [primary, (ExclusionTemplate, 1)] : [primary];
    }

    /// <summary>The naming rule in words, for warnings and help.</summary>
    public const string Rule =
        "a vector steers an instruction when its name is the instruction id with ':' replaced by '.' (change_case:english_lowercase -> " +
        "change_case.english_lowercase; number_sentences uses length_constraints.number_sentences.at_most; both keyword instructions use " +
        "keywords.existence.WORD; keywords:forbidden_words also keywords.forbidden_words.WORD), or when a selection file names it";

    /// <summary>Whether <paramref name="name"/> is what <paramref name="template"/> expands to (a <c>{word}</c> template
    /// matches any non-empty word).</summary>
    public static bool Matches(string template, string name)
    {
        var at = template.IndexOf(WordPlaceholder, StringComparison.Ordinal);
        if (at < 0) return template == name;
        var (prefix, suffix) = (template[..at], template[(at + WordPlaceholder.Length)..]);
        return name.Length > prefix.Length + suffix.Length && name.StartsWith(prefix, StringComparison.Ordinal) && name.EndsWith(suffix, StringComparison.Ordinal);
    }

    /// <summary>Names among <paramref name="vectorNames"/> that no instruction's default name (<see cref="DefaultFor"/>)
    /// and no vector of <paramref name="selection"/> matches: vectors the evaluation will never use, usually a misnamed file.</summary>
    public static IReadOnlyList<string> Unmatched(IEnumerable<string> vectorNames, SteeringSelection? selection)
    {
        var templates = InstructionIds.All.SelectMany(id => SweepVectors(id)).Select(v => v.Template)
            .Concat(selection?.Instructions.Values.Select(e => e.Vector).OfType<string>() ?? []).Distinct().ToList();
        // A header-position vector (NAME.header-K) is used with its NAME.
        return [.. vectorNames.Where(n => !templates.Any(t => Matches(t, OnnxSteer.Contract.HeaderVectors.BaseName(n)))).Order(StringComparer.Ordinal)];
    }

    /// <summary>Expands <c>{word}</c> in <paramref name="template"/> with each keyword or forbidden word of the instruction.</summary>
    public static IReadOnlyList<string> Expand(string template, InstructionCheck check)
    {
        if (!template.Contains(WordPlaceholder, StringComparison.Ordinal)) return [template];
        var words = check.Args.Keywords ?? check.Args.ForbiddenWords
            ?? throw new OnnxSteerException(ErrorKind.InvalidData, $"vector '{template}' needs words, but {check.Id} has none.");
        return [.. words.Select(w => template.Replace(WordPlaceholder, w.Trim().ToLowerInvariant(), StringComparison.Ordinal)).Distinct()];
    }
}
