using System.Diagnostics.CodeAnalysis;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxSteer.Contract;

namespace OnnxSteer.Runtime;

/// <summary>How one steering term changes the residual stream x after its layer (u is the unit direction).</summary>
public enum SteeringMode
{
    /// <summary>x' = x + weight·u.</summary>
    Add,
    /// <summary>x' = x + (target − x·u)·u: the component along u is set to the target (the vector's z̄ by default).</summary>
    Project,
    /// <summary>x' = x − (x·u)·u: the component along u is removed (projection to 0).</summary>
    Ablate,
}

/// <summary>Which token positions are steered. Prefill (the prompt) and decode (the generated tokens) are separate
/// runs, so each can be steered or not exactly.</summary>
public enum SteeringPositions
{
    /// <summary>Every position, prompt and generated (the paper's setting).</summary>
    All,
    /// <summary>Only the prompt positions (the prefill run); generated tokens run unsteered.</summary>
    Prompt,
    /// <summary>Only generated tokens as they are fed back (decode runs). The first new token comes from the
    /// unsteered prompt's last position.</summary>
    Generated,
}

/// <summary>A steering direction for one layer, as a vector file stores it.</summary>
/// <param name="Direction">The unit direction u (length = the model's hidden size).</param>
/// <param name="ZBar">The mean projection x·u over the examples that had the instruction (the paper's z̄): the
/// default target of <see cref="SteeringMode.Project"/>. Null when the file has none.</param>
/// <param name="Norm">The norm of the raw (unnormalised) difference vector, for reference and for weight defaults.</param>
public sealed record SteeringVector(float[] Direction, float? ZBar, float Norm)
{
    /// <summary>Makes a vector from a raw direction, normalising it to unit length (Norm keeps the raw length).</summary>
    public static SteeringVector FromRaw(float[] raw, float? zBar = null)
    {
        double sum = 0;
        foreach (var v in raw) sum += (double)v * v;
        var norm = Math.Sqrt(sum);
        if (!(norm > 0) || double.IsInfinity(norm)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"cannot normalise a vector of norm {norm}");
        return new SteeringVector(raw.Select(v => (float)(v / norm)).ToArray(), zBar, (float)norm);
    }
}

/// <summary>Where named steering vectors come from: a vector file (see <c>OnnxSteer.Vectors</c>) or memory.</summary>
public interface ISteeringVectorSource
{
    /// <summary>Finds the vector called <paramref name="name"/> for <paramref name="layer"/>.</summary>
    bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector);

    /// <summary>The layers the vector <paramref name="name"/> has, or null when the source cannot tell or has no such
    /// vector (used in error messages only).</summary>
    IReadOnlyCollection<int>? LayersOf(string name) => null;
}

/// <summary>An <see cref="ISteeringVectorSource"/> held in memory.</summary>
public sealed class InMemoryVectorSource : ISteeringVectorSource
{
    private readonly Dictionary<(string, int), SteeringVector> _vectors = new();

    /// <summary>Adds (or replaces) the vector <paramref name="name"/> at <paramref name="layer"/>; returns this for chaining.</summary>
    public InMemoryVectorSource Add(string name, int layer, SteeringVector vector)
    {
        _vectors[(name, layer)] = vector;
        return this;
    }

    /// <inheritdoc/>
    public bool TryGet(string name, int layer, [NotNullWhen(true)] out SteeringVector? vector) => _vectors.TryGetValue((name, layer), out vector);
}

/// <summary>One resolved term of a <see cref="Steering"/>.</summary>
/// <param name="Name">The vector's name (for messages).</param>
/// <param name="Layer">The decoder block after which the residual is changed (0-based).</param>
/// <param name="Mode">Add, project or ablate.</param>
/// <param name="Weight">The weight of an add term (unused otherwise).</param>
/// <param name="Target">The projection target (z̄ of the vector unless given; 0 for ablation).</param>
/// <param name="Vector">The vector.</param>
public sealed record SteeringTerm(string Name, int Layer, SteeringMode Mode, float Weight, float Target, SteeringVector Vector)
{
    /// <summary>The one prompt position this term steers, counted from the end of the prompt (1 = the last prompt token),
    /// or null for every position that <see cref="Steering.Positions"/> names. Set by <see cref="Steering.AddAtPromptPosition"/>
    /// and <see cref="Steering.AddHeader(string, int, float)"/> (additive terms only).</summary>
    public int? PromptPosition { get; init; }
}

