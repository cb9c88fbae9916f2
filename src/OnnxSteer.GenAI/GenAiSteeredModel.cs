using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json.Nodes;
using System.Threading.Channels;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

namespace OnnxSteer.GenAI;

/// <summary>The <c>genai</c> engine: a GenAI-ready folder (onnxruntime-genai layout with genai_config.json, patched with
/// <c>--for genai</c>, or unpatched) generating through ONNX Runtime GenAI's <see cref="Model"/> / <see cref="Generator"/>,
/// with every steering input fed through <see cref="Generator.SetModelInput"/>. Prompts go through OnnxSteer's tokenizer
/// and chat template (so both engines see the same ids); GenAI runs the model, the KV cache and the search.</summary>
/// <remarks>What differs from the <c>ort</c> engine: sampling (temperature &gt; 0) uses GenAI's sampler, so sampled ids
/// differ from the ort engine's for the same seed (greedy ids are the same); <see cref="GeneratorOptions.ComputeLogProbs"/>
/// is refused; positions prompt/generated and header steering run on the CPU provider only (see <see cref="GenAiSteeringFeed.PromptDone"/>;
/// a header-steered prompt is appended in pieces, one row at a time);
/// a generation stops at genai_config's context_length.</remarks>
public sealed class GenAiSteeredModel : ISteeredGenerator
{
    private readonly Model _model;
    private readonly GenAiSteeringInputs? _inputs;
    private readonly HashSet<int> _eos;
    private readonly int _padId;
    private readonly int? _contextLength;
    private readonly int? _vocabSize;

    private GenAiSteeredModel(string directory, Model model, GenAiSteeringInputs? inputs, SteeringManifest? manifest, TextTokenizer tokenizer,
        ChatTemplate template, ExecutionProvider provider, JsonObject? genai)
    {
        Directory = directory; _model = model; _inputs = inputs; Manifest = manifest; Tokenizer = tokenizer; ChatTemplate = template;
        Provider = provider;
        var config = ModelConfig.Load(directory);
        (ModelType, HiddenSize, NumLayers) = config.Facts(manifest);
        ModelId = config.ModelId(directory, manifest);
        _eos = config.EosIds(tokenizer);
        // GenAI masks positions holding its pad_token_id, so padding must use exactly that id.
        _padId = Int(genai?["pad_token_id"]) ?? config.PadTokenId ?? 0;
        // The configs' limit (genai_config context_length, config.json max_position_embeddings: the smallest); GenAI
        // itself sizes the rotary cache from genai_config.
        _contextLength = config.ContextLength?.Tokens ?? Int(genai?["context_length"]);
        _vocabSize = Int(genai?["vocab_size"]);
    }

    /// <summary>"genai".</summary>
    public string Engine => "genai";
    /// <inheritdoc/>
    public int? ContextLength => _contextLength;
    /// <inheritdoc/>
    public string Directory { get; }
    /// <inheritdoc/>
    public SteeringManifest? Manifest { get; }
    /// <inheritdoc/>
    public TextTokenizer Tokenizer { get; }
    /// <inheritdoc/>
    public ChatTemplate ChatTemplate { get; }
    /// <inheritdoc/>
    public ExecutionProvider Provider { get; }
    /// <inheritdoc/>
    public string ModelId { get; }
    /// <inheritdoc/>
    public string? ModelType { get; }
    /// <inheritdoc/>
    public int? HiddenSize { get; }
    /// <inheritdoc/>
    public int? NumLayers { get; }
    /// <inheritdoc/>
    public IReadOnlyList<int> SteeredLayers => Manifest?.SteeredLayers ?? [];
    /// <inheritdoc/>
    public IReadOnlySet<int> EosTokenIds => _eos;
    /// <summary>GenAI's own model, for callers that want to drive a <see cref="Generator"/> themselves.</summary>
    public Model GenAIModel => _model;

