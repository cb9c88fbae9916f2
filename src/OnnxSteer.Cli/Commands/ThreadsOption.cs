using System.CommandLine;

namespace OnnxSteer.Cli;

/// <summary><c>--threads N</c>, the same on every verb that runs a model (generate, extract, verify, patch --verify,
/// eval, sweep, demo).</summary>
internal static class ThreadsOption
{
    /// <summary>A new <c>--threads</c> option; <paramref name="defaultText"/> says what leaving it out means for this verb.</summary>
    public static Option<int?> Create(string defaultText = "the cores this process may use")
    {
        var option = new Option<int?>("--threads") { Description = $"ONNX Runtime intra-op threads (default: {defaultText}; 0: all cores)." };
        option.Validators.Add(r => { if (r.GetValueOrDefault<int?>() is < 0) r.AddError("--threads must be >= 0."); });
        return option;
    }
}
