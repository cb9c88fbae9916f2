using System.Diagnostics.CodeAnalysis;
using OnnxSteer.Vectors;

namespace OnnxSteer.Runtime;

/// <summary>An <see cref="ISteeringVectorSource"/> over vector files (OnnxSteer.Vectors: safetensors vector files and
/// GGUF control vectors): one file, or every .safetensors/.gguf file in a folder.</summary>
public sealed class VectorFileSource : ISteeringVectorSource
{
    private readonly Dictionary<string, InstructionVector> _vectors;

    private VectorFileSource(Dictionary<string, InstructionVector> vectors) => _vectors = vectors;

    /// <summary>The vector names available.</summary>
    public IReadOnlyCollection<string> Names => _vectors.Keys;

    /// <summary>Wraps loaded vector files (a name found in two files is refused).</summary>
    public static VectorFileSource From(params InstructionVectorFile[] files)
    {
        var vectors = new Dictionary<string, InstructionVector>(StringComparer.Ordinal);
        foreach (var file in files)
            foreach (var v in file.Vectors)
                if (!vectors.TryAdd(v.Name, v))
                    throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{v.Name}' is in more than one vector file");
        return new VectorFileSource(vectors);
    }

    /// <summary>Loads a vector file, or every .safetensors and .gguf file in a folder.</summary>
    /// <exception cref="OnnxSteerException">Missing path (NotFound) or an invalid file (InvalidVector).</exception>
    public static VectorFileSource Load(string path)
    {
        if (System.IO.Directory.Exists(path))
        {
            var files = System.IO.Directory.GetFiles(path).Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".gguf", StringComparison.OrdinalIgnoreCase))
                .Order(StringComparer.Ordinal).Select(InstructionVectorFile.Load).ToArray();
            if (files.Length == 0) throw new OnnxSteerException(ErrorKind.NotFound, $"no .safetensors or .gguf vector files in {path}");
            return From(files);
        }
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"vector file {path} does not exist");
        return From(InstructionVectorFile.Load(path));
    }

    /// <summary>The layers of the vector <paramref name="name"/>, or null when there is no such vector.</summary>
    internal IReadOnlyCollection<int>? LayersOf(string name) => _vectors.TryGetValue(name, out var v) ? [.. v.Layers.Keys] : null;

    /// <summary>The only vector's name, for FILE specs without :NAME.</summary>
    /// <exception cref="OnnxSteerException">The source holds several vectors.</exception>
    public string SingleName() => _vectors.Count == 1 ? _vectors.Keys.First()
        : throw new OnnxSteerException(ErrorKind.InvalidVector, $"the vector file holds {_vectors.Count} vectors ({string.Join(", ", _vectors.Keys)}); name one (FILE:NAME)");

    /// <inheritdoc/>
    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector)
    {
        vector = null;
        if (!_vectors.TryGetValue(name, out var v) || !v.Layers.TryGetValue(layer, out var l)) return false;
        vector = new SteeringVector(l.Direction, l.ZBar is double z ? (float)z : null, (float)l.Norm);
        return true;
    }
}
