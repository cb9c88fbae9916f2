using System.CommandLine;
using System.Globalization;
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
        var layers = new Option<string?>("--layers") { Description = "Candidate layers, e.g. 1,3,5 or 2-5 (default: every other layer from n_layers/5 to the last; all layers for models of 8 layers or fewer)." };
        var scales = new Option<string?>("--scales") { Description = "Additive weights tried, as multiples of the vector's |u_L| (default 1,2,4,8; word exclusion uses the negatives)." };
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
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output file if it exists." };
        var shared = EvalCliOptions.Create();
        var command = new Command("sweep", "Pick, per instruction, the steering layer, mode and weight on validation prompts (degenerate outputs score 0; ties go to no steering).");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { data, vectors, output, layers, scales, objective, instructions, json, plot, jsonOut, overwrite }) command.Options.Add(o);
        shared.AddTo(command);
        command.SetAction(async (parse, ct) =>
        {
            var outPath = parse.GetValue(output)!;
            if (File.Exists(outPath) && !parse.GetValue(overwrite))
                throw new OnnxSteerException(ErrorKind.Output, $"output '{outPath}' already exists; pass --overwrite to replace it.");
            var plotPath = parse.GetValue(plot);
            EvalCliOptions.CheckSvgPath(plotPath);
            var scaleList = ParseScales(parse.GetValue(scales));
            var options = new SweepOptions
            {
                Layers = parse.GetValue(layers) is { } l ? ParseLayers(l) : null,
                Objective = parse.GetValue(objective) switch
                {
                    "both" => SweepObjective.Both,
                    "guarded" => SweepObjective.Guarded,
                    _ => SweepObjective.WithoutInstruction,
                },
                Instructions = parse.GetValue(instructions)?.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries),
            };
            if (scaleList is not null) options = options with { AddScales = scaleList, ExclusionScales = [.. scaleList.Select(s => -s)] };
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
            EvalCliOptions.WriteText(outPath, result.Selection.ToJson() + Environment.NewLine);
            stdout.Write(parse.GetValue(json) ? result.ToJson() + Environment.NewLine : result.ToMarkdown());
            stderr.WriteLine($"wrote {outPath}");
            if (parse.GetValue(jsonOut) is { } jsonPath)
            {
                EvalCliOptions.WriteText(jsonPath, result.ToJson() + Environment.NewLine);
                stderr.WriteLine($"wrote {jsonPath}");
            }
            if (plotPath is not null)
            {
                EvalCliOptions.WriteText(plotPath, result.ToSvg($"sweep: {Path.GetFileName(Path.GetFullPath(job.ModelDirectory))}, {Path.GetFileName(job.DataPath)}"));
                stderr.WriteLine($"wrote {plotPath}");
            }
            return 0;
        });
        return command;
    }

    /// <summary>Parses "1,3,5-7".</summary>
    internal static IReadOnlyList<int> ParseLayers(string text)
    {
        var layers = new SortedSet<int>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var dash = part.IndexOf('-', 1);
            if (dash > 0 && int.TryParse(part[..dash], CultureInfo.InvariantCulture, out var a) && int.TryParse(part[(dash + 1)..], CultureInfo.InvariantCulture, out var b) && a <= b)
                for (var i = a; i <= b; i++) layers.Add(i);
            else if (int.TryParse(part, CultureInfo.InvariantCulture, out var one))
                layers.Add(one);
            else
                throw new OnnxSteerException(ErrorKind.Usage, $"--layers: '{part}' is not a layer or a range like 2-5.");
        }
        if (layers.Count == 0) throw new OnnxSteerException(ErrorKind.Usage, "--layers lists no layer.");
        return [.. layers];
    }

    private static IReadOnlyList<float>? ParseScales(string? text)
    {
        if (text is null) return null;
        var scales = new List<float>();
        foreach (var part in text.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            scales.Add(float.TryParse(part, NumberStyles.Float, CultureInfo.InvariantCulture, out var v) && v > 0 && float.IsFinite(v) ? v
                : throw new OnnxSteerException(ErrorKind.Usage, $"--scales: '{part}' is not a positive number."));
        return scales.Count > 0 ? scales : throw new OnnxSteerException(ErrorKind.Usage, "--scales lists no weight.");
    }
}
