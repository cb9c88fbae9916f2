using System.Diagnostics.CodeAnalysis;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Evaluation;

/// <summary>A patched model and its vector files opened for evaluation: the real <see cref="IResponseGenerator"/>
/// (greedy decoding on an <see cref="ISteeredGenerator"/>, either engine) and <see cref="IVectorCatalog"/>.</summary>
public sealed class ModelBackend : IDisposable
{
    private readonly ISteeredGenerator model;

    private ModelBackend(ISteeredGenerator model, VectorStore vectors, EvalGenerationOptions options, IReadOnlyList<string> warnings)
    {
        this.model = model;
        Vectors = vectors;
        Generator = new SteeredModelGenerator(model, vectors, options);
        Warnings = warnings;
    }

    /// <summary>Generates greedy responses with per-request steering.</summary>
    public IResponseGenerator Generator { get; }

    /// <summary>The vectors found in the vector file or folder.</summary>
    public IVectorCatalog Vectors { get; }

    /// <summary>The vector files behind <see cref="Vectors"/>.</summary>
    public VectorFileSource VectorFiles => ((VectorStore)Vectors).Source;

    /// <summary>Warnings about the vectors (e.g. computed on another model type: expected for the transfer experiment).</summary>
    public IReadOnlyList<string> Warnings { get; }

    /// <summary>The loaded model.</summary>
    public ISteeredGenerator Model => model;

    /// <summary>Opens a patched model folder and a vector file (safetensors or GGUF) or a folder of <c>.safetensors</c> files.</summary>
    /// <exception cref="OnnxSteerException">The model or vectors cannot be loaded, the model is not patched, or the vectors
    /// do not fit it (hidden size, layers).</exception>
    public static ModelBackend Open(string modelDirectory, string vectorsPath, EvalGenerationOptions options)
    {
        var store = VectorStore.Load(vectorsPath);
        var model = SteeredGenerator.Load(modelDirectory, new RuntimeOptions { IntraOpThreads = options.Threads, Engine = options.Engine });
        try
        {
            if (model.Manifest is null)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{modelDirectory}' is not a patched model (no steering.json); patch it first.");
            var warnings = store.CheckAgainst(InstructionVectorFile.FingerprintOf(model.Manifest));
            return new ModelBackend(model, store, options, warnings);
        }
        catch
        {
            model.Dispose();
            throw;
        }
    }

    /// <inheritdoc/>
    public void Dispose() => model.Dispose();
}

/// <summary>The evaluation's view (<see cref="IVectorCatalog"/>) of the vectors loaded by <see cref="VectorFileSource"/>.</summary>
internal sealed class VectorStore(VectorFileSource source) : IVectorCatalog, ISteeringVectorSource
{
    public static VectorStore Load(string path) => new(VectorFileSource.Load(path));

    public VectorFileSource Source => source;

    public IReadOnlyList<string> CheckAgainst(ModelFingerprint model) => source.CheckAgainst(model);

    public bool Contains(string name) => source.Names.Contains(name);

    public IReadOnlyList<int> Layers(string name) => [.. source.Get(name).Layers.Keys.Order()];

    public float Norm(string name, int layer) => (float)source.Get(name).Layer(layer).Norm;

    public double? Separability(string name, int layer) => source.Get(name).Layers.TryGetValue(layer, out var l) ? l.Separability : null;

    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector) => source.TryGet(name, layer, out vector);
}

/// <summary>Greedy generation on an <see cref="ISteeredGenerator"/>, one batch per call, each row with its own steering.</summary>
internal sealed class SteeredModelGenerator(ISteeredGenerator model, ISteeringVectorSource vectors, EvalGenerationOptions options) : IResponseGenerator
{
    private readonly GeneratorOptions generatorOptions = new()
    {
        MaxNewTokens = options.MaxNewTokens,
        Temperature = 0, // greedy: identical requests give identical responses, which the evaluation relies on
        UseChatTemplate = options.UseChatTemplate,
    };

    public int BatchSize => options.BatchSize;

    public int NumLayers => model.NumLayers ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"the number of layers of '{model.Directory}' is unknown.");

    public Task<IReadOnlyList<GeneratedResponse>> GenerateAsync(IReadOnlyList<EvalRequest> batch, CancellationToken cancellationToken = default)
    {
        var requests = batch.Select(r => GenerationRequest.FromPrompt(r.Prompt, ToSteering(r.Steering))).ToList();
        var results = model.Generate(requests, generatorOptions, null, cancellationToken);
        return Task.FromResult<IReadOnlyList<GeneratedResponse>>([.. results.Select(r => new GeneratedResponse(r.Text))]);
    }

    private Steering? ToSteering(IReadOnlyList<SteerOp> ops)
    {
        if (ops.Count == 0) return null;
        var steering = Steering.From(vectors);
        foreach (var op in ops)
            steering = op.Mode switch
            {
                SteerMode.Add => steering.Add(op.Vector, op.Layer, op.Weight),
                SteerMode.Project => steering.Project(op.Vector, op.Layer),
                SteerMode.Header => steering.AddHeader(op.Vector, op.Layer, op.Weight),
                _ => steering.Ablate(op.Vector, op.Layer),
            };
        return steering;
    }
}
