using System.Diagnostics;
using System.Text;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;

namespace OnnxSteer.Runtime.Generation;

/// <summary>A prompt ready to run: token ids, the text they came from and the row's steering.</summary>
internal sealed record PreparedRow(int[] PromptIds, string? PromptText, Steering Steering);

/// <summary>The state of one generation call (a batch of rows): input buffers, the KV cache, steering feeds, samplers
/// and decoders. Everything here is per call, so one <see cref="SteeredModel"/> can run many loops at once.</summary>
/// <remarks>Prefill is a plain <c>Run</c>. Decode then runs, where the model allows it (CPU, present = past + 1), through
/// a <see cref="BoundDecoder"/>: buffers bound once, cache views rebound natively, so a decode step allocates no managed
/// memory (issue 6; measured by <see cref="SteadyAllocatedBytes"/>). Otherwise decode is the plain loop: ids/positions are
/// OrtValues over fixed arrays, the mask is rewritten in place, and presents become the next pasts without copying; what
/// a step of that loop allocates is ONNX Runtime's managed wrappers (about 2-3 KB).</remarks>
internal sealed class DecodeLoop : IDisposable
{
    private readonly InferenceSession _session;
    private readonly DecoderSignature _sig;
    private readonly TextTokenizer _tokenizer;
    private readonly IReadOnlyList<PreparedRow> _rows;
    private readonly GeneratorOptions _options;
    private readonly HashSet<int> _eos;
    private readonly int _batch;
    private readonly int _promptLength;
    private readonly int _padId;
    /// <summary>Most new tokens any row may generate (<see cref="RowState.Limit"/>'s maximum).</summary>
    private readonly int _maxNew;

    private readonly long[] _mask;
    private readonly long[] _maskShape = new long[2];
    private readonly long[] _stepIds;
    private readonly long[] _stepPositions;
    private readonly OrtValue[] _past;
    private readonly List<OrtValue> _owned = [];
    private readonly List<string> _inputNames = [];
    private readonly List<OrtValue> _inputValues = [];
    private readonly List<string> _outputNames = [];
    // Where the plain loop's steps after the first replace the mask (-1: the model has none) and the pasts in _inputValues.
    private int _maskIndex = -1, _pastIndex = -1;
    private readonly RunOptions _runOptions = new();

    private readonly RowState[] _state;
    private float[] _scratch = [];
    private readonly bool _allowBinding;
    private readonly int _cacheHeadroom;
    private readonly CacheDevice _cacheDevice;
    private BoundDecoder? _bound;
    private bool _logitsRank2;
    private char[] _window = new char[256];
    private readonly int _longestStop;

    private sealed class RowState(int tokenCapacity)
    {
        public required int PromptLength;
        public required int Pad;
        public required Sampler Sampler;
        public required StreamingDecoder Decoder;
        public readonly List<int> Tokens = new(tokenCapacity);
        public readonly StringBuilder Text = new(Math.Min(tokenCapacity * 16, 1 << 18)); // most tokens decode to under 16 chars
        /// <summary>Most tokens this row may generate: the caller's maximum, cut to what the context length leaves.</summary>
        public required int Limit;
        public int Emitted;
        public bool Done;
        public double LogProbSum;
        public FinishReason Reason = FinishReason.Length;
    }

