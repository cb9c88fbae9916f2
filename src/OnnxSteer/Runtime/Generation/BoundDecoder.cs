using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Modeling;

namespace OnnxSteer.Runtime.Generation;

/// <summary>Runs decode steps through one <see cref="OrtIoBinding"/> over buffers that live for the whole generation, so
/// that a step allocates no managed memory (issue 6): ids, positions, steering inputs and logits are bound once; each step
/// rebinds only the attention mask and the cache views, through <see cref="OrtNative"/>.</summary>
/// <remarks>
/// <para>The KV cache: two native buffers per cache tensor swap roles every step. ONNX Runtime writes step n's present
/// ([batch, heads, L + 1, head_size]) into one buffer and step n + 1 reads it as its past from there. A contiguous
/// [b, h, L, d] tensor is the first b·h·L·d elements of its buffer whatever the buffer's capacity, so a view of the next
/// length over the same buffer is the right tensor and nothing is copied between steps (the attention kernel copies the
/// past into the present anyway, exactly as with plain <c>Run</c>). Buffers start at prompt + min(max new tokens, 256)
/// positions and double when full (the live past is copied once), so memory follows the actual length.</para>
/// <para>Where the cache lives (<see cref="CacheDevice"/>): on the CPU provider, native host memory; on CUDA and DirectML,
/// memory from ONNX Runtime's allocator for the provider's <see cref="OrtMemoryInfo"/>, so past and present stay on the
/// device and only the logits (what sampling reads) come back to the host each step. Nothing is ever copied between
/// the buffers by this class: the first step reads the prefill's presents as its pasts directly, and growth binds the old
/// buffer as the past and a larger one as the present (the attention kernel writes past + new position into the
/// present, as it does every step). Host inputs (ids, positions, mask) are rebound every step on the allocator path,
/// because ONNX Runtime copies a host input to the device when it is bound, not when the session runs.</para>
/// <para>Used for models whose present is past + 1 (checked on the prefill's presents); anything else keeps the plain
/// <c>Run</c> loop. The CUDA/DirectML form has not been run (no GPU where it was written); its CPU form
/// (<see cref="CacheDeviceKind.CpuAllocator"/>, the same code over the CPU allocator) runs in the tests.</para>
/// </remarks>
internal sealed unsafe class BoundDecoder : IDisposable
{
    private readonly IntPtr _sessionHandle; // the session outlives every loop that runs on it
    private readonly DecoderSignature _sig;
    private readonly int _batch;
    private readonly int _maxLength;
    private readonly OrtIoBinding _binding;
    private readonly OrtMemoryInfo _memory; // of the cache buffers
    private readonly OrtMemoryInfo? _ownedMemory;
    private readonly OrtAllocator? _allocator; // null: host NativeBuffers
    private readonly bool _rebindHostInputs;
    private readonly IntPtr _idsPointer, _positionsPointer;
    private readonly Utf8Name _idsName;
    private readonly Utf8Name? _positionsName;
    private readonly long[] _stepShape;
    private IReadOnlyList<OrtValue>? _prefill; // the first step's pasts
    private readonly Utf8Name? _maskName;
    private readonly Utf8Name[] _pastNames, _presentNames;
    private readonly long[] _maskShape = new long[2];
    private readonly long[] _cacheShape;
    private readonly long[] _tokenBytes; // bytes per cache position in each buffer (all of batch, heads, head size, K and V)
    private ICacheBuffer[] _front, _back; // _front holds the current past (after the first step)
    private int _capacity;
    private readonly List<OrtValue> _owned = [];
    private readonly Array _logits;

