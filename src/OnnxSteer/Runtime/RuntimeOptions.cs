namespace OnnxSteer.Runtime;

/// <summary>The ONNX Runtime execution provider a <see cref="SteeredModel"/> runs on. The OnnxSteer package references
/// ONNX Runtime's managed API only (Microsoft.ML.OnnxRuntime.Managed); the application chooses the native library with
/// one package reference of the same version: <c>Microsoft.ML.OnnxRuntime</c> (CPU), <c>Microsoft.ML.OnnxRuntime.Gpu</c>
/// (CUDA and CPU) or <c>Microsoft.ML.OnnxRuntime.DirectML</c> (DirectML and CPU, Windows). Asking for a provider the
/// referenced package lacks fails at load with <see cref="ErrorKind.ProviderUnavailable"/> naming the package to add.</summary>
public enum ExecutionProvider
{
    /// <summary>CPU (in every native package; the default).</summary>
    Cpu,
    /// <summary>NVIDIA CUDA: the application references <c>Microsoft.ML.OnnxRuntime.Gpu</c> (instead of
    /// <c>Microsoft.ML.OnnxRuntime</c>) and the machine has the CUDA and cuDNN libraries ONNX Runtime's CUDA build needs.</summary>
    Cuda,
    /// <summary>DirectML (Windows GPUs): the application references <c>Microsoft.ML.OnnxRuntime.DirectML</c> (instead of
    /// <c>Microsoft.ML.OnnxRuntime</c>).</summary>
    DirectML,
}

/// <summary>How a <see cref="SteeredModel"/> is loaded.</summary>
public sealed record RuntimeOptions
{
    /// <summary>The execution provider (default CPU).</summary>
    public ExecutionProvider Provider { get; init; } = ExecutionProvider.Cpu;

    /// <summary>The engine <see cref="SteeredGenerator.Load"/> uses (default <see cref="GenerationEngine.Ort"/>);
    /// <see cref="SteeredModel.Load"/> is always the ORT engine.</summary>
    public GenerationEngine Engine { get; init; } = GenerationEngine.Ort;

    /// <summary>GPU ordinal for CUDA and DirectML.</summary>
    public int DeviceId { get; init; }

    /// <summary>Threads ONNX Runtime uses inside one operator; null or 0 uses the cores this process may use
    /// (<see cref="OnnxSteer.Onnx.SessionThreads"/> says why it is set explicitly rather than left to ONNX Runtime).</summary>
    public int? IntraOpThreads { get; init; }

    /// <summary>Whether ONNX Runtime's intra-op threads spin between operators instead of sleeping (null: ONNX Runtime's
    /// default, spinning). Spinning saves the wake-up of each parallel operator when the cores are free; on a machine
    /// busy with other work the spinning threads take time slices from the threads doing the work (docs/benchmarks.md,
    /// "ONNX Runtime session settings"). No effect with one thread.</summary>
    public bool? IntraOpSpinning { get; init; }

    /// <summary>The .onnx file inside the folder; null picks steering.json's model_file, genai_config.json's
    /// decoder filename, then model.onnx or decoder_model_merged.onnx.</summary>
    public string? ModelFile { get; init; }

    /// <summary>Decode through pre-bound buffers (an ONNX Runtime IO binding over a KV cache the loop owns), so a decode
    /// step allocates no managed memory on the CPU. On CUDA and DirectML the cache lives in device memory from the
    /// provider's allocator and only the logits come back to the host each step (that form has not been run: no GPU where
    /// it was written; <c>tools/gpu-check.sh</c> checks it). Used for models whose present is past + 1; other models, or
    /// false here, use plain <c>Run</c> calls (same tokens; about 2-3 KB of managed garbage per step).</summary>
    public bool BoundDecode { get; init; } = true;

    /// <summary>Cache positions the bound decode reserves beyond the prompt before it first doubles its buffers (tests set
    /// it small to exercise growth).</summary>
    internal int BoundCacheHeadroom { get; init; } = 256;

    /// <summary>On the CPU provider, keep the bound cache in buffers from ONNX Runtime's allocator API instead of native host
    /// memory: the CUDA/DirectML code path, run on the CPU (tests).</summary>
    internal bool BoundCacheOnAllocator { get; init; }

    /// <summary>Runs on the session options after the library has set them, before the session is created: the
    /// benchmarks try ONNX Runtime settings (config entries, optimization level) against the defaults with it.</summary>
    internal Action<Microsoft.ML.OnnxRuntime.SessionOptions>? ConfigureSession { get; init; }

    /// <summary>Slice the LM head's input to the last position at load (<see cref="OnnxSteer.Runtime.LastPositionLogits"/>);
    /// false loads the model file unchanged (tests compare the two, benchmarks measure them).</summary>
    internal bool LastPositionLogits { get; init; } = true;

    /// <summary>Run parallel MatMuls that read the same input (q/k/v, gate/up) as one MatMul and a Split at load
    /// (<see cref="OnnxSteer.Runtime.MatMulFusion"/>). Off by default: on the 134M model it made load 160-240 ms slower
    /// and decode was not faster in a steady way (docs/benchmarks.md, "MatMul fusion at load"); tests compare the two,
    /// benchmarks measure them (<c>peers --ort fuse_matmuls=1</c>).</summary>
    internal bool FuseMatMuls { get; init; }
}
