using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;

namespace OnnxSteer.GenAI;

/// <summary>The steering inputs of a folder patched for ONNX Runtime GenAI (<c>onnxsteer patch --for genai</c>), read
/// from its steering.json: what an app that already drives its own GenAI <see cref="Generator"/> needs to steer it.</summary>
/// <example><code>
/// var steeringInputs = GenAiSteeringInputs.Load(modelDir);                // once per model
/// using var fed = steeringInputs.Apply(generator, steering);              // per generator, before AppendTokens
/// generator.AppendTokens(promptIds);
/// fed.PromptDone();                                                       // only matters for positions prompt/generated
/// while (!generator.IsDone()) generator.GenerateNextToken();
/// </code></example>
public sealed class GenAiSteeringInputs
{
    private GenAiSteeringInputs(string directory, SteeringManifest manifest, ElementType type)
    {
        Directory = directory; Manifest = manifest; ElementType = type;
    }

    /// <summary>The model folder.</summary>
    public string Directory { get; }
    /// <summary>Its steering.json.</summary>
    public SteeringManifest Manifest { get; }
    /// <summary>The dtype of every steering input (the residual stream's: float32 or float16).</summary>
    public ElementType ElementType { get; }
    /// <summary>Layers that take steering inputs.</summary>
    public IReadOnlyList<int> SteeredLayers => Manifest.SteeredLayers;
    /// <summary>The hidden size (length of every vector).</summary>
    public int HiddenSize => Manifest.HiddenSize;

    /// <summary>Reads steering.json of <paramref name="modelDirectory"/> and checks that GenAI will honour the inputs.</summary>
    /// <exception cref="OnnxSteerException">No steering.json (UnsupportedModel); inputs with defaults, which GenAI silently
    /// ignores (UnsupportedModel, with the patch command that fixes it); a bfloat16 residual GenAI's tensors cannot carry.</exception>
    public static GenAiSteeringInputs Load(string modelDirectory)
    {
        var directory = Path.GetFullPath(modelDirectory);
        var manifest = SteeringManifest.TryLoad(directory)
            ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{directory} has no steering.json; patch it for GenAI first: onnxsteer patch <model> -o <out> --for genai");
        if (Refusal(directory, manifest) is string why) throw new OnnxSteerException(ErrorKind.UnsupportedModel, why);
        return new GenAiSteeringInputs(directory, manifest, manifest.ResidualDtype == "float16" ? ElementType.float16 : ElementType.float32);
    }

    /// <summary>Why GenAI cannot be steered through this folder's inputs, or null.</summary>
    internal static string? Refusal(string directory, SteeringManifest manifest)
    {
        if (manifest.SteeredLayers.Count > 0 && manifest.SteerInput != SteerInputMode.Required)
            return $"{directory} was patched with --steer-input optional: ONNX Runtime GenAI silently ignores SetModelInput for inputs " +
                   "that have defaults, so nothing would be steered; patch the original for GenAI: onnxsteer patch <original> -o <out> --for genai";
        if (manifest.ResidualDtype is not ("float32" or "float16"))
            return $"{directory} has {manifest.ResidualDtype} steering inputs; ONNX Runtime GenAI's tensors take float32 or float16";
        return null;
    }

    /// <summary>Feeds <paramref name="steering"/> (the same for every row) to <paramref name="generator"/>. Call it before the
    /// first <c>AppendTokens</c> and keep the result undisposed until the generator is done: GenAI reads the values from it.</summary>
    public GenAiSteeringFeed Apply(Generator generator, Steering? steering) => Apply(generator, [steering ?? Steering.None]);

