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
        var command = new Command("version", "Print the onnxsteer version, the ONNX Runtime build in use (native and managed) and onnxruntime-genai when present.");
        command.SetAction(_ =>
        {
            foreach (var line in Lines()) stdout.WriteLine(line);
            return 0;
        });
        return command;
    }

    /// <summary>onnxsteer's version, the ONNX Runtime native library actually loaded (its own version string, and the
    /// managed package's), and onnxruntime-genai when this build carries it.</summary>
    internal static IEnumerable<string> Lines()
    {
        yield return $"onnxsteer {Informational(typeof(VersionCommand).Assembly)}";
        string native;
        try { native = Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetVersionString(); }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException)
        { native = $"native library not loadable ({e.GetType().Name})"; }
        var providers = TryProviders();
        yield return $"onnxruntime {native} (managed {Informational(typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly)}){providers}";
        // GenAI is optional: found by name so that builds without it still run `version`.
        var genai = AppDomain.CurrentDomain.GetAssemblies().FirstOrDefault(a => a.GetName().Name == "Microsoft.ML.OnnxRuntimeGenAI");
        if (genai is null)
            try { genai = System.Reflection.Assembly.Load("Microsoft.ML.OnnxRuntimeGenAI"); }
            catch (Exception e) when (e is FileNotFoundException or FileLoadException or BadImageFormatException) { }
        // The GenAI assemblies carry no version (0.0.0.0); the package version is recorded at build time.
        var package = typeof(VersionCommand).Assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyMetadataAttribute), false)
            .OfType<System.Reflection.AssemblyMetadataAttribute>().FirstOrDefault(a => a.Key == "OnnxRuntimeGenAIPackage")?.Value;
        yield return genai is null ? "onnxruntime-genai: not in this build" : $"onnxruntime-genai {package ?? Informational(genai)}";
    }

    private static string TryProviders()
    {
        try { return $"; providers: {string.Join(", ", Microsoft.ML.OnnxRuntime.OrtEnv.Instance().GetAvailableProviders())}"; }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException or Microsoft.ML.OnnxRuntime.OnnxRuntimeException) { return ""; }
    }

    private static string Informational(System.Reflection.Assembly assembly)
    {
        var v = assembly.GetCustomAttributes(typeof(System.Reflection.AssemblyInformationalVersionAttribute), false)
            .OfType<System.Reflection.AssemblyInformationalVersionAttribute>().FirstOrDefault()?.InformationalVersion;
        // The SDK appends "+<commit>"; keep the version people compare.
        return v is null ? assembly.GetName().Version?.ToString() ?? "?" : v.Split('+')[0];
    }
}
