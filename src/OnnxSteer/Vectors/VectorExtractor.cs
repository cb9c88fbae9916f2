using System.Runtime.InteropServices;
using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;
using OnnxSteer.Modeling;

namespace OnnxSteer.Vectors;

/// <summary>Options for <see cref="VectorExtractor.Extract"/>.</summary>
public sealed record ExtractionOptions
{
    /// <summary>Name of the vector written to the file.</summary>
    public string Name { get; init; } = "instruction";
    /// <summary>Layers to compute; null means every layer whose hidden state the patched model exposes.</summary>
    public IReadOnlyList<int>? Layers { get; init; }
    /// <summary>Prompts per ONNX Runtime run (the with- and without-prompt of a pair count as two).</summary>
    public int BatchSize { get; init; } = 8;
    /// <summary>Whether the prompts were wrapped in the chat template (recorded in the file; the encoder does the wrapping).</summary>
    public bool ChatTemplate { get; init; } = true;
    /// <summary>Folder for the temporary spill file of per-pair differences (default: the system temp folder).</summary>
    public string? SpillDirectory { get; init; }
    /// <summary>Run a copy of the graph pruned to the requested <c>hidden_states.{L}</c> outputs (default): ONNX Runtime
    /// runs every node whatever is fetched, so without pruning each prompt also pays for the LM head over every position,
    /// the final norm where no hidden state needs it, and any layer above the highest requested one. The pruned copy lives in memory only; its weights are
    /// read from the model's own folder. Results are the same either way.</summary>
    public bool PruneGraph { get; init; } = true;
    /// <summary>Prompts read ahead and sorted by token count before they are cut into batches, so a batch holds prompts of
    /// similar length and right padding wastes less (default 64; 0 turns sorting off). Results do not depend on it: each
    /// row's state is independent of its batch, and pairs are accumulated in input order. Memory grows with it (one
    /// last-token state per layer per prompt in the window), not with the number of pairs.</summary>
    public int SortWindow { get; init; } = 64;
    /// <summary>How many of the prompt's last positions get a vector (default 1: the last token only, the paper's vector).
    /// With N &gt; 1 the file also holds, for k = 2..N, the mean difference at the k-th position from the end, named
    /// <see cref="OnnxSteer.Contract.HeaderVectors.Name"/>(name, k), for header steering. Those positions must hold
    /// the same tokens in both prompts of every pair (the chat template's answer header); a pair where they differ is refused.
    /// <see cref="TemplateHeader"/> (0) means the chat template's answer header: the tokens the encoder puts after any user
    /// message (the common token suffix of two one-letter messages).</summary>
    public int HeaderPositions { get; init; } = 1;

    /// <summary><see cref="HeaderPositions"/> value meaning "every token the chat template puts after the user's message".</summary>
    public const int TemplateHeader = 0;
    /// <summary>ONNX Runtime intra-op threads when the extractor makes its own session options; null or 0: the cores
    /// this process may use (<see cref="SessionThreads"/>).</summary>
    public int? Threads { get; init; }
}

/// <summary>Computes instruction vectors from a patched model (one that exposes <c>hidden_states.{L}</c>) by the paper's
/// diff-mean method at the last prompt token. Prompts run in batches, prefill only, with an empty KV cache; only the
/// hidden-state outputs are fetched, and by default ONNX Runtime runs a copy of the graph pruned to them (no LM head, no
/// layers above the highest requested one; the attention kernels the hidden states need still write their presents).</summary>
/// <remarks>Batches are padded on the <b>right</b>: under causal attention a row's real tokens never attend to the padding
/// after them, so each row's last real token gets exactly the state it gets alone, whatever way the exporter's attention
/// kernel treats the mask (GroupQueryAttention, for one, assumes right padding). Each row's own last token is read at its
/// own length − 1.</remarks>
public sealed class VectorExtractor : IDisposable
{
    private InferenceSession _session;
    // The decoder signature of _session, read at its first run.
    private DecoderSignature? _signature;
    private string _sessionKey;
    private readonly SessionOptions? _options;
    private readonly bool _ownsOptions;
    private readonly int _padId;
    // A session lent by a loaded model (SteeredModel.ExtractVector): used as it is, for every layer it exposes, never
    // replaced by a pruned one (that would load the weights a second time) and never disposed here.
    private readonly bool _borrowed;

