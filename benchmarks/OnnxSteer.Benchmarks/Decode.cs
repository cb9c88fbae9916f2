using System.Diagnostics;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Benchmarks;

/// <summary>One decode configuration: which model folder, which steering, or the bare ONNX Runtime loop.</summary>
internal sealed record DecodeCase(string Name, string Folder, Func<int, Steering> Steering, bool Bare = false, bool Bound = false);

/// <summary>One decode measurement: per-step latency and aggregate throughput of the decode phase (prefill excluded).</summary>
internal readonly record struct DecodeSample(double MsPerStep, double TokensPerSecond, double PrefillMs, int Steps, double CpuMsPerStep = double.NaN);

/// <summary>Decode benchmarks (issue items 1, 2 and 6): our generation loop against the bare InferenceSession.Run loop.</summary>
internal static class DecodeBench
{
    public static IReadOnlyList<DecodeCase> Cases(BenchModel m, bool full)
    {
        int mid = m.Layers / 2;
        var rng = new Random(42);
        var vectors = Enumerable.Range(0, m.Layers).Select(_ => RandomUnit(rng, m.Hidden)).ToArray();
        Steering AddOne(int _) => Steering.None.Add(vectors[mid], mid, 4f, "bench");
        Steering AddAll(int _) => Enumerable.Range(0, m.Layers).Aggregate(Steering.None, (s, l) => s.Add(vectors[l], l, 4f, "bench"));
        Steering ProjOne(int _) => Steering.None.Project(vectors[mid], mid, 1f, "bench");
        Steering None(int _) => Steering.None;
        var cases = new List<DecodeCase>
        {
            new("bare ORT loop, original", m.Original, None, Bare: true),
            new("bare IOBinding loop (bindings prebuilt), original", m.Original, None, Bound: true),
            new("original", m.Original, None),
            new("original, our loop with plain Run (--no-bind)", m.Original + PlainSuffix, None),
            new("patched (expose all), nothing fed", m.PatchedExposeAll, None),
            new("patched (expose none), nothing fed", m.PatchedExposeNone, None),
            new($"patched (expose all), add @ layer {mid}", m.PatchedExposeAll, AddOne),
            new($"patched (expose all), add @ all {m.Layers} layers", m.PatchedExposeAll, AddAll),
            new($"patched (expose all), project @ layer {mid}", m.PatchedExposeAll, ProjOne),
        };
        if (full)
            cases.AddRange(
            [
                new($"patched (expose none), add @ layer {mid}", m.PatchedExposeNone, AddOne),
                new($"patched (expose none), add @ all {m.Layers} layers", m.PatchedExposeNone, AddAll),
                new($"patched (expose none), project @ layer {mid}", m.PatchedExposeNone, ProjOne),
            ]);
        return cases;
    }

    /// <summary>Appended to a folder in a case: load the model with <see cref="RuntimeOptions.BoundDecode"/> off.</summary>
    public const string PlainSuffix = "#plain";

    public static SteeringVector RandomUnit(Random rng, int hidden)
    {
        var raw = new float[hidden];
        for (int i = 0; i < hidden; i++) raw[i] = (float)(rng.NextDouble() * 2 - 1);
        return SteeringVector.FromRaw(raw);
    }

    /// <summary>Random prompts of <paramref name="length"/> ids (all rows the same length, so no padding).</summary>
    public static int[][] Prompts(int batch, int length, int vocab, int seed = 7)
    {
        var rng = new Random(seed);
        return Enumerable.Range(0, batch).Select(_ => Enumerable.Range(0, length).Select(_ => rng.Next(3, vocab)).ToArray()).ToArray();
    }

    /// <summary>Our loop. With <paramref name="listen"/> a piece listener marks where decode CPU time starts (the first piece
    /// arrives when the prefill has produced its token); without one, nothing outside the loop allocates (for the
    /// allocation suite), and the loop's own steady-state count is kept in <see cref="LastSteadyBytesPerStep"/>.</summary>
    public static DecodeSample RunOurs(SteeredModel model, int[][] prompts, Steering steering, int newTokens, bool listen = true)
    {
        var requests = prompts.Select(p => new GenerationRequest { PromptTokenIds = p, Steering = steering }).ToList();
        double cpuStart = double.NaN;
        int pieces = 0;
        var results = model.Generate(requests, new GeneratorOptions { MaxNewTokens = newTokens, UseChatTemplate = false },
            listen ? _ => { if (pieces++ == 0) cpuStart = ThreadCpu.Ms(); } : null);
        double cpuEnd = ThreadCpu.Ms();
        var r = results[0];
        LastSteadyBytesPerStep = r.SteadySteps > 0 ? r.SteadyAllocatedBytes / (double)r.SteadySteps : double.NaN;
        LastBound = r.BoundDecode;
        if (results.Any(x => x.TokenIds.Length != newTokens))
            throw new InvalidOperationException($"a row stopped early ({string.Join(",", results.Select(x => x.TokenIds.Length))} of {newTokens} tokens)");
        double ms = r.DecodeTime.TotalMilliseconds / r.DecodeSteps;
        return new DecodeSample(ms, prompts.Length * 1000.0 / ms, r.PrefillTime.TotalMilliseconds, r.DecodeSteps, (cpuEnd - cpuStart) / r.DecodeSteps);
    }

