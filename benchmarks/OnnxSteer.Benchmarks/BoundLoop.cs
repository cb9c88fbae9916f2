using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Generation;
using OnnxSteer.Modeling;

namespace OnnxSteer.Benchmarks;

/// <summary>An experiment towards zero managed allocations per token: every decode step's inputs and outputs are bound
/// before the loop, in one <see cref="OrtIoBinding"/> per step, over two native KV buffers per cache tensor that swap
/// roles each step (the present of step n, written by ONNX Runtime into one buffer, is read as the past of step n+1;
/// a [b, h, L, d] tensor is contiguous, so a view of another length over the same buffer is the right tensor). The loop
/// itself then only calls <see cref="InferenceSession.RunWithBinding(RunOptions, OrtIoBinding)"/> and reads the logits.
/// The price is building all bindings up front (reported separately as setup time).</summary>
internal sealed class BoundLoop : IDisposable
{
    private readonly InferenceSession _session;
    private readonly DecoderSignature _sig;
    private readonly int[][] _prompts;
    private readonly int _batch, _prompt, _newTokens;
    private readonly RunOptions _runOptions = new();
    private readonly List<IDisposable> _owned = [];

    public BoundLoop(InferenceSession session, DecoderSignature sig, int[][] prompts, int newTokens)
    {
        _session = session; _sig = sig; _prompts = prompts; _batch = prompts.Length; _prompt = prompts[0].Length; _newTokens = newTokens;
        if (sig.UseCacheBranch is not null || sig.Layout == CacheLayout.None || sig.LogitsType != TensorElementType.Float)
            throw new NotSupportedException("the bound loop handles genai-layout float32 models with a KV cache");
    }

