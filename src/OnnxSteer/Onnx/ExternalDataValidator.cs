using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>Checks every external-data reference before anything is read: the location must be relative,
/// stay inside the model folder (also through symlinks), and the file must hold offset+length bytes.
/// Absolute or escaping locations are the onnx CVE-2022-25882 / CVE-2024-27318 attack and are refused, not followed.</summary>
internal static class ExternalDataValidator
{
    /// <summary>Validates all references in <paramref name="model"/> relative to <paramref name="modelDirectory"/>.</summary>
    public static IReadOnlyList<ExternalDataReference> Validate(ModelProto model, string modelDirectory)
    {
        var root = Path.GetFullPath(modelDirectory);
        var rootReal = ResolveReal(root, root);
        var result = new List<ExternalDataReference>();
        var fileLengths = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (var tensor in GraphWalker.AllInitializers(model.Graph))
        {
            if (tensor.DataLocation != TensorProto.Types.DataLocation.External) continue;
            string? location = null;
            long offset = 0, length = -1;
            foreach (var entry in tensor.ExternalData)
            {
                switch (entry.Key)
                {
                    case "location": location = entry.Value; break;
                    case "offset": offset = ParseNonNegative(tensor.Name, "offset", entry.Value); break;
                    case "length": length = ParseNonNegative(tensor.Name, "length", entry.Value); break;
                }
            }
            if (string.IsNullOrEmpty(location))
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"initializer '{tensor.Name}' is stored externally but names no location.");
            var full = CheckLocation(tensor.Name, location, root, rootReal);
            if (!fileLengths.TryGetValue(full, out var fileLength))
            {
                if (!File.Exists(full))
                    throw new OnnxSteerException(ErrorKind.NotFound, $"external data file '{location}' (for initializer '{tensor.Name}') is missing from '{root}'.");
                // FileInfo.Length of a symlink is the link's own size; measure what it points to (already checked to be inside).
                var info = new FileInfo(full);
                fileLength = (info.LinkTarget is null ? info : info.ResolveLinkTarget(returnFinalTarget: true) as FileInfo ?? info).Length;
                fileLengths[full] = fileLength;
            }
            var end = length < 0 ? fileLength : offset + length;
            if (end < offset || end > fileLength || offset > fileLength)
                throw new OnnxSteerException(ErrorKind.InvalidModel,
                    $"external data file '{location}' is too short: initializer '{tensor.Name}' needs bytes {offset}..{end}, the file has {fileLength}.");
            result.Add(new ExternalDataReference(tensor.Name, location, full, offset, length));
        }
        return result;
    }

    private static long ParseNonNegative(string tensor, string key, string value)
    {
        if (!long.TryParse(value, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var v) || v < 0)
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"initializer '{tensor}' has an invalid external-data {key} '{value}'.");
        return v;
    }

    /// <summary>Returns the full path of a relative location, or throws <see cref="ErrorKind.UnsafePath"/>: the model
    /// folder's one path rule (<see cref="ModelFolder"/>).</summary>
    public static string CheckLocation(string tensorName, string location, string root, string rootReal) =>
        ModelFolder.CheckInside(root, rootReal, location, $"external data location '{location}' of initializer '{tensorName}'");

    private static string ResolveReal(string path, string root) => ModelFolder.ResolveReal(path, root);
}