    private VectorExtractor(SteeringManifest manifest, string modelFile, int padId, SessionOptions options, bool ownsOptions, ExtractionOptions firstUse)
    {
        Manifest = manifest;
        ModelFile = modelFile;
        _padId = padId;
        _options = options;
        _ownsOptions = ownsOptions;
        // The config files first: a bad value there fails before any session is opened.
        var folder = Path.GetDirectoryName(Path.GetFullPath(modelFile))!;
        var context = ModelConfig.Load(folder).ContextLength;
        if (DecoderSignature.InspectGraph(modelFile).RotaryCacheLength is int rotary && (context is null || rotary < context.Value.Tokens))
            context = (rotary, $"the rotary cache (cos_cache) in {Path.GetFileName(modelFile)}");
        (ContextLength, _contextSource) = context is { } c ? (c.Tokens, c.Source) : ((int?)null, (string?)null);
        // The session the first Extract will need, opened now so a model ONNX Runtime cannot load fails at Load, and opened
        // once: an extraction with the same layers and pruning reuses it instead of loading the weights a second time.
        var layers = ResolveLayers(firstUse.Layers);
        (_session, Pruning) = OpenSession(layers, firstUse.PruneGraph);
        _sessionKey = SessionKey(layers, firstUse.PruneGraph);
    }

    private readonly string? _contextSource;

    /// <summary>The most tokens a prompt may have (the model's context length: genai_config.json, config.json or the rotary
    /// cache in the graph, the smallest present), or null when nothing states it. Longer prompts are refused.</summary>
    public int? ContextLength { get; }

    /// <summary>Wraps the session of a loaded patched model, which the caller keeps owning: extraction runs the full graph
    /// (same results as the pruned one) and opens nothing.</summary>
    internal VectorExtractor(SteeringManifest manifest, string modelFile, int padId, InferenceSession session)
    {
        Manifest = manifest;
        ModelFile = modelFile;
        _padId = padId;
        _session = session;
        _sessionKey = "borrowed";
        _borrowed = true;
    }

    /// <summary>What pruning removed from the graph of the session in use; null when it runs the full graph.</summary>
    internal PruneResult? Pruning { get; private set; }

    /// <summary>The session in use (benchmarks read its profile).</summary>
    internal InferenceSession Session => _session;

    /// <summary>The patched model's steering.json.</summary>
    public SteeringManifest Manifest { get; }

    /// <summary>The .onnx file in use.</summary>
    public string ModelFile { get; }

    /// <summary>Fingerprint recorded in the vector files this extractor writes.</summary>
    public ModelFingerprint Model => InstructionVectorFile.FingerprintOf(Manifest);

    /// <summary>Opens a patched model folder (or its .onnx file) on the CPU execution provider, or with the given
    /// session options (the extractor does not own them).</summary>
    /// <param name="path">Patched folder or .onnx file.</param>
    /// <param name="padTokenId">Token id used for padding (any valid id: padded positions are masked and never read).</param>
    /// <param name="sessionOptions">Session options; null for defaults. The extractor does not own them but keeps using them
    /// (it opens a new session when an extraction asks for other layers or no pruning), so they must outlive it; it sets the
    /// config entry <c>session.model_external_initializers_file_folder_path</c> on them to the model's folder.</param>
    /// <exception cref="OnnxSteerException">Missing folder (NotFound), no steering.json (UnsupportedModel), a model ONNX Runtime cannot load (InvalidModel).</exception>
    public static VectorExtractor Load(string path, int padTokenId = 0, SessionOptions? sessionOptions = null) =>
        Load(path, new ExtractionOptions(), padTokenId, sessionOptions);

