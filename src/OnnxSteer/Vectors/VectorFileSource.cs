using System.Diagnostics.CodeAnalysis;
using OnnxSteer.Runtime;

namespace OnnxSteer.Vectors;

/// <summary>The one loader of vector files for steering: a safetensors vector file, a GGUF control vector, or every
/// <c>.safetensors</c>/<c>.gguf</c> file in a folder, as an <see cref="ISteeringVectorSource"/> by vector name.
/// <c>generate --steer</c>, <c>eval</c>, <c>sweep</c> and <c>demo</c> all load vectors through it.</summary>
public sealed class VectorFileSource : ISteeringVectorSource
{
    private readonly Dictionary<string, (InstructionVector Vector, string Path)> _vectors;
    private readonly IReadOnlyList<(string Path, InstructionVectorFile File)> _files;

    private VectorFileSource(Dictionary<string, (InstructionVector, string)> vectors, IReadOnlyList<(string, InstructionVectorFile)> files)
    {
        _vectors = vectors;
        _files = files;
    }

    /// <summary>The vector names available.</summary>
    public IReadOnlyCollection<string> Names => _vectors.Keys;

    /// <summary>Wraps loaded vector files (a name found in two files is refused).</summary>
    /// <exception cref="OnnxSteerException">Two vectors of the same name (InvalidVector).</exception>
    public static VectorFileSource From(params InstructionVectorFile[] files) =>
        Create(files.Select((f, i) => ($"vector file {i + 1}", f)).ToList());

    /// <summary>Loads a vector file, or every .safetensors and .gguf file in a folder (in ordinal name order).</summary>
    /// <exception cref="OnnxSteerException">Missing path or an empty folder (NotFound), an invalid file or a name found
    /// in two files (InvalidVector).</exception>
    public static VectorFileSource Load(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        if (System.IO.Directory.Exists(path))
        {
            var found = System.IO.Directory.GetFiles(path)
                .Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
                .Order(StringComparer.Ordinal).ToList();
            if (found.Count == 0) throw new OnnxSteerException(ErrorKind.NotFound, $"vector folder '{path}' holds no .safetensors or .gguf file.");
            return Create([.. found.Select(f => (f, InstructionVectorFile.Load(f)))]);
        }
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"vector file '{path}' does not exist.");
        return Create([(path, InstructionVectorFile.Load(path))]);
    }

    private static VectorFileSource Create(IReadOnlyList<(string Path, InstructionVectorFile File)> files)
    {
        var vectors = new Dictionary<string, (InstructionVector, string)>(StringComparer.Ordinal);
        foreach (var (path, file) in files)
            foreach (var v in file.Vectors)
                if (!vectors.TryAdd(v.Name, (v, path)))
                    throw new OnnxSteerException(ErrorKind.InvalidVector, $"two vectors are named '{v.Name}' (the second in '{path}'); names must be unique.");
        return new VectorFileSource(vectors, files);
    }

    /// <summary>The file a vector came from (its path, or "vector file N" for <see cref="From"/>).</summary>
    /// <exception cref="OnnxSteerException">No such vector (InvalidVector).</exception>
    public string FileOf(string name) => _vectors.TryGetValue(name, out var e) ? e.Path : throw NoSuchVector(name);

    /// <summary>The vector named <paramref name="name"/>.</summary>
    /// <exception cref="OnnxSteerException">No such vector (InvalidVector), naming the vectors there are.</exception>
    public InstructionVector Get(string name) => _vectors.TryGetValue(name, out var e) ? e.Vector : throw NoSuchVector(name);

    /// <summary>The only vector's name, for FILE specs without :NAME.</summary>
    /// <exception cref="OnnxSteerException">The source holds several vectors (InvalidVector).</exception>
    public string SingleName() => _vectors.Count == 1 ? _vectors.Keys.First()
        : throw new OnnxSteerException(ErrorKind.InvalidVector, $"the vector file holds {_vectors.Count} vectors ({string.Join(", ", _vectors.Keys)}); name one (FILE:NAME).");

    /// <summary>Load-time warnings of every file, and <see cref="InstructionVectorFile.CheckAgainst"/> of each against
    /// <paramref name="model"/>, each prefixed with its file's name.</summary>
    /// <exception cref="OnnxSteerException">A vector that cannot steer the model (hidden size: InvalidVector; layers: UnsupportedModel).</exception>
    public IReadOnlyList<string> CheckAgainst(ModelFingerprint model)
    {
        var warnings = new List<string>();
        foreach (var (path, file) in _files)
            warnings.AddRange(file.Warnings.Concat(file.CheckAgainst(model)).Select(w => $"{Path.GetFileName(path)}: {w}"));
        return [.. warnings.Distinct()];
    }

    /// <inheritdoc/>
    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector)
    {
        vector = _vectors.TryGetValue(name, out var e) && e.Vector.Layers.TryGetValue(layer, out var l) ? l.ToSteeringVector() : null;
        return vector is not null;
    }

    /// <inheritdoc/>
    public IReadOnlyCollection<int>? LayersOf(string name) => _vectors.TryGetValue(name, out var e) ? [.. e.Vector.Layers.Keys] : null;

    private OnnxSteerException NoSuchVector(string name) => new(ErrorKind.InvalidVector,
        $"no vector named '{name}'; the vectors are {string.Join(", ", _vectors.Keys.Order(StringComparer.Ordinal))}.");
}