    /// <summary>Managed bytes per decode step our loop counted itself (second step to last), in the last <see cref="RunOurs"/>.</summary>
    public static double LastSteadyBytesPerStep { get; private set; }
    /// <summary>Whether the last <see cref="RunOurs"/> decoded through pre-bound buffers.</summary>
    public static bool LastBound { get; private set; }

    /// <summary>The bound loop; PrefillMs carries the time spent building the bindings.</summary>
    public static DecodeSample RunBound(SteeredModel model, int[][] prompts, int newTokens)
    {
        using var loop = new BoundLoop(model.Session, model.Signature, prompts, newTokens);
        var (sample, setup) = loop.Run();
        return sample with { PrefillMs = setup };
    }

    public static DecodeSample RunBare(SteeredModel model, int[][] prompts, int newTokens)
    {
        using var loop = new BareLoop(model.Session, model.Signature, prompts, newTokens);
        return loop.Run();
    }
}

/// <summary>The floor: prefill then decode written directly against <see cref="InferenceSession.Run(RunOptions, IReadOnlyCollection{string}, IReadOnlyCollection{OrtValue}, IReadOnlyCollection{string})"/>
/// with every input OrtValue built before the timer starts (ids, positions and one attention-mask view per length over
/// one pinned buffer), presents handed over as the next pasts, greedy argmax. No tokenizer, no text, no steering.</summary>
internal sealed class BareLoop : IDisposable
{
    private readonly InferenceSession _session;
    private readonly DecoderSignature _sig;
    private readonly int _batch, _prompt, _newTokens;
    private readonly List<OrtValue> _owned = [];
    private readonly OrtValue _prefillIds, _prefillPositions, _stepIds, _stepPositions;
    private readonly OrtValue[] _masks; // index = sequence length
    private readonly long[] _ids, _positions;
    private readonly OrtValue[] _past;
    private readonly string[] _inputNames;
    private readonly OrtValue[] _inputs;
    private readonly string[] _outputNames;
    private readonly int _maskAt, _idsAt, _posAt, _pastAt;
    private readonly RunOptions _runOptions = new();

