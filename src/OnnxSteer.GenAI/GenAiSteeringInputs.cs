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
        // GenAI runs the whole prompt in one AppendTokens with one set of inputs; a term for one prompt position needs the
        // prompt run in pieces, which only OnnxSteer's own loop does.
        if (steering.HeaderLength > 0)
            throw new OnnxSteerException(ErrorKind.Usage,
                "header steering (terms scoped to one prompt position) runs on OnnxSteer's own engine (ort) only, not inside ONNX Runtime GenAI: the GenAI engine runs the prompt in one piece");
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
        var prefill = rows.Select(r => SteeringFeed.Resolve(r, prefill: true, hidden)).ToList();
        var decode = rows.Select(r => SteeringFeed.Resolve(r, prefill: false, hidden)).ToList();
        var feed = new GenAiSteeringFeed(ElementType);
        try
        {
            foreach (var layer in Manifest.SteeredLayers.Order())
            {
                var names = Manifest.InputsOf(layer);
                var p = prefill.Select(r => r.GetValueOrDefault(layer)).ToArray();
                var d = decode.Select(r => r.GetValueOrDefault(layer)).ToArray();
                // One steering for every row when all rows agree in both phases; else one per row (steer_batch = batch).
                bool same = Same(p) && Same(d);
                int sb = same ? 1 : rows.Count;
                feed.AddLayer(names, sb, hidden, p, d);
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
    private readonly List<(string Name, Array Buffer, GCHandle Pin, long[] Shape, float[] Prefill, float[] Decode)> _inputs = [];
    private readonly List<Tensor> _tensors = [];
    private bool _decodeWritten;

    internal GenAiSteeringFeed(ElementType type) => _type = type;

    /// <summary>Whether the prompt (prefill) and the generated tokens (decode) get different values, i.e. the steering has
    /// positions prompt or generated and <see cref="PromptDone"/> must be called after the prompt's <c>AppendTokens</c>.</summary>
    public bool PhasesDiffer { get; private set; }

    internal void AddLayer(LayerSteeringInputs names, int sb, int hidden, ResolvedLayer?[] prefill, ResolvedLayer?[] decode)
    {
        Add(names.Add, [sb, 1, hidden], r => r.Add, hidden);
        // A model patched with --additive-only has neither (Validate refused projections).
        if (names.Direction is { } direction) Add(direction, [sb, 1, hidden], r => r.Direction, hidden);
        if (names.Target is { } target) Add(target, [sb, 1, 1], r => [r.Target], 1);

        void Add(string name, long[] shape, Func<ResolvedLayer, float[]> pick, int width)
        {
            var p = new float[sb * width];
            var d = new float[sb * width];
            for (int b = 0; b < sb; b++)
            {
                if (prefill[b] is { } pr) pick(pr).CopyTo(p, b * width);
                if (decode[b] is { } dr) pick(dr).CopyTo(d, b * width);
            }
            if (!p.AsSpan().SequenceEqual(d)) PhasesDiffer = true;
            Array buffer = _type == ElementType.float16 ? new ushort[p.Length] : new float[p.Length];
            var pin = GCHandle.Alloc(buffer, GCHandleType.Pinned);
            _inputs.Add((name, buffer, pin, shape, p, d));
            Write(buffer, p);
        }
    }

    internal void SetOn(Generator generator)
    {
        foreach (var (name, _, pin, shape, _, _) in _inputs)
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
    public void PromptDone()
    {
        if (_decodeWritten || !PhasesDiffer) return;
        foreach (var input in _inputs) Write(input.Buffer, input.Decode);
        _decodeWritten = true;
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
