using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Onnx;
using OnnxSteer.Contract;
using OnnxSteer.Runtime.Generation;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

namespace OnnxSteer.Runtime;

/// <summary>A decoder model folder loaded for generation, patched (with steering.json) or not. Owns one ONNX Runtime
/// session, the tokenizer and the chat template. Generation methods are thread-safe: concurrent calls, each with
/// its own steering, get the same results they would get alone (all per-call state lives in the call).</summary>
/// <remarks>Lifetime: generations and extractions in flight are counted. <see cref="Dispose"/> and
/// <see cref="DisposeAsync"/> cancel them, wait until each has left ONNX Runtime, then release the session, so disposing a
/// model that is still serving (a DI singleton at shutdown) is safe. A call interrupted that way throws
/// <see cref="ObjectDisposedException"/> (a stream throws it from its enumeration), and so does every call made after
/// disposal. Disposing from inside a generation's own <c>onPiece</c> callback does not wait (that generation is the one
/// to finish first); the session is then released when it returns.</remarks>
/// <example><code>
/// using var model = SteeredModel.Load(dir);
/// var steering = Steering.From(vectors).Project("format.lowercase", layer: 18).Add("conciseness", layer: 12, weight: 20);
/// await foreach (var piece in model.GenerateAsync("Write about rivers.", steering, new GeneratorOptions { MaxNewTokens = 200 }))
///     Console.Write(piece);
/// </code></example>
public sealed class SteeredModel : ISteeredGenerator, IAsyncDisposable
{
    private readonly InferenceSession _session;
    private readonly int _padId;
    private readonly HashSet<int> _eos;
    private readonly bool _boundDecode;
    private readonly int _cacheHeadroom;
    private readonly CacheDevice _cacheDevice;

    // Lifetime: _inFlight counts the calls inside the session; the last of them to leave after disposal, or the disposer
    // when none is in flight, releases the session and completes _released.
    private readonly object _gate = new();
    private readonly CancellationTokenSource _disposing = new();
    private readonly TaskCompletionSource _released = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private int _inFlight;
    private bool _disposed;
    // The models whose calls the current thread is inside (a callback that disposes its own model must not wait for itself).
    [ThreadStatic] private static List<SteeredModel>? t_inside;
    private readonly int? _contextLength;

    private SteeredModel(string directory, string modelPath, InferenceSession session, DecoderSignature signature, SteeringManifest? manifest,
        ModelConfig config, TextTokenizer tokenizer, ChatTemplate template, ExecutionProvider provider, RuntimeOptions options,
        (int Tokens, string Source)? context)
    {
        (_contextLength, ContextLengthSource) = context is { } c ? (c.Tokens, c.Source) : ((int?)null, (string?)null);
        Directory = directory; ModelPath = modelPath; _session = session; Signature = signature; Manifest = manifest;
        Tokenizer = tokenizer; ChatTemplate = template; Provider = provider;
        // On CUDA/DirectML the bound cache lives in device memory from the provider's allocator (BoundDecoder).
        _boundDecode = options.BoundDecode;
        _cacheDevice = CacheDevice.For(provider, options.DeviceId, options.BoundCacheOnAllocator);
        _cacheHeadroom = options.BoundCacheHeadroom;
        (ModelType, HiddenSize, NumLayers) = config.Facts(manifest);
        ModelId = config.ModelId(directory, manifest);
        _eos = config.EosIds(tokenizer);
        // Padding is masked, so any id in the embedding table works; the model config is the surer source of one.
        _padId = config.PadTokenId ?? tokenizer.PadTokenId ?? _eos.DefaultIfEmpty(0).First();
    }

    internal DecoderSignature Signature { get; }

    /// <summary>"ort": OnnxSteer's decode loop on ONNX Runtime.</summary>
    public string Engine => "ort";
    internal InferenceSession Session => _session;

