using System.Globalization;

namespace OnnxSteer.Contract;

/// <summary>A set of decoder layers as users write it: <c>all</c>, <c>none</c>, or a list such as <c>3,5,10-12</c>.</summary>
public sealed class LayerSelection
{
    private readonly List<(int From, int To)>? _ranges; // null = all

    private LayerSelection(List<(int, int)>? ranges, string text) { _ranges = ranges; Text = text; }

    /// <summary>Every layer of the model.</summary>
    public static LayerSelection All { get; } = new(null, "all");

    /// <summary>No layer.</summary>
    public static LayerSelection None { get; } = new([], "none");

    /// <summary>The selection as written.</summary>
    public string Text { get; }

    /// <summary>The given layers.</summary>
    public static LayerSelection Of(params int[] layers) =>
        new(layers.Select(l => (l, l)).ToList(), string.Join(",", layers));

    /// <summary>Parses <c>all</c>, <c>none</c> or a comma-separated list of layers and inclusive ranges.</summary>
    /// <exception cref="OnnxSteerException">Usage error naming <paramref name="option"/> and the bad part.</exception>
    public static LayerSelection Parse(string text, string option = "--layers")
    {
        var t = text.Trim();
        if (t.Equals("all", StringComparison.OrdinalIgnoreCase)) return All;
        if (t.Equals("none", StringComparison.OrdinalIgnoreCase) || t.Length == 0) return None;
        var ranges = new List<(int, int)>();
        foreach (var raw in t.Split(','))
        {
            var part = raw.Trim();
            var dash = part.IndexOf('-', 1 < part.Length ? 1 : 0);
            bool ok;
            int from, to;
            if (dash > 0)
                ok = int.TryParse(part[..dash], NumberStyles.None, CultureInfo.InvariantCulture, out from)
                     & int.TryParse(part[(dash + 1)..], NumberStyles.None, CultureInfo.InvariantCulture, out to);
            else
            {
                ok = int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out from);
                to = from;
            }
            if (!ok)
                throw new OnnxSteerException(ErrorKind.Usage, $"{option}: '{part}' is not a layer number or range (expected all, none, or a list like 3,5,10-12).");
            if (to < from)
                throw new OnnxSteerException(ErrorKind.Usage, $"{option}: range '{part}' runs backwards.");
            ranges.Add((from, to));
        }
        return new LayerSelection(ranges, t);
    }

    /// <summary>The selected layers of a model with <paramref name="numLayers"/> layers, sorted and distinct.</summary>
    /// <exception cref="OnnxSteerException">A layer the model does not have ("layer 40 requested; the model has 32 layers (0-31)").</exception>
    public IReadOnlyList<int> Resolve(int numLayers)
    {
        if (_ranges is null) return Enumerable.Range(0, numLayers).ToList();
        var result = new SortedSet<int>();
        foreach (var (from, to) in _ranges)
        {
            if (to >= numLayers)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"layer {(from >= numLayers ? from : to)} requested; the model has {numLayers} layers (0-{numLayers - 1}).");
            for (var l = from; l <= to; l++) result.Add(l);
        }
        return result.ToList();
    }

    /// <inheritdoc/>
    public override string ToString() => Text;
}
