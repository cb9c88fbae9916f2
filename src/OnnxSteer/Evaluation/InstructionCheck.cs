using System.Globalization;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace OnnxSteer.Evaluation;

/// <summary>The IFEval instruction ids OnnxSteer can check.</summary>
public static class InstructionIds
{
    public const string Lowercase = "change_case:english_lowercase";
    public const string Capital = "change_case:english_capital";
    public const string Json = "detectable_format:json_format";
    public const string BulletLists = "detectable_format:number_bullet_lists";
    public const string Title = "detectable_format:title";
    public const string EndChecker = "startend:end_checker";
    public const string Quotation = "startend:quotation";
    public const string NoComma = "punctuation:no_comma";
    public const string NumberSentences = "length_constraints:number_sentences";
    public const string KeywordExistence = "keywords:existence";
    public const string ForbiddenWords = "keywords:forbidden_words";

    /// <summary>Every supported id, in the order reports list them.</summary>
    public static IReadOnlyList<string> All { get; } =
        [Lowercase, Capital, Json, BulletLists, Title, EndChecker, Quotation, NoComma, NumberSentences, KeywordExistence, ForbiddenWords];

    /// <summary>Which steering family an instruction belongs to (decides the modes a sweep tries).</summary>
    internal static InstructionFamily FamilyOf(string id) => id switch
    {
        NumberSentences => InstructionFamily.Length,
        KeywordExistence => InstructionFamily.WordInclusion,
        ForbiddenWords => InstructionFamily.WordExclusion,
        _ when All.Contains(id) => InstructionFamily.Format,
        _ => throw new OnnxSteerException(ErrorKind.InvalidData, $"unknown instruction id '{id}'; known: {string.Join(", ", All)}."),
    };
}

/// <summary>How the paper steers an instruction family.</summary>
internal enum InstructionFamily
{
    /// <summary>Format instructions: projection onto the instruction direction (x' = x + (z̄ − x·û)û).</summary>
    Format,
    /// <summary>Length ("at most N sentences"): additive steering with a positive weight.</summary>
    Length,
    /// <summary>Include a word: additive steering with a positive weight on the word's vector.</summary>
    WordInclusion,
    /// <summary>Exclude a word: additive steering with a negative weight on the word's <em>inclusion</em> vector.</summary>
    WordExclusion,
}

/// <summary>Arguments of an instruction (IFEval's <c>kwargs</c>); only the ones the id needs are set.</summary>
internal sealed record InstructionArgs
{
    /// <summary>detectable_format:number_bullet_lists: the exact number of bullet lines.</summary>
    public int? NumBullets { get; init; }
    /// <summary>startend:end_checker: the phrase the response must end with.</summary>
    public string? EndPhrase { get; init; }
    /// <summary>length_constraints:number_sentences: the threshold.</summary>
    public int? NumSentences { get; init; }
    /// <summary>length_constraints:number_sentences: IFEval's "less than" or "at least", or "at most" / "exactly"
    /// (the paper's length runs and the bundled data use these).</summary>
    public string? Relation { get; init; }
    /// <summary>keywords:existence: words that must all occur.</summary>
    public IReadOnlyList<string>? Keywords { get; init; }
    /// <summary>keywords:forbidden_words: words that must not occur.</summary>
    public IReadOnlyList<string>? ForbiddenWords { get; init; }

    /// <summary>An instruction without arguments.</summary>
    public static InstructionArgs None { get; } = new();

    /// <summary>Reads a kwargs object. Null values are ignored, as IFEval's evaluation does.</summary>
    /// <exception cref="FormatException">A value has the wrong JSON type.</exception>
    public static InstructionArgs FromJson(JsonElement kwargs)
    {
        if (kwargs.ValueKind == JsonValueKind.Null) return None;
        if (kwargs.ValueKind != JsonValueKind.Object) throw new FormatException($"kwargs must be an object, not {kwargs.ValueKind}");
        var args = new InstructionArgs();
        foreach (var p in kwargs.EnumerateObject())
        {
            if (p.Value.ValueKind == JsonValueKind.Null) continue;
            args = p.Name switch
            {
                "num_bullets" => args with { NumBullets = ReadInt(p) },
                "end_phrase" => args with { EndPhrase = ReadString(p) },
                "num_sentences" => args with { NumSentences = ReadInt(p) },
                "relation" => args with { Relation = ReadString(p) },
                "keywords" => args with { Keywords = ReadStrings(p) },
                "forbidden_words" => args with { ForbiddenWords = ReadStrings(p) },
                _ => args, // other IFEval kwargs belong to instructions we do not check
            };
        }
        return args;
    }

    private static int ReadInt(JsonProperty p) =>
        p.Value.ValueKind == JsonValueKind.Number && p.Value.TryGetInt32(out var v) ? v
        : throw new FormatException($"kwargs.{p.Name} must be an integer, not {p.Value.GetRawText()}");

