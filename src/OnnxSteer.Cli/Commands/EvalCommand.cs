using System.CommandLine;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer eval</c>: the paper's four settings per instruction on an IFEval-style data file.</summary>
internal static class EvalCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("patched-dir") { Description = "A patched model folder (onnxsteer patch)." };
        var data = new Option<string>("--data") { Description = "Evaluation prompts (.jsonl: key, prompt, instruction, instruction_id_list, kwargs).", Required = true };
        var vectors = new Option<string>("--vectors")
        {
            Description = "A vector file or a folder of .safetensors/.gguf vector files. Without --selection, a vector is used for an instruction when its name is "
                + "the instruction id with ':' replaced by '.' (change_case.english_lowercase), keywords.existence.WORD for keyword instructions and "
                + "length_constraints.number_sentences.at_most for number_sentences; other vectors are reported and not used.",
            Required = true,
        };
        var selection = new Option<string?>("--selection") { Description = "Per-instruction layer/mode/weight (from onnxsteer sweep). Default: each vector's most separable layer." };
        var settings = new Option<string?>("--settings")
        {
            Description = "Comma-separated settings to run (default all): no_instruction, no_instruction_steered, with_instruction, with_instruction_steered.",
        };
        var json = new Option<bool>("--json") { Description = "Print the report (with every response) as JSON instead of a Markdown table." };
        var plot = new Option<string?>("--plot") { Description = "Write a bar chart of accuracy per instruction and setting (.svg)." };
        var jsonOut = new Option<string?>("--json-out") { Description = "Also write the JSON report (with every response) to this file." };
        var shared = EvalCliOptions.Create();
        var command = new Command("eval", "Evaluate instruction following with and without steering (IFEval strict/loose checks), in the paper's four settings.");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { data, vectors, selection, settings, json, plot, jsonOut }) command.Options.Add(o);
        shared.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var plotPath = parse.GetValue(plot);
            var jsonPath = parse.GetValue(jsonOut);
            shared.CheckOutputs(parse, plotPath, jsonPath);
            var job = new EvalJob
            {
                ModelDirectory = parse.GetValue(model)!,
                DataPath = parse.GetValue(data)!,
                VectorsPath = parse.GetValue(vectors)!,
                SelectionPath = parse.GetValue(selection),
                Settings = parse.GetValue(settings) is { } s ? [.. s.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(EvalSettings.Parse)] : EvalSettings.All,
                LimitPerInstruction = parse.GetValue(shared.Limit),
                Generation = shared.Generation(parse),
            };
            var report = await EvalWorkflow.EvaluateAsync(job, EvalCliOptions.Progress(stderr), w => stderr.WriteLine($"onnxsteer: warning: {w}"), ct);
            EvalCliOptions.EndProgress(stderr);
            stdout.Write(parse.GetValue(json) ? CliJson.Format(report.ToJson()) + Environment.NewLine : report.ToMarkdown());
            if (jsonPath is not null) OutputPolicy.WriteText(jsonPath, CliJson.Format(report.ToJson()) + Environment.NewLine, stderr);
            if (plotPath is not null)
                OutputPolicy.WriteText(plotPath, report.ToSvg($"{Path.GetFileName(Path.GetFullPath(job.ModelDirectory))}: {Path.GetFileName(job.DataPath)}"), stderr);
            return 0;
        });
        return command;
    }
}
