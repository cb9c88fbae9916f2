using System.Text.RegularExpressions;

namespace OnnxSteer.Evaluation;

/// <summary>Decides whether a response has collapsed: the evaluation's quality figure and the sweep's guard.
/// The paper flags responses whose perplexity is very low (degenerate repetition); a repetition test measures the
/// same failure without needing token probabilities, so it works with any generator. A response is degenerate when
/// it is blank, when some word n-gram occurs <see cref="MaxRepeats"/> times or more, or when a long response uses
/// few distinct words.</summary>
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

    private static readonly Regex Word = new(@"\w+", RegexOptions.CultureInvariant);

    /// <summary>Whether <paramref name="text"/> is degenerate.</summary>
    public bool IsDegenerate(string text)
    {
        if (string.IsNullOrWhiteSpace(text)) return true;
        var words = Word.Matches(text).Select(m => m.Value.ToLowerInvariant()).ToArray();
        if (words.Length == 0) return false; // punctuation-only output (e.g. "{}") is short, not repetitive
        if (words.Length >= MinWordsForDistinct && (double)words.Distinct().Count() / words.Length < MinDistinctRatio) return true;
        return MaxNGramCount(words, NGram) >= MaxRepeats;
    }

    /// <summary>How often the most frequent word n-gram of <paramref name="text"/> occurs (0 when it is shorter than n words).</summary>
    public int MostRepeatedNGram(string text) =>
        MaxNGramCount([.. Word.Matches(text).Select(m => m.Value.ToLowerInvariant())], NGram);

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