/// <summary>An immutable description of how to steer one generation: terms (each a vector, a layer and a mode)
/// and the positions steered. Build it fluently:
/// <code>Steering.From(vectors).Project("format.lowercase", layer: 18).Add("conciseness", layer: 12, weight: 20)</code>
/// Several terms may share a layer: adds there sum; at most one projection or ablation per layer, because the
/// patched graph has one direction and one target per layer (two projections onto different directions do not
/// compose into one).</summary>
/// <remarks>Serialized to JSON (Microsoft.Extensions.AI's logging of ChatOptions, for one) as its terms' names, layers,
/// modes, weights and targets and its positions, never the vectors' floats.</remarks>
[JsonConverter(typeof(SteeringJsonConverter))]
public sealed class Steering
{
    private readonly ISteeringVectorSource? _source;

    private Steering(ISteeringVectorSource? source, IReadOnlyList<SteeringTerm> terms, SteeringPositions positions)
    {
        _source = source;
        Terms = terms;
        Positions = positions;
    }

    /// <summary>No steering.</summary>
    public static Steering None { get; } = new(null, [], SteeringPositions.All);

    /// <summary>Starts a steering whose named terms are looked up in <paramref name="vectors"/>.</summary>
    public static Steering From(ISteeringVectorSource vectors) => new(vectors ?? throw new ArgumentNullException(nameof(vectors)), [], SteeringPositions.All);

    /// <summary>The terms, in the order they were added.</summary>
    public IReadOnlyList<SteeringTerm> Terms { get; }

    /// <summary>Which positions are steered (default all).</summary>
    public SteeringPositions Positions { get; }

    /// <summary>Whether there is nothing to steer.</summary>
    public bool IsEmpty => Terms.Count == 0;

    /// <summary>Adds weight·u of the named vector after <paramref name="layer"/>.</summary>
    public Steering Add(string name, int layer, float weight) => Add(Lookup(name, layer), layer, weight, name);

    /// <summary>Adds weight·u of <paramref name="vector"/> after <paramref name="layer"/>.</summary>
    public Steering Add(SteeringVector vector, int layer, float weight, string? name = null)
    {
        if (!float.IsFinite(weight)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"weight of '{name ?? "vector"}' at layer {layer} is {weight}");
        return With(new SteeringTerm(name ?? "vector", layer, SteeringMode.Add, weight, 0, Checked(vector, name, layer)));
    }

    /// <summary>Adds weight·u of <paramref name="vector"/> after <paramref name="layer"/> at one prompt position only,
    /// <paramref name="fromEnd"/> tokens from the end of the prompt (1 = the last prompt token). The prompt then runs in
    /// pieces (the positions before, then each steered position on its own, the KV cache carried over), which needs a
    /// model with a KV cache and the OnnxSteer engine.</summary>
    public Steering AddAtPromptPosition(SteeringVector vector, int layer, float weight, int fromEnd, string? name = null)
    {
        // The position's range is checked by With, for terms built elsewhere too.
        if (!float.IsFinite(weight)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"weight of '{name ?? "vector"}' at layer {layer} is {weight}");
        return With(new SteeringTerm(name ?? "vector", layer, SteeringMode.Add, weight, 0, Checked(vector, name, layer)) { PromptPosition = fromEnd });
    }