    /// <summary>Creates the binding; the first step reads the prefill's presents (each [.., prompt, ..]), which must stay
    /// alive until that step has run.</summary>
    public BoundDecoder(InferenceSession session, DecoderSignature sig, int batch, int promptLength, int maxLength, int vocab, bool logitsRank2,
        IReadOnlyList<OrtValue> prefillPresents, OrtValue ids, OrtValue? positions, IEnumerable<(string Name, OrtValue Value)> steering,
        int headroom = 256, CacheDevice device = default)
    {
        OrtNative.EnsureLoaded();
        long[] logitsShape = logitsRank2 ? [batch, vocab] : [batch, 1, vocab];
        try
        {
            if (device.Kind == CacheDeviceKind.Host) _memory = OrtMemoryInfo.DefaultInstance;
            else
            {
                _memory = _ownedMemory = device.Kind switch
                {
                    CacheDeviceKind.Cuda => new OrtMemoryInfo(OrtMemoryInfo.allocatorCUDA, OrtAllocatorType.DeviceAllocator, device.DeviceId, OrtMemType.Default),
                    CacheDeviceKind.DirectML => new OrtMemoryInfo("DML", OrtAllocatorType.DeviceAllocator, device.DeviceId, OrtMemType.Default),
                    _ => new OrtMemoryInfo(OrtMemoryInfo.allocatorCPU, OrtAllocatorType.DeviceAllocator, 0, OrtMemType.Default),
                };
                _allocator = new OrtAllocator(session, _memory);
                _rebindHostInputs = true;
            }
            _prefill = prefillPresents;
            _idsName = new Utf8Name(sig.InputIds);
            _stepShape = [batch, 1];
            _idsPointer = RawPointer(ids);
            if (sig.PositionIds is not null && positions is not null)
            {
                _positionsName = new Utf8Name(sig.PositionIds);
                _positionsPointer = RawPointer(positions);
            }
            _sessionHandle = OrtNative.SessionHandle(session); _sig = sig; _batch = batch; _maxLength = maxLength;
            int n = sig.Cache.Count;
            _pastNames = new Utf8Name[n];
            _presentNames = new Utf8Name[n];
            _tokenBytes = new long[n];
            _cacheShape = new long[sig.Cache.Any(c => c.Combined) ? 5 : 4];
            for (int i = 0; i < n; i++)
            {
                var c = sig.Cache[i];
                _pastNames[i] = new Utf8Name(c.Input);
                _presentNames[i] = new Utf8Name(c.Output);
                _tokenBytes[i] = (c.Combined ? 2L : 1L) * batch * c.Heads * c.HeadSize * ElementSize(c.Type);
            }
            if (sig.AttentionMask is not null) _maskName = new Utf8Name(sig.AttentionMask);

            _capacity = Math.Min(maxLength, promptLength + Math.Max(headroom, 1));
            _front = Allocate(_capacity);
            _back = Allocate(_capacity);

            _binding = session.CreateIoBinding();
            _binding.BindInput(sig.InputIds, ids);
            if (sig.PositionIds is not null && positions is not null) _binding.BindInput(sig.PositionIds, positions);
            if (sig.UseCacheBranch is not null)
            {
                // Optimum's merged decoder: every decode step takes the with-past branch of its If.
                _owned.Add(OrtValue.CreateTensorValueFromMemory(new[] { true }, [1]));
                _binding.BindInput(sig.UseCacheBranch, _owned[^1]);
            }
            foreach (var (name, value) in steering) _binding.BindInput(name, value);

            // Logits for one position per row, in the model's dtype, read in place after each step.
            (_logits, var logitsValue) = sig.LogitsType switch
            {
                TensorElementType.Float => Pinned<float>(),
                TensorElementType.Float16 => Pinned<Float16>(),
                TensorElementType.BFloat16 => Pinned<BFloat16>(),
                _ => throw new InvalidOperationException($"logits of type {sig.LogitsType}"),
            };
            _owned.Add(logitsValue);
            _binding.BindOutput(sig.LogitsOutput, logitsValue);
        }
        catch
        {
            // Whatever was allocated before the failure (cache buffers, the binding, pinned logits, the allocator): a
            // model this path cannot bind falls back to the plain loop, which must not leak the attempt.
            Dispose();
            throw;
        }

        (Array, OrtValue) Pinned<T>() where T : unmanaged
        {
            var array = GC.AllocateArray<T>(batch * vocab, pinned: true);
            return (array, OrtValue.CreateTensorValueFromMemory(array, logitsShape));
        }
    }

    /// <summary>Whether the bound loop can run this model: a KV cache, presents of the prefill's length (so present = past + 1), cache and logits in float32/float16/bfloat16.</summary>
    public static bool Supports(DecoderSignature sig, IReadOnlyList<OrtValue> prefillPresents, int batch, int promptLength)
    {
        if (sig.Layout == CacheLayout.None) return false;
        if (ElementSize(sig.LogitsType) == 0) return false;
        for (int i = 0; i < sig.Cache.Count; i++)
        {
            var c = sig.Cache[i];
            if (ElementSize(c.Type) == 0 || c.Heads <= 0 || c.HeadSize <= 0) return false;
            var shape = prefillPresents[i].GetTensorTypeAndShape().Shape;
            long[] expected = c.Combined ? [2, batch, c.Heads, promptLength, c.HeadSize] : [batch, c.Heads, promptLength, c.HeadSize];
            if (!shape.AsSpan().SequenceEqual(expected)) return false;
        }
        return true;
    }

