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
            Description = "Steer with a vector: FILE[:NAME]@LAYERS[=add:W|=add:Wx|=project|=project:TARGET|=ablate|=header:S]. LAYERS: 12, 3,5, 1-5 or all "
                + "(every layer the vector has that the model steers). Without =mode the vector is projected to its stored z_bar; add:4x adds 4 x |u_L| "
                + "(the layer's mean-difference norm); header:1 adds each answer-header position's own mean difference there only (vectors from "
                + "extract --header-positions). Repeatable.",
            AllowMultipleArgumentsPerToken = false,
        };
        var positions = new Option<string>("--positions") { Description = "Positions steered: all, prompt or generated.", DefaultValueFactory = _ => "all" };
        positions.AcceptOnlyFromAmong("all", "prompt", "generated");
        var maxNew = new Option<int>("--max-new-tokens") { Description = "Most tokens to generate.", DefaultValueFactory = _ => 128 };
        CliValidators.Positive(maxNew);
        var temperature = new Option<float>("--temperature") { Description = "0 is greedy; above 0 samples.", DefaultValueFactory = _ => 0f };
        var topK = new Option<int>("--top-k") { Description = "Sample among the k most likely tokens (0: all).", DefaultValueFactory = _ => 0 };
        var topP = new Option<float>("--top-p") { Description = "Sample within top-p probability mass.", DefaultValueFactory = _ => 1f };
        var seed = new Option<int?>("--seed") { Description = "Sampling seed (when sampling without one, a random seed is used and reported: on stderr, or as seed in --json)." };
        var system = new Option<string?>("--system") { Description = "A system message." };
        var noTemplate = new Option<bool>("--no-chat-template") { Description = "Send the prompt as raw text (with the tokenizer's usual BOS) instead of through the chat template." };
        var ep = new Option<string>("--ep") { Description = "Execution provider: cpu, cuda or dml (need -p:OnnxSteerProvider=Cuda|DirectML builds).", DefaultValueFactory = _ => "cpu" };
        ep.AcceptOnlyFromAmong("cpu", "cuda", "dml");
        var stop = new Option<string[]>("--stop") { Description = "Stop when the text contains this string (repeatable)." };
        var json = new Option<bool>("--json") { Description = "Print prompt, token ids, text, engine and timing (load, prefill, time to first token, decode tokens/s) as JSON." };
        var engine = EngineOption.Create();
        var threads = ThreadsOption.Create();
        var spin = new Option<string?>("--spin")
        {
            Description = "on: ONNX Runtime's threads spin between operators (its default: fastest when the cores are free); off: they sleep "
                + "(faster when other work shares the cores). Ort engine; no effect with --threads 1.",
        };
        spin.AcceptOnlyFromAmong("on", "off");

        var command = new Command("generate", "Generate text from a model folder, optionally steered by instruction vectors.");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { prompt, steer, positions, maxNew, temperature, topK, topP, seed, system, noTemplate, ep, stop, json, engine, threads, spin }) command.Options.Add(o);
        command.SetAction(async (parse, ct) =>
        {
            var chosenSeed = parse.GetValue(seed);
            var randomSeed = chosenSeed is null && parse.GetValue(temperature) > 0;
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
                    Seed = chosenSeed ?? (randomSeed ? Random.Shared.Next() : 0),
                    StopStrings = parse.GetValue(stop) ?? [],
                    UseChatTemplate = !parse.GetValue(noTemplate),
                },
                Runtime = new RuntimeOptions
                {
                    Provider = parse.GetValue(ep) switch { "cuda" => ExecutionProvider.Cuda, "dml" => ExecutionProvider.DirectML, _ => ExecutionProvider.Cpu },
                    Engine = EngineOption.Parse(parse.GetValue(engine)),
                    IntraOpThreads = parse.GetValue(threads),
                    IntraOpSpinning = parse.GetValue(spin) switch { "on" => true, "off" => false, _ => null },
                },
                Json = parse.GetValue(json),
                RandomSeed = randomSeed,
            };
            return await GenerateRunner.RunAsync(job, stdout, stderr, ct);
        });
        return command;
    }
}