    public DecodeLoop(InferenceSession session, DecoderSignature signature, TextTokenizer tokenizer, IReadOnlyList<PreparedRow> rows,
        GeneratorOptions options, IReadOnlySet<int> eos, int padId, bool allowBinding = false, int cacheHeadroom = 256,
        CacheDevice cacheDevice = default, int? contextLength = null)
    {
        _cacheDevice = cacheDevice;
        _allowBinding = allowBinding;
        _cacheHeadroom = cacheHeadroom;
        _longestStop = options.StopStrings.Select(stop => stop.Length).DefaultIfEmpty(0).Max();
        _session = session; _sig = signature; _tokenizer = tokenizer; _rows = rows; _options = options;
        _eos = [.. eos, .. options.ExtraEosTokenIds];
        _padId = padId;
        _batch = rows.Count;
        _promptLength = rows.Max(r => r.PromptIds.Length);
        // A row stops at the model's context length (finish reason Length): prompt + generated tokens never exceed it, so
        // no position past the rotary cache or the position table is ever fed, and nothing is sized beyond it.
        int RowLimit(PreparedRow r) => contextLength is int ctx ? Math.Max(0, Math.Min(options.MaxNewTokens, ctx - r.PromptIds.Length)) : options.MaxNewTokens;
        _maxNew = rows.Max(RowLimit);
        int total = checked(_promptLength + Math.Max(_maxNew, 1));
        _mask = GC.AllocateArray<long>(_batch * total, pinned: true);
        _stepIds = GC.AllocateArray<long>(_batch, pinned: true);
        _stepPositions = GC.AllocateArray<long>(_batch, pinned: true);
        _past = new OrtValue[signature.Cache.Count];
        _state = new RowState[_batch];
        // Results grow in place without reallocating mid-generation (up to a sane bound; beyond it growth is amortised).
        int tokenCapacity = Math.Min(Math.Max(_maxNew, 1), 1 << 16);
        for (int b = 0; b < _batch; b++)
            _state[b] = new RowState(tokenCapacity)
            {
                PromptLength = rows[b].PromptIds.Length,
                Limit = RowLimit(rows[b]),
                Pad = _promptLength - rows[b].PromptIds.Length,
                Sampler = new Sampler(options, 0), // vocab size is known after the first run; see EnsureScratch
                Decoder = tokenizer.CreateStreamingDecoder(),
            };
    }

    public TimeSpan PrefillTime { get; private set; }
    /// <summary><see cref="Stopwatch"/> timestamp of the moment the first token was picked (0 before).</summary>
    public long FirstTokenTimestamp { get; private set; }
    /// <summary><see cref="Stopwatch"/> timestamp the generation call began at (time to first token counts from it).</summary>
    public long CallStart { get; init; } = Stopwatch.GetTimestamp();
    public TimeSpan DecodeTime { get; private set; }
    public int DecodeSteps { get; private set; }
    /// <summary>Whether decode ran through pre-bound buffers (<see cref="BoundDecoder"/>).</summary>
    public bool UsedBinding { get; private set; }
    /// <summary>Managed bytes this thread allocated from the start of the second decode step to the end of the loop
    /// (steady state: the first step warms up), and the number of steps that covers.</summary>
    public long SteadyAllocatedBytes { get; private set; }
    public int SteadySteps { get; private set; }

    /// <summary>Runs prefill and decode until every row is done; <paramref name="onPiece"/> sees each token's text.</summary>
    /// <remarks>Compiled fully optimised at once, as are <see cref="Decode"/> and the bound step's methods that call into
    /// ONNX Runtime: the decode loop runs once per generation, so tiered compilation would keep it at tier 0 and replace it mid-loop (on-stack
    /// replacement), and that compilation allocates on the generating thread. The sampling and text methods stay tiered:
    /// they run before the first token, where a fully optimising compile of each would add to the time to first token.</remarks>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)]
    public IReadOnlyList<GenerationResult> Run(Func<SteeringPhase, SteeringFeed> steeringFor, Action<GeneratedPiece>? onPiece, CancellationToken ct,
        int headerLength = 0)
    {
        using var cancel = ct.Register(static o => ((RunOptions)o!).Terminate = true, _runOptions);
        if (_maxNew == 0) return Results();
        ct.ThrowIfCancellationRequested();

        long start = Stopwatch.GetTimestamp();
        if (headerLength == 0)
        {
            // Prefill: the whole (left-padded) prompt, empty pasts.
            using var steering = steeringFor(SteeringPhase.Prompt);
            PrefillChunk(0, _promptLength, steering, onPiece);
        }
        else
        {
            // Header steering: the prompt before the steered positions in one run, then each steered position on its own
            // with its own steering, the cache carried over. Left padding keeps every row's last positions in the same
            // columns, so one run per position serves the whole batch.
            for (int b = 0; b < _batch; b++)
                if (_state[b].PromptLength <= headerLength)
                    throw new OnnxSteerException(ErrorKind.InvalidData,
                        $"the prompt of row {b} has {_state[b].PromptLength} tokens; steering its last {headerLength} positions one by one needs more");
            using (var steering = steeringFor(SteeringPhase.Prompt)) PrefillChunk(0, _promptLength - headerLength, steering, null);
            for (int k = headerLength; k >= 1; k--)
            {
                ct.ThrowIfCancellationRequested();
                using var steering = steeringFor(SteeringPhase.AtPromptPosition(k));
                PrefillChunk(_promptLength - k, _promptLength - k + 1, steering, k == 1 ? onPiece : null);
            }
        }
        FirstTokenTimestamp = Stopwatch.GetTimestamp();
        PrefillTime = Stopwatch.GetElapsedTime(start, FirstTokenTimestamp);

        // Decode: one token per row per run, the cache carried over.
        if (AllDone()) return Results();
        using (var steering = steeringFor(SteeringPhase.Decode)) Decode(steering, onPiece, ct);
        return Results();
    }

