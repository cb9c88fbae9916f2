namespace OnnxSteer.Evaluation;

/// <summary>The paper's four evaluation settings.</summary>
public enum EvalSetting
{
    /// <summary>The base query alone, unsteered.</summary>
    NoInstruction,
    /// <summary>The base query alone, with the instruction's steering.</summary>
    NoInstructionSteered,
    /// <summary>The base query with the instruction appended, unsteered.</summary>
    WithInstruction,
    /// <summary>The base query with the instruction appended, with steering.</summary>
    WithInstructionSteered,
}

/// <summary>Names and properties of <see cref="EvalSetting"/>.</summary>
public static class EvalSettings
{
    /// <summary>All four settings in the paper's column order.</summary>
    public static IReadOnlyList<EvalSetting> All { get; } =
        [EvalSetting.NoInstruction, EvalSetting.NoInstructionSteered, EvalSetting.WithInstruction, EvalSetting.WithInstructionSteered];

    /// <summary>Whether the prompt carries the instruction text.</summary>
    public static bool HasInstruction(this EvalSetting s) => s is EvalSetting.WithInstruction or EvalSetting.WithInstructionSteered;

    /// <summary>Whether steering is applied.</summary>
    public static bool IsSteered(this EvalSetting s) => s is EvalSetting.NoInstructionSteered or EvalSetting.WithInstructionSteered;

    /// <summary>Column label: "no instr.", "no instr. + steer", "with instr.", "with instr. + steer".</summary>
    public static string Label(this EvalSetting s) => s switch
    {
        EvalSetting.NoInstruction => "no instr.",
        EvalSetting.NoInstructionSteered => "no instr. + steer",
        EvalSetting.WithInstruction => "with instr.",
        _ => "with instr. + steer",
    };

    /// <summary>Machine name used in JSON and on the command line.</summary>
    public static string Key(this EvalSetting s) => s switch
    {
        EvalSetting.NoInstruction => "no_instruction",
        EvalSetting.NoInstructionSteered => "no_instruction_steered",
        EvalSetting.WithInstruction => "with_instruction",
        _ => "with_instruction_steered",
    };

    /// <summary>Parses a <see cref="Key"/>.</summary>
    /// <exception cref="OnnxSteerException">(Usage) an unknown name.</exception>
    public static EvalSetting Parse(string key)
    {
        foreach (var s in All)
            if (s.Key() == key.Trim()) return s;
        throw new OnnxSteerException(ErrorKind.Usage, $"unknown setting '{key}'; use {string.Join(", ", All.Select(x => x.Key()))}.");
    }

    /// <summary>The prompt an item sends in a setting.</summary>
    public static string PromptFor(this EvalSetting s, EvalItem item) => s.HasInstruction() ? item.PromptWithInstruction : item.Prompt;
}

/// <summary>Options of <see cref="Evaluator"/>.</summary>
public sealed record EvalOptions
{
    /// <summary>Settings to run (default: all four).</summary>
    public IReadOnlyList<EvalSetting> Settings { get; init; } = EvalSettings.All;

    /// <summary>The degenerate-output test behind the quality figure.</summary>
    public QualityGuard Quality { get; init; } = new();

    /// <summary>Keep every response in the report (for <c>--json</c>).</summary>
    public bool KeepResponses { get; init; } = true;

    /// <summary>Receives progress after each batch.</summary>
    public IProgress<EvalProgress>? Progress { get; init; }

    /// <summary>The random-direction control: maps each steering op to the same op on a random direction of the same
    /// norm (same layer, mode and weight; see <see cref="RandomControl"/>). When set, every steered prompt is also run
    /// with the mapped ops, and the report gets a "random direction" row per steered instruction. Null: no control.</summary>
    public Func<SteerOp, SteerOp>? RandomControl { get; init; }

    /// <summary>Instruction id → phrasings held out of the extraction pairs (<c>splits.json</c>'s
    /// <c>held_out_phrasings</c>; <c>{N}</c>, <c>{W}</c>, <c>{P}</c> stand for any text). Prompts phrased this way get
    /// their own "held-out phrasings" row per instruction. Null or empty: no such rows.</summary>
    public IReadOnlyDictionary<string, IReadOnlyList<string>>? HeldOutPhrasings { get; init; }
}

/// <summary>Runs evaluation items through a generator in the four settings and scores them with IFEval's checks.</summary>
public static class Evaluator
{
    /// <summary>Evaluates <paramref name="items"/> with the steering a selection chooses per instruction.</summary>
    /// <param name="items">Evaluation prompts.</param>
    /// <param name="selection">Per-instruction steering; instructions it does not list stay unsteered.</param>
    /// <param name="catalog">Vector norms, for entries given as a scale of |u|.</param>
    /// <param name="generator">The model.</param>
    /// <param name="options">Settings, quality guard, progress.</param>
    /// <param name="cancellationToken">Cancels between batches.</param>
    public static Task<EvalReport> RunAsync(IReadOnlyList<EvalItem> items, SteeringSelection selection, IVectorCatalog? catalog,
        IResponseGenerator generator, EvalOptions? options = null, CancellationToken cancellationToken = default) =>
        RunAsync(items, item => selection.OpsFor(item, catalog),
            id => selection.Instructions.TryGetValue(id, out var e) ? e.Describe() : "none", generator, options, cancellationToken);

