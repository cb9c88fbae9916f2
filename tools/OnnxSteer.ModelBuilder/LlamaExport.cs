namespace OnnxSteer.ModelBuilder;

/// <summary>Exports Hugging Face Llama safetensors weights to ONNX.</summary>
public static class LlamaExport
{
    internal static int RunCli(Cli.Options o, TextWriter stdout) => throw new OnnxSteerException(ErrorKind.Usage, "export-llama: not implemented yet.");
}