    /// <summary>Header steering: adds <paramref name="scale"/> × the mean difference of each answer-header position at that
    /// position. The vector <paramref name="name"/> is the last prompt token's (position 1, the paper's vector) and
    /// <see cref="HeaderVectors.Name"/>(name, k) position k's, as <c>extract --header-positions</c> writes them; every
    /// position the source holds for <paramref name="layer"/> is used. Only the prompt's last positions are steered (the
    /// chat template's "assistant" header, the same tokens in every prompt); the user's text and the answer run unsteered.</summary>
    public Steering AddHeader(string name, int layer, float scale) =>
        AddHeader(_source ?? throw new InvalidOperationException("named vectors need a source: start with Steering.From(vectors)"), name, layer, scale);

    /// <summary>As <see cref="AddHeader(string, int, float)"/>, with the vectors looked up in <paramref name="source"/>.</summary>
    public Steering AddHeader(ISteeringVectorSource source, string name, int layer, float scale)
    {
        ArgumentNullException.ThrowIfNull(source);
        if (!float.IsFinite(scale)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"header scale of '{name}' at layer {layer} is {scale}");
        var last = Lookup(source, name, layer);
        var steering = AddAtPromptPosition(last, layer, scale * last.Norm, 1, name);
        for (int k = 2; k <= HeaderVectors.MaxPositions && source.TryGet(HeaderVectors.Name(name, k), layer, out var v); k++)
            steering = steering.AddAtPromptPosition(v, layer, scale * v.Norm, k, HeaderVectors.Name(name, k));
        return steering;
    }

    /// <summary>How many prompt positions from the end this steering steers one by one (0 when no term is scoped to a position).</summary>
    public int HeaderLength => Terms.Count == 0 ? 0 : Terms.Max(t => t.PromptPosition ?? 0);

    /// <summary>Sets the component along the named vector to <paramref name="target"/>, or to its stored z̄ when null.</summary>
    public Steering Project(string name, int layer, float? target = null) => Project(Lookup(name, layer), layer, target, name);

    /// <summary>Sets the component along <paramref name="vector"/> to <paramref name="target"/>, or to its z̄ when null.</summary>
    public Steering Project(SteeringVector vector, int layer, float? target = null, string? name = null)
    {
        var t = target ?? vector.ZBar ?? throw new OnnxSteerException(ErrorKind.InvalidVector,
            $"'{name ?? "vector"}' at layer {layer} has no stored z_bar: give a projection target (=project:TARGET)");
        if (!float.IsFinite(t)) throw new OnnxSteerException(ErrorKind.InvalidVector, $"projection target of '{name ?? "vector"}' at layer {layer} is {t}");
        return With(new SteeringTerm(name ?? "vector", layer, SteeringMode.Project, 0, t, Checked(vector, name, layer)));
    }

    /// <summary>Removes the component along the named vector (projection to 0).</summary>
    public Steering Ablate(string name, int layer) => Ablate(Lookup(name, layer), layer, name);

    /// <summary>Removes the component along <paramref name="vector"/>.</summary>
    public Steering Ablate(SteeringVector vector, int layer, string? name = null) =>
        With(new SteeringTerm(name ?? "vector", layer, SteeringMode.Ablate, 0, 0, Checked(vector, name, layer)));

    /// <summary>Returns this steering applied at other positions.</summary>
    public Steering At(SteeringPositions positions) => new(_source, Terms, positions);

    /// <summary>Adds a term built elsewhere (e.g. from a CLI spec).</summary>
    public Steering With(SteeringTerm term)
    {
        ArgumentNullException.ThrowIfNull(term);
        if (term.Layer < 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"layer {term.Layer} of '{term.Name}' is negative");
        if (term.PromptPosition is int k && (term.Mode != SteeringMode.Add || k < 1 || k > HeaderVectors.MaxPositions))
            throw new OnnxSteerException(ErrorKind.Usage,
                $"'{term.Name}' at layer {term.Layer}: only additive terms may steer one prompt position, counted 1-{HeaderVectors.MaxPositions} from the end (got {term.Mode.ToString().ToLowerInvariant()} at {k})");
        if (term.Mode != SteeringMode.Add)
            foreach (var other in Terms)
                if (other.Layer == term.Layer && other.Mode != SteeringMode.Add)
                    throw new OnnxSteerException(ErrorKind.Usage,
                        $"two projections at layer {term.Layer} ('{other.Name}' {other.Mode.ToString().ToLowerInvariant()} and '{term.Name}' {term.Mode.ToString().ToLowerInvariant()}): " +
                        "the patched model has one direction and target per layer; put one of them at another layer");
        return new Steering(_source, [.. Terms, term], Positions);
    }

