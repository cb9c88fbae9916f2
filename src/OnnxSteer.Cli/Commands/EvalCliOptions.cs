using System.CommandLine;
using OnnxSteer.Evaluation;

namespace OnnxSteer.Cli;

/// <summary>Options shared by <c>eval</c>, <c>sweep</c> and <c>demo</c>, and their small helpers.</summary>
internal sealed class EvalCliOptions
{
    public Option<int> MaxNewTokens { get; } = new("--max-new-tokens") { Description = "Maximum new tokens per response.", DefaultValueFactory = _ => 128 };
    public Option<int> BatchSize { get; } = new("--batch-size") { Description = "Prompts generated together.", DefaultValueFactory = _ => 8 };
    public Option<int?> Limit { get; } = new("--limit") { Description = "Use only the first N prompts of each instruction (quick runs)." };
    public Option<bool> NoChatTemplate { get; } = new("--no-chat-template") { Description = "Send prompts as raw text instead of through the model's chat template." };
    public Option<int?> Threads { get; } = new("--threads") { Description = "ONNX Runtime intra-op threads (default: ONNX Runtime's choice)." };
    public Option<string> Engine { get; } = EngineOption.Create();
    public Option<bool> Overwrite { get; } = new("--overwrite") { Description = "Replace output files (-o, --plot, --json-out) that exist." };

    public static EvalCliOptions Create()
    {
        var o = new EvalCliOptions();
        CliValidators.Positive(o.MaxNewTokens);
        CliValidators.Positive(o.BatchSize);
        CliValidators.Positive(o.Limit);
        return o;
    }

    public void AddTo(Command command)
    {
        command.Options.Add(MaxNewTokens);
        command.Options.Add(BatchSize);
        command.Options.Add(Limit);
        command.Options.Add(NoChatTemplate);
        command.Options.Add(Threads);
        command.Options.Add(Engine);
        command.Options.Add(Overwrite);
    }

    public EvalGenerationOptions Generation(ParseResult parse) => new()
    {
        MaxNewTokens = parse.GetValue(MaxNewTokens),
        BatchSize = parse.GetValue(BatchSize),
        UseChatTemplate = !parse.GetValue(NoChatTemplate),
        Threads = parse.GetValue(Threads),
        Engine = EngineOption.Parse(parse.GetValue(Engine)),
    };

    /// <summary>Checks <c>--plot</c> and <c>--json-out</c> (and <paramref name="output"/>, sweep's <c>-o</c>) before any generation runs.</summary>
    public void CheckOutputs(ParseResult parse, string? plot, string? jsonOut, string? output = null)
    {
        if (plot is not null && !plot.EndsWith(".svg", StringComparison.OrdinalIgnoreCase))
            throw new OnnxSteerException(ErrorKind.Usage, $"--plot '{plot}' must end in .svg (charts are written as SVG).");
        var overwrite = parse.GetValue(Overwrite);
        OutputPolicy.CheckFile(output, overwrite, "-o");
        OutputPolicy.CheckFile(plot, overwrite, "--plot");
        OutputPolicy.CheckFile(jsonOut, overwrite, "--json-out");
    }

    /// <summary>A one-line progress counter on an interactive terminal; nothing when stderr is redirected or captured.</summary>
    public static IProgress<EvalProgress>? Progress(TextWriter stderr) =>
        Interactive(stderr) ? new SyncProgress(p => stderr.Write($"\rgenerating {p.Done}/{p.Total} ")) : null;

    public static void EndProgress(TextWriter stderr)
    {
        if (Interactive(stderr)) stderr.Write("\r                              \r");
    }

    private static bool Interactive(TextWriter stderr) => ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected;

    // Progress<T> posts to the thread pool, so lines could arrive after the command printed its table.
    private sealed class SyncProgress(Action<EvalProgress> report) : IProgress<EvalProgress>
    {
        public void Report(EvalProgress value) => report(value);
    }
}