    /// <summary>Evaluates with steering given by a function of the item.</summary>
    public static async Task<EvalReport> RunAsync(IReadOnlyList<EvalItem> items, Func<EvalItem, IReadOnlyList<SteerOp>> steeringFor,
        Func<string, string> describeSteering, IResponseGenerator generator, EvalOptions? options = null, CancellationToken cancellationToken = default)
    {
        options ??= new EvalOptions();
        var steering = items.ToDictionary(i => i, steeringFor);
        var requests = new List<(EvalItem Item, EvalSetting Setting, EvalRequest Request)>();
        foreach (var setting in options.Settings)
            foreach (var item in items)
                requests.Add((item, setting, new EvalRequest(setting.PromptFor(item), setting.IsSteered() ? steering[item] : [])));
        var controls = new List<(EvalItem Item, EvalSetting Setting, EvalRequest Request)>();
        if (options.RandomControl is { } randomize)
            foreach (var setting in options.Settings.Where(s => s.IsSteered()))
                foreach (var item in items.Where(i => steering[i].Count > 0))
                    controls.Add((item, setting, new EvalRequest(setting.PromptFor(item), [.. steering[item].Select(randomize)])));
        var responses = await GenerationPool.RunAsync(requests.Concat(controls).Select(r => r.Request), generator, options.Progress, cancellationToken).ConfigureAwait(false);
        var heldOut = PhrasingMatcher.Create(options.HeldOutPhrasings);
        var results = requests.Select(r => Score(r.Item, r.Setting, r.Request, responses[r.Request.CacheKey], options.Quality) with { HeldOutPhrasing = heldOut.Matches(r.Item) })
            .Concat(controls.Select(r => Score(r.Item, r.Setting, r.Request, responses[r.Request.CacheKey], options.Quality) with { Control = RandomControlKey }))
            .ToList();
        return EvalReport.Build(items, options.Settings, results, describeSteering, options.KeepResponses);
    }

    /// <summary>The <see cref="ItemResult.Control"/> of the random-direction control's responses.</summary>
    public const string RandomControlKey = "random_direction";

    internal static ItemResult Score(EvalItem item, EvalSetting setting, EvalRequest request, GeneratedResponse response, QualityGuard quality) => new()
    {
        Key = item.Key,
        Setting = setting.Key(),
        Instructions = [.. item.Checks.Select(c => c.Id)],
        Args = [.. item.Checks.Select(c => c.Args.ToDictionary())],
        Prompt = request.Prompt,
        Steering = [.. request.Steering.Select(o => o.ToString())],
        Response = response.Text,
        Strict = [.. item.Checks.Select(c => quality.Passes(item, c, response.Text, loose: false))],
        Loose = [.. item.Checks.Select(c => quality.Passes(item, c, response.Text))],
        RawLoose = [.. item.Checks.Select(c => IfEval.FollowsLoose(c, response.Text))],
        Degenerate = quality.IsDegenerate(response.Text),
        OnTopic = TopicFidelity.IsOnTopic(item, response.Text),
        MeanLogProb = response.MeanLogProb,
    };
}

/// <summary>Recognises prompts whose instruction text is one of the held-out phrasings.</summary>
internal sealed class PhrasingMatcher
{
    private readonly Dictionary<string, List<System.Text.RegularExpressions.Regex>> patterns = [];

    public static PhrasingMatcher Create(IReadOnlyDictionary<string, IReadOnlyList<string>>? phrasings)
    {
        var m = new PhrasingMatcher();
        foreach (var (id, list) in phrasings ?? new Dictionary<string, IReadOnlyList<string>>())
            m.patterns[id] = [.. list.Select(p => new System.Text.RegularExpressions.Regex(
                System.Text.RegularExpressions.Regex.Escape(p).Replace(@"\{N}", ".+?").Replace(@"\{W}", ".+?").Replace(@"\{P}", ".+?"),
                System.Text.RegularExpressions.RegexOptions.CultureInvariant))];
        return m;
    }

    /// <summary>Whether the item's instruction text contains a held-out phrasing of one of its instruction ids.</summary>
    public bool Matches(EvalItem item) =>
        item.Checks.Any(c => patterns.TryGetValue(c.Id, out var list) && list.Any(p => p.IsMatch(item.Instruction)));
}

/// <summary>Reads the phrasings held out of the extraction pairs from a <c>splits.json</c>.</summary>
public static class HeldOutPhrasings
{
    /// <summary><c>splits.json</c> in the folder of <paramref name="dataPath"/> or the folder above it; null when neither has one.</summary>
    public static string? FindBeside(string dataPath)
    {
        var dir = Path.GetDirectoryName(Path.GetFullPath(dataPath));
        for (var i = 0; i < 2 && dir is not null; i++, dir = Path.GetDirectoryName(dir))
            if (File.Exists(Path.Combine(dir, "splits.json"))) return Path.Combine(dir, "splits.json");
        return null;
    }

    /// <summary>Instruction id → held-out phrasings (<c>held_out_phrasings</c>); empty for a null path or a file without them.</summary>
    /// <exception cref="OnnxSteerException">(InvalidData) the file is not JSON or the field has the wrong shape.</exception>
    public static IReadOnlyDictionary<string, IReadOnlyList<string>> Load(string? path)
    {
        var result = new Dictionary<string, IReadOnlyList<string>>(StringComparer.Ordinal);
        if (path is null) return result;
        try
        {
            using var doc = System.Text.Json.JsonDocument.Parse(File.ReadAllText(path));
            if (!doc.RootElement.TryGetProperty("held_out_phrasings", out var h)) return result;
            foreach (var p in h.EnumerateObject())
                result[p.Name] = [.. p.Value.EnumerateArray().Select(e => e.GetString() ?? throw new FormatException($"a phrasing of {p.Name} is not a string"))];
        }
        catch (Exception e) when (e is System.Text.Json.JsonException or InvalidOperationException or FormatException)
        {
            throw new OnnxSteerException(ErrorKind.InvalidData, $"{path}: held_out_phrasings: {e.Message}");
        }
        return result;
    }
}
