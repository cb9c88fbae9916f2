using System.CommandLine;
using OnnxSteer.Contract;
using OnnxSteer.Vectors;
using Spectre.Console;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer extract</c>: compute an instruction vector from contrast pairs on a patched model.</summary>
internal static class ExtractCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var model = new Argument<string>("patched-dir") { Description = "A patched model folder (onnxsteer patch) that exposes hidden states." };
        var pairs = new Option<string>("--pairs") { Description = "pairs.jsonl: {\"with\",\"without\"} or {\"prompt\",\"instruction\"} per line.", Required = true };
        var output = new Option<string>("--output", "-o") { Description = "Output .safetensors file.", Required = true };
        var name = new Option<string?>("--name") { Description = "Vector name (default: the output file's name, e.g. lowercase)." };
        var layers = new Option<string>("--layers") { Description = "Layers: all (the exposed layers) or a list such as 8,10,12-16.", DefaultValueFactory = _ => "all" };
        var batch = new Option<int>("--batch-size") { Description = "Prompts per ONNX Runtime run (a pair is two prompts).", DefaultValueFactory = _ => 8 };
        CliValidators.Positive(batch);
        var noPrune = new Option<bool>("--no-prune") { Description = "Run the whole patched graph instead of one pruned to the requested hidden states (same vectors; slower: the LM head and the blocks above the highest layer run too)." };
        var sortWindow = new Option<int>("--sort-window") { Description = "Prompts read ahead and sorted by length before batching, to cut padding (0: input order).", DefaultValueFactory = _ => 64 };
        var header = new Option<string>("--header-positions")
        {
            Description = "Also extract a vector for each of the prompt's last N positions (N, or template: every token the chat template puts after the " +
                "user's message), named NAME.header-K, for header steering (generate --steer FILE@L=header:S); 1 is the last token only (the paper).",
            DefaultValueFactory = _ => "1",
        };
        var noTemplate = new Option<bool>("--no-chat-template") { Description = "Tokenize the raw prompts instead of wrapping them in the chat template." };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output file if it exists." };
        var json = new Option<bool>("--json") { Description = "Print the result as JSON." };
        var threads = ThreadsOption.Create();
        var command = new Command("extract", "Compute an instruction vector (diff-mean at the last prompt token) from with/without prompt pairs.");
        command.Arguments.Add(model);
        foreach (var o in new Option[] { pairs, output, name, layers, batch, noPrune, sortWindow, header, noTemplate, overwrite, json, threads }) command.Options.Add(o);
        command.SetAction((parse, cancellationToken) =>
        {
            var outPath = parse.GetValue(output)!;
            if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new OnnxSteerException(ErrorKind.Usage, $"--output '{outPath}' must end in .safetensors (convert it to GGUF afterwards with vectors convert).");
            OutputPolicy.CheckFile(outPath, parse.GetValue(overwrite), "-o");
            var layerSelection = CliLayers.ParseSome(parse.GetValue(layers)!, "--layers");
            var options = new ExtractionOptions
            {
                Name = parse.GetValue(name) ?? Path.GetFileNameWithoutExtension(outPath),
                Layers = layerSelection.Layers,
                BatchSize = parse.GetValue(batch),
                ChatTemplate = !parse.GetValue(noTemplate),
                PruneGraph = !parse.GetValue(noPrune),
                SortWindow = parse.GetValue(sortWindow),
                Threads = parse.GetValue(threads),
                HeaderPositions = ParseHeader(parse.GetValue(header)!),
            };
            var request = new ExtractionRequest(parse.GetValue(model)!, parse.GetValue(pairs)!, options);
            var result = RunWithProgress(request, stderr, cancellationToken);
            result.File.Save(outPath);
            foreach (var w in result.Warnings) stderr.WriteLine($"onnxsteer: warning: {TerminalText.Escape(w)}");
            if (parse.GetValue(json))
            {
                stdout.WriteLine(CliJson.Format(VectorPrinting.Describe(result.File, outPath)));
            }
            else
            {
                var v = result.File.Vectors[0];
                var best = v.Layers.Values.OrderByDescending(l => l.Separability).ThenByDescending(l => l.Norm).First();
                var more = result.File.Vectors.Count > 1 ? $" (and {result.File.Vectors.Count - 1} header-position vectors)" : "";
                stdout.WriteLine($"wrote {outPath}: vector '{v.Name}'{more} from {v.PairCount} pairs at layers {LayerSelection.Format(v.Layers.Keys)}; " +
                    $"best separability {best.Separability:F2} at layer {best.Layer}. Details: onnxsteer vectors show {outPath}");
            }
            return Task.FromResult(0);
        });
        return command;
    }

    private static int ParseHeader(string text) =>
        text == "template" ? ExtractionOptions.TemplateHeader
        : int.TryParse(text, System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var n) && n >= 1 ? n
        : throw new OnnxSteerException(ErrorKind.Usage, $"--header-positions '{text}': expected a number of positions (1 or more) or template");

    /// <summary>Runs extraction with a progress bar on stderr when stderr is a terminal, silently otherwise.</summary>
    private static ExtractionResult RunWithProgress(ExtractionRequest request, TextWriter stderr, CancellationToken cancellationToken)
    {
        var interactive = ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;
        if (!interactive) return VectorExtraction.Run(request, null, cancellationToken);
        var console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Error) });
        ExtractionResult? result = null;
        console.Progress()
            .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
            .Start(ctx =>
            {
                ProgressTask? task = null;
                result = VectorExtraction.Run(request, new InlineProgress(p =>
                {
                    task ??= ctx.AddTask("extracting pairs", maxValue: p.Total);
                    task.Value = p.Done;
                }), cancellationToken);
            });
        return result!;
    }

    private sealed class InlineProgress(Action<ExtractionProgress> report) : IProgress<ExtractionProgress>
    {
        public void Report(ExtractionProgress value) => report(value);
    }
}
