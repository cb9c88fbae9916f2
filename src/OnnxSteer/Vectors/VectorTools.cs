using System.Globalization;
using System.Text.Json.Nodes;

namespace OnnxSteer.Vectors;

/// <summary>One term of a combination: a vector chosen from a file, times a weight.</summary>
/// <param name="Path">The vector file (safetensors or GGUF).</param>
/// <param name="Name">The vector's name; null when the file holds one vector.</param>
/// <param name="Weight">The weight of its mean difference (negative subtracts, as the paper does for word exclusion).</param>
public sealed record VectorTerm(string Path, string? Name, double Weight)
{
    /// <summary>Parses <c>FILE[:NAME][*W]</c> (weight 1 when omitted). A colon followed by a path separator, or a drive letter,
    /// is part of the path, so Windows paths work.</summary>
    /// <exception cref="OnnxSteerException">A weight that is not a finite number (Usage).</exception>
    public static VectorTerm Parse(string text)
    {
        var weight = 1.0;
        var star = text.LastIndexOf('*');
        if (star >= 0)
        {
            var w = text[(star + 1)..];
            if (!double.TryParse(w, NumberStyles.Float, CultureInfo.InvariantCulture, out weight) || !double.IsFinite(weight))
                throw new OnnxSteerException(ErrorKind.Usage, $"'{text}': weight '{w}' is not a number (use FILE[:NAME]*W, e.g. a.safetensors:x*-1).");
            text = text[..star];
        }
        string? name = null;
        var colon = text.LastIndexOf(':');
        if (colon > 0 && colon < text.Length - 1 && text[(colon + 1)..].IndexOfAny(['/', '\\']) < 0)
        {
            name = text[(colon + 1)..];
            text = text[..colon];
        }
        if (text.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, "an empty vector file name was given.");
        return new VectorTerm(text, name, weight);
    }
}

/// <summary>Workers behind <c>onnxsteer vectors show|convert|combine</c>.</summary>
public static class VectorTools
{
    /// <summary>Parses a <c>--layers</c> value: "all" (or nothing) gives null, "3,5,10-12" gives those layers in order.</summary>
    /// <exception cref="OnnxSteerException">Text that is not a layer list (Usage).</exception>
    public static IReadOnlyList<int>? ParseLayers(string? text) => VectorFormat.ParseLayers(text);

    /// <summary>Combines vectors into one: at every layer that all terms have, u = Σ wᵢ·uᵢ over the terms' mean differences,
    /// renormalised into the direction. z_bar, separability and the pair count are not defined for a combination and are
    /// left empty (projection steering with a combined vector then needs an explicit target).</summary>
    /// <exception cref="OnnxSteerException">No shared layer, different widths, or a zero result (InvalidVector).</exception>
    public static InstructionVectorFile Combine(IReadOnlyList<VectorTerm> terms, string name)
    {
        if (terms.Count == 0) throw new OnnxSteerException(ErrorKind.Usage, "combine needs at least one FILE[:NAME]*W term.");
        VectorFormat.CheckName(name);
        var loaded = terms.Select(t =>
        {
            var file = InstructionVectorFile.Load(t.Path);
            return (Term: t, File: file, Vector: file.Get(t.Name));
        }).ToList();
        var width = loaded[0].Vector.HiddenSize;
        foreach (var l in loaded)
            if (l.Vector.HiddenSize != width)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{l.Term.Path}' vector '{l.Vector.Name}' has width {l.Vector.HiddenSize}; '{loaded[0].Term.Path}' has {width}.");
        var layers = loaded.Select(l => l.Vector.Layers.Keys).Aggregate((IEnumerable<int>)loaded[0].Vector.Layers.Keys, (a, b) => a.Intersect(b)).Order().ToList();
        if (layers.Count == 0)
            throw new OnnxSteerException(ErrorKind.InvalidVector,
                $"the vectors share no layer ({string.Join("; ", loaded.Select(l => $"{l.Vector.Name}: {VectorFormat.LayerList(l.Vector.Layers.Keys)}"))}).");
        var sums = new Dictionary<int, float[]>();
        foreach (var layer in layers)
        {
            var acc = new double[width];
            foreach (var l in loaded)
            {
                var diff = l.Vector.Layers[layer].MeanDiff;
                for (var i = 0; i < width; i++) acc[i] += l.Term.Weight * diff[i];
            }
            sums[layer] = acc.Select(x => (float)x).ToArray();
        }
        var method = "combination: " + string.Join(" + ", loaded.Select(l => $"{l.Term.Weight.ToString("R", CultureInfo.InvariantCulture)}*{l.Vector.Name}"));
        var vector = InstructionVector.FromMeanDiffs(name, method, sums);
        return InstructionVectorFile.Create([vector], loaded[0].File.Model);
    }

