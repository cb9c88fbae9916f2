using System.CommandLine;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer patch &lt;model&gt; -o &lt;out&gt; [--layers] [--expose] [--steer-input] [--additive-only] [--verify] [--overwrite] [--json]</c>.</summary>
internal static class PatchCommand
{
    private static readonly Argument<string> ModelArgument = new("model") { Description = "Model folder or .onnx file to patch (left unchanged)." };
    private static readonly Option<string> OutputOption = new("--output", "-o") { Description = "Folder to write the patched model to.", Required = true };
    private static readonly Option<string> LayersOption = new("--layers") { Description = "Layers that get steering inputs: all, none, or a list like 3,5,10-12.", DefaultValueFactory = _ => "all" };
    private static readonly Option<string> ExposeOption = new("--expose") { Description = "Layers that get hidden_states.{L} outputs: all, none, or a list.", DefaultValueFactory = _ => "all" };
    private static readonly Option<string> SteerInputOption = new("--steer-input")
    {
        Description = "optional: steering inputs are zeros unless fed (callers unaware of steering run unchanged); required: plain inputs (what onnxruntime-genai's SetModelInput needs).",
        DefaultValueFactory = _ => "optional",
    };
    private static readonly Option<string?> ForOption = new("--for")
    {
        Description = "Write a folder ready for a runtime: genai = --steer-input required (ONNX Runtime GenAI ignores fed inputs that have defaults), " +
                      "and refused unless the model is an onnxruntime-genai export (genai_config.json).",
    };
    private static readonly Option<bool> AdditiveOnlyOption = new("--additive-only")
    {
        Description = "Steered layers take steering.{L}.add only (no direction/target inputs, no projection subgraph: 2 nodes per layer instead of 8); projection and ablation are refused on the result.",
    };
    private static readonly Option<bool> VerifyOption = new("--verify") { Description = "Run 'onnxsteer verify' on the result." };
    private static readonly Option<int?> ThreadsOpt = ThreadsOption.Create("1 for --verify, as in onnxsteer verify");
    private static readonly Option<bool> OverwriteOption = new("--overwrite") { Description = "Replace the output folder if it exists." };
    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print the result as JSON." };

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("patch", "Rewrite an exported decoder to expose hidden_states.{L} and take steering.{L}.add|direction|target inputs.");
        command.Arguments.Add(ModelArgument);
        foreach (var option in new Option[] { OutputOption, LayersOption, ExposeOption, SteerInputOption, AdditiveOnlyOption, ForOption, VerifyOption, ThreadsOpt, OverwriteOption, JsonOption })
            command.Options.Add(option);
        command.SetAction(parse =>
        {
            var options = new PatchOptions
            {
                Layers = CliLayers.Parse(parse.GetValue(LayersOption), "--layers"),
                Expose = CliLayers.Parse(parse.GetValue(ExposeOption), "--expose"),
                SteerInput = parse.GetValue(SteerInputOption) switch
                {
                    "optional" => SteerInputMode.Optional,
                    "required" => SteerInputMode.Required,
                    var other => throw new OnnxSteerException(ErrorKind.Usage, $"--steer-input: '{other}' is not one of optional, required."),
                },
                AdditiveOnly = parse.GetValue(AdditiveOnlyOption),
            };
            if (parse.GetValue(ForOption) is string target)
            {
                if (target != "genai") throw new OnnxSteerException(ErrorKind.Usage, $"--for: '{target}' is not a known target (genai).");
                if (parse.GetResult(SteerInputOption) is { Implicit: false } && options.SteerInput != SteerInputMode.Required)
                    throw new OnnxSteerException(ErrorKind.Usage, "--for genai needs required steering inputs; drop --steer-input optional.");
                var source = parse.GetValue(ModelArgument)!;
                var folder = Directory.Exists(source) ? source : Path.GetDirectoryName(Path.GetFullPath(source))!;
                if (!File.Exists(Path.Combine(folder, "genai_config.json")))
                    throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                        $"--for genai: {folder} has no genai_config.json; ONNX Runtime GenAI runs onnxruntime-genai exports only (use the ort engine for this model).");
                options = options with { SteerInput = SteerInputMode.Required };
            }
            if (options.Layers.IsNone && options.Expose.IsNone)
                throw new OnnxSteerException(ErrorKind.Usage, "nothing to do: --layers none and --expose none.");
            OutputPolicy.CheckFolder(parse.GetValue(OutputOption)!, parse.GetValue(OverwriteOption), "-o");
            var json = parse.GetValue(JsonOption);
            var report = ModelPatcher.Patch(parse.GetValue(ModelArgument)!, parse.GetValue(OutputOption)!, options,
                parse.GetValue(OverwriteOption), json ? null : TerminalProgress.For(stderr));
            VerificationReport? verification = parse.GetValue(VerifyOption) ? PatchVerifier.Verify(report.OutputDirectory, new VerifyOptions { Threads = parse.GetValue(ThreadsOpt) ?? 1 }) : null;
            if (json)
            {
                stdout.WriteLine(CliJson.Serialize(new
                {
                    output = report.OutputDirectory,
                    manifest = report.Manifest,
                    passes = report.Passes.Select(p => new { pass = p.Pass, counts = p.Counts }),
                    linked = report.LinkedFiles,
                    copied = report.CopiedFiles,
                    carried = report.CarriedFiles,
                    verification,
                }));
            }
            else
            {
                var m = report.Manifest;
                stdout.WriteLine($"patched {m.Layout} decoder ({m.NumLayers} layers, hidden {m.HiddenSize}, {m.ResidualDtype}) -> {report.OutputDirectory}");
                stdout.WriteLine($"  steered layers: {LayerSelection.Format(m.SteeredLayers)} ({m.SteerInput.ToString().ToLowerInvariant()} inputs{(m.AdditiveOnly ? ", additive only" : "")}); exposed: {LayerSelection.Format(m.ExposedLayers)}");
                foreach (var pass in report.Passes) stdout.WriteLine($"  {pass}");
                if (report.LinkedFiles.Count > 0) stdout.WriteLine($"  weights hard-linked: {string.Join(", ", report.LinkedFiles)}");
                if (report.CopiedFiles.Count > 0) stdout.WriteLine($"  weights copied: {string.Join(", ", report.CopiedFiles)}");
                if (report.CarriedFiles.Count > 0) stdout.WriteLine($"  carried over: {string.Join(", ", report.CarriedFiles)}");
                if (verification is not null) VerifyCommand.WriteText(verification, stdout);
            }
            return verification is null ? 0 : VerifyCommand.Outcome(verification, stderr);
        });
        return command;
    }
}

/// <summary>Copy progress on stderr when it is a terminal; nothing when redirected.</summary>
internal sealed class TerminalProgress(TextWriter writer) : IProgress<CopyProgress>
{
    private int _lastPercent = -1;

    public static IProgress<CopyProgress>? For(TextWriter stderr) =>
        ReferenceEquals(stderr, Console.Error) && !Console.IsErrorRedirected ? new TerminalProgress(stderr) : null;

    public void Report(CopyProgress value)
    {
        var percent = value.BytesTotal == 0 ? 100 : (int)(value.BytesDone * 100 / value.BytesTotal);
        if (percent == _lastPercent) return;
        _lastPercent = percent;
        writer.Write($"\rcopying {value.File}: {percent,3}% of {value.BytesTotal / (1 << 20)} MiB");
        if (value.BytesDone >= value.BytesTotal) { writer.WriteLine(); _lastPercent = -1; }
    }
}