    /// <summary>A short description, e.g. "project format.lowercase@18, add conciseness@12 x20 (positions all)".</summary>
    public override string ToString() => IsEmpty ? "none" :
        string.Join(", ", Terms.Select(t => t.Mode switch
        {
            SteeringMode.Add => $"add {t.Name}@{t.Layer} x{t.Weight:g}" + (t.PromptPosition is int k ? $" at prompt position -{k}" : ""),
            SteeringMode.Project => $"project {t.Name}@{t.Layer} to {t.Target:g}",
            _ => $"ablate {t.Name}@{t.Layer}",
        })) + $" (positions {Positions.ToString().ToLowerInvariant()})";

    private SteeringVector Lookup(string name, int layer) =>
        Lookup(_source ?? throw new InvalidOperationException("named vectors need a source: start with Steering.From(vectors)"), name, layer);

    private static SteeringVector Lookup(ISteeringVectorSource source, string name, int layer)
    {
        if (source.TryGet(name, layer, out var v)) return v;
        // Name the layers the vector does have when the source can tell (a vector extracted from a model has all of them),
        // so "layer 40" on a 6-layer model reads as such.
        var known = source.LayersOf(name);
        throw new OnnxSteerException(ErrorKind.InvalidVector, known is null
            ? $"no vector '{name}' for layer {layer} in the vector source"
            : $"vector '{name}' has no layer {layer}; it has layers {OnnxSteer.Contract.LayerSelection.Format(known)}");
    }

    private static SteeringVector Checked(SteeringVector vector, string? name, int layer)
    {
        ArgumentNullException.ThrowIfNull(vector);
        var d = vector.Direction;
        if (d is null || d.Length == 0) throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{name ?? "vector"}' at layer {layer} is empty");
        for (int i = 0; i < d.Length; i++)
            if (!float.IsFinite(d[i]))
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"'{name ?? "vector"}' at layer {layer} holds {d[i]} at index {i}");
        return vector;
    }
}

/// <summary>Writes a <see cref="Steering"/> as a compact description. A steering holds whole vectors (hidden-size floats per
/// term); a log line of every float on every request is noise, so only what identifies the steering is written. Reading
/// one back is refused: the vectors are not in the JSON.</summary>
internal sealed class SteeringJsonConverter : JsonConverter<Steering>
{
    public override Steering Read(ref Utf8JsonReader reader, Type typeToConvert, JsonSerializerOptions options) =>
        throw new JsonException("a Steering is written to JSON as a description without its vectors and cannot be read back; build it with Steering.From");

    public override void Write(Utf8JsonWriter writer, Steering value, JsonSerializerOptions options)
    {
        writer.WriteStartObject();
        writer.WriteString("positions", value.Positions.ToString().ToLowerInvariant());
        writer.WriteStartArray("terms");
        foreach (var t in value.Terms)
        {
            writer.WriteStartObject();
            writer.WriteString("name", t.Name);
            writer.WriteNumber("layer", t.Layer);
            writer.WriteString("mode", t.Mode.ToString().ToLowerInvariant());
            if (t.Mode == SteeringMode.Add) writer.WriteNumber("weight", t.Weight);
            if (t.PromptPosition is int k) writer.WriteNumber("prompt_position", k);
            if (t.Mode == SteeringMode.Project) writer.WriteNumber("target", t.Target);
            writer.WriteEndObject();
        }
        writer.WriteEndArray();
        writer.WriteEndObject();
    }
}
