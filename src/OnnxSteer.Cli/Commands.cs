using System.CommandLine;

namespace OnnxSteer.Cli;

/// <summary>Registry of verbs. Each verb adds one line here.</summary>
internal static partial class Commands
{
    public static IEnumerable<Command> All(TextWriter stdout, TextWriter stderr)
    {
        yield return VersionCommand.Create(stdout);
        yield return InspectCommand.Create(stdout, stderr);
        yield return PatchCommand.Create(stdout, stderr);
        yield return VerifyCommand.Create(stdout, stderr);
        yield return VectorsCommand.Create(stdout, stderr);
        yield return ExtractCommand.Create(stdout, stderr);
        yield return EvalCommand.Create(stdout, stderr);
        yield return SweepCommand.Create(stdout, stderr);
        yield return GenerateCommand.Create(stdout, stderr);
        yield return DemoCommand.Create(stdout);
    }
}

internal static class VersionCommand
{
    public static Command Create(TextWriter stdout)
    {
        var command = new Command("version", "Print the onnxsteer version and the ONNX Runtime build in use.");
        command.SetAction(_ =>
        {
            stdout.WriteLine($"onnxsteer {typeof(VersionCommand).Assembly.GetName().Version}");
            return 0;
        });
        return command;
    }
}