    /// <summary>One decode step: the past holds <paramref name="pastLength"/> positions, the mask (pinned, row-major
    /// [batch, pastLength + 1]) is read from <paramref name="mask"/>. Logits land in <see cref="LogitsRow"/>.</summary>
    /// <remarks>Optimised at once and never inlined into the caller's try region, so that its native calls are inlined
    /// transitions (see <see cref="OrtNative.Bind"/>).</remarks>
    [MethodImpl(MethodImplOptions.AggressiveOptimization | MethodImplOptions.NoInlining)]
    public void Step(long[] mask, int pastLength, RunOptions runOptions)
    {
        int length = pastLength + 1;
        // Full: this step writes its present into larger buffers, read as the past from the old ones (nothing copied).
        ICacheBuffer[]? grown = null;
        int grownCapacity = 0;
        if (length > _capacity)
        {
            grownCapacity = Math.Max(length, Math.Min(_maxLength, _capacity * 2));
            grown = Allocate(grownCapacity);
        }
        var present = grown ?? _back;
        if (_rebindHostInputs)
        {
            OrtNative.Bind(_binding, _idsName, output: false, OrtMemoryInfo.DefaultInstance, TensorElementType.Int64, _idsPointer, _batch * sizeof(long), _stepShape);
            if (_positionsName is not null)
                OrtNative.Bind(_binding, _positionsName, output: false, OrtMemoryInfo.DefaultInstance, TensorElementType.Int64, _positionsPointer, _batch * sizeof(long), _stepShape);
        }
        if (_maskName is not null)
        {
            _maskShape[0] = _batch; _maskShape[1] = length;
            var maskPointer = (IntPtr)Unsafe.AsPointer(ref MemoryMarshal.GetArrayDataReference(mask)); // allocated pinned
            OrtNative.Bind(_binding, _maskName, output: false, OrtMemoryInfo.DefaultInstance, TensorElementType.Int64, maskPointer, (long)_batch * length * sizeof(long), _maskShape);
        }
        for (int i = 0; i < _pastNames.Length; i++)
        {
            var c = _sig.Cache[i];
            // The first step's past is the prefill's present where it lies (host memory; ONNX Runtime moves it to the
            // device once, when it is bound).
            if (_prefill is not null) _binding.BindInput(c.Input, _prefill[i]);
            else OrtNative.Bind(_binding, _pastNames[i], output: false, _memory, c.Type, _front[i].Pointer, _tokenBytes[i] * pastLength, CacheShape(c, pastLength));
            OrtNative.Bind(_binding, _presentNames[i], output: true, _memory, c.Type, present[i].Pointer, _tokenBytes[i] * length, CacheShape(c, length));
        }
        if (grown is null)
        {
            // The steady state: the native call stays outside any try region (see OrtNative.Bind's remarks).
            OrtNative.Run(_sessionHandle, runOptions, _binding);
            _prefill = null;
            (_front, _back) = (_back, _front);
        }
        else RunGrown(runOptions, grown, grownCapacity);
    }

    /// <summary>The step that moves the cache into larger buffers: on failure the new buffers are freed, on success
    /// they replace the old ones.</summary>
    private void RunGrown(RunOptions runOptions, ICacheBuffer[] grown, int grownCapacity)
    {
        try
        {
            OrtNative.Run(_sessionHandle, runOptions, _binding);
        }
        catch
        {
            Free(grown);
            throw;
        }
        _prefill = null;
        Free(_front); Free(_back);
        _front = grown;
        _back = Allocate(grownCapacity);
        _capacity = grownCapacity;
    }

    /// <summary>Row <paramref name="b"/> of the last step's logits as float32 (converted into <paramref name="scratch"/> when needed).</summary>
    public ReadOnlySpan<float> LogitsRow(int b, int vocab, float[] scratch) => _logits switch
    {
        float[] f => f.AsSpan(b * vocab, vocab),
        Float16[] h => TensorConvert.ToFloat(h.AsSpan(b * vocab, vocab), scratch),
        _ => TensorConvert.ToFloat(((BFloat16[])_logits).AsSpan(b * vocab, vocab), scratch),
    };

