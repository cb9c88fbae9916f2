using System.CommandLine;
using OnnxSteer.Runtime;

namespace OnnxSteer.Cli;

/// <summary><c>--engine ort|genai|auto</c>, shared by generate, eval, sweep and demo.</summary>
internal static class EngineOption
{
    public static Option<string> Create()
    {
        var option = new Option<string>("--engine")
        {
            Description = "Generation engine: ort (OnnxSteer's loop on ONNX Runtime, every layout), genai (ONNX Runtime GenAI; " +
                          "onnxruntime-genai folders patched with --for genai) or auto (genai where it can run the folder, else ort).",
            DefaultValueFactory = _ => "ort",
        };
        option.AcceptOnlyFromAmong("ort", "genai", "auto");
        return option;
    }

    public static GenerationEngine Parse(string? value) => value switch
    {
        "genai" => GenerationEngine.GenAI,
        "auto" => GenerationEngine.Auto,
        _ => GenerationEngine.Ort,
    };
}