    /// <summary>The model folder.</summary>
    public string Directory { get; }
    /// <summary>The .onnx file in use.</summary>
    public string ModelPath { get; }
    /// <summary>steering.json, or null for an unpatched model.</summary>
    public SteeringManifest? Manifest { get; }
    /// <summary>The tokenizer.</summary>
    public TextTokenizer Tokenizer { get; }
    /// <summary>The chat template (the model's own, or the documented fallback).</summary>
    public ChatTemplate ChatTemplate { get; }
    /// <summary>The execution provider the session runs on.</summary>
    public ExecutionProvider Provider { get; }
    /// <inheritdoc/>
    public string ModelId { get; }
    /// <summary>Model family from steering.json, genai_config.json or config.json (llama, qwen2, ...), if known.</summary>
    public string? ModelType { get; }
    /// <summary>Hidden size (the length steering vectors must have), if known.</summary>
    public int? HiddenSize { get; }
    /// <summary>Number of decoder layers, if known.</summary>
    public int? NumLayers { get; }
    /// <summary>Layers that take steering inputs (empty for an unpatched model).</summary>
    public IReadOnlyList<int> SteeredLayers => [.. Signature.SteeringInputs.Keys.Order()];
    /// <summary>The most tokens (prompt plus generated) the model can take: the smallest of genai_config.json's
    /// context_length, config.json's max_position_embeddings / n_positions and the rotary cache in the graph, whichever are
    /// present; null when none is. A prompt that leaves no room to generate is refused, and generation stops there with
    /// <see cref="FinishReason.Length"/>.</summary>
    public int? ContextLength => _contextLength;
    /// <summary>Where <see cref="ContextLength"/> comes from ("genai_config.json model.context_length", "the rotary cache
    /// (cos_cache) in model.onnx"), or null.</summary>
    public string? ContextLengthSource { get; }
    /// <summary>Token ids that end a sequence (generation_config.json, genai_config.json, config.json and the tokenizer's EOS).</summary>
    public IReadOnlySet<int> EosTokenIds => _eos;