    /// <summary>Loads a GenAI-ready folder on the provider of <paramref name="options"/> (CPU, CUDA or DirectML; the GenAI
    /// native package must match: Microsoft.ML.OnnxRuntimeGenAI, .Cuda or .DirectML).</summary>
    /// <exception cref="OnnxSteerException">Not a GenAI folder or patched with optional inputs (UnsupportedModel), GenAI
    /// cannot load it (InvalidModel), or the GenAI native library / provider is missing (ProviderUnavailable).</exception>
    public static GenAiSteeredModel Load(string directory, RuntimeOptions? options = null)
    {
        options ??= new RuntimeOptions();
        if (!System.IO.Directory.Exists(directory))
            throw new OnnxSteerException(ErrorKind.NotFound, $"model folder {directory} does not exist");
        directory = Path.GetFullPath(directory);
        if (GenAiEngine.Refusal(directory) is string why) throw new OnnxSteerException(ErrorKind.UnsupportedModel, why);
        var manifest = SteeringManifest.TryLoad(directory);
        var inputs = manifest is { SteeredLayers.Count: > 0 } ? GenAiSteeringInputs.Load(directory) : null;
        var tokenizer = TextTokenizer.Load(directory);
        var template = ChatTemplate.Load(directory, tokenizer);
        // Read through the folder's path rule and size bound; ModelConfig.Load has checked its values already.
        var genaiJson = new ModelFolder(directory).ReadJsonObject("genai_config.json", 16L << 20)?["model"] as JsonObject;

        Model model;
        try
        {
            using var config = new Config(directory);
            config.ClearProviders();
            switch (options.Provider)
            {
                case ExecutionProvider.Cuda: config.AppendProvider("cuda"); break;
                case ExecutionProvider.DirectML: config.AppendProvider("dml"); break;
            }
            if (options.IntraOpThreads is int threads)
                config.Overlay($$"""{ "model": { "decoder": { "session_options": { "intra_op_num_threads": {{threads}} } } } }""");
            model = new Model(config);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException or TypeInitializationException)
        {
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable,
                $"ONNX Runtime GenAI's native library is not in this build ({FirstLine(e.Message)}); build with the GenAI native package " +
                "(Microsoft.ML.OnnxRuntimeGenAI, .Cuda or .DirectML; see README, 'Deploying with ONNX Runtime GenAI')", e);
        }
        catch (OnnxRuntimeGenAIException e) when (options.Provider != ExecutionProvider.Cpu)
        {
            throw new OnnxSteerException(ErrorKind.ProviderUnavailable, $"ONNX Runtime GenAI could not start provider {options.Provider}: {FirstLine(e.Message)}", e);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"ONNX Runtime GenAI cannot load {directory}: {FirstLine(e.Message)}", e);
        }
        return new GenAiSteeredModel(directory, model, inputs, manifest, tokenizer, template, options.Provider, genaiJson);
    }

    /// <inheritdoc/>
    public int[] EncodePrompt(IReadOnlyList<ChatTurn> messages, bool useChatTemplate = true, CancellationToken cancellationToken = default) =>
        PromptEncoder.Encode(Tokenizer, ChatTemplate, messages, useChatTemplate, cancellationToken).Ids;

    /// <inheritdoc/>
    public void Validate(Steering steering)
    {
        ArgumentNullException.ThrowIfNull(steering);
        if (steering.IsEmpty) return;
        if (_inputs is null)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"{Directory} takes no steering inputs (no steering.json with steered layers); patch it first: onnxsteer patch <model> -o <out> --for genai");
        _inputs.Validate(steering);
        if (steering.Positions != SteeringPositions.All && Provider != ExecutionProvider.Cpu)
            throw new OnnxSteerException(ErrorKind.Usage,
                $"positions {steering.Positions.ToString().ToLowerInvariant()} on the genai engine run on the CPU provider only: GenAI 0.20 takes " +
                "SetModelInput only before the prompt, and on CUDA/DirectML it may hold a device copy of the inputs; use --engine ort or --positions all");
        if (steering.HeaderLength > 0 && Provider != ExecutionProvider.Cpu)
            throw new OnnxSteerException(ErrorKind.Usage,
                "header steering on the genai engine runs on the CPU provider only: the values change between the prompt's pieces in " +
                "buffers GenAI reads on the CPU, and on CUDA/DirectML it may hold a device copy; use --engine ort");
    }

    /// <inheritdoc/>
    public GenerationResult Generate(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        Generate([GenerationRequest.FromPrompt(prompt, steering)], options, null, cancellationToken)[0];

    /// <inheritdoc/>
    public GenerationResult Generate(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        Generate([new GenerationRequest { Messages = messages, Steering = steering }], options, null, cancellationToken)[0];

    /// <inheritdoc/>
    public IReadOnlyList<GenerationResult> Generate(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null,
        Action<GeneratedPiece>? onPiece = null, CancellationToken cancellationToken = default)
    {
        // Time to first token counts from here, prompt encoding included, as on the ort engine.
        long callStart = Stopwatch.GetTimestamp();
        options ??= new GeneratorOptions();
        var rows = Prepare(batch, options, cancellationToken);
        return Run(rows, options, onPiece, cancellationToken, callStart);
    }

    /// <inheritdoc/>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync([GenerationRequest.FromPrompt(prompt, steering)], options, cancellationToken);

    /// <inheritdoc/>
    public IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default) =>
        GenerateAsync([new GenerationRequest { Messages = messages, Steering = steering }], options, cancellationToken);

    /// <inheritdoc/>
    public async IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        long callStart = Stopwatch.GetTimestamp();
        options ??= new GeneratorOptions();
        var rows = Prepare(batch, options, cancellationToken);
        var channel = Channel.CreateUnbounded<GeneratedPiece>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var worker = Task.Run(() =>
        {
            try
            {
                Run(rows, options, p => channel.Writer.TryWrite(p), stop.Token, callStart);
                channel.Writer.TryComplete();
            }
            catch (Exception e)
            {
                channel.Writer.TryComplete(e);
            }
        }, CancellationToken.None);
        try
        {
            await foreach (var piece in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
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

    private sealed record Row(int[] Ids, string? Text, Steering Steering);

    private List<Row> Prepare(IReadOnlyList<GenerationRequest> batch, GeneratorOptions options, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(batch);
        ValidateOptions(options);
        if (batch.Count == 0) throw new OnnxSteerException(ErrorKind.Usage, "the batch is empty");
        var rows = new List<Row>(batch.Count);
        foreach (var request in batch)
        {
            var steering = request.Steering ?? Steering.None;
            Validate(steering);
            if (request.PromptTokenIds is { } ids) { rows.Add(new Row([.. ids], null, steering)); continue; }
            var messages = request.Messages ?? (request.Prompt is string p ? [new ChatTurn("user", p)]
                : throw new OnnxSteerException(ErrorKind.Usage, "a generation request needs PromptTokenIds, Messages or Prompt"));
            var (text, tokens) = PromptEncoder.Encode(Tokenizer, ChatTemplate, messages, options.UseChatTemplate, cancellationToken);
            rows.Add(new Row(tokens, text, steering));
        }
        if (rows.Any(r => r.Ids.Length == 0)) throw new OnnxSteerException(ErrorKind.Usage, "a prompt encodes to no tokens");
        return rows;
    }

    private static void ValidateOptions(GeneratorOptions options)
    {
        if (options.MaxNewTokens < 0) throw new OnnxSteerException(ErrorKind.Usage, $"max new tokens must be >= 0, got {options.MaxNewTokens}");
        if (options.Temperature < 0 || float.IsNaN(options.Temperature)) throw new OnnxSteerException(ErrorKind.Usage, $"temperature must be >= 0, got {options.Temperature}");
        if (options.TopK < 0) throw new OnnxSteerException(ErrorKind.Usage, $"top-k must be >= 0, got {options.TopK}");
        if (!(options.TopP > 0 && options.TopP <= 1)) throw new OnnxSteerException(ErrorKind.Usage, $"top-p must be in (0, 1], got {options.TopP}");
        if (options.ComputeLogProbs)
            throw new OnnxSteerException(ErrorKind.Usage, "log-probabilities are not computed on the genai engine (GenAI keeps the logits inside its search); use --engine ort");
    }

    private IReadOnlyList<GenerationResult> Run(List<Row> rows, GeneratorOptions options, Action<GeneratedPiece>? onPiece, CancellationToken ct,
        long callStart)
    {
        // Header steering appends the prompt in pieces; GenAI's continued appends are run one row at a time.
        bool header = rows.Any(r => r.Steering.HeaderLength > 0);
        if (rows.Count == 1 || (!header && rows.Select(r => r.Ids.Length).Distinct().Count() == 1)) return RunBatch(rows, options, onPiece, ct, callStart);
        if (header)
        {
            var alone = new GenerationResult[rows.Count];
            for (int i = 0; i < rows.Count; i++)
            {
                int row = i;
                alone[i] = RunBatch([rows[i]], options, onPiece is null ? null : p => onPiece(p with { Row = row }), ct, callStart)[0];
            }
            return alone;
        }
        // Rows of unequal length run as one batch per prompt length, without padding: GroupQueryAttention takes right
        // padding only, and on the real fp16 export GenAI's left-padded batch gave a padded row other greedy ids than
        // the same row alone (near-ties in fp16), while every row must get what it would get alone.
        var results = new GenerationResult[rows.Count];
        foreach (var group in rows.Select((r, i) => (Row: r, Index: i)).GroupBy(x => x.Row.Ids.Length))
        {
            var members = group.ToList();
            // Each length group's first token comes when its own batch gets there, as for the ort engine's row-by-row runs.
            var part = RunBatch([.. members.Select(m => m.Row)], options,
                onPiece is null ? null : p => onPiece(p with { Row = members[p.Row].Index }), ct, callStart);
            for (int k = 0; k < members.Count; k++) results[members[k].Index] = part[k];
        }
        return results;
    }

    private List<GenerationResult> RunBatch(List<Row> rows, GeneratorOptions options, Action<GeneratedPiece>? onPiece, CancellationToken ct,
        long callStart)
    {
        int batch = rows.Count;
        int promptLength = rows.Max(r => r.Ids.Length);
        var eos = new HashSet<int>(_eos);
        eos.UnionWith(options.ExtraEosTokenIds);
        var texts = rows.Select(_ => new RowText(Tokenizer.CreateStreamingDecoder(), options.StopStrings, options.MaxNewTokens)).ToArray();
        if (options.MaxNewTokens == 0) return Results(rows, texts, default, default, 0, callStart, 0);
        ct.ThrowIfCancellationRequested();
        int maxLength = promptLength + options.MaxNewTokens;
        if (_contextLength is int context) maxLength = Math.Min(maxLength, context);
        if (maxLength <= promptLength)
            throw new OnnxSteerException(ErrorKind.Usage, $"the prompt ({promptLength} tokens) fills the model's context_length ({_contextLength})");

        TimeSpan prefillTime = default, decodeTime = default;
        int decodeSteps = 0;
        long firstToken = 0;
        try
        {
            using var search = new GeneratorParams(_model);
            search.SetSearchOption("max_length", maxLength);
            if (batch > 1) search.SetSearchOption("batch_size", batch);
            bool sample = options.Temperature > 0;
            search.SetSearchOption("do_sample", sample);
            if (sample)
            {
                search.SetSearchOption("temperature", options.Temperature);
                // OnnxSteer's top-k 0 means no limit; GenAI's default is 50.
                search.SetSearchOption("top_k", options.TopK > 0 ? options.TopK : _vocabSize ?? int.MaxValue);
                search.SetSearchOption("top_p", options.TopP);
                search.SetSearchOption("random_seed", options.Seed);
            }
            using var generator = new Generator(_model, search);
            using var feed = _inputs?.Create([.. rows.Select(r => r.Steering)]);
            feed?.SetOn(generator);

            // Left padding with GenAI's pad id: GenAI derives the attention mask from it.
            var flat = new int[batch * promptLength];
            for (int b = 0; b < batch; b++)
            {
                int pad = promptLength - rows[b].Ids.Length;
                flat.AsSpan(b * promptLength, pad).Fill(_padId);
                rows[b].Ids.CopyTo(flat, b * promptLength + pad);
            }
            long start = Stopwatch.GetTimestamp();
            int header = feed?.HeaderLength ?? 0;
            if (header == 0) generator.AppendTokens(flat);
            else
            {
                // Header steering (one row): the prompt up to the header, then each header position with its own values,
                // written in place in the buffers GenAI reads at every run.
                if (promptLength <= header)
                    throw new OnnxSteerException(ErrorKind.InvalidData,
                        $"the prompt has {promptLength} tokens; steering its last {header} positions one by one needs more");
                generator.AppendTokens(flat.AsSpan(0, promptLength - header));
                for (int k = header; k >= 1; k--)
                {
                    feed!.SwitchTo(SteeringPhase.AtPromptPosition(k));
                    generator.AppendTokens(flat.AsSpan(promptLength - k, 1));
                }
            }
            feed?.PromptDone();
            bool first = true;
            long decodeStart = 0;
            while (!texts.All(t => t.Done))
            {
                ct.ThrowIfCancellationRequested();
                if (generator.IsDone()) break;
                // The first call samples from the prompt's logits; every later one runs the model on the last tokens.
                generator.GenerateNextToken();
                var next = generator.GetNextTokens();
                for (int b = 0; b < batch; b++)
                    if (!texts[b].Done) texts[b].Add(b, next[b], eos.Contains(next[b]), onPiece);
                if (first)
                {
                    first = false;
                    firstToken = Stopwatch.GetTimestamp();
                    prefillTime = Stopwatch.GetElapsedTime(start, firstToken);
                    decodeStart = firstToken;
                }
                else decodeSteps++;
            }
            if (!first) decodeTime = Stopwatch.GetElapsedTime(decodeStart);
            // The context ran out before MaxNewTokens: those rows end for length.
            for (int b = 0; b < batch; b++) if (!texts[b].Done) texts[b].Finish(b, onPiece);
        }
        catch (OnnxRuntimeGenAIException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"ONNX Runtime GenAI failed on {Directory}: {FirstLine(e.Message)}", e);
        }
        return Results(rows, texts, prefillTime, decodeTime, decodeSteps, callStart, firstToken);
    }

    private static List<GenerationResult> Results(List<Row> rows, RowText[] texts, TimeSpan prefill, TimeSpan decode, int steps,
        long callStart, long firstToken) =>
        [.. rows.Select((r, b) => new GenerationResult
        {
            PromptText = r.Text,
            PromptTokenIds = r.Ids,
            TokenIds = [.. texts[b].Tokens],
            Text = texts[b].Text.ToString(),
            FinishReason = texts[b].Reason,
            PrefillTime = prefill,
            DecodeTime = decode,
            DecodeSteps = steps,
            TimeToFirstToken = firstToken == 0 ? TimeSpan.Zero : Stopwatch.GetElapsedTime(callStart, firstToken),
            FirstTokenTimestamp = firstToken,
        })];

    private static int? Int(JsonNode? n) => n is JsonValue v && v.TryGetValue<int>(out var i) ? i : null;

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// <summary>Releases GenAI's model.</summary>
    public void Dispose() => _model.Dispose();
}

/// <summary>The text of one generated row: streaming decode, stop strings (cut, never returned), and the tail held back
/// while it may still become a stop string, so streamed pieces never show a stop string's start.</summary>
internal sealed class RowText(StreamingDecoder decoder, IReadOnlyList<string> stops, int maxNewTokens)
{
    private readonly int _longest = stops.Select(s => s.Length).DefaultIfEmpty(0).Max();
    private int _emitted;

    public List<int> Tokens { get; } = [];
    public StringBuilder Text { get; } = new();
    public bool Done { get; private set; }
    public FinishReason Reason { get; private set; } = FinishReason.Length;

    public void Add(int row, int token, bool isEos, Action<GeneratedPiece>? onPiece)
    {
        Tokens.Add(token);
        int before = Text.Length;
        if (isEos)
        {
            Done = true; Reason = FinishReason.EndOfSequence;
            decoder.FlushTo(Text);
            Emit(row, token, before, final: true, onPiece);
            return;
        }
        decoder.AppendTo(token, Text);
        bool last = Tokens.Count >= maxNewTokens;
        if (last) { Done = true; Reason = FinishReason.Length; decoder.FlushTo(Text); }
        Emit(row, token, before, last, onPiece);
    }

    public void Finish(int row, Action<GeneratedPiece>? onPiece)
    {
        int before = Text.Length;
        decoder.FlushTo(Text);
        Done = true; Reason = FinishReason.Length;
        Emit(row, Tokens.Count > 0 ? Tokens[^1] : 0, before, final: true, onPiece);
    }

    private void Emit(int row, int token, int before, bool final, Action<GeneratedPiece>? onPiece)
    {
        int safe = Text.Length;
        if (_longest > 0)
        {
            // A stop ending in the new text starts at or after before - longest + 1.
            int from = Math.Max(0, before - _longest + 1);
            var window = Text.ToString(from, Text.Length - from);
            int cut = -1;
            foreach (var stop in stops)
            {
                if (stop.Length == 0) continue;
                int at = window.IndexOf(stop, StringComparison.Ordinal);
                if (at >= 0 && (cut < 0 || from + at < cut)) cut = from + at;
            }
            if (cut >= 0)
            {
                Text.Length = cut;
                Done = true; Reason = FinishReason.StopString;
                safe = cut;
            }
            else if (!final)
            {
                int hold = 0;
                foreach (var stop in stops)
                    for (int k = Math.Min(stop.Length - 1, window.Length); k > hold; k--)
                        if (window.AsSpan(window.Length - k).SequenceEqual(stop.AsSpan(0, k))) { hold = k; break; }
                safe = Text.Length - hold;
            }
        }
        onPiece?.Invoke(new GeneratedPiece(row, token, safe > _emitted ? Text.ToString(_emitted, safe - _emitted) : string.Empty));
        _emitted = Math.Max(_emitted, safe);
    }
}
