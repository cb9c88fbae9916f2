using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;

namespace OnnxSteer.Runtime.Generation;

/// <summary>The few ONNX Runtime C API calls the bound decode loop makes once per step, called through the runtime's own
/// function table (<see cref="OrtApi"/>, public in the managed package) so that a step allocates no managed memory.</summary>
/// <remarks>Why not the managed wrappers: <see cref="OrtIoBinding.BindInput(string, OrtValue)"/> marshals the name to a
/// new UTF-8 array on every call, and every <see cref="OrtValue"/> is a managed object; a decode step rebinds the
/// attention mask and every past/present tensor (their lengths change each step), so those wrappers would allocate
/// about 50 objects per step on a 12-layer model. The calls here take the native handles of objects the managed API
/// owns (<see cref="SafeHandle.DangerousGetHandle"/>) and names pre-encoded once per generation.</remarks>
internal static unsafe class OrtNative
{
    // The version whose function table we read; every function used here exists since API version 4.
    private const uint ApiVersion = 14;

    private static readonly Lazy<Api> Table = new(Load, LazyThreadSafetyMode.ExecutionAndPublication);

    private sealed class Api
    {
        public required delegate* unmanaged<IntPtr, IntPtr, nuint, long*, nuint, int, IntPtr*, IntPtr> CreateTensorWithData;
        public required delegate* unmanaged<IntPtr, byte*, IntPtr, IntPtr> BindInput;
        public required delegate* unmanaged<IntPtr, byte*, IntPtr, IntPtr> BindOutput;
        public required delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr> RunWithBinding;
        public required delegate* unmanaged<IntPtr, void> ReleaseValue;
        public required delegate* unmanaged<IntPtr, IntPtr> GetErrorMessage;
        public required delegate* unmanaged<IntPtr, void> ReleaseStatus;
    }