    /// <summary>Loads a model folder: steering.json (optional), genai_config.json / config.json / generation_config.json,
    /// the tokenizer files and the .onnx model, on the execution provider of <paramref name="options"/>.</summary>
    /// <exception cref="OnnxSteerException">Missing folder or files (NotFound), a model that cannot be loaded or run
    /// (InvalidModel, UnsupportedModel), or a provider the application's ONNX Runtime native package lacks (ProviderUnavailable, naming the package to reference).</exception>
    public static SteeredModel Load(string directory, RuntimeOptions? options = null)
    {
        options ??= new RuntimeOptions();
        if (!System.IO.Directory.Exists(directory))
            throw new OnnxSteerException(ErrorKind.NotFound, $"model folder {directory} does not exist");
        directory = Path.GetFullPath(directory);
        var folder = new Onnx.ModelFolder(directory);
        var manifest = SteeringManifest.TryLoad(directory);
        var config = ModelConfig.Load(folder);
        var modelPath = FindModelFile(folder, options.ModelFile is { } f ? (f, "RuntimeOptions.ModelFile")
            : manifest is not null ? (manifest.ModelFile, "steering.json model_file")
            : config.DecoderFile is { } d ? (d, "genai_config.json model.decoder.filename") : null);
        // The tokenizer and template loaders check their own file names against the folder's path rule.
        var tokenizer = TextTokenizer.Load(directory);
        var template = ChatTemplate.Load(directory, tokenizer);
        var graph = DecoderSignature.InspectGraph(modelPath);
        var context = config.ContextLength;
        if (graph.RotaryCacheLength is int rotary && (context is null || rotary < context.Value.Tokens))
            context = (rotary, $"the rotary cache (cos_cache) in {Path.GetFileName(modelPath)}");

        var sessionOptions = CreateSessionOptions(options);
        InferenceSession? session = null;
        try
        {
            try
            {
                // Prefill needs the last position's logits only (LastPositionLogits), and parallel MatMuls run as one
                // (MatMulFusion, whose concatenated weights only constant folding makes free); the folder is never changed.
                var rewritten = LoadRewrites.TryApply(modelPath, options.LastPositionLogits,
                    options.FuseMatMuls && sessionOptions.GraphOptimizationLevel != GraphOptimizationLevel.ORT_DISABLE_ALL);
                if (rewritten is null) session = new InferenceSession(modelPath, sessionOptions);
                else
                {
                    // Bytes carry no folder: external weights are found beside the model file through this entry.
                    sessionOptions.AddSessionConfigEntry("session.model_external_initializers_file_folder_path", Path.GetDirectoryName(modelPath)!);
                    session = new InferenceSession(rewritten, sessionOptions);
                }
            }
            catch (OnnxRuntimeException e)
            {
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"ONNX Runtime cannot load {modelPath}: {FirstLine(e.Message)}", e);
            }
            var signature = DecoderSignature.Discover(session, manifest, modelPath, graph.GroupQueryAttention);
            if (manifest is not null)
            {
                var feedable = new Dictionary<string, NodeMetadata>(session.InputMetadata);
                foreach (var (name, meta) in session.OverridableInitializerMetadata) feedable.TryAdd(name, meta);
                manifest.CheckAgainstGraph(feedable, session.OutputMetadata, modelPath);
            }
            CheckPadId(config, session, modelPath);
            return new SteeredModel(directory, modelPath, session, signature, manifest, config, tokenizer, template, options.Provider, options, context);
        }
        catch
        {
            session?.Dispose();
            throw;
        }
        finally
        {
            sessionOptions.Dispose();
        }
    }

    /// <summary>Renders a conversation with the chat template, ending with the assistant's turn opened.</summary>
    public string ApplyChatTemplate(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return ChatTemplate.Apply(messages, addGenerationPrompt, cancellationToken);
    }

    /// <summary>The token ids a conversation becomes (through the chat template, or raw when <paramref name="useChatTemplate"/>
    /// is false: the messages' contents joined by newlines, with the tokenizer's usual special tokens).</summary>
    public int[] EncodePrompt(IReadOnlyList<ChatTurn> messages, bool useChatTemplate = true, CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return Prepare(messages, useChatTemplate, cancellationToken).Ids;
    }

    /// <summary>Checks a steering against this model (patched, layers steered, vector sizes) without running anything.</summary>
    /// <exception cref="OnnxSteerException">The steering cannot be applied to this model.</exception>
    public void Validate(Steering steering)
    {
        ThrowIfDisposed();
        SteeringFeed.Validate(steering, Signature, HiddenSize, ModelPath, NumLayers);
    }

    /// <summary>Generates a reply to one user message and returns it whole.</summary>
    public GenerationResult Generate(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        Generate([GenerationRequest.FromPrompt(prompt, steering)], options, null, cancellationToken)[0];

    /// <summary>Generates a reply to a conversation and returns it whole.</summary>
    public GenerationResult Generate(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        Generate([new GenerationRequest { Messages = messages, Steering = steering }], options, null, cancellationToken)[0];

    /// <summary>Generates for a batch of requests in one decode loop (left-padded), each row with its own steering.
    /// <paramref name="onPiece"/>, if given, sees every token's text as it is produced (on the calling thread).</summary>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null,
        Action<GeneratedPiece>? onPiece = null, CancellationToken cancellationToken = default)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        options ??= new GeneratorOptions();
        Enter();
        try
        {
            var rows = PrepareBatch(batch, options, cancellationToken);
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
            try { return RunLoop(rows, options, onPiece, linked.Token, start); }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _disposing.IsCancellationRequested)
            {
                throw DisposedDuringCall();
            }
        }
        finally { Exit(); }
    }

    /// <summary>Runs <paramref name="work"/> on this model's session as a counted call, like a generation: disposal
    /// cancels the token it gets and waits for it to return, and a call cut short that way throws
    /// <see cref="ObjectDisposedException"/>. For work built on the loaded session in higher layers (vector extraction).</summary>
    internal T UseSession<T>(Func<InferenceSession, CancellationToken, T> work, CancellationToken cancellationToken)
    {
        Enter();
        try
        {
            using var linked = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
            try { return work(_session, linked.Token); }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _disposing.IsCancellationRequested)
            {
                throw DisposedDuringCall();
            }
        }
        finally { Exit(); }
    }

    /// <summary>The id padded positions get (masked, so any valid id).</summary>
    internal int PadTokenId => _padId;

    /// <summary>Streams the reply to one user message, piece by piece.</summary>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync([GenerationRequest.FromPrompt(prompt, steering)], options, cancellationToken);

    /// <summary>Streams the reply to a conversation, piece by piece.</summary>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync([new GenerationRequest { Messages = messages, Steering = steering }], options, cancellationToken);

    /// <summary>Streams a batch: pieces of all rows interleaved (see <see cref="GeneratedPiece.Row"/>). The decode loop
    /// runs on a worker thread; stopping the enumeration or cancelling stops it, and so does disposing the model (the
    /// enumeration then throws <see cref="ObjectDisposedException"/>).</summary>
    /// <exception cref="ObjectDisposedException">The model is disposed (thrown here, before anything is enumerated).</exception>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        ThrowIfDisposed();
        return Stream(batch, options ?? new GeneratorOptions(), cancellationToken);
    }

    private async IAsyncEnumerable<GeneratedPiece> Stream(IReadOnlyList<GenerationRequest> batch, GeneratorOptions options,
        [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        long start = System.Diagnostics.Stopwatch.GetTimestamp();
        // The worker holds the in-flight count: it is what uses the session, and it ends (cancelled by a disposal) even when
        // the consumer abandons the enumeration without disposing it.
        Enter();
        List<PreparedRow> rows;
        try { rows = PrepareBatch(batch, options, cancellationToken); }
        catch { Exit(); throw; }
        var channel = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken, _disposing.Token);
        var worker = Task.Run(() =>
        {
            try
            {
                RunLoop(rows, options, p => channel.Writer.TryWrite(p), stop.Token, start);
                channel.Writer.TryComplete();
            }
            catch (OperationCanceledException) when (!cancellationToken.IsCancellationRequested && _disposing.IsCancellationRequested)
            {
                channel.Writer.TryComplete(DisposedDuringCall());
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
            finally
            {
                Exit();
            }
        }, CancellationToken.None);
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                // ReadAllAsync drains pieces already buffered without looking at the token; a fast decode loop can
                // buffer the whole answer, so check here or cancellation would only be seen at the end.
                cancellationToken.ThrowIfCancellationRequested();
                yield return piece;
            }
        }
        finally
        {
            await stop.CancelAsync().ConfigureAwait(false);
            await worker.ConfigureAwait(false);
        }
    }

    private IReadOnlyList<GenerationResult> RunLoop(IReadOnlyList<PreparedRow> rows, GeneratorOptions options, Action<GeneratedPiece>? onPiece, CancellationToken ct,
        long callStart)
    {
        (t_inside ??= []).Add(this);
        try { return RunRows(rows, options, onPiece, ct, callStart); }
        finally { t_inside.Remove(this); }
    }

    private IReadOnlyList<GenerationResult> RunRows(IReadOnlyList<PreparedRow> rows, GeneratorOptions options, Action<GeneratedPiece>? onPiece, CancellationToken ct,
        long callStart)
    {
        if (Signature.RightPaddingOnly && rows.Select(r => r.PromptIds.Length).Distinct().Count() > 1)
        {
            // GroupQueryAttention cannot take left padding: run the rows one by one (same results, less throughput).
            var results = new List<GenerationResult>(rows.Count);
            for (int i = 0; i < rows.Count; i++)
            {
                int row = i;
                results.Add(RunRows([rows[i]], options, onPiece is null ? null : p => onPiece(p with { Row = row }), ct, callStart)[0]);
            }
            return results;
        }
        int hidden = HiddenSize ?? 0;
        int header = rows.Max(r => r.Steering.HeaderLength);
        using var loop = new DecodeLoop(_session, Signature, Tokenizer, rows, options, _eos, _padId, _boundDecode, _cacheHeadroom, _cacheDevice, _contextLength) { CallStart = callStart };
        return loop.Run(phase => SteeringFeed.Create(rows.Select(r => SteeringFeed.Resolve(r.Steering, phase, hidden)).ToList(), Signature, hidden), onPiece, ct, header);
    }

    private List<PreparedRow> PrepareBatch(IReadOnlyList<GenerationRequest> batch, GeneratorOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        options.Validate();
        if (batch.Count == 0) throw new OnnxSteerException(ErrorKind.Usage, "the batch is empty");
        var rows = new List<PreparedRow>(batch.Count);
        foreach (var request in batch)
        {
            var steering = request.Steering ?? Steering.None;
            Validate(steering);
            if (!steering.IsEmpty && HiddenSize is null)
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"{Directory}: the hidden size is unknown (no steering.json hidden_size)");
            if (request.PromptTokenIds is { } ids)
            {
                rows.Add(new PreparedRow([.. ids], null, steering));
                continue;
            }
            var messages = request.Messages ?? (request.Prompt is string p ? [new ChatTurn("user", p)]
                : throw new OnnxSteerException(ErrorKind.Usage, "a generation request needs PromptTokenIds, Messages or Prompt"));
            var (text, tokens) = Prepare(messages, options.UseChatTemplate, cancellationToken);
            rows.Add(new PreparedRow(tokens, text, steering));
        }
        foreach (var row in rows)
        {
            if (row.PromptIds.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, "a prompt encodes to no tokens");
            CheckFits(row.PromptIds.Length, options.MaxNewTokens);
        }
        return rows;
    }

    /// <summary>Refuses a prompt that leaves no room for one generated token within <see cref="ContextLength"/>
    /// (ONNX Runtime would otherwise fail, or read past the rotary cache, at that position).</summary>
    /// <exception cref="OnnxSteerException">InvalidData naming both lengths.</exception>
    public void CheckFits(int promptTokens, int maxNewTokens = 1)
    {
        if (_contextLength is not int ctx) return;
        if (promptTokens > ctx || (promptTokens == ctx && maxNewTokens > 0))
            throw new OnnxSteerException(ErrorKind.InvalidData,
                $"the prompt is {promptTokens} tokens; the model's context length is {ctx} ({ContextLengthSource}), which leaves no room to generate: shorten the prompt.");
    }

    /// <summary>The pad id is fed as a token; one outside the vocabulary would make the embedding lookup fail mid-run.</summary>
    private static void CheckPadId(ModelConfig config, InferenceSession session, string modelPath)
    {
        if (config.PadTokenId is not int pad || !session.OutputMetadata.TryGetValue("logits", out var logits)) return;
        var dims = logits.Dimensions;
        if (dims.Length > 0 && dims[^1] > 0 && pad >= dims[^1])
            throw new OnnxSteerException(ErrorKind.InvalidModel,
                $"{config.PadTokenSource}: pad_token_id {pad} is outside the vocabulary of {Path.GetFileName(modelPath)} ({dims[^1]} tokens).");
    }

    private (string Text, int[] Ids) Prepare(IReadOnlyList<ChatTurn> messages, bool useChatTemplate, CancellationToken cancellationToken) =>
        PromptEncoder.Encode(Tokenizer, ChatTemplate, messages, useChatTemplate, cancellationToken);

    private static string FindModelFile(Onnx.ModelFolder folder, (string Name, string Subject)? preferred)
    {
        if (preferred is { } p)
        {
            var path = folder.Resolve(p.Name, p.Subject);
            if (File.Exists(path)) return path;
            throw new OnnxSteerException(ErrorKind.NotFound, $"model file {path} ({p.Subject}) does not exist");
        }
        foreach (var name in new[] { "model.onnx", "decoder_model_merged.onnx", "model_merged.onnx" })
            if (folder.Find(name) is { } path) return path;
        var onnx = System.IO.Directory.GetFiles(folder.Root, "*.onnx");
        if (onnx.Length == 1) return folder.Resolve(Path.GetFileName(onnx[0]), "model file");
        throw new OnnxSteerException(ErrorKind.NotFound, onnx.Length == 0
            ? $"no .onnx model in {folder.Root}"
            : $"{folder.Root} holds {onnx.Length} .onnx files ({string.Join(", ", onnx.Select(Path.GetFileName))}); name one with RuntimeOptions.ModelFile");
    }

    private static SessionOptions CreateSessionOptions(RuntimeOptions options)
    {
        var so = new SessionOptions();
        try
        {
            SessionThreads.Apply(so, options.IntraOpThreads, options.IntraOpSpinning);
            // A patched model's optional steering inputs are initializers listed as graph inputs by design; ONNX Runtime
            // warns once per input ("will not be treated as constant"), which is noise, not a problem.
            so.LogSeverityLevel = OrtLoggingLevel.ORT_LOGGING_LEVEL_ERROR;
            switch (options.Provider)
            {
                case ExecutionProvider.Cpu:
                    break;
                case ExecutionProvider.Cuda:
                    RequireProvider("CUDAExecutionProvider", ExecutionProvider.Cuda, "Microsoft.ML.OnnxRuntime.Gpu");
                    so.AppendExecutionProvider_CUDA(options.DeviceId);
                    break;
                case ExecutionProvider.DirectML:
                    RequireProvider("DmlExecutionProvider", ExecutionProvider.DirectML, "Microsoft.ML.OnnxRuntime.DirectML");
                    // DirectML does not support memory patterns or parallel execution (ONNX Runtime's DirectML docs).
                    so.EnableMemoryPattern = false;
                    so.ExecutionMode = ExecutionMode.ORT_SEQUENTIAL;
                    so.AppendExecutionProvider_DML(options.DeviceId);
                    break;
            }
            options.ConfigureSession?.Invoke(so);
            return so;
        }
        catch (Exception e) when (e is OnnxRuntimeException or EntryPointNotFoundException or DllNotFoundException)
        {
            so.Dispose();
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable,
                $"execution provider {options.Provider} could not be started: {FirstLine(e.Message)}", e);
        }
        catch
        {
            so.Dispose();
            throw;
        }
    }

    /// <summary>The library builds on ONNX Runtime's managed API only; which providers exist depends on the native package
    /// the application references, so the error names that package.</summary>
    private static void RequireProvider(string name, ExecutionProvider provider, string package)
    {
        var available = OrtEnv.Instance().GetAvailableProviders();
        if (!available.Contains(name))
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable, ProviderMissingMessage(name, provider, package, available, OrtEnv.Instance().GetVersionString()));
    }

    internal static string ProviderMissingMessage(string name, ExecutionProvider provider, string package, IEnumerable<string> available, string ortVersion) =>
        $"execution provider {provider} ({name}) is not in the ONNX Runtime native library this application loaded " +
        $"(available: {string.Join(", ", available)}); add a PackageReference to {package} {ortVersion} to the application, " +
        "in place of Microsoft.ML.OnnxRuntime (with both, the CPU package's native library wins)";

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// <summary>Cancels the generations and extractions in flight, waits until they have left ONNX Runtime, then releases
    /// the session. Safe to call more than once and from several threads.</summary>
    public void Dispose()
    {
        if (BeginDispose()) _released.Task.GetAwaiter().GetResult();
    }

    /// <summary>As <see cref="Dispose"/>, waiting asynchronously for the calls in flight.</summary>
    public async ValueTask DisposeAsync()
    {
        if (BeginDispose()) await _released.Task.ConfigureAwait(false);
    }

    /// <summary>Marks the model disposed and cancels the calls in flight; releases the session now when none is. Returns
    /// whether the caller should wait for the release (false when it is inside one of this model's own calls, which
    /// could never finish while it waits).</summary>
    private bool BeginDispose()
    {
        bool releaseNow;
        lock (_gate)
        {
            if (!_disposed)
            {
                _disposed = true;
                releaseNow = _inFlight == 0;
            }
            else releaseNow = false;
        }
        _disposing.Cancel();
        if (releaseNow) Release();
        return t_inside?.Contains(this) != true;
    }

    private void Enter()
    {
        lock (_gate)
        {
            ObjectDisposedException.ThrowIf(_disposed, this);
            _inFlight++;
        }
    }

    private void Exit()
    {
        bool release;
        lock (_gate) release = --_inFlight == 0 && _disposed;
        if (release) Release();
    }

    private void Release()
    {
        try
        {
            // _disposing is left undisposed: a concurrent Dispose may still be cancelling it, and it holds no native handle.
            _session.Dispose();
        }
        finally
        {
            _released.TrySetResult();
        }
    }

    private void ThrowIfDisposed()
    {
        lock (_gate) ObjectDisposedException.ThrowIf(_disposed, this);
    }

    private ObjectDisposedException DisposedDuringCall() =>
        new(nameof(SteeredModel), $"the model {Directory} was disposed while this call was running");
}
