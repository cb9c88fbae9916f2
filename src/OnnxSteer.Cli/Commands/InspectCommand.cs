using System.CommandLine;
using OnnxSteer.Decoder;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer inspect &lt;dir|model.onnx&gt; [--json] [--explain]</c>: layout, sizes, interface, residual per layer.</summary>
internal static class InspectCommand
{
    private static readonly Argument<string> ModelArgument = new("model") { Description = "Model folder or .onnx file." };
    private static readonly Option<bool> JsonOption = new("--json") { Description = "Print the report as JSON." };
    private static readonly Option<bool> ExplainOption = new("--explain") { Description = "Say, for every known layout, why it matched or where it stopped." };

    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("inspect", "Show a model's decoder layout, layer count, hidden size, dtype, opsets, inputs/outputs and residual stream per layer.");
        command.Arguments.Add(ModelArgument);
        command.Options.Add(JsonOption);
        command.Options.Add(ExplainOption);
        command.SetAction(parse =>
        {
            var report = ModelInspector.Inspect(parse.GetValue(ModelArgument)!, parse.GetValue(ExplainOption));
            if (parse.GetValue(JsonOption)) stdout.WriteLine(CliJson.Format(report.ToJson()));
            else ModelInspector.WriteText(report, stdout);
            return 0;
        });
        return command;
    }
}