    /// <summary>As <see cref="Load(string, int, SessionOptions?)"/>, with the first session opened for the layers and
    /// pruning of <paramref name="firstUse"/> (an extraction with those options then loads nothing more).</summary>
    public static VectorExtractor Load(string path, ExtractionOptions firstUse, int padTokenId = 0, SessionOptions? sessionOptions = null)
    {
        var modelFile = ModelLocator.ResolveModelFile(path);
        var manifest = SteeringManifest.TryLoad(Path.GetDirectoryName(modelFile)!)
            ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"'{path}' has no {SteeringContract.ManifestFileName}; extract needs a patched model (run onnxsteer patch first).");
        // A folder runs the model its steering.json names (as generate does), under the folder's path rule.
        if (Directory.Exists(path))
        {
            modelFile = new ModelFolder(path).Resolve(manifest.ModelFile, "steering.json model_file");
            if (!File.Exists(modelFile))
                throw new OnnxSteerException(ErrorKind.NotFound, $"model file {modelFile} (steering.json model_file) does not exist.");
        }
        if (manifest.ExposedLayers.Count == 0)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{path}' exposes no hidden states; patch it again exposing the layers to extract.");
        var owns = sessionOptions is null;
        // Optional steering inputs are initializers that double as graph inputs; ONNX Runtime warns about each one on
        // stderr, which would bury the progress bar. Errors still surface as exceptions.
        var options = sessionOptions ?? new SessionOptions { LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR };
        try
        {
            if (owns) SessionThreads.Apply(options, firstUse.Threads);
            return new VectorExtractor(manifest, modelFile, padTokenId, options, owns, firstUse);
        }
        catch
        {
            if (owns) options.Dispose();
            throw;
        }
    }

    /// <summary>Opens a session for <paramref name="layers"/>: on a graph pruned to their hidden_states outputs, or on the
    /// model file as it is.</summary>
    private (InferenceSession Session, PruneResult? Pruning) OpenSession(IReadOnlyList<int> layers, bool prune)
    {
        var (session, pruning) = OpenSessionUnchecked(layers, prune);
        try
        {
            // Before anything is sized by hidden_size: the outputs read must exist with that width.
            var feedable = new Dictionary<string, NodeMetadata>(session.InputMetadata);
            foreach (var (name, meta) in session.OverridableInitializerMetadata) feedable.TryAdd(name, meta);
            Manifest.CheckAgainstGraph(feedable, session.OutputMetadata, ModelFile, layers, checkSteered: !prune);
            return (session, pruning);
        }
        catch
        {
            session.Dispose();
            throw;
        }
    }

    private (InferenceSession Session, PruneResult? Pruning) OpenSessionUnchecked(IReadOnlyList<int> layers, bool prune)
    {
        try
        {
            ArgumentNullException.ThrowIfNull(_options);
            if (!prune) return (new InferenceSession(ModelFile, _options), null);
            var model = OnnxModelFile.Load(ModelFile).Proto;
            var result = GraphPruner.KeepOutputs(model, layers.Select(SteeringContract.HiddenStateOutput).ToList());
            // Nothing to skip (a graph with no LM head, say): the file itself spares a copy of an embedded-weight graph.
            if (result.NodesAfter == result.NodesBefore) return (new InferenceSession(ModelFile, _options), result);
            // The pruned graph is handed to ONNX Runtime as bytes; its external-data locations stay relative to the model's
            // folder, which this entry names (nothing is written into the user's folder). Set just before each open, so two
            // extractors sharing one SessionOptions each get their own folder; set only when it changes, because ONNX
            // Runtime warns on stderr about every overwrite.
            var folder = Path.GetDirectoryName(Path.GetFullPath(ModelFile))!;
            if (!ExternalFolderSet.TryGetValue(_options, out var current) || current.Folder != folder)
            {
                _options.AddSessionConfigEntry(ExternalInitializersFolderKey, folder);
                ExternalFolderSet.AddOrUpdate(_options, new FolderEntry(folder));
            }
            return (new InferenceSession(model.ToByteArray(), _options), result);
        }
        catch (OnnxRuntimeException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"ONNX Runtime cannot load '{ModelFile}'{(prune ? " (pruned to the hidden-state outputs)" : "")}: {e.Message}", e);
        }
    }

    private const string ExternalInitializersFolderKey = "session.model_external_initializers_file_folder_path";

    private sealed record FolderEntry(string Folder);

    /// <summary>The external-initializer folder last written into each SessionOptions (ONNX Runtime cannot be asked).</summary>
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<SessionOptions, FolderEntry> ExternalFolderSet = new();

    /// <summary>Makes the session in use the one <paramref name="layers"/> and <paramref name="prune"/> need.</summary>
    private void UseSession(IReadOnlyList<int> layers, bool prune)
    {
        var key = SessionKey(layers, prune);
        if (_borrowed || key == _sessionKey) return;
        // One session at a time: a second copy of the weights would double the memory of a large model.
        _session.Dispose();
        (_session, Pruning) = OpenSession(layers, prune);
        _signature = null;
        _sessionKey = key;
    }

    private static string SessionKey(IReadOnlyList<int> layers, bool prune) => prune ? "pruned:" + string.Join(",", layers) : "full";

    /// <summary>Computes one instruction vector over <paramref name="pairs"/>.</summary>
    /// <param name="pairs">The contrast pairs, enumerated once.</param>
    /// <param name="encode">Turns a prompt into the token ids the model sees (chat template with the assistant turn opened,
    /// special tokens included).</param>
    /// <param name="options">Name, layers, batch size, pruning, sort window.</param>
    /// <param name="progress">Receives the number of pairs done after each batch (within a sort window: prompts run / 2),
    /// never decreasing, ending at the pair count.</param>
    /// <param name="cancellationToken">Stops between batches.</param>
    /// <exception cref="OnnxSteerException">Layers not exposed (UnsupportedModel), empty prompts or no pairs (InvalidData),
    /// a hidden state holding NaN/Inf (InvalidVector).</exception>
    public InstructionVectorFile Extract(IEnumerable<PromptPair> pairs, Func<string, IReadOnlyList<int>> encode, ExtractionOptions options,
        IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        VectorFormat.CheckName(options.Name);
        // "template": every token the chat template puts after the user's message, counted with this encoder.
        var header = options.HeaderPositions == ExtractionOptions.TemplateHeader ? PromptEncoding.HeaderLength(encode) : options.HeaderPositions;
        if (header < 1 || header > OnnxSteer.Contract.HeaderVectors.MaxPositions)
            throw new OnnxSteerException(ErrorKind.Usage, $"the header positions must be 1-{OnnxSteer.Contract.HeaderVectors.MaxPositions}, or TemplateHeader (got {header}).");
        for (var k = 2; k <= header; k++) VectorFormat.CheckName(OnnxSteer.Contract.HeaderVectors.Name(options.Name, k));
        if (options.BatchSize < 1) throw new OnnxSteerException(ErrorKind.Usage, $"the batch size must be at least 1 (got {options.BatchSize}).");
        if (options.SortWindow < 0) throw new OnnxSteerException(ErrorKind.Usage, $"the sort window must be 0 or more (got {options.SortWindow}).");
        var layers = ResolveLayers(options.Layers);
        UseSession(layers, options.PruneGraph);
        var hidden = Manifest.HiddenSize;
        // One accumulator per header position (index k − 1 = the k-th position from the end).
        var accumulators = new DiffMeanAccumulator[header];
        using var dispose = new DisposeAll(accumulators);
        for (var k = 0; k < header; k++) accumulators[k] = new DiffMeanAccumulator(layers, hidden, options.SpillDirectory);
        var accumulator = accumulators[0];

        // Pairs are read a window at a time (whole pairs: with, without), the window's prompts are sorted by length and cut
        // into batches, and the pairs are then accumulated in input order, so the result depends on neither the batch size
        // nor the sorting. Memory is one window, whatever the number of pairs.
        var windowPrompts = Math.Max(options.BatchSize, options.SortWindow);
        var window = new List<int[]>(windowPrompts + 1);

        void RunWindow()
        {
            if (window.Count == 0) return;
            var order = Enumerable.Range(0, window.Count);
            if (options.SortWindow > 0) order = order.OrderBy(i => window[i].Length);
            var sorted = order.ToArray();
            var states = new float[window.Count][][][];
            for (var start = 0; start < sorted.Length; start += options.BatchSize)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var rows = sorted.AsSpan(start, Math.Min(options.BatchSize, sorted.Length - start)).ToArray();
                var batchStates = HeaderStates(rows.Select(i => window[i]).ToList(), layers, header, cancellationToken: cancellationToken);
                for (var r = 0; r < rows.Length; r++) states[rows[r]] = batchStates[r];
                // Pairs complete only when the window does; in between, report the prompts run as pairs so a slow model's
                // progress still moves every batch.
                var run = start + rows.Length;
                if (run < sorted.Length) progress?.Report(accumulator.Count + run / 2);
            }
            for (var p = 0; p < window.Count; p += 2)
                for (var k = 0; k < header; k++) accumulators[k].Add(states[p][k], states[p + 1][k]);
            window.Clear();
            progress?.Report(accumulator.Count);
        }

        int[] Encode(PromptPair pair, string text, string side)
        {
            var ids = encode(text).ToArray();
            if (ids.Length == 0)
                throw new OnnxSteerException(ErrorKind.InvalidData, $"{Label(pair)}: the {side}-prompt encodes to no tokens.");
            if (ContextLength is int ctx && ids.Length > ctx)
                throw new OnnxSteerException(ErrorKind.InvalidData,
                    $"{Label(pair)}: the {side}-prompt is {ids.Length} tokens; the model's context length is {ctx} ({_contextSource}).");
            if (ids.Length < header)
                throw new OnnxSteerException(ErrorKind.InvalidData,
                    $"{Label(pair)}: the {side}-prompt is {ids.Length} tokens, fewer than the {header} header positions.");
            return ids;
        }

        // Pairs from a file name their line; pairs from code their place in the sequence.
        var index = 0;
        string Label(PromptPair pair) => pair.Line > 0 ? $"pair on line {pair.Line}" : $"pair {index}";

        foreach (var pair in pairs)
        {
            index++;
            var with = Encode(pair, pair.With, "with");
            var without = Encode(pair, pair.Without, "without");
            // Header positions are the same tokens in both prompts (the template's answer header): their difference is then
            // what the instruction wrote into them, not a different token.
            if (header > 1 && !with.AsSpan(with.Length - header).SequenceEqual(without.AsSpan(without.Length - header)))
                throw new OnnxSteerException(ErrorKind.InvalidData,
                    $"{Label(pair)}: the last {header} tokens of the with- and without-prompt differ; " +
                    "header positions must be the chat template's answer header, the same tokens in every prompt (fewer header positions, or the chat template).");
            window.Add(with);
            window.Add(without);
            if (window.Count >= windowPrompts) RunWindow();
        }
        RunWindow();
        if (accumulator.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidData, "no pairs were given.");

        var vectors = new List<InstructionVector>(header);
        for (var k = 1; k <= header; k++)
            vectors.Add(new InstructionVector
            {
                Name = OnnxSteer.Contract.HeaderVectors.Name(options.Name, k),
                Method = k == 1 ? InstructionVector.DiffMeanMethod : InstructionVector.HeaderMethod(k),
                PairCount = accumulators[k - 1].Count,
                ChatTemplate = options.ChatTemplate,
                Layers = accumulators[k - 1].Finish(),
            });
        return InstructionVectorFile.Create(vectors, Model);
    }

    /// <summary>Disposes every item created so far (an accumulator's constructor may throw part-way through the array).</summary>
    private sealed class DisposeAll(IDisposable?[] items) : IDisposable
    {
        public void Dispose()
        {
            foreach (var item in items) item?.Dispose();
        }
    }

    private List<int> ResolveLayers(IReadOnlyList<int>? requested)
    {
        var exposed = Manifest.ExposedLayers.Order().ToList();
        if (requested is null) return exposed;
        foreach (var l in requested)
        {
            if (l < 0 || l >= Manifest.NumLayers)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"layer {l} requested; the model has {Manifest.NumLayers} layers (0-{Manifest.NumLayers - 1}).");
            if (!exposed.Contains(l))
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"layer {l} requested but the patched model exposes hidden states only for layers {LayerSelection.Format(exposed)}.");
        }
        return requested.Distinct().Order().ToList();
    }

    /// <summary>Runs one right-padded batch and returns, per row, the last real token's state at each layer
    /// ([row][layer index][hidden], float32).</summary>
    internal float[][][] LastTokenStates(IReadOnlyList<int[]> sequences, IReadOnlyList<int> layers, IReadOnlyList<string>? extraOutputs = null,
        CancellationToken cancellationToken = default) =>
        [.. HeaderStates(sequences, layers, 1, extraOutputs, cancellationToken).Select(row => row[0])];

    /// <summary>Runs one right-padded batch and returns, per row, the states of its last <paramref name="count"/> real
    /// tokens at each layer ([row][k − 1 for the k-th position from the end][layer index][hidden], float32).</summary>
    /// <param name="sequences">Token ids per row.</param>
    /// <param name="layers">Layers to read.</param>
    /// <param name="count">Positions read per row, from its last real token back.</param>
    /// <param name="extraOutputs">Outputs fetched as well and thrown away (benchmarks: what fetching logits costs).</param>
    /// <param name="cancellationToken">Terminates the ONNX Runtime run in progress (a large batch can take seconds).</param>
    internal float[][][][] HeaderStates(IReadOnlyList<int[]> sequences, IReadOnlyList<int> layers, int count, IReadOnlyList<string>? extraOutputs = null,
        CancellationToken cancellationToken = default)
    {
        var batch = sequences.Count;
        var length = sequences.Max(s => s.Length);
        var ids = new long[batch * length];
        var mask = new long[batch * length];
        var positions = new long[batch * length];
        for (var b = 0; b < batch; b++)
        {
            var s = sequences[b];
            for (var t = 0; t < length; t++)
            {
                var real = t < s.Length;
                ids[b * length + t] = real ? s[t] : _padId;
                mask[b * length + t] = real ? 1 : 0;
                positions[b * length + t] = real ? t : 0;
            }
        }

        var names = new List<string>();
        var values = new List<OrtValue>();
        try
        {
            // The signature of the session in use (a pruned graph may have dropped inputs the full one has).
            var signature = _signature ??= DecoderSignature.Read(_session.InputMetadata, _session.OutputMetadata, _session.OverridableInitializerMetadata,
                manifest: null, ModelFile, requireOutputs: false);
            foreach (var input in signature.Inputs)
            {
                names.Add(input.Name);
                values.Add(CreateInput(input, batch, length, ids, mask, positions));
            }
            var outputNames = layers.Select(SteeringContract.HiddenStateOutput).ToList();
            using var runOptions = new RunOptions();
            using var terminate = cancellationToken.Register(static o => ((RunOptions)o!).Terminate = true, runOptions);
            cancellationToken.ThrowIfCancellationRequested();
            IDisposableReadOnlyCollection<OrtValue> outputs;
            try { outputs = _session.Run(runOptions, names, values, [.. outputNames, .. extraOutputs ?? []]); }
            catch (OnnxRuntimeException) when (cancellationToken.IsCancellationRequested)
            {
                throw new OperationCanceledException("extraction was cancelled", cancellationToken);
            }
            using var _ = outputs;
            var result = new float[batch][][][];
            for (var b = 0; b < batch; b++)
            {
                result[b] = new float[count][][];
                for (var k = 0; k < count; k++) result[b][k] = new float[layers.Count][];
            }
            var hidden = Manifest.HiddenSize;
            var i = 0;
            foreach (var output in outputs.Take(outputNames.Count))
            {
                var shape = output.GetTensorTypeAndShape();
                var dims = shape.Shape;
                if (dims.Length != 3 || dims[0] != batch || dims[1] != length || dims[2] != hidden)
                    throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                        $"{outputNames[i]} has shape [{string.Join(", ", dims)}]; expected [{batch}, {length}, {hidden}].");
                for (var b = 0; b < batch; b++)
                    for (var k = 0; k < count; k++)
                    {
                        var offset = ((long)b * length + sequences[b].Length - 1 - k) * hidden;
                        result[b][k][i] = ReadRow(output, shape.ElementDataType, (int)offset, hidden, outputNames[i]);
                    }
                i++;
            }
            return result;
        }
        catch (OnnxRuntimeException e)
        {
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"ONNX Runtime failed running '{ModelFile}': {e.Message}", e);
        }
        finally
        {
            foreach (var v in values) v.Dispose();
        }
    }

    private static float[] ReadRow(OrtValue value, TensorElementType type, int offset, int hidden, string name)
    {
        var row = new float[hidden];
        switch (type)
        {
            case TensorElementType.Float:
                value.GetTensorDataAsSpan<float>().Slice(offset, hidden).CopyTo(row);
                break;
            case TensorElementType.Float16:
            {
                var halves = MemoryMarshal.Cast<Float16, Half>(value.GetTensorDataAsSpan<Float16>().Slice(offset, hidden));
                for (var i = 0; i < hidden; i++) row[i] = (float)halves[i];
                break;
            }
            case TensorElementType.BFloat16:
            {
                var raw = MemoryMarshal.Cast<BFloat16, ushort>(value.GetTensorDataAsSpan<BFloat16>().Slice(offset, hidden));
                for (var i = 0; i < hidden; i++) row[i] = BitConverter.Int32BitsToSingle(raw[i] << 16);
                break;
            }
            default:
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{name} has element type {type}; expected float32, float16 or bfloat16.");
        }
        return row;
    }

    private OrtValue CreateInput(DecoderInput input, int batch, int length, long[] ids, long[] mask, long[] positions)
    {
        switch (input.Role)
        {
            case DecoderInputRole.InputIds:
                return OrtValue.CreateTensorValueFromMemory(ids, [batch, length]);
            case DecoderInputRole.AttentionMask:
                return OrtValue.CreateTensorValueFromMemory(mask, [batch, length]);
            case DecoderInputRole.PositionIds:
                return OrtValue.CreateTensorValueFromMemory(positions, [batch, length]);
            case DecoderInputRole.TokenTypeIds:
                return OrtValue.CreateTensorValueFromMemory(new long[batch * length], [batch, length]);
            case DecoderInputRole.UseCacheBranch:
                // Optimum's merged decoder: the no-cache branch is the prefill.
                return OrtValue.CreateTensorValueFromMemory(new[] { false }, [1]);
            case DecoderInputRole.Cache:
                // An empty KV cache: the prompts run as one prefill.
                return Zeros(input.Type, input.Cache!.Shape(batch, 0));
            default:
                // Required steering inputs (--steer-input required) are fed zeros: extraction reads the unsteered model.
                var shape = input.Name.EndsWith(".target", StringComparison.Ordinal) ? new long[] { 1, 1, 1 } : [1, 1, Manifest.HiddenSize];
                return Zeros(input.Type, shape);
        }
    }

    private static OrtValue Zeros(TensorElementType type, long[] shape)
    {
        var value = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, type, shape);
        // Allocated tensors are not initialised.
        if (shape.All(d => d > 0)) value.GetTensorMutableRawData().Clear();
        return value;
    }

    /// <summary>Releases the ONNX Runtime session (and the session options when the extractor made them).</summary>
    public void Dispose()
    {
        if (!_borrowed) _session.Dispose();
        if (_ownsOptions) _options?.Dispose();
    }
}