    private ReadOnlySpan<long> CacheShape(CacheEntry c, int length)
    {
        if (c.Combined)
        {
            _cacheShape[0] = 2; _cacheShape[1] = _batch; _cacheShape[2] = c.Heads; _cacheShape[3] = length; _cacheShape[4] = c.HeadSize;
            return _cacheShape;
        }
        _cacheShape[0] = _batch; _cacheShape[1] = c.Heads; _cacheShape[2] = length; _cacheShape[3] = c.HeadSize;
        return _cacheShape.AsSpan(0, 4);
    }

    // Doubling keeps growth to a handful of allocations per generation.
    private ICacheBuffer[] Allocate(int positions)
    {
        var buffers = new ICacheBuffer[_sig.Cache.Count];
        try
        {
            for (int i = 0; i < buffers.Length; i++)
                buffers[i] = _allocator is null ? new NativeBuffer(_tokenBytes[i] * positions) : new AllocatorBuffer(_allocator, _tokenBytes[i] * positions);
        }
        catch
        {
            Free(buffers);
            throw;
        }
        return buffers;
    }

    private static void Free(ICacheBuffer?[]? buffers)
    {
        if (buffers is null) return;
        foreach (var b in buffers) b?.Dispose();
    }

    private static IntPtr RawPointer(OrtValue value) =>
        (IntPtr)Unsafe.AsPointer(ref MemoryMarshal.GetReference(value.GetTensorMutableRawData())); // over a pinned array

    /// <summary>Bytes per element of the cache and logits types the bound loop handles; 0 for any other.</summary>
    internal static int ElementSize(TensorElementType t) => t switch
    {
        TensorElementType.Float => 4,
        TensorElementType.Float16 or TensorElementType.BFloat16 => 2,
        _ => 0,
    };

    /// <summary>Releases the binding, the buffers and the allocator; also what a constructor that failed part-way had made.</summary>
    public void Dispose()
    {
        _binding?.Dispose();
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
        Free(_front); Free(_back);
        _allocator?.Dispose();
        _ownedMemory?.Dispose();
    }
}

/// <summary>Where a <see cref="BoundDecoder"/> keeps the KV cache.</summary>
internal enum CacheDeviceKind
{
    /// <summary>Native host memory (the CPU provider's default).</summary>
    Host,
    /// <summary>The CPU allocator through ONNX Runtime's allocator API: the device code path on the CPU, for tests.</summary>
    CpuAllocator,
    /// <summary>CUDA device memory from ONNX Runtime's CUDA allocator.</summary>
    Cuda,
    /// <summary>DirectML device memory from ONNX Runtime's DML allocator.</summary>
    DirectML,
}

/// <summary>The cache memory of a <see cref="BoundDecoder"/>: a kind and a device ordinal.</summary>
internal readonly record struct CacheDevice(CacheDeviceKind Kind, int DeviceId = 0)
{
    /// <summary>Host memory for the CPU provider; the provider's device memory for CUDA and DirectML.</summary>
    public static CacheDevice For(ExecutionProvider provider, int deviceId, bool cpuAllocator = false) => provider switch
    {
        ExecutionProvider.Cuda => new(CacheDeviceKind.Cuda, deviceId),
        ExecutionProvider.DirectML => new(CacheDeviceKind.DirectML, deviceId),
        _ => new(cpuAllocator ? CacheDeviceKind.CpuAllocator : CacheDeviceKind.Host),
    };
}

/// <summary>One cache buffer: a pointer ONNX Runtime reads and writes through tensor views.</summary>
internal interface ICacheBuffer : IDisposable
{
    IntPtr Pointer { get; }
}

/// <summary>A buffer from an ONNX Runtime allocator (device memory for CUDA/DirectML).</summary>
internal sealed class AllocatorBuffer(OrtAllocator allocator, long bytes) : ICacheBuffer
{
    private readonly OrtMemoryAllocation _allocation = allocator.Allocate(checked((uint)Math.Max(bytes, 1)));

    public IntPtr Pointer => _allocation.DangerousGetHandle(); // the allocation handle is the buffer address

    public void Dispose() => _allocation.Dispose();
}
