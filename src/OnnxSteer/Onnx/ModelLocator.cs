namespace OnnxSteer.Onnx;

/// <summary>Finds the ONNX file a user means when they name a folder or a file.</summary>
public static class ModelLocator
{
    /// <summary>File names tried, in order, when a folder is given (GenAI and Optimum conventions).</summary>
    public static readonly IReadOnlyList<string> KnownModelFileNames =
        ["model.onnx", "decoder_model_merged.onnx", "decoder_with_past_model.onnx", "decoder_model.onnx"];

    /// <summary>Resolves <paramref name="path"/> (a model folder or an .onnx file) to the .onnx file.</summary>
    /// <exception cref="OnnxSteerException">The path does not exist or a folder holds no recognisable model.</exception>
    public static string ResolveModelFile(string path)
    {
        var full = Path.GetFullPath(path);
        if (File.Exists(full)) return full;
        if (!Directory.Exists(full))
            throw new OnnxSteerException(ErrorKind.NotFound, $"'{path}' does not exist.");
        foreach (var name in KnownModelFileNames)
        {
            var candidate = Path.Combine(full, name);
            if (File.Exists(candidate)) return candidate;
        }
        var onnxFiles = Directory.GetFiles(full, "*.onnx");
        if (onnxFiles.Length == 1) return onnxFiles[0];
        throw new OnnxSteerException(ErrorKind.NotFound, onnxFiles.Length == 0
            ? $"'{path}' holds no .onnx file."
            : $"'{path}' holds {onnxFiles.Length} .onnx files and none is named model.onnx; name the file.");
    }
}
