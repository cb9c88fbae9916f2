using System.Text.Json;
using OnnxSteer.Contract;
using System.Diagnostics.CodeAnalysis;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;

namespace OnnxSteer.Vectors;

/// <summary>What the direction tensors of an exported GGUF control vector hold.</summary>
public enum GgufScale
{
    /// <summary>The unit direction u_hat (default): llama.cpp's <c>--control-vector-scaled FILE c</c> then adds c·u_hat,
    /// the same as OnnxSteer's additive steering with weight c.</summary>
    Unit,
    /// <summary>The raw mean difference u = |u|·u_hat (what repeng-style vectors look like): strength 1 adds the average
    /// difference between with- and without-instruction activations.</summary>
    MeanDiff,
}

/// <summary>A vector file: one or more named <see cref="InstructionVector"/>s with the fingerprint of the model they were
/// computed on. Saved as safetensors (the native format) and convertible to and from GGUF control vectors.</summary>
/// <remarks>
/// safetensors layout: a one-vector file holds tensors <c>direction.{L}</c> (unit float32 [hidden]) and <c>mean_diff.{L}</c>;
/// a file with several vectors prefixes each vector's tensors with its name: <c>{name}/direction.{L}</c>,
/// <c>{name}/mean_diff.{L}</c>. The header's <c>__metadata__["onnxsteer.vectors"]</c> is a JSON description (format
/// version, model fingerprint, and per vector its name, method, pair count and per-layer norm, z_bar, mean projection of
/// the without-prompts and separability). Layer L is the residual stream after decoder block L (0-based).
/// </remarks>
public sealed class InstructionVectorFile : ISteeringVectorSource
{
    private InstructionVectorFile(IReadOnlyList<InstructionVector> vectors, ModelFingerprint? model, IReadOnlyList<string> warnings)
    {
        Vectors = vectors;
        Model = model;
        Warnings = warnings;
    }

    /// <summary>The vectors, in file order.</summary>
    public IReadOnlyList<InstructionVector> Vectors { get; }

    /// <summary>The model the vectors were computed on, when the file says.</summary>
    public ModelFingerprint? Model { get; }

    /// <summary>Things worth telling the user about the file that did not stop it loading.</summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>Creates a file model from vectors (validated; names must be unique and widths equal).</summary>
    /// <exception cref="OnnxSteerException">Invalid vectors, duplicate names or mixed widths (InvalidVector).</exception>
    public static InstructionVectorFile Create(IEnumerable<InstructionVector> vectors, ModelFingerprint? model)
    {
        var list = vectors.ToList();
        if (list.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, "a vector file needs at least one vector.");
        var names = new HashSet<string>(StringComparer.Ordinal);
        foreach (var v in list)
        {
            v.Validate();
            if (!names.Add(v.Name)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"two vectors are named '{v.Name}'.");
            if (v.HiddenSize != list[0].HiddenSize)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{v.Name}' has width {v.HiddenSize} but '{list[0].Name}' has {list[0].HiddenSize}.");
            if (model is not null && v.HiddenSize != model.HiddenSize)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{v.Name}' has width {v.HiddenSize} but the model fingerprint says hidden size {model.HiddenSize}.");
        }
        return new InstructionVectorFile(list, model, []);
    }

    /// <summary>The vector named <paramref name="name"/>, or the only vector when <paramref name="name"/> is null.</summary>
    /// <exception cref="OnnxSteerException">No such vector, or a name is needed because the file holds several (InvalidVector).</exception>
    public InstructionVector Get(string? name = null)
    {
        if (name is null)
        {
            if (Vectors.Count == 1) return Vectors[0];
            throw new OnnxSteerException(ErrorKind.InvalidVector,
                $"the file holds {Vectors.Count} vectors ({string.Join(", ", Vectors.Select(v => v.Name))}); name one (FILE:NAME).");
        }
        return Vectors.FirstOrDefault(v => v.Name == name) ?? throw new OnnxSteerException(ErrorKind.InvalidVector,
            $"no vector named '{name}'; the file holds {string.Join(", ", Vectors.Select(v => v.Name))}.");
    }

    /// <inheritdoc/>
    public IReadOnlyCollection<int>? LayersOf(string name) => Vectors.FirstOrDefault(x => x.Name == name)?.Layers.Keys.ToList();

