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
            error.WriteLine($"onnxsteer: error: {OneLine(first.Message)} (see '{HelpCommand(parse)} --help')");
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
        catch (Microsoft.ML.OnnxRuntime.OnnxRuntimeException e)
        {
            // A run ONNX Runtime refuses (shapes, types, a node it cannot execute) is a model this build cannot run: exit 5
            // in every verb, as extraction already reports it, never "internal error".
            error.WriteLine($"onnxsteer: error: ONNX Runtime failed: {OneLine(e.Message)}");
            return (int)ErrorKind.UnsupportedModel;
        }
    }

    /// <summary>"onnxsteer generate" for an error in generate's options; "onnxsteer" for the root.</summary>
    private static string HelpCommand(ParseResult parse)
    {
        var names = new List<string>();
        for (var r = parse.CommandResult; r is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
            names.Add(r.Command is RootCommand ? "onnxsteer" : r.Command.Name);
        names.Reverse();
        return names.Count == 0 ? "onnxsteer" : string.Join(" ", names);
    }

    /// <summary>System.CommandLine lists the allowed values of an option on separate lines; errors are one line.</summary>
    internal static string OneLine(string message)
    {
        var lines = message.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (lines.Length > 1 && lines[0].EndsWith("Must be one of:", StringComparison.Ordinal))
            return $"{lines[0][..^"Must be one of:".Length].TrimEnd()} Must be one of: {string.Join(", ", lines.Skip(1).Select(l => l.Trim('\'')))}.";
        // "as expected type 'System.Int32'" is .NET's name for what the user should type.
        var text = string.Join(" ", lines);
        text = System.Text.RegularExpressions.Regex.Replace(text, @" as expected type '(System\.Nullable`1\[)?System\.Int32\]?'", " as an integer");
        return System.Text.RegularExpressions.Regex.Replace(text, @" as expected type '(System\.Nullable`1\[)?System\.Single\]?'", " as a number");
    }

    /// <summary>The root command with every verb.</summary>
    public static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("onnxsteer: activation steering for exported ONNX decoders (patch, extract, generate).");
        foreach (var command in Commands.All(stdout, stderr)) root.Subcommands.Add(command);
        return root;
    }
}