    private static string ReadString(JsonProperty p) =>
        p.Value.ValueKind == JsonValueKind.String ? p.Value.GetString()!
        : throw new FormatException($"kwargs.{p.Name} must be a string, not {p.Value.GetRawText()}");

    private static string[] ReadStrings(JsonProperty p)
    {
        // IFEval stores a single keyword list; accept a bare string too, as hand-written data often does.
        if (p.Value.ValueKind == JsonValueKind.String) return [p.Value.GetString()!];
        if (p.Value.ValueKind != JsonValueKind.Array) throw new FormatException($"kwargs.{p.Name} must be a list of strings, not {p.Value.GetRawText()}");
        return [.. p.Value.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.String ? e.GetString()!
            : throw new FormatException($"kwargs.{p.Name} must hold strings, not {e.GetRawText()}"))];
    }

    /// <summary>The arguments as a compact JSON-like object for reports (only the set ones).</summary>
    public IReadOnlyDictionary<string, object> ToDictionary()
    {
        var d = new Dictionary<string, object>();
        if (NumBullets is { } b) d["num_bullets"] = b;
        if (EndPhrase is { } e) d["end_phrase"] = e;
        if (NumSentences is { } n) d["num_sentences"] = n;
        if (Relation is { } r) d["relation"] = r;
        if (Keywords is { } k) d["keywords"] = k;
        if (ForbiddenWords is { } f) d["forbidden_words"] = f;
        return d;
    }
}

/// <summary>One instruction to check a response against: an IFEval id with its arguments. The checks mirror
/// IFEval's published checker (google-research/instruction_following_eval, <c>instructions.py</c>), with the
/// differences listed in docs/evaluation.md (no language detection; a punkt-like sentence counter).</summary>
public sealed class InstructionCheck
{
    private readonly Func<string, bool> check;

    private InstructionCheck(string id, InstructionArgs args, Func<string, bool> check)
    {
        Id = id;
        Args = args;
        this.check = check;
    }

    /// <summary>The IFEval id, e.g. <c>change_case:english_lowercase</c>.</summary>
    public string Id { get; }

    /// <summary>The instruction's arguments.</summary>
    internal InstructionArgs Args { get; }

    /// <summary>The steering family of this instruction.</summary>
    internal InstructionFamily Family => InstructionIds.FamilyOf(Id);

    /// <summary>Builds the check for <paramref name="id"/>, validating the arguments it needs.</summary>
    /// <exception cref="OnnxSteerException">(InvalidData) unknown id, or a missing or invalid argument.</exception>
    internal static InstructionCheck Create(string id, InstructionArgs? args = null)
    {
        args ??= InstructionArgs.None;
        Func<string, bool> check = id switch
        {
            InstructionIds.Lowercase => IsLowercase,
            InstructionIds.Capital => IsUppercase,
            InstructionIds.Json => IsJson,
            InstructionIds.BulletLists => BulletCheck(Require(id, "num_bullets", args.NumBullets) is var n && n >= 0 ? n
                : throw Invalid(id, "num_bullets must be >= 0")),
            InstructionIds.Title => HasTitle,
            InstructionIds.EndChecker => EndCheck(RequireText(id, "end_phrase", args.EndPhrase)),
            InstructionIds.Quotation => IsQuoted,
            InstructionIds.NoComma => r => !r.Contains(','),
            InstructionIds.NumberSentences => SentenceCheck(id, Require(id, "num_sentences", args.NumSentences), RequireText(id, "relation", args.Relation)),
            InstructionIds.KeywordExistence => KeywordCheck(RequireWords(id, "keywords", args.Keywords)),
            InstructionIds.ForbiddenWords => ForbiddenCheck(RequireWords(id, "forbidden_words", args.ForbiddenWords)),
            _ => throw new OnnxSteerException(ErrorKind.InvalidData, $"unknown instruction id '{id}'; known: {string.Join(", ", InstructionIds.All)}."),
        };
        return new InstructionCheck(id, args, check);
    }

    /// <summary>Whether this exact text follows the instruction (one IFEval <c>check_following</c> call; no
    /// strict/loose handling: use <see cref="IfEval"/> for scoring).</summary>
    public bool IsFollowedBy(string response) => check(response);

    /// <inheritdoc/>
    public override string ToString() => Args.ToDictionary().Count == 0 ? Id
        : $"{Id} {JsonSerializer.Serialize(Args.ToDictionary())}";

    // --- the checks -------------------------------------------------------------------------------------------