    /// <summary>Steering-vector lookup for the runtime (<c>Steering.From(file)</c>): the vector <paramref name="name"/> at
    /// <paramref name="layer"/>, as its unit direction, z_bar and norm. An empty name means the file's only vector.</summary>
    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector)
    {
        var v = string.IsNullOrEmpty(name) ? (Vectors.Count == 1 ? Vectors[0] : null) : Vectors.FirstOrDefault(x => x.Name == name);
        vector = v is not null && v.Layers.TryGetValue(layer, out var l) ? l.ToSteeringVector() : null;
        return vector is not null;
    }

    /// <summary>Loads a safetensors vector file or a GGUF control vector (recognised by its magic bytes).</summary>
    /// <exception cref="OnnxSteerException">Missing file (NotFound) or an invalid file of either format (InvalidVector).</exception>
    public static InstructionVectorFile Load(string path)
    {
        return Parse(VectorFileIO.ReadBounded(path, Safetensors.MaxFileBytes), path);
    }

    /// <summary>Parses a whole vector file held in memory; <paramref name="path"/> names it in messages.</summary>
    internal static InstructionVectorFile Parse(byte[] bytes, string path)
    {
        if (bytes.Length >= 4 && BitConverter.ToUInt32(bytes, 0) == Gguf.Magic && BitConverter.IsLittleEndian)
            return FromGguf(Gguf.Parse(bytes, path), path);
        var (tensors, metadata) = Safetensors.Parse(bytes, path);
        return FromSafetensors(tensors, metadata, path);
    }

    /// <summary>Checks the file against a model: every layer must exist and the hidden size must match (errors); a different
    /// model type is only a warning, because vectors from an instruct model are meant to steer its base model too.</summary>
    /// <returns>Warnings for the user (possibly none).</returns>
    /// <exception cref="OnnxSteerException">Hidden size mismatch (InvalidVector) or a layer the model lacks (UnsupportedModel).</exception>
    public IReadOnlyList<string> CheckAgainst(ModelFingerprint model)
    {
        var warnings = new List<string>();
        foreach (var v in Vectors)
        {
            if (v.HiddenSize != model.HiddenSize)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{v.Name}' has width {v.HiddenSize}; the model's hidden size is {model.HiddenSize}.");
            var missing = v.Layers.Keys.Where(l => l >= model.NumLayers).ToList();
            if (missing.Count > 0)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"vector '{v.Name}' has layer {missing[0]}; the model has {model.NumLayers} layers (0-{model.NumLayers - 1}).");
        }
        if (Model is not null)
        {
            if (Model.NumLayers != model.NumLayers)
                warnings.Add($"the vectors were computed on a model with {Model.NumLayers} layers; this one has {model.NumLayers}.");
            if (Model.ModelType is { } a && model.ModelType is { } b && !string.Equals(a, b, StringComparison.OrdinalIgnoreCase))
                warnings.Add($"the vectors were computed on a '{a}' model; this one is '{b}' (fine for an instruct model's base model).");
            else if (Model.SourceGraphSha256 == model.SourceGraphSha256 && Model.SourceWeightsFingerprint is { } w1
                     && model.SourceWeightsFingerprint is { } w2 && w1 != w2)
                warnings.Add("the vectors were computed on a model with the same graph but other weights (another fine-tune, or its base model).");
        }
        return warnings;
    }

    /// <summary>The fingerprint of a patched model, from its steering.json.</summary>
    public static ModelFingerprint FingerprintOf(SteeringManifest manifest) => new()
    {
        HiddenSize = manifest.HiddenSize,
        NumLayers = manifest.NumLayers,
        ModelType = manifest.ModelType,
        SourceGraphSha256 = manifest.Source.GraphSha256,
        SourceWeightsFingerprint = manifest.Source.WeightsFingerprint,
    };

    /// <summary>Saves as safetensors, atomically.</summary>
    /// <exception cref="OnnxSteerException">The file cannot be written (Output).</exception>
    public void Save(string path)
    {
        var single = Vectors.Count == 1;
        var tensors = new List<FloatTensor>();
        var description = new VectorFileDescription { Model = Model, Vectors = [] };
        foreach (var v in Vectors)
        {
            var prefix = single ? "" : v.Name + "/";
            foreach (var l in v.Layers.Values.OrderBy(l => l.Layer))
            {
                tensors.Add(new FloatTensor(VectorFormat.DirectionTensor(prefix, l.Layer), [l.Direction.Length], l.Direction));
                tensors.Add(new FloatTensor(VectorFormat.MeanDiffTensor(prefix, l.Layer), [l.MeanDiff.Length], l.MeanDiff));
            }
            description.Vectors.Add(Describe(v, prefix));
        }
        var metadata = new Dictionary<string, string> { [VectorFormat.MetadataKey] = JsonSerializer.Serialize(description, VectorFormat.Json) };
        AtomicFile.Write(path, stream => Safetensors.Write(stream, tensors, metadata));
    }

    /// <summary>Saves one vector as a GGUF control vector for llama.cpp (<c>--control-vector</c>) and repeng, atomically.
    /// GGUF <c>direction.N</c> is added to the output of llama.cpp block N, which is OnnxSteer's layer N; llama.cpp never
    /// steers block 0, so a vector with layer 0 is refused (pick layers with <paramref name="layers"/>).</summary>
    /// <exception cref="OnnxSteerException">Layer 0 or a missing layer (UnsupportedModel), write failure (Output).</exception>
    public void SaveGguf(string path, string? vectorName = null, GgufScale scale = GgufScale.Unit, IReadOnlyList<int>? layers = null)
    {
        var v = Get(vectorName);
        var chosen = layers is null ? v.Layers.Values.ToList() : layers.Select(v.Layer).ToList();
        if (chosen.Any(l => l.Layer == 0))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"vector '{v.Name}' has layer 0, which GGUF control vectors cannot express: llama.cpp adds direction.N to the output of block N " +
                $"and never steers block 0. Export layers {LayerSelection.Format(v.Layers.Keys.Where(k => k > 0))} only.");
        var directions = chosen.ToDictionary(l => l.Layer, l => scale == GgufScale.Unit ? l.Direction : l.MeanDiff);
        var kept = new InstructionVector
        {
            Name = v.Name, Method = v.Method, PairCount = v.PairCount, ChatTemplate = v.ChatTemplate,
            Layers = chosen.ToDictionary(l => l.Layer),
        };
        var description = new VectorFileDescription { Model = Model, Vectors = [Describe(kept, "")] };
        var extra = new Dictionary<string, string>
        {
            [VectorFormat.GgufVectorKey] = JsonSerializer.Serialize(description, VectorFormat.Json),
            [VectorFormat.GgufScaleKey] = scale == GgufScale.Unit ? "unit" : "mean_diff",
        };
        AtomicFile.Write(path, stream => Gguf.Write(stream, Model?.ModelType ?? "", directions, extra));
    }

    private static VectorDescription Describe(InstructionVector v, string prefix) => new()
    {
        Name = v.Name,
        Method = v.Method,
        PairCount = v.PairCount,
        ChatTemplate = v.ChatTemplate,
        TensorPrefix = prefix,
        Layers = new SortedDictionary<int, LayerDescription>(v.Layers.Values.ToDictionary(l => l.Layer, l => new LayerDescription
        {
            Norm = l.Norm, ZBar = l.ZBar, MeanProjectionWithout = l.MeanProjectionWithout, Separability = l.Separability,
        })),
    };

    private static VectorFileDescription? ParseDescription(string? json, string path, string key)
    {
        if (json is null) return null;
        VectorFileDescription? description;
        try
        {
            description = JsonSerializer.Deserialize<VectorFileDescription>(json, VectorFormat.Json);
        }
        catch (JsonException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': the {key} description is not valid JSON ({e.Message}).");
        }
        if (description is null || description.Vectors is null)
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': the {key} description has no vectors.");
        if (description.Format != VectorFormat.FormatName || description.FormatVersion != VectorFormat.FormatVersion)
            throw new OnnxSteerException(ErrorKind.InvalidVector,
                $"'{path}' is {description.Format} version {description.FormatVersion}; this onnxsteer reads {VectorFormat.FormatName} version {VectorFormat.FormatVersion}.");
        if (description.Model is { } m && (m.HiddenSize <= 0 || m.NumLayers <= 0))
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': model fingerprint has hidden size {m.HiddenSize} and {m.NumLayers} layers.");
        return description;
    }

    private static InstructionVectorFile FromSafetensors(IReadOnlyList<FloatTensor> tensors, IReadOnlyDictionary<string, string> metadata, string path)
    {
        var byName = tensors.ToDictionary(t => t.Name, StringComparer.Ordinal);
        foreach (var t in tensors)
        {
            if (t.Shape.Length != 1)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': tensor '{t.Name}' has shape [{string.Join(", ", t.Shape)}]; vector tensors are 1-D.");
            VectorMath.CheckFinite(t.Data, $"'{path}': tensor '{t.Name}'");
        }
        metadata.TryGetValue(VectorFormat.MetadataKey, out var json);
        var description = ParseDescription(json, path, VectorFormat.MetadataKey);
        var warnings = new List<string>();
        if (description is null)
        {
            // A plain file of direction.N (and maybe mean_diff.N) tensors, e.g. written by another tool: one vector.
            warnings.Add($"'{path}' has no {VectorFormat.MetadataKey} metadata; read its direction.N tensors as one vector without statistics.");
            var raw = new Dictionary<int, float[]>();
            foreach (var t in tensors)
            {
                var layer = Gguf.ParseDirectionName(t.Name);
                if (layer is null)
                {
                    if (!t.Name.StartsWith("mean_diff.", StringComparison.Ordinal))
                        throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': tensor '{t.Name}' is neither direction.N nor mean_diff.N.");
                    continue;
                }
                raw[layer.Value] = byName.TryGetValue(VectorFormat.MeanDiffTensor("", layer.Value), out var md) ? md.Data : t.Data;
            }
            if (raw.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}' holds no direction.N tensors.");
            var vector = InstructionVector.FromMeanDiffs(NameFromPath(path), "imported", raw);
            return new InstructionVectorFile([vector], null, warnings);
        }

        var used = new HashSet<string>(StringComparer.Ordinal);
        var vectors = new List<InstructionVector>();
        foreach (var d in description.Vectors)
        {
            VectorFormat.CheckName(d.Name);
            var expectedPrefix = description.Vectors.Count == 1 ? "" : d.Name + "/";
            if (d.TensorPrefix != expectedPrefix)
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': vector '{d.Name}' has tensor prefix '{d.TensorPrefix}'; expected '{expectedPrefix}'.");
            if (d.Layers is null || d.Layers.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': vector '{d.Name}' lists no layers.");
            var layers = new SortedDictionary<int, VectorLayer>();
            foreach (var (layer, stats) in d.Layers)
            {
                var dirName = VectorFormat.DirectionTensor(d.TensorPrefix, layer);
                var diffName = VectorFormat.MeanDiffTensor(d.TensorPrefix, layer);
                if (!byName.TryGetValue(dirName, out var dir) || !byName.TryGetValue(diffName, out var diff))
                    throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': vector '{d.Name}' lists layer {layer} but tensor '{dirName}' or '{diffName}' is missing.");
                used.Add(dirName);
                used.Add(diffName);
                if (stats is null) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': vector '{d.Name}' layer {layer} has no statistics.");
                layers[layer] = new VectorLayer
                {
                    Layer = layer, Direction = dir.Data, MeanDiff = diff.Data, Norm = (float)stats.Norm, ZBar = stats.ZBar,
                    MeanProjectionWithout = stats.MeanProjectionWithout, Separability = stats.Separability,
                };
            }
            var vector = new InstructionVector
            {
                Name = d.Name, Method = d.Method ?? "unknown", PairCount = d.PairCount, ChatTemplate = d.ChatTemplate, Layers = layers,
            };
            vectors.Add(vector);
        }
        var extra = tensors.Select(t => t.Name).Where(n => !used.Contains(n)).ToList();
        if (extra.Count > 0)
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': tensor '{extra[0]}' belongs to no vector listed in the metadata.");
        try
        {
            var file = Create(vectors, description.Model);
            return new InstructionVectorFile(file.Vectors, file.Model, warnings);
        }
        catch (OnnxSteerException e) when (e.Kind == ErrorKind.InvalidVector)
        {
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': {e.Message}", e);
        }
    }

    private static InstructionVectorFile FromGguf(GgufControlVector gguf, string path)
    {
        var warnings = new List<string>();
        if (gguf.Architecture != "controlvector")
            throw new OnnxSteerException(ErrorKind.InvalidVector,
                $"'{path}' is a GGUF file with general.architecture '{gguf.Architecture ?? "(missing)"}'; control vectors have 'controlvector'.");
        if (gguf.Directions.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}' holds no direction.N tensors.");
        if (gguf.LayerCount is { } count && count != gguf.Directions.Count)
            warnings.Add($"'{path}': controlvector.layer_count is {count} but the file holds {gguf.Directions.Count} direction tensors.");

        VectorFileDescription? description = null;
        if (gguf.Metadata.TryGetValue(VectorFormat.GgufVectorKey, out var json))
            description = ParseDescription(json as string ?? throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': {VectorFormat.GgufVectorKey} is not a string."), path, VectorFormat.GgufVectorKey);
        var scale = gguf.Metadata.TryGetValue(VectorFormat.GgufScaleKey, out var s) ? s as string : null;
        if (description is { Vectors.Count: not 1 })
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': {VectorFormat.GgufVectorKey} describes {description.Vectors.Count} vectors; a GGUF file holds one.");

        var d = description?.Vectors[0];
        var layers = new SortedDictionary<int, VectorLayer>();
        foreach (var (layer, values) in gguf.Directions)
        {
            VectorMath.CheckFinite(values, $"'{path}': tensor 'direction.{layer}'");
            LayerDescription? stats = null;
            if (d is not null && !d.Layers.TryGetValue(layer, out stats))
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': direction.{layer} is not described in {VectorFormat.GgufVectorKey}.");
            if (stats is not null && scale == "unit")
            {
                // Our own unit export: the direction is stored bit for bit; the mean difference is |u|·u_hat again.
                var diff = new float[values.Length];
                for (var i = 0; i < diff.Length; i++) diff[i] = (float)(values[i] * stats.Norm);
                layers[layer] = new VectorLayer
                {
                    Layer = layer, Direction = values, MeanDiff = diff, Norm = (float)stats.Norm, ZBar = stats.ZBar,
                    MeanProjectionWithout = stats.MeanProjectionWithout, Separability = stats.Separability,
                };
                continue;
            }
            // A raw control vector (repeng, llama.cpp's generator, or our mean_diff export): it is the mean difference.
            var norm = VectorMath.Norm(values);
            var direction = Math.Abs(norm - 1) < 1e-6 ? values : VectorMath.Normalize(values, $"'{path}': direction.{layer}").Direction;
            layers[layer] = new VectorLayer
            {
                Layer = layer, Direction = direction, MeanDiff = values, Norm = (float)norm, ZBar = stats?.ZBar,
                MeanProjectionWithout = stats?.MeanProjectionWithout, Separability = stats?.Separability,
            };
        }
        var vector = new InstructionVector
        {
            Name = d?.Name ?? NameFromPath(path),
            Method = d?.Method ?? "gguf control vector",
            PairCount = d?.PairCount,
            ChatTemplate = d?.ChatTemplate,
            Layers = layers,
        };
        var model = description?.Model;
        if (model is null && !string.IsNullOrEmpty(gguf.ModelHint))
            warnings.Add($"'{path}' was made for model '{gguf.ModelHint}' (controlvector.model_hint); it carries no hidden size or layer count beyond the directions.");
        try
        {
            var file = Create([vector], model);
            return new InstructionVectorFile(file.Vectors, file.Model, warnings);
        }
        catch (OnnxSteerException e) when (e.Kind == ErrorKind.InvalidVector)
        {
            throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{path}': {e.Message}", e);
        }
    }

    private static string NameFromPath(string path)
    {
        var stem = Path.GetFileNameWithoutExtension(path);
        var cleaned = new string(stem.Select(c => char.IsAsciiLetterOrDigit(c) || c is '.' or '_' or '-' ? c : '_').ToArray()).TrimStart('.', '_', '-');
        if (cleaned.Length > 128) cleaned = cleaned[..128];
        return cleaned.Length == 0 ? "vector" : cleaned;
    }
}
