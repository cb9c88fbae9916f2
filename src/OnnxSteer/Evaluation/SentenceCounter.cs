namespace OnnxSteer.Evaluation;

/// <summary>Counts sentences the way IFEval's <c>count_sentences</c> (NLTK's English punkt model) does on ordinary
/// prose, without NLTK: a sentence ends at a run of <c>. ! ?</c> (with any closing quotes or brackets after it)
/// followed by whitespace or the end of the text, unless the period belongs to a common abbreviation, an initial
/// or an ellipsis followed by a lowercase word. Text after the last break counts as one more sentence; line
/// breaks alone do not end a sentence (punkt does not split on them either).</summary>
internal static class SentenceCounter
{
    // Abbreviations that punkt's English model knows and that do not end a sentence when followed by a word.
    private static readonly HashSet<string> Abbreviations = new(StringComparer.OrdinalIgnoreCase)
    {
        "mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs", "e.g", "i.e", "inc", "ltd", "co", "corp", "fig",
        "approx", "u.s", "u.k", "a.m", "p.m", "mt", "no", "jan", "feb", "aug", "sept", "oct", "nov", "dec",
    };

    private const string Closers = "\"')]}\u201d\u2019";

    /// <summary>The number of sentences in <paramref name="text"/>; 0 for blank text.</summary>
    public static int Count(string text)
    {
        var count = 0;
        var sentenceHasContent = false;
        var i = 0;
        while (i < text.Length)
        {
            var c = text[i];
            if (c is '.' or '!' or '?')
            {
                var start = i;
                var onlyPeriods = true;
                while (i < text.Length && text[i] is '.' or '!' or '?')
                {
                    if (text[i] != '.') onlyPeriods = false;
                    i++;
                }
                while (i < text.Length && Closers.Contains(text[i])) i++;
                var atEnd = i >= text.Length;
                if (!atEnd && !char.IsWhiteSpace(text[i]))
                {
                    sentenceHasContent = true; // "3.5", "example.com", "a.b": not a break
                    continue;
                }
                if (onlyPeriods && !IsBreakAfterPeriods(text, start, i - start, i))
                {
                    sentenceHasContent = true;
                    continue;
                }
                count++;
                sentenceHasContent = false;
                continue;
            }
            if (!char.IsWhiteSpace(c)) sentenceHasContent = true;
            i++;
        }
        return count + (sentenceHasContent ? 1 : 0);
    }

    private static bool IsBreakAfterPeriods(string text, int periodStart, int periodRunLength, int after)
    {
        if (NextWordStart(text, after) is not { } next) return true; // end of text
        var nextIsUpper = !char.IsLower(next);
        if (periodRunLength >= 2) return nextIsUpper; // "well... maybe" continues; "end... The" breaks
        var word = PreviousWord(text, periodStart);
        if (word.Length == 1 && char.IsUpper(word[0])) return false; // an initial: "J. Smith"
        if (Abbreviations.Contains(word)) return false;
        return true;
    }

    private static string PreviousWord(string text, int end)
    {
        var s = end;
        while (s > 0 && !char.IsWhiteSpace(text[s - 1])) s--;
        return text[s..end].TrimStart('(', '"', '\'', '[', '\u201c', '\u2018');
    }

    // The first letter or digit after the break, or null at the end of the text.
    private static char? NextWordStart(string text, int from)
    {
        for (var s = from; s < text.Length; s++)
            if (char.IsLetterOrDigit(text[s])) return text[s];
        return null;
    }
}
