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
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{modelDirectory}' is not a patched model (no steering.json); run onnxsteer patch first.");
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

/// <summary>Every vector of a vector file or a folder of vector files, by name: what the evaluation looks names up in.</summary>
internal sealed class VectorStore : IVectorCatalog, ISteeringVectorSource
{
    private readonly Dictionary<string, InstructionVector> vectors = new(StringComparer.Ordinal);
    private readonly List<(InstructionVectorFile File, string Path)> files = [];

    public static VectorStore Load(string path)
    {
        var store = new VectorStore();
        if (Directory.Exists(path))
        {
            var found = Directory.GetFiles(path, "*.safetensors").Concat(Directory.GetFiles(path, "*.gguf")).Order(StringComparer.Ordinal).ToList();
            if (found.Count == 0) throw new OnnxSteerException(ErrorKind.NotFound, $"vector folder '{path}' holds no .safetensors or .gguf file.");
            foreach (var f in found) store.Add(f);
        }
        else if (File.Exists(path)) store.Add(path);
        else throw new OnnxSteerException(ErrorKind.NotFound, $"vectors '{path}' do not exist.");
        return store;
    }

    private void Add(string path)
    {
        var file = InstructionVectorFile.Load(path);
        files.Add((file, path));
        foreach (var v in file.Vectors)
            if (!vectors.TryAdd(v.Name, v))
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"two vectors are named '{v.Name}' (the second in '{path}'); names must be unique.");
    }

    public IReadOnlyList<string> CheckAgainst(ModelFingerprint model)
    {
        var warnings = new List<string>();
        foreach (var (file, path) in files)
            warnings.AddRange(file.Warnings.Concat(file.CheckAgainst(model)).Select(w => $"{Path.GetFileName(path)}: {w}"));
        return [.. warnings.Distinct()];
    }

    public bool Contains(string name) => vectors.ContainsKey(name);

    public IReadOnlyList<int> Layers(string name) => [.. Get(name).Layers.Keys.Order()];

    public float Norm(string name, int layer) => (float)Get(name).Layer(layer).Norm;

    public double? Separability(string name, int layer) => Get(name).Layers.TryGetValue(layer, out var l) ? l.Separability : null;

    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector)
    {
        vector = null;
        if (!vectors.TryGetValue(name, out var v) || !v.Layers.TryGetValue(layer, out var l)) return false;
        vector = new SteeringVector(l.Direction, l.ZBar is { } z ? (float)z : null, (float)l.Norm);
        return true;
    }

    private InstructionVector Get(string name) => vectors.TryGetValue(name, out var v) ? v
        : throw new OnnxSteerException(ErrorKind.InvalidVector, $"no vector named '{name}'; the vectors are {string.Join(", ", vectors.Keys.Order(StringComparer.Ordinal))}.");
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
                _ => steering.Ablate(op.Vector, op.Layer),
            };
        return steering;
    }
}
