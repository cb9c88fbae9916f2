using System.CommandLine;

namespace OnnxSteer.Cli;

/// <summary>Builds the command tree and maps errors to exit codes. Each verb lives in its own
/// <c>Commands/*Command.cs</c> factory that only parses options and hands them to a library worker.</summary>
public static class CliApp
{
    /// <summary>The process entry point: <see cref="Run"/> with SIGINT/SIGTERM handled (<see cref="TerminationSignals"/>):
    /// whatever is running stops within a second with exit 130 (SIGINT) or 143 (SIGTERM).</summary>
    public static int RunProcess(string[] args)
    {
        // Registered first and never removed: a signal at any moment of the run, or during the exit itself, takes this path.
        var signals = TerminationSignals.Register(Console.Error);
        try
        {
            return Run(args, null, null, signals);
        }
        finally
        {
            signals.MarkFinished();
        }
    }

    /// <summary>Runs the CLI with the given arguments and returns the process exit code.</summary>
    public static int Run(string[] args, TextWriter? stdout = null, TextWriter? stderr = null) => Run(args, stdout, stderr, null);

    private static int Run(string[] args, TextWriter? stdout, TextWriter? stderr, TerminationSignals? signals)
    {
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
        // System.CommandLine's own signal handling is off (ProcessTerminationTimeout = null): the process entry point owns
        // SIGINT/SIGTERM (TerminationSignals), and an in-process caller (tests, hosts) keeps its own.
        var configuration = new InvocationConfiguration
        {
            Output = output, Error = error, EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null,
        };
        int code;
        try
        {
            code = parse.InvokeAsync(configuration, signals?.Token ?? CancellationToken.None).GetAwaiter().GetResult();
        }
        catch (OnnxSteerException e) when (signals?.ExitCode is null)
        {
            error.WriteLine($"onnxsteer: error: {e.Message}");
            return e.ExitCode;
        }
        catch (Exception e) when (e is OperationCanceledException || signals?.ExitCode is not null)
        {
            // Cancelled by a signal, or failed because of the cancellation (a terminated run): either way the answer is the
            // signal's exit code, and anything written is complete or absent.
            if (signals is null)
            {
                error.WriteLine("onnxsteer: cancelled");
                return 130;
            }
            signals.ReportCancelled(error);
            return signals.ExitCode ?? 130;
        }
        if (signals?.ExitCode is int signalled)
        {
            // The verb finished although a signal came: its outputs are complete, but the run was asked to stop.
            signals.ReportCancelled(error);
            return signalled;
        }
        return code;
    }

    /// <summary>The root command with every verb.</summary>
    public static RootCommand BuildRoot(TextWriter stdout, TextWriter stderr)
    {
        var root = new RootCommand("onnxsteer: activation steering for exported ONNX decoders (patch, extract, generate).");
        foreach (var command in Commands.All(stdout, stderr)) root.Subcommands.Add(command);
        return root;
    }
}
