using Microsoft.ML.OnnxRuntime;

namespace OnnxSteer.Onnx;

/// <summary>The one place ONNX Runtime sessions get their thread counts (generate, extract, verify, eval, sweep, demo).</summary>
/// <remarks>Left unset, ONNX Runtime sizes its intra-op pool to the physical cores and pins each pool thread to one core
/// (its documented default). On a machine that is busy with other work a pinned thread cannot move off a loaded core,
/// and every parallel operator waits for it; an explicit count gives the same pool unpinned. So "default" here means the
/// cores this process may use (<see cref="Environment.ProcessorCount"/>, which honours affinity masks and container CPU
/// limits), set explicitly.</remarks>
public static class SessionThreads
{
    /// <summary>The intra-op thread count for <paramref name="requested"/>: itself when positive, else the cores this
    /// process may use.</summary>
    /// <exception cref="OnnxSteerException">A negative count (Usage).</exception>
    public static int Resolve(int? requested) => requested switch
    {
        null or 0 => Environment.ProcessorCount,
        < 0 => throw new OnnxSteerException(ErrorKind.Usage, $"threads must be >= 1 (or 0 for all cores), got {requested}"),
        int n => n,
    };

    /// <summary>Sets <paramref name="options"/>' intra-op threads to <see cref="Resolve"/>(<paramref name="requested"/>)
    /// and its inter-op threads to 1 (decoders are one chain of operators; a second pool would only compete).
    /// <paramref name="spinning"/> false stops the pool's threads (and the caller waiting on them) from spinning between
    /// operators (<c>session.intra_op.allow_spinning</c> 0); null keeps ONNX Runtime's default (spin).</summary>
    internal static void Apply(SessionOptions options, int? requested, bool? spinning = null)
    {
        options.IntraOpNumThreads = Resolve(requested);
        options.InterOpNumThreads = 1;
        if (spinning is bool spin) options.AddSessionConfigEntry(AllowSpinningKey, spin ? "1" : "0");
    }

    /// <summary>ONNX Runtime's session config key for intra-op spinning.</summary>
    internal const string AllowSpinningKey = "session.intra_op.allow_spinning";
}
