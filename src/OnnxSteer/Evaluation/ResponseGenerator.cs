using System.Globalization;

namespace OnnxSteer.Evaluation;

/// <summary>How one vector is applied at one layer.</summary>
public enum SteerMode
{
    /// <summary>x' = x + weight · û.</summary>
    Add,
    /// <summary>x' = x + (z̄ − x·û) û, with z̄ stored in the vector file.</summary>
    Project,
    /// <summary>x' = x − (x·û) û.</summary>
    Ablate,
    /// <summary>Header steering: each answer-header position k of the prompt gets weight × its own mean difference u_k
    /// (<see cref="OnnxSteer.Runtime.Steering.AddHeader(string, int, float)"/>; the op's weight is that scale).</summary>
    Header,
}

/// <summary>One vector applied at one layer: the evaluation's description of steering, resolved into runtime
/// steering by the <see cref="IResponseGenerator"/>.</summary>
/// <param name="Vector">Vector name, as stored in the vector files.</param>
/// <param name="Layer">Decoder block whose output is steered (0-based).</param>
/// <param name="Mode">Add, project or ablate.</param>
/// <param name="Weight">The additive weight (only for <see cref="SteerMode.Add"/>).</param>
public sealed record SteerOp(string Vector, int Layer, SteerMode Mode, float Weight = 0)
{
    /// <summary>A short description: <c>add lowercase@3 w=4</c>, <c>project lowercase@3</c>.</summary>
    public override string ToString() => Mode switch
    {
        SteerMode.Add => $"add {Vector}@{Layer} w={Weight.ToString("0.###", CultureInfo.InvariantCulture)}",
        SteerMode.Header => $"header {Vector}@{Layer} {Weight.ToString("0.###", CultureInfo.InvariantCulture)}×‖u_k‖",
        _ => $"{Mode.ToString().ToLowerInvariant()} {Vector}@{Layer}",
    };
}

/// <summary>One generation the evaluation needs: the user prompt (before any chat template) and its steering.</summary>
public sealed record EvalRequest(string Prompt, IReadOnlyList<SteerOp> Steering)
{
    /// <summary>A key equal for requests that must give the same greedy output.</summary>
    internal string CacheKey => Steering.Count == 0 ? "\u0001" + Prompt : $"{SteeringKey(Steering)}\u0001{Prompt}";

    internal static string SteeringKey(IReadOnlyList<SteerOp> ops) => string.Join(";", ops.Select(o => o.ToString()).Order(StringComparer.Ordinal));
}

/// <summary>A generated response.</summary>
/// <param name="Text">The response text (special tokens removed).</param>
/// <param name="MeanLogProb">The model's own mean log-probability per generated token, when the generator knows it
/// (its exponent of the negative is the response's perplexity); null otherwise.</param>
public sealed record GeneratedResponse(string Text, double? MeanLogProb = null);

/// <summary>What the evaluation generates with. The real implementation wraps a patched model and its vector
/// files; tests use fakes. Generation must be deterministic (greedy) so that identical requests may be shared.</summary>
public interface IResponseGenerator
{
    /// <summary>How many requests <see cref="GenerateAsync"/> should receive at once.</summary>
    int BatchSize { get; }

    /// <summary>Number of decoder layers of the model (candidate layers for a sweep).</summary>
    int NumLayers { get; }

    /// <summary>Generates one response per request, in order. Requests in one batch may carry different steering.</summary>
    Task<IReadOnlyList<GeneratedResponse>> GenerateAsync(IReadOnlyList<EvalRequest> batch, CancellationToken cancellationToken = default);
}

/// <summary>What the sweep needs to know about the vectors: which exist, at which layers, and their scale.</summary>
public interface IVectorCatalog
{
    /// <summary>Whether a vector of this name exists (at any layer).</summary>
    bool Contains(string name);

    /// <summary>Layers the vector has a direction for.</summary>
    IReadOnlyList<int> Layers(string name);

    /// <summary>|u_L|, the norm of the mean difference at <paramref name="layer"/>: the natural unit for additive weights.</summary>
    float Norm(string name, int layer);

    /// <summary>Share of extraction pairs the direction separates at <paramref name="layer"/> (null when unknown).</summary>
    double? Separability(string name, int layer);
}