    /// <summary>Feeds one steering per batch row (the generator's batch size is <c>rows.Count</c>).</summary>
    public GenAiSteeringFeed Apply(Generator generator, IReadOnlyList<Steering> rows)
    {
        ArgumentNullException.ThrowIfNull(generator);
        ArgumentNullException.ThrowIfNull(rows);
        // An app's own generator appends the prompt in one piece, which would feed the header positions' values nowhere.
        if (rows.Any(r => r is not null && r.HeaderLength > 0))
            throw new OnnxSteerException(ErrorKind.Usage,
                "header steering appends the prompt in pieces with other values for each header position; run it through GenAiSteeredModel, which does");
        var feed = Create(rows);
        try
        {
            feed.SetOn(generator);
            return feed;
        }
        catch
        {
            feed.Dispose();
            throw;
        }
    }

    /// <summary>Checks a steering against the folder: layers steered, vector lengths.</summary>
    public void Validate(Steering steering)
    {
        ArgumentNullException.ThrowIfNull(steering);
        foreach (var term in steering.Terms)
        {
            if (!Manifest.SteeredLayers.Contains(term.Layer))
                throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                    $"'{term.Name}' asks for layer {term.Layer}, which this model does not steer; steered layers: {string.Join(",", Manifest.SteeredLayers)}");
            if (term.Vector.Direction.Length != HiddenSize)
                throw new OnnxSteerException(ErrorKind.InvalidVector,
                    $"'{term.Name}' at layer {term.Layer} has {term.Vector.Direction.Length} values; the model's hidden size is {HiddenSize}");
            if (term.Mode != SteeringMode.Add && Manifest.InputsOf(term.Layer).Direction is null)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, SteeringFeed.AdditiveOnlyRefusal(term.Name, term.Mode, term.Layer, Directory));
        }
    }

    internal GenAiSteeringFeed Create(IReadOnlyList<Steering> rows)
    {
        if (rows.Count == 0) throw new OnnxSteerException(ErrorKind.Usage, "no rows to steer");
        foreach (var s in rows) Validate(s);
        int hidden = HiddenSize;
        // The runs a generation makes: the prompt (up to the header when header steering is used), each header position,
        // then decode; the values of each, per row.
        int header = rows.Max(r => r.HeaderLength);
        var phases = new List<SteeringPhase> { SteeringPhase.Prompt };
        for (int k = header; k >= 1; k--) phases.Add(SteeringPhase.AtPromptPosition(k));
        phases.Add(SteeringPhase.Decode);
        var resolved = phases.Select(phase => rows.Select(r => SteeringFeed.Resolve(r, phase, hidden)).ToList()).ToList();
        var feed = new GenAiSteeringFeed(ElementType, phases);
        try
        {
            foreach (var layer in Manifest.SteeredLayers.Order())
            {
                var names = Manifest.InputsOf(layer);
                var perPhase = resolved.Select(rowsOfPhase => rowsOfPhase.Select(r => r.GetValueOrDefault(layer)).ToArray()).ToArray();
                // One steering for every row when all rows agree in every phase; else one per row (steer_batch = batch).
                int sb = perPhase.All(Same) ? 1 : rows.Count;
                feed.AddLayer(names, sb, hidden, perPhase);
            }
            return feed;
        }
        catch
        {
            feed.Dispose();
            throw;
        }

        static bool Same(ResolvedLayer?[] perRow) =>
            perRow.All(r => r is null) || perRow.All(r => r is not null && r.ValueEquals(perRow[0]));
    }
}

/// <summary>The steering tensors fed to one GenAI <see cref="Generator"/>: pinned buffers that GenAI reads at every run,
/// so they must outlive the generation. Every steering input is fed (zeros where a layer is unsteered), because a
/// GenAI-ready folder's steering inputs are required.</summary>
public sealed class GenAiSteeringFeed : IDisposable
{
    private readonly ElementType _type;
    // Values[phase index] per input, in the order of _phases (prompt, header positions, decode).
    private readonly List<(string Name, Array Buffer, GCHandle Pin, long[] Shape, float[][] Values)> _inputs = [];
    private readonly List<Tensor> _tensors = [];
    private readonly IReadOnlyList<SteeringPhase> _phases;
    private int _written;

    internal GenAiSteeringFeed(ElementType type, IReadOnlyList<SteeringPhase> phases)
    {
        _type = type;
        _phases = phases;
    }

