using System.Text.RegularExpressions;

namespace OnnxSteer.Evaluation;

/// <summary>Decides whether a response has collapsed: the evaluation's quality figure and the sweep's guard.
/// The paper flags responses whose perplexity is very low (degenerate repetition); a repetition test measures the
/// same failure without needing token probabilities, so it works with any generator. A response is degenerate when
/// it is blank, when some word n-gram occurs <see cref="MaxRepeats"/> times or more, when a long response uses
/// few distinct words, or when one character repeats <see cref="MaxCharRun"/> times in a row or a "word" is
/// <see cref="MaxWordLength"/> characters long (a token loop without spaces, such as "AAAA…").</summary>
public sealed record QualityGuard
{
    /// <summary>Length of the word n-grams counted (default 4).</summary>
    public int NGram { get; init; } = 4;

    /// <summary>An n-gram occurring this many times marks the response degenerate (default 3).</summary>
    public int MaxRepeats { get; init; } = 3;

    /// <summary>The distinct-word test applies from this many words on (default 24).</summary>
    public int MinWordsForDistinct { get; init; } = 24;

    /// <summary>Distinct words / words below this marks a long response degenerate (default 0.3).</summary>
    public double MinDistinctRatio { get; init; } = 0.3;

    /// <summary>A non-space character repeated this many times in a row marks the response degenerate (default 10).</summary>
    public int MaxCharRun { get; init; } = 10;

    /// <summary>A word of this many characters or more marks the response degenerate (default 30).</summary>
    public int MaxWordLength { get; init; } = 30;

    /// <summary>Count answers that do not name the prompt's topic as failures (default true; see <see cref="TopicFidelity"/>).</summary>
    public bool RequireTopic { get; init; } = true;

    private static readonly Regex Word = new(@"\w+", RegexOptions.CultureInvariant);

    /// <summary>Whether a response to <paramref name="item"/> counts at all: not degenerate and, with
    /// <see cref="RequireTopic"/>, naming the topic of the item's query (see <see cref="TopicFidelity.IsOnTopic(EvalItem, string)"/>).</summary>
    public bool Accepts(EvalItem item, string response) =>
        !IsDegenerate(response) && (!RequireTopic || TopicFidelity.IsOnTopic(item, response));

    /// <summary>The one pass/fail that <c>eval</c>, <c>sweep</c> and <c>demo</c> score with: the IFEval check (loose or
    /// strict) passes, the response is <see cref="Accepts">acceptable</see>, and a title instruction's title names the
    /// topic. A degenerate or off-topic answer that happens to satisfy a format check (96 × "A" has no forbidden word;
    /// "&lt;&lt;The Flower&gt;&gt;" for a sock is a title) follows nothing.</summary>
    public bool Passes(EvalItem item, InstructionCheck check, string response, bool loose = true) =>
        (loose ? IfEval.FollowsLoose(check, response) : IfEval.FollowsStrict(check, response))
        && Accepts(item, response)
        && (!RequireTopic || check.Id != InstructionIds.Title || TopicFidelity.TitleNamesTopic(item.Prompt, response));

    /// <summary>Whether <paramref name="text"/> is degenerate.</summary>
    public bool IsDegenerate(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) return true;
        var words = Word.Matches(text).Select(m => m.Value.ToLowerInvariant()).ToArray();
        if (LongestRun(text) >= MaxCharRun || words.Any(w => w.Length >= MaxWordLength)) return true;
        if (words.Length == 0) return false; // punctuation-only output (e.g. "{}") is short, not repetitive
        if (words.Length >= MinWordsForDistinct && (double)words.Distinct().Count() / words.Length < MinDistinctRatio) return true;
        return MaxNGramCount(words, NGram) >= MaxRepeats;
    }

    /// <summary>How often the most frequent word n-gram of <paramref name="text"/> occurs (0 when it is shorter than n words).</summary>
    public int MostRepeatedNGram(string text) =>
        MaxNGramCount([.. Word.Matches(text).Select(m => m.Value.ToLowerInvariant())], NGram);

    private static int LongestRun(string text)
    {
        var longest = 0;
        for (int i = 0, run = 0; i < text.Length; i++)
        {
            run = i > 0 && text[i] == text[i - 1] && !char.IsWhiteSpace(text[i]) ? run + 1 : 1;
            if (run > longest) longest = run;
        }
        return longest;
    }

    private static int MaxNGramCount(string[] words, int n)
    {
        if (words.Length < n) return 0;
        var counts = new Dictionary<string, int>(StringComparer.Ordinal);
        var max = 0;
        for (var i = 0; i + n <= words.Length; i++)
        {
            var key = string.Join(' ', words, i, n);
            var c = counts[key] = counts.GetValueOrDefault(key) + 1;
            if (c > max) max = c;
        }
        return max;
    }
}
