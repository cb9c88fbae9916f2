using System.Globalization;
using OnnxSteer.Contract;

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
                $"the vectors share no layer ({string.Join("; ", loaded.Select(l => $"{l.Vector.Name}: {LayerSelection.Format(l.Vector.Layers.Keys)}"))}).");
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

    /// <summary>Writes a vector file in the format its extension names (.gguf or .safetensors), keeping the layers of
    /// <paramref name="layers"/> (default all) that each vector has: a selection is clamped to the layers present, and a
    /// GGUF export drops layer 0, which llama.cpp never steers (GGUF <c>direction.N</c> is added after block N, N ≥ 1).</summary>
    /// <returns>Notes on layers left out (possibly none).</returns>
    /// <exception cref="OnnxSteerException">Unknown extension (Usage), a vector left with no layer (InvalidVector), write failure (Output).</exception>
    public static IReadOnlyList<string> Convert(InstructionVectorFile file, string output, string? name, GgufScale scale, LayerSelection? layers = null)
    {
        layers ??= LayerSelection.All;
        var notes = new List<string>();
        var ext = Path.GetExtension(output).ToLowerInvariant();
        if (ext is not (".gguf" or ".safetensors"))
            throw new OnnxSteerException(ErrorKind.Usage, $"output '{output}' must end in .gguf or .safetensors.");
        var gguf = ext == ".gguf";
        var vectors = name is not null || gguf ? [file.Get(name)] : file.Vectors;
        var kept = new List<InstructionVector>();
        foreach (var v in vectors)
        {
            var chosen = layers.Within(v.Layers.Keys).ToList();
            if (!layers.IsAll && layers.Layers!.Except(chosen).ToList() is { Count: > 0 } absent)
                notes.Add($"vector '{v.Name}' has no layer {LayerSelection.Format(absent)} (it has {LayerSelection.Format(v.Layers.Keys)}); left out.");
            if (gguf && chosen.Remove(0))
                notes.Add($"vector '{v.Name}': layer 0 left out: llama.cpp adds GGUF direction.N after block N and never steers block 0.");
            if (chosen.Count == 0)
                throw new OnnxSteerException(ErrorKind.InvalidVector,
                    $"vector '{v.Name}' has none of the layers asked for{(gguf ? " that GGUF can hold (1 and up)" : "")}; it has {LayerSelection.Format(v.Layers.Keys)}.");
            kept.Add(chosen.Count == v.Layers.Count ? v : v with { Layers = chosen.ToDictionary(l => l, v.Layer) });
        }
        if (gguf) file.SaveGguf(output, kept[0].Name, scale, [.. kept[0].Layers.Keys.Order()]);
        else (kept.SequenceEqual(file.Vectors) ? file : InstructionVectorFile.Create(kept, file.Model)).Save(output);
        return notes;
    }
}