    private static Api Load()
    {
        // Resolve the very library the managed package loaded, with its probing rules (runtimes/<rid>/native).
        var ortAssembly = typeof(InferenceSession).Assembly;
        _ = OrtEnv.Instance(); // make sure the managed package has loaded and initialised the native library
        if (!NativeLibrary.TryLoad("onnxruntime", ortAssembly, DllImportSearchPath.SafeDirectories | DllImportSearchPath.AssemblyDirectory, out var lib)
            || !NativeLibrary.TryGetExport(lib, "OrtGetApiBase", out var getApiBase))
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable, "the ONNX Runtime native library does not export OrtGetApiBase");
        var apiBase = Marshal.PtrToStructure<OrtApiBase>(((delegate* unmanaged<IntPtr>)getApiBase)());
        var apiPointer = ((delegate* unmanaged<uint, IntPtr>)apiBase.GetApi)(ApiVersion);
        if (apiPointer == IntPtr.Zero)
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable, $"the ONNX Runtime native library does not offer C API version {ApiVersion}");
        var api = Marshal.PtrToStructure<OrtApi>(apiPointer);
        return new Api
        {
            CreateTensorWithData = (delegate* unmanaged<IntPtr, IntPtr, nuint, long*, nuint, int, IntPtr*, IntPtr>)api.CreateTensorWithDataAsOrtValue,
            BindInput = (delegate* unmanaged<IntPtr, byte*, IntPtr, IntPtr>)api.BindInput,
            BindOutput = (delegate* unmanaged<IntPtr, byte*, IntPtr, IntPtr>)api.BindOutput,
            RunWithBinding = (delegate* unmanaged<IntPtr, IntPtr, IntPtr, IntPtr>)api.RunWithBinding,
            ReleaseValue = (delegate* unmanaged<IntPtr, void>)api.ReleaseValue,
            GetErrorMessage = (delegate* unmanaged<IntPtr, IntPtr>)api.GetErrorMessage,
            ReleaseStatus = (delegate* unmanaged<IntPtr, void>)api.ReleaseStatus,
        };
    }

    /// <summary>Loads the function table (throws <see cref="OnnxSteerException"/> if the library lacks it).</summary>
    public static void EnsureLoaded() => _ = Table.Value;

    /// <summary>Binds a tensor view over caller-owned memory as an input (or output) of <paramref name="binding"/>. The
    /// binding keeps its own reference to the tensor, so the view is released at once; the memory must outlive the run.</summary>
    /// <remarks>No native call here (or in <see cref="Run"/>) sits inside a try region: on Unix the JIT does not inline a
    /// P/Invoke transition inside one, and the call then goes through an IL stub that the runtime now and then compiles
    /// again on the calling thread, allocating 1.9-7 KB there mid-generation (issue 12: seen as
    /// <c>IL_STUB_PInvoke</c> compiled on the generating thread in 1 of 300 generations under load). Compiled optimised
    /// at once for the same reason: unoptimised code never inlines the transition.</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Bind(OrtIoBinding binding, Utf8Name name, bool output, OrtMemoryInfo memory, TensorElementType type,
        IntPtr data, long bytes, ReadOnlySpan<long> shape)
    {
        var api = Table.Value;
        IntPtr value = IntPtr.Zero;
        fixed (long* dims = shape)
            Check(api.CreateTensorWithData(memory.DangerousGetHandle(), data, (nuint)bytes, dims, (nuint)shape.Length, (int)type, &value));
        IntPtr status;
        fixed (byte* n = name.Bytes)
            status = output
                ? api.BindOutput(binding.DangerousGetHandle(), n, value)
                : api.BindInput(binding.DangerousGetHandle(), n, value);
        api.ReleaseValue(value);
        Check(status);
    }

    /// <summary>Runs a session on <paramref name="binding"/>, as <see cref="InferenceSession.RunWithBinding"/> does, but
    /// through the function table: the managed method calls the C API through a delegate, whose marshalling stub is the
    /// same kind of IL stub as in <see cref="Bind"/>'s remarks.</summary>
    /// <param name="session">The session's native handle (<see cref="SessionHandle"/>).</param>
    /// <param name="runOptions">Run options (terminating them fails the run; the caller checks <see cref="RunOptions.Terminate"/>).</param>
    /// <param name="binding">The bound inputs and outputs.</param>
    /// <exception cref="OnnxSteerException">ONNX Runtime failed the run.</exception>
    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    public static void Run(IntPtr session, RunOptions runOptions, OrtIoBinding binding)
    {
        var api = Table.Value;
        Check(api.RunWithBinding(session, runOptions.DangerousGetHandle(), binding.DangerousGetHandle()));
    }

    /// <summary>The native handle of <paramref name="session"/> (the managed API keeps it in a private field).</summary>
    /// <exception cref="OnnxSteerException">This ONNX Runtime version names the field otherwise (callers fall back to plain runs).</exception>
    public static IntPtr SessionHandle(InferenceSession session)
    {
        try
        {
            return NativeHandle(session);
        }
        catch (MissingFieldException e)
        {
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable, $"this ONNX Runtime's InferenceSession keeps its handle elsewhere: {e.Message}", e);
        }
    }

    [System.Runtime.CompilerServices.UnsafeAccessor(System.Runtime.CompilerServices.UnsafeAccessorKind.Field, Name = "_nativeHandle")]
    private static extern ref IntPtr NativeHandle(InferenceSession session);

    private static void Check(IntPtr status)
    {
        if (status == IntPtr.Zero) return;
        var api = Table.Value;
        string message = Marshal.PtrToStringUTF8(api.GetErrorMessage(status)) ?? "unknown error";
        api.ReleaseStatus(status);
        throw new OnnxSteerException(ErrorKind.InvalidModel, $"ONNX Runtime: {message}");
    }
}

/// <summary>A tensor name encoded once as zero-terminated UTF-8 for the C API.</summary>
internal sealed class Utf8Name(string name)
{
    public byte[] Bytes { get; } = [.. System.Text.Encoding.UTF8.GetBytes(name), 0];
}

/// <summary>Native memory (64-byte aligned) that ONNX Runtime reads and writes through tensor views. A
/// <see cref="SafeHandle"/>: freed on dispose, and by the finalizer should an owner fail before it could dispose it.</summary>
internal sealed unsafe class NativeBuffer : SafeHandle, ICacheBuffer
{
    // Buffers allocated minus buffers freed, counted on the thread that does each (so a test can see that a failed
    // constructor freed what it allocated, whatever other tests and the finalizer thread do meanwhile).
    [ThreadStatic] private static long t_live;

    public NativeBuffer(long bytes) : base(IntPtr.Zero, ownsHandle: true)
    {
        Size = bytes;
        SetHandle((IntPtr)NativeMemory.AlignedAlloc((nuint)Math.Max(bytes, 1), 64));
        t_live++;
    }

    /// <summary>Buffers allocated and not yet freed by the current thread.</summary>
    internal static long LiveOnThisThread => t_live;

    public IntPtr Pointer => handle;
    public long Size { get; }

    public override bool IsInvalid => handle == IntPtr.Zero;

    protected override bool ReleaseHandle()
    {
        NativeMemory.AlignedFree((void*)handle);
        t_live--;
        return true;
    }
}