    /// <summary>Writes a vector file in the format its extension names (.gguf or .safetensors).</summary>
    /// <exception cref="OnnxSteerException">Unknown extension (Usage), layer 0 in a GGUF export (UnsupportedModel), write failure (Output).</exception>
    public static void Convert(InstructionVectorFile file, string output, string? name, GgufScale scale, IReadOnlyList<int>? layers)
    {
        var ext = Path.GetExtension(output).ToLowerInvariant();
        switch (ext)
        {
            case ".gguf":
                file.SaveGguf(output, name, scale, layers);
                break;
            case ".safetensors":
            {
                var chosen = name is null && layers is null ? file : Select(file, name, layers);
                chosen.Save(output);
                break;
            }
            default:
                throw new OnnxSteerException(ErrorKind.Usage, $"output '{output}' must end in .gguf or .safetensors.");
        }
    }

    private static InstructionVectorFile Select(InstructionVectorFile file, string? name, IReadOnlyList<int>? layers)
    {
        var vectors = name is null ? file.Vectors : [file.Get(name)];
        if (layers is not null)
            vectors = vectors.Select(v => v with { Layers = layers.Select(v.Layer).ToDictionary(l => l.Layer) }).ToList();
        return InstructionVectorFile.Create(vectors, file.Model);
    }

    /// <summary>A JSON description of a vector file for <c>vectors show --json</c>.</summary>
    public static JsonObject Describe(InstructionVectorFile file, string path)
    {
        var vectors = new JsonArray();
        foreach (var v in file.Vectors)
        {
            var layers = new JsonArray();
            foreach (var l in v.Layers.Values.OrderBy(l => l.Layer))
                layers.Add(new JsonObject
                {
                    ["layer"] = l.Layer, ["norm"] = l.Norm, ["z_bar"] = l.ZBar, ["mean_projection_without"] = l.MeanProjectionWithout,
                    ["separability"] = l.Separability,
                });
            vectors.Add(new JsonObject
            {
                ["name"] = v.Name, ["method"] = v.Method, ["pair_count"] = v.PairCount, ["chat_template"] = v.ChatTemplate,
                ["hidden_size"] = v.HiddenSize, ["layers"] = layers,
            });
        }
        return new JsonObject
        {
            ["path"] = path,
            ["model"] = file.Model is { } m ? new JsonObject
            {
                ["hidden_size"] = m.HiddenSize, ["num_layers"] = m.NumLayers, ["model_type"] = m.ModelType, ["source_graph_sha256"] = m.SourceGraphSha256,
            } : null,
            ["vectors"] = vectors,
            ["warnings"] = new JsonArray(file.Warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray()),
        };
    }

    /// <summary>Human-readable description for <c>vectors show</c>.</summary>
    public static void Print(InstructionVectorFile file, string path, TextWriter output)
    {
        string F(double? x, string format = "F3") => x is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";
        output.WriteLine(path);
        output.WriteLine(file.Model is { } m
            ? $"  model: {m.ModelType ?? "unknown type"}, hidden size {m.HiddenSize}, {m.NumLayers} layers, source graph {(m.SourceGraphSha256 is { Length: >= 12 } h ? h[..12] : m.SourceGraphSha256 ?? "unknown")}"
            : "  model: unknown (no fingerprint)");
        foreach (var v in file.Vectors)
        {
            output.WriteLine($"  vector '{v.Name}': {v.Method}, {(v.PairCount is { } n ? $"{n} pairs" : "pair count unknown")}, hidden {v.HiddenSize}, layers {VectorFormat.LayerList(v.Layers.Keys)}");
            output.WriteLine($"    {"layer",5} {"norm",12} {"z_bar",12} {"mean_proj_without",18} {"separability",12}");
            foreach (var l in v.Layers.Values.OrderBy(l => l.Layer))
                output.WriteLine($"    {l.Layer,5} {F(l.Norm, "G6"),12} {F(l.ZBar, "G6"),12} {F(l.MeanProjectionWithout, "G6"),18} {F(l.Separability),12}");
        }
        foreach (var w in file.Warnings) output.WriteLine($"  warning: {w}");
    }
}
