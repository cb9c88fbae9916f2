using OnnxSteer.Contract;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

namespace OnnxSteer.Runtime;

/// <summary>Which engine runs the decoder: OnnxSteer's own decode loop on ONNX Runtime, or ONNX Runtime GenAI.</summary>
public enum GenerationEngine
{
    /// <summary>OnnxSteer's decode loop on an ONNX Runtime session (<see cref="SteeredModel"/>): every layout.</summary>
    Ort,
    /// <summary>ONNX Runtime GenAI's Model / Generator (OnnxSteer.GenAI's GenAiSteeredModel): onnxruntime-genai folders
    /// (genai_config.json) patched with required steering inputs.</summary>
    GenAI,
    /// <summary>GenAI where it can load the folder and the OnnxSteer.GenAI engine is registered, else ORT.</summary>
    Auto,
}

/// <summary>A loaded model that generates with steering: the seam between the engines. <see cref="SteeredModel"/>
/// (engine <c>ort</c>) and OnnxSteer.GenAI's <c>GenAiSteeredModel</c> (engine <c>genai</c>) implement it, so the chat
/// client, the evaluation and the CLI run on either. Implementations are thread-safe for concurrent generations.</summary>
public interface ISteeredGenerator : IDisposable
{
    /// <summary>"ort" or "genai".</summary>
    string Engine { get; }
    /// <summary>The model folder.</summary>
    string Directory { get; }
    /// <summary>steering.json, or null for an unpatched model.</summary>
    SteeringManifest? Manifest { get; }
    /// <summary>The tokenizer (OnnxSteer's, for both engines: the same prompt gives the same ids).</summary>
    TextTokenizer Tokenizer { get; }
    /// <summary>The chat template.</summary>
    ChatTemplate ChatTemplate { get; }
    /// <summary>The execution provider.</summary>
    ExecutionProvider Provider { get; }
    /// <summary>The model's name: <c>_name_or_path</c> of config.json or <c>name_or_path</c> of tokenizer_config.json (what
    /// transformers records, e.g. "Qwen/Qwen2.5-0.5B-Instruct"), else the name of the folder it was patched from
    /// (steering.json), else the folder's name. <see cref="Chat.SteeredChatClient"/> reports it as ModelId.</summary>
    string ModelId { get; }
    /// <summary>Model family, if known.</summary>
    string? ModelType { get; }
    /// <summary>Hidden size (the length steering vectors must have), if known.</summary>
    int? HiddenSize { get; }
    /// <summary>Number of decoder layers, if known.</summary>
    int? NumLayers { get; }
    /// <summary>Layers that take steering inputs (empty for an unpatched model).</summary>
    IReadOnlyList<int> SteeredLayers { get; }
    /// <summary>Token ids that end a sequence.</summary>
    IReadOnlySet<int> EosTokenIds { get; }

    /// <summary>The most tokens a sequence may hold (prompt and generated), or null where the model states none;
    /// a prompt that does not fit is refused and generation stops there with finish reason "length".</summary>
    int? ContextLength { get; }

    /// <summary>The token ids a conversation becomes (through the chat template unless <paramref name="useChatTemplate"/> is false);
    /// <paramref name="cancellationToken"/> stops a slow template render.</summary>
    int[] EncodePrompt(IReadOnlyList<ChatTurn> messages, bool useChatTemplate = true, CancellationToken cancellationToken = default);

    /// <summary>Checks a steering against this model without running anything.</summary>
    /// <exception cref="OnnxSteerException">The steering cannot be applied to this model (or by this engine).</exception>
    void Validate(Steering steering);

    /// <summary>Generates a reply to one user message and returns it whole.</summary>
    GenerationResult Generate(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Generates a reply to a conversation and returns it whole.</summary>
    GenerationResult Generate(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Generates for a batch, each row with its own steering; <paramref name="onPiece"/> sees each token's text.</summary>
    IReadOnlyList<GenerationResult> Generate(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null,
        Action<GeneratedPiece>? onPiece = null, CancellationToken cancellationToken = default);

    /// <summary>Streams the reply to one user message.</summary>
    IAsyncEnumerable<GeneratedPiece> GenerateAsync(string prompt, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Streams the reply to a conversation.</summary>
    IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<ChatTurn> messages, Steering? steering = null, GeneratorOptions? options = null, CancellationToken cancellationToken = default);

    /// <summary>Streams a batch: pieces of all rows interleaved.</summary>
    IAsyncEnumerable<GeneratedPiece> GenerateAsync(IReadOnlyList<GenerationRequest> batch, GeneratorOptions? options = null, CancellationToken cancellationToken = default);
}

/// <summary>Loads a model folder on the engine <see cref="RuntimeOptions.Engine"/> asks for. The core library carries
/// only the <c>ort</c> engine; the <c>genai</c> engine lives in the OnnxSteer.GenAI assembly (so ONNX Runtime GenAI is
/// never forced on users who do not want it), which registers itself with <c>GenAiEngine.Register()</c>.</summary>
public static class SteeredGenerator
{
    private static volatile Func<string, RuntimeOptions, ISteeredGenerator>? _genAiLoader;
    private static volatile Func<string, string?>? _genAiRefusal;

    /// <summary>Registers the GenAI engine: <paramref name="loader"/> loads a folder, <paramref name="refusal"/> says why
    /// GenAI cannot run a folder (null when it can), which <see cref="GenerationEngine.Auto"/> uses to choose.</summary>
    public static void RegisterGenAI(Func<string, RuntimeOptions, ISteeredGenerator> loader, Func<string, string?> refusal)
    {
        _genAiRefusal = refusal ?? throw new ArgumentNullException(nameof(refusal));
        _genAiLoader = loader ?? throw new ArgumentNullException(nameof(loader));
    }

    /// <summary>Whether the GenAI engine is registered.</summary>
    public static bool GenAIAvailable => _genAiLoader is not null;

    /// <summary>The engine <paramref name="engine"/> resolves to for <paramref name="directory"/>: Auto picks GenAI when
    /// it is registered and can run the folder, else ORT.</summary>
    public static GenerationEngine Resolve(string directory, GenerationEngine engine) => engine switch
    {
        GenerationEngine.Auto => _genAiLoader is not null && _genAiRefusal is { } refuse && System.IO.Directory.Exists(directory) && refuse(directory) is null
            ? GenerationEngine.GenAI : GenerationEngine.Ort,
        _ => engine,
    };

    /// <summary>Loads <paramref name="directory"/> on the engine of <paramref name="options"/>.</summary>
    /// <exception cref="OnnxSteerException">What <see cref="SteeredModel.Load"/> refuses; for GenAI also a folder it cannot
    /// run (UnsupportedModel) or an engine that is not registered (ProviderUnavailable).</exception>
    public static ISteeredGenerator Load(string directory, RuntimeOptions? options = null)
    {
        options ??= new RuntimeOptions();
        switch (Resolve(directory, options.Engine))
        {
            case GenerationEngine.GenAI:
                var loader = _genAiLoader ?? throw new OnnxSteerException(ErrorKind.ProviderUnavailable,
                    "the genai engine is not in this program: reference OnnxSteer.GenAI and call OnnxSteer.GenAI.GenAiEngine.Register()");
                return loader(directory, options);
            default:
                return SteeredModel.Load(directory, options);
        }
    }
}
