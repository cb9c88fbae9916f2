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
            else WriteText(report, stdout);
            return 0;
        });
        return command;
    }

    /// <summary>Human-readable report.</summary>
    internal static void WriteText(InspectionReport r, TextWriter w)
    {
        w.WriteLine($"model:       {r.ModelFile}");
        w.WriteLine($"layout:      {r.Layout ?? "(none)"}{(r.Patched ? "  [patched by onnxsteer]" : "")}");
        if (r.NotADecoder is not null) w.WriteLine($"             {r.NotADecoder}");
        if (r.NumLayers is not null) w.WriteLine($"layers:      {r.NumLayers}   hidden size: {r.HiddenSize}   residual dtype: {r.Dtype}");
        w.WriteLine($"ir_version:  {r.IrVersion}   opsets: {string.Join(", ", r.Opsets.Select(o => $"{o.Key} {o.Value}"))}");
        if (r.ExternalData.Count > 0) w.WriteLine($"weights:     {string.Join(", ", r.ExternalData)} (external)");
        w.WriteLine("inputs:");
        foreach (var i in r.Inputs) w.WriteLine($"  {i.Name}  {i.Dtype}[{string.Join(", ", i.Shape)}]{(i.HasDefault ? "  (default: zeros)" : "")}");
        w.WriteLine("outputs:");
        foreach (var o in r.Outputs) w.WriteLine($"  {o.Name}  {o.Dtype}[{string.Join(", ", o.Shape)}]");
        if (r.Residuals.Count > 0)
        {
            w.WriteLine("residual stream after each block:");
            foreach (var res in r.Residuals) w.WriteLine($"  {res.Layer,3}: {res.Value}");
        }
        if (r.Explain is not null)
        {
            w.WriteLine("layouts:");
            foreach (var e in r.Explain)
                w.WriteLine(e.Matched ? $"  {e.Layout}: matched: {e.Reason}" : $"  {e.Layout}: no: {e.Reason}{(e.StoppedAt is null ? "" : $" (stopped at {e.StoppedAt})")}");
        }
    }
}