    // Python's str.islower(): at least one cased character and no upper- or titlecase one. IFEval also asks
    // langdetect for "en"; the bundled model only writes English, so that part is left out (docs/evaluation.md).
    internal static bool IsLowercase(string value)
    {
        var cased = false;
        foreach (var c in value)
        {
            var cat = char.GetUnicodeCategory(c);
            if (cat is UnicodeCategory.UppercaseLetter or UnicodeCategory.TitlecaseLetter) return false;
            if (cat == UnicodeCategory.LowercaseLetter) cased = true;
        }
        return cased;
    }

    // Python's str.isupper().
    internal static bool IsUppercase(string value)
    {
        var cased = false;
        foreach (var c in value)
        {
            var cat = char.GetUnicodeCategory(c);
            if (cat is UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter) return false;
            if (cat == UnicodeCategory.UppercaseLetter) cased = true;
        }
        return cased;
    }

    internal static bool IsJson(string value)
    {
        // IFEval: strip, remove one ```json / ```Json / ```JSON / ``` prefix (applied in sequence), a ``` suffix, strip.
        var v = value.Trim();
        v = RemovePrefix(v, "```json");
        v = RemovePrefix(v, "```Json");
        v = RemovePrefix(v, "```JSON");
        v = RemovePrefix(v, "```");
        if (v.EndsWith("```", StringComparison.Ordinal)) v = v[..^3];
        v = v.Trim();
        try
        {
            using var doc = JsonDocument.Parse(v);
            return true;
        }
        catch (JsonException)
        {
            return false;
        }
    }

    private static string RemovePrefix(string s, string prefix) => s.StartsWith(prefix, StringComparison.Ordinal) ? s[prefix.Length..] : s;

    // IFEval counts lines matching ^\s*\*[^\*].*$ plus lines matching ^\s*-.*$ (multiline), and wants exactly N.
    private static readonly Regex StarBullet = new(@"^\s*\*[^\*].*$", RegexOptions.Multiline | RegexOptions.CultureInvariant);
    private static readonly Regex DashBullet = new(@"^\s*-.*$", RegexOptions.Multiline | RegexOptions.CultureInvariant);

    internal static int CountBullets(string value) => StarBullet.Matches(value).Count + DashBullet.Matches(value).Count;

    private static Func<string, bool> BulletCheck(int n) => r => CountBullets(r) == n;

    private static readonly Regex TitlePattern = new(@"<<[^\n]+>>", RegexOptions.CultureInvariant);

    internal static bool HasTitle(string value) =>
        TitlePattern.Matches(value).Any(m => m.Value.TrimStart('<').TrimEnd('>').Trim().Length > 0);

    private static Func<string, bool> EndCheck(string phrase)
    {
        var p = phrase.Trim().ToLowerInvariant();
        // IFEval: value.strip().strip('"').lower().endswith(phrase.strip().lower())
        return r => r.Trim().Trim('"').ToLowerInvariant().EndsWith(p, StringComparison.Ordinal);
    }

    internal static bool IsQuoted(string value)
    {
        var v = value.Trim();
        return v.Length > 1 && v[0] == '"' && v[^1] == '"';
    }

    private static Func<string, bool> SentenceCheck(string id, int n, string relation)
    {
        Func<int, bool> compare = relation switch
        {
            "less than" => c => c < n,
            "at most" => c => c <= n,
            "at least" => c => c >= n,
            "exactly" => c => c == n,
            _ => throw Invalid(id, $"relation must be \"less than\", \"at most\", \"at least\" or \"exactly\", not \"{relation}\""),
        };
        return r => compare(SentenceCounter.Count(r));
    }

    private static Func<string, bool> KeywordCheck(IReadOnlyList<string> keywords) =>
        // IFEval uses re.search(keyword, value, IGNORECASE): a case-insensitive substring for plain words.
        r => keywords.All(k => r.Contains(k, StringComparison.OrdinalIgnoreCase));

    private static Func<string, bool> ForbiddenCheck(IReadOnlyList<string> words)
    {
        // IFEval: re.search(r"\b" + word + r"\b", value, IGNORECASE) for each word.
        var patterns = words.Select(w => new Regex(@"\b" + Regex.Escape(w) + @"\b", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)).ToArray();
        return r => !patterns.Any(p => p.IsMatch(r));
    }

    // --- argument validation ----------------------------------------------------------------------------------

    private static int Require(string id, string name, int? value) => value ?? throw Invalid(id, $"needs kwargs.{name}");

    private static string RequireText(string id, string name, string? value) =>
        string.IsNullOrWhiteSpace(value) ? throw Invalid(id, $"needs a non-empty kwargs.{name}") : value;

    private static IReadOnlyList<string> RequireWords(string id, string name, IReadOnlyList<string>? value) =>
        value is null || value.Count == 0 || value.Any(string.IsNullOrWhiteSpace)
            ? throw Invalid(id, $"needs kwargs.{name}, a non-empty list of non-empty words")
            : value;

    private static OnnxSteerException Invalid(string id, string what) => new(ErrorKind.InvalidData, $"instruction {id} {what}.");
}
