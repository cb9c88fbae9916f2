namespace OnnxSteer.Evaluation;

/// <summary>IFEval's two scorings of a response (its <c>evaluation_lib.py</c>): strict checks the response as
/// generated; loose accepts the response if any of eight variants passes: the response, without its first line,
/// without its last line, without both, and each of those with every <c>*</c> removed. A blank variant never passes.</summary>
internal static class IfEval
{
    /// <summary>Strict: the response as generated follows the instruction.</summary>
    public static bool FollowsStrict(InstructionCheck check, string response) =>
        response.Trim().Length > 0 && check.IsFollowedBy(response);

    /// <summary>Loose: some variant of the response (see <see cref="LooseVariants"/>) follows the instruction.</summary>
    public static bool FollowsLoose(InstructionCheck check, string response) =>
        LooseVariants(response).Any(v => v.Trim().Length > 0 && check.IsFollowedBy(v));

    /// <summary>The eight variants IFEval's loose scoring tries, in its order.</summary>
    public static IReadOnlyList<string> LooseVariants(string response)
    {
        var lines = response.Split('\n');
        var removeFirst = string.Join('\n', lines.Skip(1)).Trim();
        var removeLast = string.Join('\n', lines.Take(lines.Length - 1)).Trim();
        var removeBoth = lines.Length >= 2 ? string.Join('\n', lines[1..^1]).Trim() : "";
        return
        [
            response,
            response.Replace("*", "", StringComparison.Ordinal),
            removeFirst,
            removeLast,
            removeBoth,
            removeFirst.Replace("*", "", StringComparison.Ordinal),
            removeLast.Replace("*", "", StringComparison.Ordinal),
            removeBoth.Replace("*", "", StringComparison.Ordinal),
        ];
    }
}
