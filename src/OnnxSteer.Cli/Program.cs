using OnnxSteer;
using OnnxSteer.Cli;

try
{
    return CliApp.RunProcess(args);
}
catch (Exception e)
{
    // Anticipated failures are OnnxSteerExceptions (exit 2-11) and are handled in CliApp.Run; anything else is a bug.
    // Without this the runtime aborts (exit 134 on Linux) instead of the documented exit 1.
    Console.Error.WriteLine($"onnxsteer: internal error (a bug, please report it): {TerminalText.Escape(e.ToString(), keepNewlines: true)}");
    return 1;
}
