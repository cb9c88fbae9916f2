using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>Checks every external-data reference before anything is read: the location must be relative,
/// stay inside the model folder (also through symlinks), and the file must hold offset+length bytes.
/// Absolute or escaping locations are the onnx CVE-2022-25882 / CVE-2024-27318 attack and are refused, not followed.</summary>
public static class ExternalDataValidator
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

    /// <summary>Returns the full path of a relative location, or throws <see cref="ErrorKind.UnsafePath"/>.</summary>
    public static string CheckLocation(string tensorName, string location, string root, string rootReal)
    {
        if (location.Contains('\0') || Path.IsPathRooted(location) || location.StartsWith('/') || location.StartsWith('\\')
            || (location.Length >= 2 && location[1] == ':'))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing external data location '{location}' of initializer '{tensorName}': absolute paths are not allowed.");
        var parts = location.Split('/', '\\');
        if (parts.Any(p => p == ".."))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing external data location '{location}' of initializer '{tensorName}': '..' escapes the model folder.");
        var full = Path.GetFullPath(Path.Combine(root, location));
        if (!IsInside(full, root))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing external data location '{location}' of initializer '{tensorName}': it resolves outside the model folder.");
        var real = ResolveReal(full, root);
        if (!IsInside(real, rootReal))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing external data location '{location}' of initializer '{tensorName}': a symlink leads outside the model folder.");
        return full;
    }

    private static bool IsInside(string path, string root)
    {
        var r = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        return path.StartsWith(r, StringComparison.Ordinal);
    }

    /// <summary>Follows symlinks component by component (bounded, so a symlink loop ends in an error, not a stack overflow).</summary>
    private static string ResolveReal(string path, string root)
    {
        var current = Path.GetFullPath(path);
        for (var hops = 0; hops < 40; hops++)
        {
            var changed = false;
            var probe = current;
            var suffix = "";
            while (!string.IsNullOrEmpty(probe))
            {
                FileSystemInfo info = System.IO.Directory.Exists(probe) ? new DirectoryInfo(probe) : new FileInfo(probe);
                if (info.LinkTarget is { } target)
                {
                    var parent = Path.GetDirectoryName(probe) ?? "/";
                    current = Path.GetFullPath(Path.Combine(Path.IsPathRooted(target) ? target : Path.Combine(parent, target))) + suffix;
                    changed = true;
                    break;
                }
                var name = Path.GetFileName(probe);
                var up = Path.GetDirectoryName(probe);
                if (up is null) break;
                suffix = Path.DirectorySeparatorChar + name + suffix;
                probe = up;
            }
            if (!changed) return current;
        }
        throw new OnnxSteerException(ErrorKind.UnsafePath, $"too many symlinks (or a symlink loop) under '{root}'.");
    }
}
