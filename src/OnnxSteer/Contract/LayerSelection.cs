using System.Globalization;

namespace OnnxSteer.Contract;

/// <summary>A set of decoder layers as users write it: <c>all</c>, <c>none</c>, or a list such as <c>3,5,10-12</c>.
/// The one parser and formatter for every layer list (patch <c>--layers</c>/<c>--expose</c>, extract, sweep, vectors
/// convert, <c>--steer FILE@LAYERS</c>), so all of them accept and print the same text.</summary>
/// <remarks>Parts are separated by commas with optional spaces ("3,5" and "3, 5" are the same); a part is a layer
/// number or an inclusive range "a-b" with a ≤ b. Negative numbers are refused (there is no "count from the end").
/// <see cref="Format"/> writes the canonical form: ascending, ranges collapsed, no spaces, "none" when empty.</remarks>
public sealed class LayerSelection : IEquatable<LayerSelection>
{
    /// <summary>The largest layer number accepted; no decoder has more layers, and it bounds what a range can enumerate.</summary>
    public const int MaxLayer = 99_999;

    private readonly SortedSet<int>? _layers; // null = all

    private LayerSelection(SortedSet<int>? layers) => _layers = layers;

    /// <summary>Every layer of the model.</summary>
    public static LayerSelection All { get; } = new(null);

    /// <summary>No layer.</summary>
    public static LayerSelection None { get; } = new([]);

    /// <summary>True for <see cref="All"/>.</summary>
    public bool IsAll => _layers is null;

    /// <summary>True when no layer is selected.</summary>
    public bool IsNone => _layers is { Count: 0 };

    /// <summary>The selected layers, ascending; null for <see cref="All"/> (which depends on the model).</summary>
    public IReadOnlyList<int>? Layers => _layers?.ToList();

    /// <summary>The given layers.</summary>
    /// <exception cref="OnnxSteerException">A negative layer or one above <see cref="MaxLayer"/> (Usage).</exception>
    public static LayerSelection Of(params IEnumerable<int> layers)
    {
        var set = new SortedSet<int>();
        foreach (var l in layers)
            set.Add(l is >= 0 and <= MaxLayer ? l : throw new OnnxSteerException(ErrorKind.Usage, $"layer {l} is not a layer number (0-{MaxLayer})."));
        return new LayerSelection(set);
    }

    /// <summary>Parses <c>all</c>, <c>none</c> or a comma-separated list of layers and inclusive ranges.</summary>
    /// <param name="text">The text as the user wrote it.</param>
    /// <param name="what">What the text is, for the message ("--layers" in the CLI, "layers" by default).</param>
    /// <exception cref="OnnxSteerException">Usage error naming <paramref name="what"/> and the bad part.</exception>
    public static LayerSelection Parse(string text, string what = "layers")
    {
        ArgumentNullException.ThrowIfNull(text);
        var t = text.Trim();
        if (t.Equals("all", StringComparison.OrdinalIgnoreCase)) return All;
        if (t.Equals("none", StringComparison.OrdinalIgnoreCase)) return None;
        if (t.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, $"{what}: empty; expected all, none, or a list like 3,5,10-12.");
        var set = new SortedSet<int>();
        foreach (var raw in t.Split(','))
        {
            var part = raw.Trim();
            // The dash of a range is never the first character: "-3" is a negative number, refused below.
            var dash = part.IndexOf('-', Math.Min(1, part.Length));
            int from, to;
            bool ok = dash > 0
                ? TryLayer(part[..dash], out from) & TryLayer(part[(dash + 1)..], out to)
                : TryLayer(part, out from) & TryLayer(part, out to);
            if (!ok)
                throw new OnnxSteerException(ErrorKind.Usage,
                    $"{what}: '{part}' is not a layer number or range (expected all, none, or a list like 3,5,10-12 of layers 0-{MaxLayer}).");
            if (to < from) throw new OnnxSteerException(ErrorKind.Usage, $"{what}: range '{part}' runs backwards.");
            for (var l = from; l <= to; l++) set.Add(l);
        }
        return new LayerSelection(set);
    }

    private static bool TryLayer(string s, out int layer) =>
        int.TryParse(s.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out layer) && layer <= MaxLayer;

    /// <summary>The selected layers of a model with <paramref name="numLayers"/> layers, sorted and distinct.</summary>
    /// <exception cref="OnnxSteerException">A layer the model does not have ("layer 40 requested; the model has 32 layers (0-31)"; UnsupportedModel).</exception>
    public IReadOnlyList<int> Resolve(int numLayers)
    {
        if (_layers is null) return Enumerable.Range(0, numLayers).ToList();
        if (_layers.Count > 0 && _layers.Max >= numLayers)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"layer {_layers.Max} requested; the model has {numLayers} layers (0-{numLayers - 1}).");
        return _layers.ToList();
    }

    /// <summary>The selected layers among <paramref name="available"/> (all of them for <see cref="All"/>): the
    /// clamp used where a file or a model holds only some layers.</summary>
    public IReadOnlyList<int> Within(IEnumerable<int> available) =>
        available.Where(l => _layers is null || _layers.Contains(l)).Distinct().Order().ToList();

    /// <summary>"0-3,7" for [0,1,2,3,7] (any order, duplicates ignored); "none" when empty.</summary>
    public static string Format(IEnumerable<int> layers)
    {
        var sorted = layers.Distinct().Order().ToList();
        if (sorted.Count == 0) return "none";
        var parts = new List<string>();
        for (var i = 0; i < sorted.Count;)
        {
            var j = i;
            while (j + 1 < sorted.Count && sorted[j + 1] == sorted[j] + 1) j++;
            parts.Add(i == j ? sorted[i].ToString(CultureInfo.InvariantCulture) : $"{sorted[i]}-{sorted[j]}");
            i = j + 1;
        }
        return string.Join(",", parts);
    }

    /// <summary>The canonical text: <c>all</c>, <c>none</c> or <see cref="Format"/> of the layers; parses back to an equal selection.</summary>
    public override string ToString() => _layers is null ? "all" : Format(_layers);

    /// <summary>Same layers (or both <see cref="All"/>).</summary>
    public bool Equals(LayerSelection? other) => other is not null && ToString() == other.ToString();

    /// <inheritdoc/>
    public override bool Equals(object? obj) => Equals(obj as LayerSelection);

    /// <inheritdoc/>
    public override int GetHashCode() => StringComparer.Ordinal.GetHashCode(ToString());
}
