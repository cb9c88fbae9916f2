using System.CommandLine;
using OnnxSteer.Runtime;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer generate</c>: steered text generation from a model folder.</summary>
internal static class GenerateCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("model-dir") { Description = "A patched model folder (onnxsteer patch), or an unpatched one for plain generation." };
        var prompt = new Option<string>("--prompt") { Description = "The user message.", Required = true };
        var steer = new Option<string[]>("--steer")
        {
            Description = "Steer with a vector: FILE[:NAME]@LAYER[=add:W|=project|=project:TARGET|=ablate] (default: project to the stored z_bar). Repeatable.",
            AllowMultipleArgumentsPerToken = false,
        };
        var positions = new Option<string>("--positions") { Description = "Positions steered: all (default), prompt or generated.", DefaultValueFactory = _ => "all" };
        positions.AcceptOnlyFromAmong("all", "prompt", "generated");
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate (default 128).", DefaultValueFactory = _ => 128 };
        var temperature = new Option<float>("--temperature") { Description = "0 (default) is greedy; above 0 samples." };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: all)." };
        var topP = new Option<float>("--top-p") { Description = "Sample within top-p probability mass (default 1).", DefaultValueFactory = _ => 1f };
        var seed = new Option<int>("--seed") { Description = "Sampling seed (default 0)." };
        var system = new Option<string?>("--system") { Description = "A system message." };
        var noTemplate = new Option<bool>("--no-chat-template") { Description = "Send the prompt as raw text (with the tokenizer's usual BOS) instead of through the chat template." };
        var ep = new Option<string>("--ep") { Description = "Execution provider: cpu (default), cuda or dml (need -p:OnnxSteerProvider=Cuda|DirectML builds).", DefaultValueFactory = _ => "cpu" };
        ep.AcceptOnlyFromAmong("cpu", "cuda", "dml");
        var stop = new Option<string[]>("--stop") { Description = "Stop when the text contains this string (repeatable)." };
        var json = new Option<bool>("--json") { Description = "Print prompt, token ids, text, engine and timing (prefill ms, tokens/s) as JSON." };
        var engine = EngineOption.Create();

        var command = new Command("generate", "Generate text from a model folder, optionally steered by instruction vectors.");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { prompt, steer, positions, maxNew, temperature, topK, topP, seed, system, noTemplate, ep, stop, json, engine }) command.Options.Add(o);
        command.SetAction(async (parse, ct) =>
        {
            var job = new GenerateJob
            {
                ModelDirectory = parse.GetValue(model)!,
                Prompt = parse.GetValue(prompt)!,
                System = parse.GetValue(system),
                Steer = [.. (parse.GetValue(steer) ?? []).Select(SteerSpec.Parse)],
                Positions = parse.GetValue(positions) switch { "prompt" => SteeringPositions.Prompt, "generated" => SteeringPositions.Generated, _ => SteeringPositions.All },
                Generator = new GeneratorOptions
                {
                    MaxNewTokens = parse.GetValue(maxNew),
                    Temperature = parse.GetValue(temperature),
                    TopK = parse.GetValue(topK),
                    TopP = parse.GetValue(topP),
                    Seed = parse.GetValue(seed),
                    StopStrings = parse.GetValue(stop) ?? [],
                    UseChatTemplate = !parse.GetValue(noTemplate),
                },
                Runtime = new RuntimeOptions
                {
                    Provider = parse.GetValue(ep) switch { "cuda" => ExecutionProvider.Cuda, "dml" => ExecutionProvider.DirectML, _ => ExecutionProvider.Cpu },
                    Engine = EngineOption.Parse(parse.GetValue(engine)),
                },
                Json = parse.GetValue(json),
            };
            return await GenerateRunner.RunAsync(job, stdout, stderr, ct);
        });
        return command;
    }
}