    /// <summary>Runs prefill (plain Run), builds the bindings (setup), then decodes.</summary>
    public (DecodeSample Sample, double SetupMs) Run()
    {
        int total = _prompt + _newTokens;
        var memory = OrtMemoryInfo.DefaultInstance;
        // Prefill with a plain Run, as the runtime does.
        var prefill = new BareLoop(_session, _sig, _prompts, 1);
        _owned.Add(prefill);
        var firstTokens = new long[_batch];
        var presents = prefill.PrefillPresents(firstTokens);

        long t0 = Stopwatch.GetTimestamp();
        var ids = GC.AllocateArray<long>(_batch, pinned: true);
        var positions = GC.AllocateArray<long>(_batch, pinned: true);
        var ones = GC.AllocateArray<long>(_batch * total, pinned: true);
        Array.Fill(ones, 1L);
        firstTokens.CopyTo(ids, 0);
        var idsValue = Own(OrtValue.CreateTensorValueFromMemory(ids, [_batch, 1]));
        var posValue = Own(OrtValue.CreateTensorValueFromMemory(positions, [_batch, 1]));
        int vocab = presents.Vocab;
        var logits = GC.AllocateArray<float>(_batch * vocab, pinned: true);
        var logitsValue = Own(OrtValue.CreateTensorValueFromMemory(logits, [_batch, 1, vocab]));

        // Two native buffers per cache tensor, each large enough for the longest sequence.
        var buffers = new NativeBuffer[_sig.Cache.Count, 2];
        for (int i = 0; i < _sig.Cache.Count; i++)
        {
            var c = _sig.Cache[i];
            long elems = (c.Combined ? 2 : 1) * (long)_batch * c.Heads * total * c.HeadSize;
            for (int k = 0; k < 2; k++)
            {
                buffers[i, k] = new NativeBuffer(elems * ElementSize(c.Type));
                _owned.Add(buffers[i, k]);
            }
            // The prefill's presents become the first past, copied once into buffer 0.
            var src = presents.Values[i].GetTensorMutableRawData();
            unsafe
            {
                fixed (byte* s = src) Buffer.MemoryCopy(s, (void*)buffers[i, 0].Pointer, buffers[i, 0].Size, src.Length);
            }
        }
        presents.Dispose();

        var bindings = new OrtIoBinding[_newTokens];
        for (int n = 1; n < _newTokens; n++)
        {
            int past = _prompt + n - 1;
            var b = _session.CreateIoBinding();
            _owned.Add(b);
            b.BindInput(_sig.InputIds, idsValue);
            if (_sig.PositionIds is not null) b.BindInput(_sig.PositionIds, posValue);
            if (_sig.AttentionMask is not null)
                using (var mask = OrtValue.CreateTensorValueWithData(memory, TensorElementType.Int64, [_batch, past + 1], Pin(ones), (long)_batch * (past + 1) * 8))
                    b.BindInput(_sig.AttentionMask, mask);
            for (int i = 0; i < _sig.Cache.Count; i++)
            {
                var c = _sig.Cache[i];
                var from = buffers[i, (n - 1) % 2];
                var to = buffers[i, n % 2];
                using (var pastValue = View(c, from, past)) b.BindInput(c.Input, pastValue);
                using (var presentValue = View(c, to, past + 1)) b.BindOutput(c.Output, presentValue);
            }
            b.BindOutput(_sig.LogitsOutput, logitsValue);
            bindings[n] = b;
        }
        double setupMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;

        long a0 = GC.GetAllocatedBytesForCurrentThread();
        double c0 = ThreadCpu.Ms();
        long t1 = Stopwatch.GetTimestamp();
        int steps = 0;
        for (int n = 1; n < _newTokens; n++)
        {
            for (int r = 0; r < _batch; r++) positions[r] = _prompt + n - 1;
            _session.RunWithBinding(_runOptions, bindings[n]);
            var span = logits.AsSpan();
            for (int r = 0; r < _batch; r++) ids[r] = OnnxSteer.Runtime.Generation.Sampler.ArgMax(span.Slice(r * vocab, vocab));
            steps++;
        }
        double ms = Stopwatch.GetElapsedTime(t1).TotalMilliseconds / Math.Max(steps, 1);
        double cpu = (ThreadCpu.Ms() - c0) / Math.Max(steps, 1);
        LastDecodeAllocatedPerStep = (GC.GetAllocatedBytesForCurrentThread() - a0) / (double)Math.Max(steps, 1);
        GC.KeepAlive(ones);
        return (new DecodeSample(ms, _batch * 1000.0 / ms, 0, steps, cpu), setupMs);

        OrtValue View(CacheEntry c, NativeBuffer buffer, int length)
        {
            long[] shape = c.Combined ? [2, _batch, c.Heads, length, c.HeadSize] : [_batch, c.Heads, length, c.HeadSize];
            long bytes = shape.Aggregate(1L, (a, d) => a * d) * ElementSize(c.Type);
            return OrtValue.CreateTensorValueWithData(memory, c.Type, shape, buffer.Pointer, bytes);
        }
    }

    /// <summary>Managed bytes the last decode loop (after setup) allocated per step on its thread.</summary>
    public static double LastDecodeAllocatedPerStep { get; private set; }

    private static unsafe IntPtr Pin(long[] pinnedArray)
    {
        fixed (long* p = pinnedArray) return (IntPtr)p; // allocated with pinned: true, so the address is stable
    }

    private static int ElementSize(TensorElementType t) =>
        BoundDecoder.ElementSize(t) is > 0 and var size ? size : throw new NotSupportedException($"cache type {t}");

    private OrtValue Own(OrtValue v) { _owned.Add(v); return v; }

    public void Dispose()
    {
        for (int i = _owned.Count - 1; i >= 0; i--) _owned[i].Dispose();
        _runOptions.Dispose();
    }
}

/// <summary>CPU time of the calling thread (CLOCK_THREAD_CPUTIME_ID). On a machine shared with other work, wall time
/// measures the contention as much as the code; with ONNX Runtime on one intra-op thread, all kernels run on the calling
/// thread, so its CPU time is the work done.</summary>
internal static partial class ThreadCpu
{
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Sequential)]
    private struct Timespec { public long Sec; public long Nsec; }

    [System.Runtime.InteropServices.LibraryImport("libc", EntryPoint = "clock_gettime")]
    private static partial int ClockGettime(int clock, out Timespec ts);

    public static double Ms()
    {
        if (!OperatingSystem.IsLinux()) return double.NaN;
        return ClockGettime(3, out var ts) == 0 ? ts.Sec * 1000.0 + ts.Nsec / 1e6 : double.NaN;
    }
}
