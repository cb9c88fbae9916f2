using System.Text;

namespace OnnxSteer.Modeling.Chat.Jinja;

internal enum SegmentKind { Text, Output, Statement }

/// <summary>A piece of template source: literal text, the inside of <c>{{ }}</c>, or the inside of <c>{% %}</c>.</summary>
internal sealed record Segment(SegmentKind Kind, string Content);

/// <summary>Splits template source into segments (applying whitespace control) and expressions into tokens. Both
/// are single loops over the source, so their cost is linear whatever the input.</summary>
internal static class Lexer
{
    private sealed record Tag(SegmentKind Kind, string Content, bool Comment, bool TrimLeft, bool TrimRight, bool KeepLeft);

    public static List<Segment> Tokenize(string s)
    {
        // texts[k] is the text before tags[k]; the last text follows the last tag.
        var texts = new List<string>();
        var tags = new List<Tag>();
        int i = 0, textStart = 0;
        while (i < s.Length)
        {
            if (s[i] == '{' && i + 1 < s.Length && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
            {
                char open = s[i + 1];
                string close = open == '{' ? "}}" : open == '%' ? "%}" : "#}";
                texts.Add(s[textStart..i]);
                int start = i + 2;
                bool trimLeft = start < s.Length && s[start] == '-';
                bool keepLeft = start < s.Length && s[start] == '+';
                if (trimLeft || keepLeft) start++;
                int end = open == '#' ? s.IndexOf("#}", start, StringComparison.Ordinal) : FindClose(s, start, close);
                if (end < 0) throw new JinjaException($"unclosed {{{open} at offset {i}");
                int contentEnd = end;
                bool trimRight = contentEnd > start && s[contentEnd - 1] == '-';
                if (trimRight || (contentEnd > start && s[contentEnd - 1] == '+')) contentEnd--;
                tags.Add(new Tag(open == '{' ? SegmentKind.Output : SegmentKind.Statement, s[start..contentEnd].Trim(), open == '#', trimLeft, trimRight, keepLeft));
                i = end + 2;
                textStart = i;
            }
            else i++;
        }
        texts.Add(s[textStart..]);

        // Whitespace control, decided on the source text as Jinja does: "-" trims all whitespace beside a tag;
        // trim_blocks drops the first newline after a block tag; lstrip_blocks drops spaces and tabs between a
        // line start and a block tag.
        var result = new List<Segment>();
        for (int k = 0; k < texts.Count; k++)
        {
            var t = texts[k];
            int from = 0, to = t.Length;
            if (k > 0)
            {
                var before = tags[k - 1];
                if (before.TrimRight) while (from < to && char.IsWhiteSpace(t[from])) from++;
                else if (before.Kind == SegmentKind.Statement)
                {
                    if (t.StartsWith("\r\n", StringComparison.Ordinal)) from = 2;
                    else if (t.StartsWith('\n')) from = 1;
                }
            }
            if (k < tags.Count)
            {
                var after = tags[k];
                if (after.TrimLeft) while (to > from && char.IsWhiteSpace(t[to - 1])) to--;
                else if (after.Kind == SegmentKind.Statement && !after.KeepLeft)
                {
                    int j = t.Length;
                    while (j > 0 && (t[j - 1] == ' ' || t[j - 1] == '\t')) j--;
                    if ((j > 0 && t[j - 1] == '\n') || (j == 0 && k == 0)) to = Math.Max(from, j);
                }
            }
            if (to > from) result.Add(new Segment(SegmentKind.Text, t[from..to]));
            if (k < tags.Count && !tags[k].Comment) result.Add(new Segment(tags[k].Kind, tags[k].Content));
        }
        return result;
    }

    private static int FindClose(string s, int from, string close)
    {
        char quote = '\0';
        for (int i = from; i < s.Length - 1; i++)
        {
            char c = s[i];
            if (quote != '\0')
            {
                if (c == '\\') { i++; continue; }
                if (c == quote) quote = '\0';
                continue;
            }
            if (c == '\'' || c == '"') { quote = c; continue; }
            if (c == close[0] && s[i + 1] == close[1]) return i;
        }
        return -1;
    }

    /// <summary>Splits an expression into tokens; string literals become their quote char followed by the unescaped value.</summary>
    public static List<string> TokenizeExpression(string s)
    {
        var tokens = new List<string>();
        int i = 0;
        while (i < s.Length)
        {
            char c = s[i];
            if (char.IsWhiteSpace(c)) { i++; continue; }
            if (c is '\'' or '"')
            {
                var sb = new StringBuilder().Append(c);
                i++;
                while (i < s.Length && s[i] != c)
                {
                    if (s[i] == '\\' && i + 1 < s.Length)
                    {
                        i++;
                        sb.Append(s[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', _ => s[i] });
                    }
                    else sb.Append(s[i]);
                    i++;
                }
                if (i >= s.Length) throw new JinjaException("unterminated string");
                i++;
                tokens.Add(sb.ToString());
                continue;
            }
            if (char.IsAsciiDigit(c))
            {
                // Digits, then at most one fraction: "1.5.1" is 1.5 followed by ".1", as in Python.
                int st = i;
                while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
                if (i + 1 < s.Length && s[i] == '.' && char.IsAsciiDigit(s[i + 1]))
                    for (i++; i < s.Length && char.IsAsciiDigit(s[i]); i++) { }
                tokens.Add(s[st..i]);
                continue;
            }
            if (char.IsLetter(c) || c == '_')
            {
                int st = i;
                while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                tokens.Add(s[st..i]);
                continue;
            }
            var two = i + 1 < s.Length ? s.Substring(i, 2) : "";
            if (two is "==" or "!=" or "<=" or ">=" or "//") { tokens.Add(two); i += 2; continue; }
            tokens.Add(c.ToString());
            i++;
        }
        return tokens;
    }
}
