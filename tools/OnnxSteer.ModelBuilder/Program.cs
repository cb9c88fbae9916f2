namespace OnnxSteer.ModelBuilder;

internal static class Program
{
    private static int Main(string[] args)
    {
        try
        {
            return BuilderCli.Run(args, Console.Out, Console.Error);
        }
        catch (OnnxSteerException e)
        {
            Console.Error.WriteLine($"modelbuilder: error: {e.Message}");
            return e.ExitCode;
        }
    }
}
