using System.CommandLine;

namespace OnnxSteer.Cli;

/// <summary>Builds the command tree and maps errors to exit codes. Each verb lives in its own
/// <c>Commands/*Command.cs</c> factory that only parses options and hands them to a library worker.</summary>
public static class CliApp
{
    /// <summary>Runs the CLI with the given arguments and returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null)
    {
        // The genai engine lives in its own assembly; the CLI carries it, so --engine genai|auto can find it.
        OnnxSteer.GenAI.GenAiEngine.Register();
        var output = stdout ?? Console.Out;
        var error = stderr ?? Console.Error;
        var root = BuildRoot(output, error);
        var parse = root.Parse(args);
        if (parse.Errors.Count > 0)
        {
            if (args.Length == 0)
            {
                root.Parse("--help").Invoke(new InvocationConfiguration { Output = output, Error = error });
                return (int)ErrorKind.Usage;
            }
            // One line, like every other error. "Required command" is reported alongside the more useful
            // "Unrecognized command 'x'", so prefer the latter.
            var first = parse.Errors.FirstOrDefault(e => e.Message.StartsWith("Unrecognized", StringComparison.Ordinal)) ?? parse.Errors[0];
            error.WriteLine($"onnxsteer: error: {first.Message} (see 'onnxsteer --help')");
            return (int)ErrorKind.Usage;
        }
        try
        {
            return parse.Invoke(new InvocationConfiguration { Output = output, Error = error, EnableDefaultExceptionHandler = false });
        }
        catch (OnnxSteerException e)
        {
            error.WriteLine($"onnxsteer: error: {e.Message}");
            return e.ExitCode;
        }
        catch (OperationCanceledException)
        {
            error.WriteLine("onnxsteer: cancelled");
            return 130;
        }
    }

    /// <summary>The root command with every verb.</summary>
    public static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("onnxsteer: activation steering for exported ONNX decoders (patch, extract, generate).");
        foreach (var command in Commands.All(stdout, stderr)) root.Subcommands.Add(command);
        return root;
    }
}
