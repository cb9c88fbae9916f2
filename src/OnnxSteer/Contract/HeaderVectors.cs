namespace OnnxSteer.Contract;

/// <summary>How the vectors of header steering are named: one vector per position of the prompt's answer header (the
/// tokens the chat template puts after the user's message), counted from the end of the prompt. Extraction writes them,
/// steering reads them, the evaluation recognises them: one naming rule for all three.</summary>
public static class HeaderVectors
{
    /// <summary>The most prompt positions, counted from the end, that header steering and extraction handle.</summary>
    public const int MaxPositions = 64;

    private const string Infix = ".header-";

    /// <summary>The name of the vector for header position <paramref name="position"/> (1 = the last prompt token) of the
    /// vector <paramref name="name"/>: the name itself for position 1 (the paper's last-token vector), <c>{name}.header-{k}</c>
    /// for k ≥ 2.</summary>
    public static string Name(string name, int position) =>
        position == 1 ? name : name + Infix + position.ToString(System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>The vector a header-position vector belongs to (<c>x.header-3</c> → <c>x</c>); any other name unchanged.</summary>
    public static string BaseName(string name)
    {
        int at = name.LastIndexOf(Infix, StringComparison.Ordinal);
        return at > 0 && int.TryParse(name.AsSpan(at + Infix.Length), System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var k)
            && k >= 2 ? name[..at] : name;
    }
}