    /// <summary>Runs prompt columns [<paramref name="from"/>, <paramref name="to"/>) of the left-padded rows (from 0: empty
    /// pasts; later: the cache so far) and, when <paramref name="to"/> is the prompt's end, picks each row's first token.</summary>
    private void PrefillChunk(int from, int to, SteeringFeed steering, Action<GeneratedPiece>? onPiece)
    {
        int width = to - from;
        var prefillIds = new long[_batch * width];
        var prefillPositions = new long[_batch * width];
        for (int b = 0; b < _batch; b++)
        {
            var s = _state[b];
            for (int j = from; j < to; j++)
            {
                int k = b * width + j - from;
                bool real = j >= s.Pad;
                prefillIds[k] = real ? _rows[b].PromptIds[j - s.Pad] : _padId;
                // Hugging Face's convention: cumulative mask − 1, and 1 on padding (masked anyway).
                prefillPositions[k] = real ? j - s.Pad : 1;
            }
        }
        WriteMask(to);
        var idsValue = Own(OrtValue.CreateTensorValueFromMemory(prefillIds, [_batch, width]));
        var posValue = Own(OrtValue.CreateTensorValueFromMemory(prefillPositions, [_batch, width]));
        var maskValue = MaskValue(to);
        if (from == 0)
            for (int i = 0; i < _past.Length; i++)
                _past[i] = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, _sig.Cache[i].Type, _sig.Cache[i].Shape(_batch, 0));
        BuildInputs(idsValue, posValue, maskValue, useCache: from > 0, steering);
        using var outputs = RunOnce();
        maskValue.Dispose();
        if (to == _promptLength) PickTokens(outputs[0], SequenceLength(outputs[0]), onPiece);
    }

    /// <summary>One token per row per run until every row is done: bound steps where <see cref="TryBind"/> succeeded, else
    /// plain runs whose presents become the next pasts.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // per-step code: see Run
    private void Decode(SteeringFeed steering, Action<GeneratedPiece>? onPiece, CancellationToken ct)
    {
        long start = Stopwatch.GetTimestamp();
        var idsValue = Own(OrtValue.CreateTensorValueFromMemory(_stepIds, [_batch, 1]));
        var posValue = Own(OrtValue.CreateTensorValueFromMemory(_stepPositions, [_batch, 1]));
        bool first = true;
        if (_allowBinding) _bound = TryBind(idsValue, posValue, steering);
        long steadyFrom = 0;
        while (!AllDone())
        {
            ct.ThrowIfCancellationRequested();
            if (DecodeSteps == 1) steadyFrom = GC.GetAllocatedBytesForCurrentThread();
            // Tokens so far per running row: one from prefill plus one per decode run (a row that already hit EOS
            // stops counting, so no row's own count can be used).
            int generated = 1 + DecodeSteps;
            int length = _promptLength + generated;
            for (int b = 0; b < _batch; b++)
            {
                var s = _state[b];
                _stepIds[b] = s.Done ? _padId : s.Tokens[^1];
                _stepPositions[b] = s.PromptLength + generated - 1;
            }
            WriteMask(length);
            if (_bound is not null && BoundStep(length))
            {
                PickTokens(null, 1, onPiece);
                DecodeSteps++;
                continue;
            }
            var maskValue = MaskValue(length);
            OrtValue ids = idsValue, pos = posValue;
            OrtValue? fullIds = null, fullPos = null;
            if (_sig.Layout == CacheLayout.None)
            {
                (fullIds, fullPos) = FullSequence(length);
                ids = fullIds; pos = fullPos;
            }
            if (first || _sig.Layout == CacheLayout.None) { BuildInputs(ids, pos, maskValue, useCache: true, steering); first = false; }
            else
            {
                if (_maskIndex >= 0) _inputValues[_maskIndex] = maskValue;
                for (int i = 0; i < _past.Length; i++) _inputValues[_pastIndex + i] = _past[i];
            }
            using var outputs = RunOnce();
            maskValue.Dispose();
            fullIds?.Dispose(); fullPos?.Dispose();
            // With a cache each decode run sees one position; without, the whole sequence.
            PickTokens(outputs[0], _sig.Layout == CacheLayout.None ? SequenceLength(outputs[0]) : 1, onPiece);
            DecodeSteps++;
        }
        if (DecodeSteps > 1)
        {
            SteadyAllocatedBytes = GC.GetAllocatedBytesForCurrentThread() - steadyFrom;
            SteadySteps = DecodeSteps - 1;
        }
        DecodeTime = Stopwatch.GetElapsedTime(start);
    }

    /// <summary>Sets up the bound decode when the model allows it; null keeps the plain loop.</summary>
    private BoundDecoder? TryBind(OrtValue ids, OrtValue positions, SteeringFeed steering)
    {
        if (!BoundDecoder.Supports(_sig, _past, _batch, _promptLength)) return null;
        try
        {
            var bound = new BoundDecoder(_session, _sig, _batch, _promptLength, _promptLength + Math.Max(_maxNew, 1), _vocab,
                _logitsRank2, _past, ids, _sig.PositionIds is null ? null : positions, steering.Inputs, _cacheHeadroom, _cacheDevice);
            _tokenizer.WarmDecodeCache(_vocab);
            return bound;
        }
        catch (Exception e) when (e is OnnxRuntimeException or OnnxSteerException)
        {
            return null; // an export this path does not fit (or no native function table): the plain loop still works
        }
    }

    /// <summary>One bound decode step. The first one may still find that the export does not fit (ONNX Runtime checks
    /// the bound shapes then); it falls back to the plain loop, whose pasts are kept until that first step succeeds.</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveOptimization)] // per-step code: see Run
    private bool BoundStep(int length)
    {
        try
        {
            _bound!.Step(_mask, length - 1, _runOptions);
        }
        catch (Exception e) when (e is OnnxRuntimeException or OnnxSteerException && _runOptions.Terminate)
        {
            throw new OperationCanceledException("generation was cancelled");
        }
        catch (Exception e) when (DecodeSteps == 0 && e is OnnxRuntimeException or OnnxSteerException)
        {
            _bound!.Dispose();
            _bound = null;
            return false;
        }
        catch (OnnxRuntimeException e)
        {
            throw RunFailed(e);
        }
        if (!UsedBinding)
        {
            // The cache now lives in the bound buffers; the prefill's presents are no longer needed.
            UsedBinding = true;
            for (int i = 0; i < _past.Length; i++) { _past[i].Dispose(); _past[i] = null!; }
        }
        return true;
    }

    /// <summary>A run ONNX Runtime refuses (a model whose limits the folder's files do not state, say) is the model's
    /// failure, reported in one line, not a crash.</summary>
    private static OnnxSteerException RunFailed(OnnxRuntimeException e) =>
        new(ErrorKind.UnsupportedModel, $"ONNX Runtime failed running the model: {e.Message.Split('\n')[0].Trim()}", e);

    private void BuildInputs(OrtValue ids, OrtValue positions, OrtValue mask, bool useCache, SteeringFeed steering)
    {
        _inputNames.Clear(); _inputValues.Clear();
        Add(_sig.InputIds, ids);
        _maskIndex = _sig.AttentionMask is not null ? Add(_sig.AttentionMask, mask) : -1;
        if (_sig.PositionIds is not null) Add(_sig.PositionIds, positions);
        if (_sig.UseCacheBranch is not null) Add(_sig.UseCacheBranch, Own(OrtValue.CreateTensorValueFromMemory(new[] { useCache }, [1])));
        _pastIndex = _inputNames.Count;
        for (int i = 0; i < _past.Length; i++) Add(_sig.Cache[i].Input, _past[i]);
        foreach (var (name, value) in steering.Inputs) Add(name, value);
        if (_outputNames.Count == 0)
        {
            _outputNames.Add(_sig.LogitsOutput);
            foreach (var c in _sig.Cache) _outputNames.Add(c.Output);
        }

        int Add(string name, OrtValue value)
        {
            _inputNames.Add(name);
            _inputValues.Add(value);
            return _inputNames.Count - 1;
        }
    }

    private IDisposableReadOnlyCollection<OrtValue> RunOnce()
    {
        IDisposableReadOnlyCollection<OrtValue> outputs;
        try
        {
            outputs = _session.Run(_runOptions, _inputNames, _inputValues, _outputNames);
        }
        catch (OnnxRuntimeException) when (_runOptions.Terminate)
        {
            throw new OperationCanceledException("generation was cancelled");
        }
        catch (OnnxRuntimeException e)
        {
            throw RunFailed(e);
        }
        // The presents become the next pasts: take them out of the collection's ownership by swapping in the
        // old pasts, which the collection then disposes with the logits.
        var list = (IList<OrtValue>)outputs;
        for (int i = 0; i < _past.Length; i++)
        {
            var present = list[1 + i];
            list[1 + i] = _past[i];
            _past[i] = present;
        }
        return outputs;
    }

    /// <summary>Logits are [batch, seq, vocab]; some exports keep only the last position. Reading the shape
    /// allocates, so it is done for prefill (and cache-less models) only; this also learns the vocabulary size.</summary>
    private int SequenceLength(OrtValue logits)
    {
        var shape = logits.GetTensorTypeAndShape().Shape;
        _logitsRank2 = shape.Length == 2;
        if (_scratch.Length == 0)
        {
            _vocab = (int)shape[^1];
            _scratch = new float[_vocab];
            for (int b = 0; b < _batch; b++) _state[b].Sampler = new Sampler(_options, _vocab);
        }
        return shape.Length == 2 ? 1 : (int)shape[1];
    }

    /// <summary>Samples each running row's next token from <paramref name="logits"/> (or, when null, from the bound
    /// decoder's logits buffer) and appends its text.</summary>
    private void PickTokens(OrtValue? logits, int seq, Action<GeneratedPiece>? onPiece)
    {
        int vocab = _vocab;
        for (int b = 0; b < _batch; b++)
        {
            var s = _state[b];
            if (s.Done) continue;
            var row = logits is null
                ? _bound!.LogitsRow(b, vocab, _scratch)
                : TensorConvert.Row(logits, _sig.LogitsType, ((long)b * seq + seq - 1) * vocab, vocab, _scratch);
            int token = s.Sampler.Next(row);
            s.Tokens.Add(token);
            if (_options.ComputeLogProbs) s.LogProbSum += LogProb(row, token);
            int before = s.Text.Length;
            if (_eos.Contains(token))
            {
                s.Done = true;
                s.Reason = FinishReason.EndOfSequence;
                s.Decoder.FlushTo(s.Text);
                Emit(b, s, before, token, onPiece, final: true);
                continue;
            }
            s.Decoder.AppendTo(token, s.Text);
            bool last = s.Tokens.Count >= s.Limit;
            if (last) { s.Done = true; s.Reason = FinishReason.Length; s.Decoder.FlushTo(s.Text); }
            Emit(b, s, before, token, onPiece, final: last);
        }
    }

    private int _vocab;

    private static double LogProb(ReadOnlySpan<float> logits, int token)
    {
        float max = float.NegativeInfinity;
        foreach (var l in logits) if (l > max) max = l;
        double sum = 0;
        foreach (var l in logits) sum += Math.Exp(l - max);
        return logits[token] - max - Math.Log(sum);
    }

    /// <summary>Handles the text a token appended to the row (from <paramref name="before"/> on): cuts at a stop string,
    /// holds back a tail that may still become one, and reports what became final. Stop strings are searched in a window
    /// copied from the end of the text, and a piece's string is made only for a listener, so a step allocates nothing.</summary>
    private void Emit(int b, RowState s, int before, int token, Action<GeneratedPiece>? onPiece, bool final)
    {
        var stops = _options.StopStrings;
        int safe;
        if (stops.Count == 0) safe = s.Text.Length;
        else
        {
            // Index loops: foreach over the IReadOnlyList would box an enumerator every step.
            // Any stop that ends in the new text starts at or after before - longest + 1; a held-back tail is shorter
            // than the longest stop. So the window from there to the end decides both.
            int from = Math.Max(0, before - _longestStop + 1);
            int count = s.Text.Length - from;
            if (_window.Length < count) _window = new char[Math.Max(count, _window.Length * 2)];
            var window = _window.AsSpan(0, count);
            s.Text.CopyTo(from, window, count);
            int cut = -1;
            for (int i = 0; i < stops.Count; i++)
            {
                var stop = stops[i];
                if (stop.Length == 0) continue;
                int start = Math.Max(0, before - stop.Length + 1) - from;
                int at = window[start..].IndexOf(stop.AsSpan(), StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || from + start + at < cut)) cut = from + start + at;
            }
            if (cut >= 0)
            {
                s.Text.Length = cut;
                s.Done = true;
                s.Reason = FinishReason.StopString;
                safe = cut;
            }
            else if (final) safe = s.Text.Length;
            else
            {
                int hold = 0;
                for (int i = 0; i < stops.Count; i++)
                    for (int k = Math.Min(stops[i].Length - 1, window.Length); k > hold; k--)
                        if (window[^k..].SequenceEqual(stops[i].AsSpan(0, k))) { hold = k; break; }
                safe = s.Text.Length - hold;
            }
        }
        if (onPiece is not null)
            onPiece(new GeneratedPiece(b, token, safe > s.Emitted ? s.Text.ToString(s.Emitted, safe - s.Emitted) : string.Empty));
        s.Emitted = Math.Max(s.Emitted, safe);
    }

    private bool AllDone()
    {
        foreach (var s in _state) if (!s.Done) return false;
        return true;
    }

    private void WriteMask(int length)
    {
        for (int b = 0; b < _batch; b++)
        {
            int pad = _state[b].Pad;
            var row = _mask.AsSpan(b * length, length);
            row[..pad].Clear();
            row[pad..].Fill(1);
        }
    }

    private OrtValue MaskValue(int length)
    {
        _maskShape[0] = _batch; _maskShape[1] = length;
        return OrtValue.CreateTensorValueFromMemory(OrtMemoryInfo.DefaultInstance, _mask.AsMemory(0, _batch * length), _maskShape);
    }

    // Models without a cache re-run the whole sequence: rebuild [batch, length] ids and positions.
    private (OrtValue Ids, OrtValue Positions) FullSequence(int length)
    {
        var ids = new long[_batch * length];
        var pos = new long[_batch * length];
        for (int b = 0; b < _batch; b++)
        {
            var s = _state[b];
            for (int j = 0; j < length; j++)
            {
                int k = b * length + j;
                if (j < s.Pad) { ids[k] = _padId; pos[k] = 1; continue; }
                int p = j - s.Pad;
                ids[k] = p < s.PromptLength ? _rows[b].PromptIds[p] : s.Tokens[p - s.PromptLength];
                pos[k] = p;
            }
        }
        return (OrtValue.CreateTensorValueFromMemory(ids, [_batch, length]), OrtValue.CreateTensorValueFromMemory(pos, [_batch, length]));
    }

    private List<GenerationResult> Results()
    {
        var results = new List<GenerationResult>(_batch);
        for (int b = 0; b < _batch; b++)
        {
            var s = _state[b];
            results.Add(new GenerationResult
            {
                PromptText = _rows[b].PromptText,
                PromptTokenIds = _rows[b].PromptIds,
                TokenIds = [.. s.Tokens],
                Text = s.Text.ToString(),
                FinishReason = s.Reason,
                PrefillTime = PrefillTime,
                DecodeTime = DecodeTime,
                DecodeSteps = DecodeSteps,
                TimeToFirstToken = FirstTokenTimestamp == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(CallStart, FirstTokenTimestamp),
                FirstTokenTimestamp = FirstTokenTimestamp,
                MeanLogProb = _options.ComputeLogProbs && s.Tokens.Count > 0 ? s.LogProbSum / s.Tokens.Count : null,
                BoundDecode = UsedBinding,
                SteadyAllocatedBytes = SteadyAllocatedBytes,
                SteadySteps = SteadySteps,
            });
        }
        return results;
    }

    private OrtValue Own(OrtValue value)
    {
        _owned.Add(value);
        return value;
    }

    public void Dispose()
    {
        _bound?.Dispose();
        foreach (var p in _past) p?.Dispose();
        foreach (var v in _owned) v.Dispose();
        _owned.Clear();
        _runOptions.Dispose();
    }
}
