using System.Globalization;
using System.Text;

namespace OnnxSteer;

/// <summary>Makes text from model files safe to print on a terminal. A chat template's raise_exception message, a
/// template's source quoted in a parse error or a tokenizer's token text can hold escape sequences that retitle,
/// recolour or clear the user's terminal; the one rule: every control character (C0, DEL, C1) and the bidirectional
/// overrides that reorder what is shown become a visible <c>\xHH</c> / <c>\uHHHH</c> escape. Backslashes are left
/// alone, so escaping twice changes nothing.</summary>
public static class TerminalText
{
    /// <summary>The text with control characters escaped; with <paramref name="keepNewlines"/> line breaks stay
    /// (for multi-line output such as a bug report's stack trace), otherwise the result is one line.</summary>
    public static string Escape(string? text, bool keepNewlines = false)
    {
        if (string.IsNullOrEmpty(text)) return text ?? "";
        int first = 0;
        while (first < text.Length && !NeedsEscape(text[first], keepNewlines)) first++;
        if (first == text.Length) return text;
        var sb = new StringBuilder(text.Length + 16).Append(text, 0, first);
        for (int i = first; i < text.Length; i++)
        {
            char c = text[i];
            if (!NeedsEscape(c, keepNewlines)) sb.Append(c);
            else if (c <= 0xFF) sb.Append("\\x").Append(((int)c).ToString("x2", CultureInfo.InvariantCulture));
            else sb.Append("\\u").Append(((int)c).ToString("x4", CultureInfo.InvariantCulture));
        }
        return sb.ToString();
    }

    private static bool NeedsEscape(char c, bool keepNewlines) =>
        c switch
        {
            '\n' => !keepNewlines,
            < ' ' or '\x7f' => true,
            >= '\x80' and <= '\x9f' => true,
            // Bidirectional embeddings, overrides and isolates (the "trojan source" characters).
            >= '\u202a' and <= '\u202e' or >= '\u2066' and <= '\u2069' => true,
            _ => false,
        };
}