    /// <summary>Whether the prompt (prefill) and the generated tokens (decode) get different values, i.e. the steering has
    /// positions prompt or generated, or header steering, and <see cref="PromptDone"/> must be called after the prompt's
    /// <c>AppendTokens</c>.</summary>
    public bool PhasesDiffer { get; private set; }

    /// <summary>How many of the prompt's last positions get their own values (header steering): the prompt is then
    /// appended in pieces, up to the header and then one position at a time (see <see cref="SwitchTo"/>).</summary>
    internal int HeaderLength => _phases.Count - 2;

    internal void AddLayer(LayerSteeringInputs names, int sb, int hidden, ResolvedLayer?[][] perPhase)
    {
        Add(names.Add, [sb, 1, hidden], r => r.Add, hidden);
        // A model patched with --additive-only has neither (Validate refused projections).
        if (names.Direction is { } direction) Add(direction, [sb, 1, hidden], r => r.Direction, hidden);
        if (names.Target is { } target) Add(target, [sb, 1, 1], r => [r.Target], 1);

        void Add(string name, long[] shape, Func<ResolvedLayer, float[]> pick, int width)
        {
            var values = perPhase.Select(rows =>
            {
                var v = new float[sb * width];
                for (int b = 0; b < sb; b++)
                    if (rows[b] is { } r) pick(r).CopyTo(v, b * width);
                return v;
            }).ToArray();
            if (values.Any(v => !v.AsSpan().SequenceEqual(values[0]))) PhasesDiffer = true;
            Array buffer = _type == ElementType.float16 ? new ushort[values[0].Length] : new float[values[0].Length];
            var pin = GCHandle.Alloc(buffer, GCHandleType.Pinned);
            _inputs.Add((name, buffer, pin, shape, values));
            Write(buffer, values[0]);
        }
    }

    internal void SetOn(Generator generator)
    {
        foreach (var (name, _, pin, shape, _) in _inputs)
        {
            var tensor = new Tensor(pin.AddrOfPinnedObject(), shape, _type);
            _tensors.Add(tensor);
            generator.SetModelInput(name, tensor);
        }
    }

    /// <summary>Switches the inputs to the generated tokens' values. Call it once, after the prompt's <c>AppendTokens</c> and
    /// before the second <c>GenerateNextToken</c> (the first samples from the prompt's logits; the second runs the model).
    /// GenAI 0.20 refuses SetModelInput once the prompt is appended ("input name cannot be empty"), so the values are
    /// rewritten in place in the buffers GenAI reads: this reaches the model on the CPU provider, where GenAI binds the
    /// buffers directly; on CUDA/DirectML GenAI may hold a device copy, so OnnxSteer refuses positions prompt/generated there.</summary>
    public void PromptDone() => SwitchTo(SteeringPhase.Decode);

    /// <summary>Writes the values of <paramref name="phase"/> in place (the same mechanism as <see cref="PromptDone"/>).</summary>
    internal void SwitchTo(SteeringPhase phase)
    {
        int index = -1;
        for (int i = 0; i < _phases.Count; i++) if (_phases[i] == phase) index = i;
        if (index < 0) throw new InvalidOperationException($"this feed has no values for {phase}");
        if (index == _written || !PhasesDiffer) return;
        foreach (var input in _inputs) Write(input.Buffer, input.Values[index]);
        _written = index;
    }

    private static void Write(Array buffer, float[] values)
    {
        if (buffer is float[] f) { values.CopyTo(f, 0); return; }
        var h = (ushort[])buffer;
        for (int i = 0; i < values.Length; i++) h[i] = BitConverter.HalfToUInt16Bits((Half)values[i]);
    }

    /// <summary>Releases the tensors and unpins the buffers (after the generator is done with them).</summary>
    public void Dispose()
    {
        foreach (var t in _tensors) t.Dispose();
        _tensors.Clear();
        foreach (var input in _inputs) if (input.Pin.IsAllocated) input.Pin.Free();
        _inputs.Clear();
    }
}
