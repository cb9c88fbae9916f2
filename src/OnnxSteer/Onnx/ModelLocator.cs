namespace OnnxSteer.Onnx;

/// <summary>Finds the ONNX file a user means when they name a folder or a file.</summary>
internal static class ModelLocator
{
    /// <summary>File names tried, in order, when a folder is given (GenAI and Optimum conventions).</summary>
    public static readonly IReadOnlyList<string> KnownModelFileNames =
        ["model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "decoder_model.onnx"];

    /// <summary>Resolves <paramref name="path"/> (a model folder or an .onnx file) to the .onnx file. A file the user names
    /// is used as it is; a file found in a folder must be inside it (a symlink out of the folder is refused, as every path a
    /// folder names is: <see cref="ModelFolder"/>).</summary>
    /// <exception cref="OnnxSteerException">The path does not exist, a folder holds no recognisable model (NotFound), or
    /// its model file leads outside it (UnsafePath).</exception>
    public static string ResolveModelFile(string path)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full)) return full;
        if (!Directory.Exists(full))
            throw new OnnxSteerException(ErrorKind.NotFound, $"'{path}' does not exist.");
        var folder = new ModelFolder(full);
        foreach (var name in KnownModelFileNames)
            if (folder.Find(name) is { } candidate) return candidate;
        var onnxFiles = Directory.GetFiles(full, "*.onnx");
        if (onnxFiles.Length == 1) return folder.Resolve(Path.GetFileName(onnxFiles[0]), "model file");
        throw new OnnxSteerException(ErrorKind.NotFound, onnxFiles.Length == 0
            ? $"'{path}' holds no .onnx file."
            : $"'{path}' holds {onnxFiles.Length} .onnx files and none is named model.onnx; name the file.");
    }
}
