namespace OnnxSteer;

/// <summary>What kind of anticipated failure an <see cref="OnnxSteerException"/> reports.
/// Each kind maps to one CLI exit code (README, "Exit codes"); 1 is reserved for bugs.</summary>
public enum ErrorKind
{
    /// <summary>Bad command-line arguments or options (exit 2).</summary>
    Usage = 2,
    /// <summary>A named file or folder does not exist (exit 3).</summary>
    NotFound = 3,
    /// <summary>Not an ONNX model, a truncated or corrupt protobuf, a model over the 2 GB protobuf limit (exit 4).</summary>
    InvalidModel = 4,
    /// <summary>A valid ONNX model whose graph OnnxSteer cannot patch or run: not a decoder, already patched,
    /// a layer the model does not have (exit 5).</summary>
    UnsupportedModel = 5,
    /// <summary>A path inside a model or vector file that is absolute, escapes the model folder or follows a
    /// symlink out of it (exit 6).</summary>
    UnsafePath = 6,
    /// <summary>A vector file or vector that is corrupt, the wrong size, or holds NaN/Inf (exit 7).</summary>
    InvalidVector = 7,
    /// <summary>The output cannot be written: it exists, the folder is read-only, the disk is full (exit 8).</summary>
    Output = 8,
    /// <summary><c>verify</c> found a patched model that does not compute what its source does (exit 9).</summary>
    VerificationFailed = 9,
    /// <summary>Input data (pairs, prompts, evaluation files) that cannot be used (exit 10).</summary>
    InvalidData = 10,
    /// <summary>The ONNX Runtime execution provider asked for is not in the native ONNX Runtime package the application
    /// references, or cannot start (exit 11).</summary>
    ProviderUnavailable = 11,
}

/// <summary>The one exception type for OnnxSteer's anticipated failures. Its message is a single line
/// meant for users, naming the values involved ("layer 40 requested; the model has 32 layers (0-31)").</summary>
public sealed class OnnxSteerException : Exception
{
    /// <summary>Creates an error of the given kind.</summary>
    public OnnxSteerException(ErrorKind kind, string message, Exception? inner = null) : base(message, inner) => Kind = kind;

    /// <summary>The failure's kind; the CLI's exit code is <c>(int)Kind</c>.</summary>
    public ErrorKind Kind { get; }

    /// <summary>The process exit code for this error.</summary>
    public int ExitCode => (int)Kind;
}
