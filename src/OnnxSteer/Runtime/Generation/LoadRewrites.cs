using Google.Protobuf;
using OnnxSteer.Onnx;

namespace OnnxSteer.Runtime;

/// <summary>The in-memory rewrites applied to a decoder's graph at load (<see cref="LastPositionLogits"/>,
/// <see cref="MatMulFusion"/>): the .onnx file is parsed once, each enabled rewrite applied, and the bytes handed to ONNX
/// Runtime, which finds the external weights beside the model file. The folder is never changed.</summary>
internal static class LoadRewrites
{
    /// <summary>Larger .onnx files hold their weights inline: parsing and re-serialising them would cost seconds and
    /// double the memory, so they load unchanged.</summary>
    private const long MaxGraphBytes = 64L << 20;

    /// <summary>The rewritten model's bytes, or null when no rewrite applies (or none is enabled).</summary>
    public static byte[]? TryApply(string modelPath, bool lastPositionLogits, bool fuseMatMuls)
    {
        if (!lastPositionLogits && !fuseMatMuls) return null;
        if (new FileInfo(modelPath).Length > MaxGraphBytes) return null;
        var model = OnnxModelFile.Parse(modelPath);
        bool changed = lastPositionLogits && LastPositionLogits.Rewrite(model);
        changed |= fuseMatMuls && MatMulFusion.Rewrite(model) > 0;
        return changed ? model.ToByteArray() : null;
    }
}
