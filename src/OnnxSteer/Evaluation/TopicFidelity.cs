using System.Text.RegularExpressions;

namespace OnnxSteer.Evaluation;

/// <summary>Whether an answer is about what the prompt asked. The evaluation prompts name one topic each ("Tell me
/// about the honey.", "Explain what an egg is."); an answer that never names it answers another question (the bundled
/// model tends to describe "a camera" whatever it is asked), and its format checks say nothing about instruction
/// following on this prompt. A title (<c>&lt;&lt;…&gt;&gt;</c>) must name the topic too.</summary>
public static class TopicFidelity
{
    // The last "the X" / "a X" / "an X" of the prompt: every template of models/data/eval puts the topic there.
    private static readonly Regex TopicPattern = new(@"\b(?:the|an?)\s+([A-Za-z][A-Za-z-]*)\b", RegexOptions.CultureInvariant | RegexOptions.IgnoreCase);
    private static readonly Regex TitlePattern = new(@"<<([^\n]*?)>>", RegexOptions.CultureInvariant);

    /// <summary>The topic a prompt asks about (lower case), or null when it names none this way.</summary>
    public static string? TopicOf(string prompt)
    {
        var matches = TopicPattern.Matches(prompt);
        return matches.Count == 0 ? null : matches[^1].Groups[1].Value.ToLowerInvariant();
    }

    /// <summary>Whether <paramref name="text"/> names <paramref name="topic"/> as a word, in any case, singular or
    /// plural ("egg", "Eggs", "BENCHES", "berries").</summary>
    public static bool Names(string text, string topic)
    {
        var t = Regex.Escape(topic.ToLowerInvariant());
        var plural = topic.EndsWith('y') && topic.Length > 1 ? $"|{Regex.Escape(topic[..^1].ToLowerInvariant())}ies" : "";
        return Regex.IsMatch(text, $@"(?<![\p{{L}}\p{{N}}])(?:{t}(?:s|es)?{plural})(?![\p{{L}}\p{{N}}])",
            RegexOptions.CultureInvariant | RegexOptions.IgnoreCase);
    }

    /// <summary>Whether the response to <paramref name="item"/> names the topic of its query (<see cref="EvalItem.Prompt"/>,
    /// without the instruction, whose words are no topic). True when the query names no topic, or when the item forbids
    /// the topic word itself: the instruction then asks not to name it.</summary>
    public static bool IsOnTopic(EvalItem item, string response)
    {
        if (TopicOf(item.Prompt) is not { } topic) return true;
        if (item.Checks.Any(c => c.Args.ForbiddenWords?.Any(w => string.Equals(w.Trim(), topic, StringComparison.OrdinalIgnoreCase)) == true)) return true;
        return Names(response, topic);
    }

    /// <summary>Whether the response to <paramref name="prompt"/> is on topic; true when the prompt names no topic.</summary>
    public static bool IsOnTopic(string prompt, string response) => TopicOf(prompt) is not { } topic || Names(response, topic);

    /// <summary>Whether some <c>&lt;&lt;title&gt;&gt;</c> of the response names the prompt's topic (true when the
    /// prompt names none; false when there is no title).</summary>
    public static bool TitleNamesTopic(string prompt, string response)
    {
        var titles = TitlePattern.Matches(response);
        if (titles.Count == 0) return false;
        return TopicOf(prompt) is not { } topic || titles.Any(m => Names(m.Groups[1].Value, topic));
    }
}
