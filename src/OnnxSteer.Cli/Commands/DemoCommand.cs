using System.CommandLine;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer demo</c>: the end-to-end run on the bundled model (patch, extract, steer, evaluate).</summary>
internal static class DemoCommand
{
    public static Command Create(TextWriter stdout)
    {
        var model = new Option<string?>("--model") { Description = "Model folder to use instead of the bundled models/tiny-instruct." };
        var dataDir = new Option<string?>("--data-dir") { Description = "Folder with pairs/ and eval/ (default: data/ beside the model folder)." };
        var perInstruction = new Option<int>("--eval-per-instruction") { Description = "Held-out test prompts per instruction in the table.", DefaultValueFactory = _ => 8 };
        CliValidators.Positive(perInstruction);
        var maxNewTokens = new Option<int>("--max-new-tokens") { Description = "Maximum new tokens per response.", DefaultValueFactory = _ => 96 };
        CliValidators.Positive(maxNewTokens);
        var threads = new Option<int?>("--threads") { Description = "ONNX Runtime intra-op threads." };
        var engine = EngineOption.Create();
        var keep = new Option<bool>("--keep") { Description = "Keep the temporary folder with the patched model and the vectors." };
        var command = new Command("demo", "Patch the bundled model, extract instruction vectors, compare responses without and with steering, and print the evaluation table (no network).");
        foreach (var o in new Option[] { model, dataDir, perInstruction, maxNewTokens, threads, keep, engine }) command.Options.Add(o);
        command.SetAction(async (parse, ct) =>
        {
            await DemoRunner.RunAsync(new DemoOptions
            {
                ModelDirectory = parse.GetValue(model),
                DataDirectory = parse.GetValue(dataDir),
                EvalPerInstruction = parse.GetValue(perInstruction),
                MaxNewTokens = parse.GetValue(maxNewTokens),
                Threads = parse.GetValue(threads),
                Keep = parse.GetValue(keep),
                Engine = EngineOption.Parse(parse.GetValue(engine)),
            }, stdout, ct);
            return 0;
        });
        return command;
    }
}
