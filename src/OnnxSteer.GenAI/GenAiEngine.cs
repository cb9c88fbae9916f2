using OnnxSteer.Contract;
using OnnxSteer.Runtime;

namespace OnnxSteer.GenAI;

/// <summary>Plugs the <c>genai</c> engine into <see cref="SteeredGenerator"/> (and so into <c>--engine genai|auto</c>,
/// the evaluation and the chat client). Call <see cref="Register"/> once at startup.</summary>
public static class GenAiEngine
{
    /// <summary>Registers <see cref="GenAiSteeredModel.Load"/> with <see cref="SteeredGenerator"/>.</summary>
    public static void Register() => SteeredGenerator.RegisterGenAI((dir, options) => GenAiSteeredModel.Load(dir, options), Refusal);

    /// <summary>Why ONNX Runtime GenAI cannot run (and steer) the folder, or null when it can: it needs genai_config.json
    /// and, when patched, required steering inputs.</summary>
    public static string? Refusal(string directory)
    {
        if (!File.Exists(Path.Combine(directory, "genai_config.json")))
            return $"{directory} has no genai_config.json: ONNX Runtime GenAI loads onnxruntime-genai exports only; use --engine ort";
        var manifest = SteeringManifest.TryLoad(directory);
        return manifest is null ? null : GenAiSteeringInputs.Refusal(directory, manifest);
    }
}