    public BareLoop(InferenceSession session, DecoderSignature sig, int[][] prompts, int newTokens, IReadOnlyList<(string Name, OrtValue Value)>? extra = null)
    {
        _session = session; _sig = sig; _batch = prompts.Length; _prompt = prompts[0].Length; _newTokens = newTokens;
        int total = _prompt + newTokens;
        var prefillIds = new long[_batch * _prompt];
        var prefillPos = new long[_batch * _prompt];
        for (int b = 0; b < _batch; b++)
            for (int j = 0; j < _prompt; j++) { prefillIds[b * _prompt + j] = prompts[b][j]; prefillPos[b * _prompt + j] = j; }
        _prefillIds = Own(OrtValue.CreateTensorValueFromMemory(prefillIds, [_batch, _prompt]));
        _prefillPositions = Own(OrtValue.CreateTensorValueFromMemory(prefillPos, [_batch, _prompt]));
        _ids = GC.AllocateArray<long>(_batch, pinned: true);
        _positions = GC.AllocateArray<long>(_batch, pinned: true);
        _stepIds = Own(OrtValue.CreateTensorValueFromMemory(_ids, [_batch, 1]));
        _stepPositions = Own(OrtValue.CreateTensorValueFromMemory(_positions, [_batch, 1]));
        var ones = GC.AllocateArray<long>(_batch * total, pinned: true);
        Array.Fill(ones, 1L);
        _masks = new OrtValue[total + 1];
        for (int len = _prompt; len <= total; len++)
            _masks[len] = Own(OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, ones.AsMemory(0, _batch * len), [_batch, len]));
        _past = new OrtValue[sig.Cache.Count];
        for (int i = 0; i < _past.Length; i++)
        {
            var c = sig.Cache[i];
            long[] shape = c.Combined ? [2, _batch, c.Heads, 0, c.HeadSize] : [_batch, c.Heads, 0, c.HeadSize];
            _past[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, c.Type, shape);
        }
        var names = new List<string> { sig.InputIds };
        _idsAt = 0;
        _maskAt = -1; _posAt = -1;
        if (sig.AttentionMask is not null) { _maskAt = names.Count; names.Add(sig.AttentionMask); }
        if (sig.PositionIds is not null) { _posAt = names.Count; names.Add(sig.PositionIds); }
        if (sig.UseCacheBranch is not null) throw new NotSupportedException("the bare loop handles genai-layout models (no use_cache_branch)");
        _pastAt = names.Count;
        names.AddRange(sig.Cache.Select(c => c.Input));
        int extraAt = names.Count;
        if (extra is not null) names.AddRange(extra.Select(e => e.Name));
        _inputNames = [.. names];
        _inputs = new OrtValue[_inputNames.Length];
        if (extra is not null) for (int i = 0; i < extra.Count; i++) _inputs[extraAt + i] = extra[i].Value;
        _outputNames = [sig.LogitsOutput, .. sig.Cache.Select(c => c.Output)];
    }

    private OrtValue Own(OrtValue v) { _owned.Add(v); return v; }

    public DecodeSample Run()
    {
        long t0 = Stopwatch.GetTimestamp();
        _inputs[_idsAt] = _prefillIds;
        if (_maskAt >= 0) _inputs[_maskAt] = _masks[_prompt];
        if (_posAt >= 0) _inputs[_posAt] = _prefillPositions;
        Step(_prompt);
        double prefillMs = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;

        double c1 = ThreadCpu.Ms();
        long t1 = Stopwatch.GetTimestamp();
        _inputs[_idsAt] = _stepIds;
        if (_posAt >= 0) _inputs[_posAt] = _stepPositions;
        int steps = 0;
        for (int n = 1; n < _newTokens; n++)
        {
            int length = _prompt + n;
            for (int b = 0; b < _batch; b++) _positions[b] = length - 1;
            if (_maskAt >= 0) _inputs[_maskAt] = _masks[length];
            Step(1);
            steps++;
        }
        double ms = Stopwatch.GetElapsedTime(t1).TotalMilliseconds / Math.Max(steps, 1);
        double cpu = (ThreadCpu.Ms() - c1) / Math.Max(steps, 1);
        return new DecodeSample(ms, _batch * 1000.0 / ms, prefillMs, steps, cpu);
    }

    /// <summary>Lockstep use (the <c>lockstep</c> suite): the prefill, then one decode step at a time.</summary>
    public void Prefill()
    {
        _inputs[_idsAt] = _prefillIds;
        if (_maskAt >= 0) _inputs[_maskAt] = _masks[_prompt];
        if (_posAt >= 0) _inputs[_posAt] = _prefillPositions;
        Step(_prompt);
        _inputs[_idsAt] = _stepIds;
        if (_posAt >= 0) _inputs[_posAt] = _stepPositions;
    }

    /// <summary>Decode step <paramref name="n"/> (1 .. new tokens - 1) after <see cref="Prefill"/>; returns the calling
    /// thread's CPU milliseconds for it.</summary>
    public double DecodeStep(int n)
    {
        double c0 = ThreadCpu.Ms();
        int length = _prompt + n;
        for (int b = 0; b < _batch; b++) _positions[b] = length - 1;
        if (_maskAt >= 0) _inputs[_maskAt] = _masks[length];
        Step(1);
        return ThreadCpu.Ms() - c0;
    }

    /// <summary>Runs the prefill only and hands over its presents (the caller disposes them) and first tokens.</summary>
    public (IReadOnlyList<OrtValue> Values, int Vocab, Action Dispose) PrefillPresentsCore(long[] firstTokens)
    {
        _inputs[_idsAt] = _prefillIds;
        if (_maskAt >= 0) _inputs[_maskAt] = _masks[_prompt];
        if (_posAt >= 0) _inputs[_posAt] = _prefillPositions;
        Step(_prompt);
        _ids.CopyTo(firstTokens, 0);
        var presents = _past.ToArray();
        for (int i = 0; i < _past.Length; i++) _past[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _sig.Cache[i].Type, [0]);
        return (presents, _vocab, () => { foreach (var p in presents) p.Dispose(); });
    }

    public PrefillResult PrefillPresents(long[] firstTokens)
    {
        var (values, vocab, dispose) = PrefillPresentsCore(firstTokens);
        return new PrefillResult(values, vocab, dispose);
    }

    private int _vocab;

    private void Step(int seq)
    {
        for (int i = 0; i < _past.Length; i++) _inputs[_pastAt + i] = _past[i];
        using var outputs = _session.Run(_runOptions, _inputNames, _inputs, _outputNames);
        var list = (IList<OrtValue>)outputs;
        for (int i = 0; i < _past.Length; i++) { var p = list[1 + i]; list[1 + i] = _past[i]; _past[i] = p; }
        if (_sig.LogitsType != Microsoft.ML.OnnxRuntime.Tensors.TensorElementType.Float)
            throw new NotSupportedException("the bare loop reads float32 logits");
        var logits = list[0].GetTensorDataAsSpan<float>();
        int vocab = logits.Length / (_batch * seq);
        _vocab = vocab;
        for (int b = 0; b < _batch; b++)
            _ids[b] = OnnxSteer.Runtime.Generation.Sampler.ArgMax(logits.Slice((b * seq + seq - 1) * vocab, vocab));
    }

    public void Dispose()
    {
        foreach (var p in _past) p.Dispose();
        foreach (var v in _owned) v.Dispose();
        _runOptions.Dispose();
    }
}

/// <summary>The presents of a prefill run, owned by the caller.</summary>
internal sealed record PrefillResult(IReadOnlyList<OrtValue> Values, int Vocab, Action DisposeAction) : IDisposable
{
    public void Dispose() => DisposeAction();
}
