using System.CommandLine;
using System.Globalization;
using OnnxSteer.Contract;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer sweep</c>: choose each instruction's layer, mode and weight on validation prompts.</summary>
internal static class SweepCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("patched-dir") { Description = "A patched model folder (onnxsteer patch)." };
        var data = new Option<string>("--data") { Description = "Validation prompts (.jsonl), disjoint from the prompts the vectors were extracted from.", Required = true };
        var vectors = new Option<string>("--vectors") { Description = "A vector file or a folder of .safetensors vector files.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "Selection file to write (JSON), read by onnxsteer eval --selection.", Required = true };
        var layers = new Option<string?>("--layers") { Description = "Candidate layers: all, or e.g. 1,3,5 or 2-5 (default: every other layer from n_layers/5 to the last; all layers for models of 8 layers or fewer)." };
        var scales = new Option<string?>("--scales") { Description = "Additive weights tried, as multiples of the vector's |u_L| (1,2,4,8 when not given; word exclusion subtracts the inclusion vector with the negatives and adds its exclusion vector keywords.forbidden_words.WORD, where present, with these)." };
        var headerScales = new Option<string?>("--header-scales") { Description = "Header-steering scales tried for instructions whose vectors have header positions (extract --header-positions), as multiples of each position's |u_k| (1,2 when not given; negated for the subtracted inclusion vector of word exclusion)." };
        var objective = new Option<string>("--objective")
        {
            Description = "without: loose accuracy without the instruction (the paper); both: mean of the steered accuracies without and with the instruction; "
                + "guarded: accuracy without the instruction among candidates that lower with-instruction accuracy by at most 0.1.",
            DefaultValueFactory = _ => "without",
        };
        objective.AcceptOnlyFromAmong("without", "both", "guarded");
        var instructions = new Option<string?>("--instructions") { Description = "Comma-separated instruction ids to sweep (default: all in the data)." };
        var json = new Option<bool>("--json") { Description = "Print every candidate's scores as JSON instead of a Markdown table." };
        var plot = new Option<string?>("--plot") { Description = "Write accuracy against layer per instruction (.svg)." };
        var jsonOut = new Option<string?>("--json-out") { Description = "Also write every candidate's scores as JSON to this file." };
        var shared = EvalCliOptions.Create();
        var command = new Command("sweep", "Pick, per instruction, the steering layer, mode and weight on validation prompts (degenerate outputs score 0; ties go to no steering).");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { data, vectors, output, layers, scales, headerScales, objective, instructions, json, plot, jsonOut }) command.Options.Add(o);
        shared.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var outPath = parse.GetValue(output)!;
            var plotPath = parse.GetValue(plot);
            var jsonPath = parse.GetValue(jsonOut);
            shared.CheckOutputs(parse, plotPath, jsonPath, outPath);
            var scaleList = ParseScales(parse.GetValue(scales), "--scales");
            var options = new SweepOptions
            {
                Layers = parse.GetValue(layers) is { } l ? CliLayers.ParseSome(l, "--layers") : null,
                Objective = parse.GetValue(objective) switch
                {
                    "both" => SweepObjective.Both,
                    "guarded" => SweepObjective.Guarded,
                    _ => SweepObjective.WithoutInstruction,
                },
                Instructions = parse.GetValue(instructions)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
            if (scaleList is not null) options = options with { AddScales = scaleList, ExclusionScales = [.. scaleList.Select(s => -s)] };
            if (ParseScales(parse.GetValue(headerScales), "--header-scales") is { } headerList) options = options with { HeaderScales = headerList };
            var job = new SweepJob
            {
                ModelDirectory = parse.GetValue(model)!,
                DataPath = parse.GetValue(data)!,
                VectorsPath = parse.GetValue(vectors)!,
                LimitPerInstruction = parse.GetValue(shared.Limit),
                Options = options,
                Generation = shared.Generation(parse),
            };
            var result = await EvalWorkflow.SweepAsync(job, EvalCliOptions.Progress(stderr), w => stderr.WriteLine($"onnxsteer: warning: {TerminalText.Escape(w)}"), ct);
            EvalCliOptions.EndProgress(stderr);
            stdout.Write(parse.GetValue(json) ? CliJson.Format(result.ToJson()) + Environment.NewLine : result.ToMarkdown());
            OutputPolicy.WriteText(outPath, CliJson.Format(result.Selection.ToJson()) + Environment.NewLine, stderr);
            if (jsonPath is not null) OutputPolicy.WriteText(jsonPath, CliJson.Format(result.ToJson()) + Environment.NewLine, stderr);
            if (plotPath is not null)
                OutputPolicy.WriteText(plotPath, result.ToSvg($"sweep: {Path.GetFileName(Path.GetFullPath(job.ModelDirectory))}, {Path.GetFileName(job.DataPath)}"), stderr);
            return 0;
        });
        return command;
    }

    private static IReadOnlyList<float>? ParseScales(string? text, string option)
    {
        if (text is null) return null;
        var scales = new List<float>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            scales.Add(float.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 && float.IsFinite(v) ? v
                : throw new OnnxSteerException(ErrorKind.Usage, $"{option}: '{part}' is not a positive number."));
        return scales.Count > 0 ? scales : throw new OnnxSteerException(ErrorKind.Usage, $"{option} lists no weight.");
    }
}
