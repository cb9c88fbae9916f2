namespace OnnxSteer.Evaluation;

/// <summary>A patched model and its vector files opened for evaluation: the real <see cref="IResponseGenerator"/>
/// and <see cref="IVectorCatalog"/>.</summary>
public sealed class ModelBackend : IDisposable
{
    private ModelBackend(IResponseGenerator generator, IVectorCatalog vectors, IDisposable? owned)
    {
        Generator = generator;
        Vectors = vectors;
        this.owned = owned;
    }

    private readonly IDisposable? owned;

    /// <summary>Generates greedy responses with per-request steering.</summary>
    public IResponseGenerator Generator { get; }

    /// <summary>The vectors found in the vector file or folder.</summary>
    public IVectorCatalog Vectors { get; }

    /// <summary>Opens a patched model folder and a vector file or folder of vector files.</summary>
    /// <exception cref="OnnxSteerException">The model or vectors cannot be loaded.</exception>
    public static ModelBackend Open(string modelDirectory, string vectorsPath, EvalGenerationOptions options) =>
        throw new OnnxSteerException(ErrorKind.UnsupportedModel, "steered generation is not available in this build yet (the runtime has not landed).");

    /// <inheritdoc/>
    public void Dispose() => owned?.Dispose();
}
