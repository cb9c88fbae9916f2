using System.Text.Json;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Decoder;

/// <summary>What to patch: which layers get steering inputs and which expose their hidden state.</summary>
public sealed record PatchOptions
{
    /// <summary>Layers that get <c>steering.{L}.*</c> inputs (default all).</summary>
    public LayerSelection Layers { get; init; } = LayerSelection.All;

    /// <summary>Layers that get a <c>hidden_states.{L}</c> output (default all). Exposing a plain residual Add stops
    /// ONNX Runtime from fusing it, so fewer exposed layers can be faster.</summary>
    public LayerSelection Expose { get; init; } = LayerSelection.All;

    /// <summary>Whether steering inputs carry a zero default (optional) or must be fed (required).</summary>
    public SteerInputMode SteerInput { get; init; } = SteerInputMode.Optional;

    /// <summary>Steered layers take only <c>steering.{L}.add</c>: no direction or target inputs and no projection subgraph,
    /// so a tap is x' = x - (0 - add), 2 nodes instead of 8 in a float32 graph (the projection needs the residual sum, the
    /// dot product and four more nodes). For deployments that only add vectors; projection and ablation are refused on
    /// such a model. Default false (all three kinds).</summary>
    public bool AdditiveOnly { get; init; }
}

/// <summary>The result of one pass: its name and what it changed, by count ("steering inputs added": 96).</summary>
public sealed record PassResult(string Pass, IReadOnlyDictionary<string, int> Counts)
{
    /// <inheritdoc/>
    public override string ToString() => $"{Pass}: {string.Join(", ", Counts.Select(c => $"{c.Key} {c.Value}"))}";
}

/// <summary>The three steering inputs of one layer, as values of the main graph.</summary>
/// <remarks>Direction and target are null when the model is patched for additive steering only.</remarks>
internal sealed record SteeringInputValues(GraphValue Add, GraphValue? Direction, GraphValue? Target);

/// <summary>State shared by the passes of one patch: the model, its graph view, the decoder found and the options.</summary>
internal sealed class PatchContext
{
    internal PatchContext(ModelProto model, GraphView graph, DecoderLayout layout, PatchOptions options,
        IReadOnlyList<int> steered, IReadOnlyList<int> exposed)
    {
        Model = model;
        Graph = graph;
        Layout = layout;
        Options = options;
        SteeredLayers = steered;
        ExposedLayers = exposed;
    }

    /// <summary>The model being patched (metadata and opsets live here; the graph is edited through <see cref="Graph"/>).</summary>
    public ModelProto Model { get; }

    /// <summary>The main graph's view; all graph edits go through it (or its subgraph views).</summary>
    public GraphView Graph { get; }

    /// <summary>The decoder found by the layout matcher.</summary>
    public DecoderLayout Layout { get; }

    /// <summary>The options.</summary>
    public PatchOptions Options { get; }

    /// <summary>Layers getting steering inputs.</summary>
    public IReadOnlyList<int> SteeredLayers { get; }

    /// <summary>Layers getting hidden-state outputs.</summary>
    public IReadOnlyList<int> ExposedLayers { get; }

    /// <summary>Steering inputs per layer, filled by <see cref="AddSteeringInputsPass"/>.</summary>
    public Dictionary<int, SteeringInputValues> SteeringInputs { get; } = [];

    /// <summary>For value residual points that were steered: the steered value x' that consumers now read.</summary>
    public Dictionary<ResidualPoint, GraphValue> SteeredValues { get; } = [];

    /// <summary>Number of steering taps inserted per layer (one per residual point).</summary>
    public Dictionary<int, int> TapsPerLayer { get; } = [];

    /// <summary>The model's default-domain opset version (decides, e.g., whether ReduceSum takes axes as an input).</summary>
    public long DefaultOpset => GraphView.OpsetVersion(Model, "");

    /// <summary>Returns the main-graph initializer <paramref name="name"/>, adding <paramref name="create"/>() the first time.</summary>
    public GraphValue Constant(string name, Func<TensorProto> create)
    {
        var existing = Graph.FindValue(name);
        if (existing is not null) return existing;
        var tensor = create();
        tensor.Name = name;
        return Graph.AddInitializer(tensor);
    }

    /// <summary>Symbolic (or fixed) batch and sequence dimensions of the model's token input, for declaring new outputs.</summary>
    public (object Batch, object Sequence) TokenDims()
    {
        var input = Graph.Inputs.FirstOrDefault(i => i.Name is "input_ids" or "inputs_embeds") ?? Graph.Inputs.FirstOrDefault();
        var dims = input?.Type?.TensorType?.Shape?.Dim;
        object Dim(int i, string fallback) => dims is null || dims.Count <= i ? fallback
            : dims[i].HasDimParam ? dims[i].DimParam : dims[i].HasDimValue ? dims[i].DimValue : fallback;
        return (Dim(0, "batch_size"), Dim(1, "sequence_length"));
    }

    /// <summary>A prefix for names of nodes added for <paramref name="point"/> (distinct per branch).</summary>
    public static string Prefix(ResidualPoint point)
    {
        var scope = point.Graph.OwnerNode is { } owner
            ? "/" + (owner.Subgraphs.First(kv => kv.Value.Contains(point.Graph)).Key)
            : "";
        return $"/onnxsteer{scope}/layers.{point.Layer}";
    }
}

/// <summary>One rewrite step. Takes the model (through the context), changes it, checks its own pre- and
/// post-conditions and returns counts of what it changed.</summary>
internal interface IPatchPass
{
    /// <summary>Short name for reports.</summary>
    string Name { get; }

    /// <summary>Runs the pass.</summary>
    /// <exception cref="OnnxSteerException">The model does not allow the change (e.g. a name is taken).</exception>
    PassResult Run(PatchContext context);
}

/// <summary>The outcome of <see cref="PatchPipeline.Run"/>.</summary>
/// <param name="Model">The patched model (the same instance that was passed in, with its graph replaced).</param>
/// <param name="Layout">The decoder found.</param>
/// <param name="SteeredLayers">Layers with steering inputs.</param>
/// <param name="ExposedLayers">Layers with hidden-state outputs.</param>
/// <param name="Passes">What each pass changed.</param>
internal sealed record PatchResult(ModelProto Model, DecoderLayout Layout, IReadOnlyList<int> SteeredLayers,
    IReadOnlyList<int> ExposedLayers, IReadOnlyList<PassResult> Passes);

/// <summary>Detects the decoder layout and runs the rewrite passes in order, checking the graph's invariants
/// after each one. The default pipeline: steering inputs, steering math, hidden-state outputs, metadata, cleanup.</summary>
internal sealed class PatchPipeline
{
    private readonly IReadOnlyList<IPatchPass> _passes;
    private readonly IReadOnlyList<IDecoderLayoutMatcher> _matchers;

    /// <summary>A pipeline of the given passes and matchers.</summary>
    public PatchPipeline(IReadOnlyList<IPatchPass> passes, IReadOnlyList<IDecoderLayoutMatcher>? matchers = null)
    {
        _passes = passes;
        _matchers = matchers ?? LayoutMatchers.All;
    }

    /// <summary>The standard pipeline.</summary>
    public static PatchPipeline Default { get; } = new(
    [
        new AddSteeringInputsPass(),
        new InsertSteeringPass(),
        new ExposeHiddenStatesPass(),
        new MarkPatchedPass(),
        new CleanupPass(),
    ]);

    /// <summary>The passes, in order.</summary>
    public IReadOnlyList<IPatchPass> Passes => _passes;

    /// <summary>Patches <paramref name="model"/> in place and returns it with the layout found and per-pass counts.
    /// Never reads or changes initializer bytes; keeps ir_version and opsets.</summary>
    /// <exception cref="OnnxSteerException">Already patched, not a decoder, or layers the model lacks.</exception>
    public PatchResult Run(ModelProto model, PatchOptions options)
    {
        RefuseIfPatched(model);
        var graph = GraphView.Create(model.Graph);
        var layout = LayoutMatchers.Detect(graph, _matchers);
        var steered = options.Layers.Resolve(layout.NumLayers);
        var exposed = options.Expose.Resolve(layout.NumLayers);
        if (steered.Count == 0 && exposed.Count == 0)
            throw new OnnxSteerException(ErrorKind.Usage, "nothing to do: no layers to steer and none to expose.");
        var context = new PatchContext(model, graph, layout, options, steered, exposed);
        var irVersion = model.IrVersion;
        var opsets = model.OpsetImport.Select(o => (o.Domain, o.Version)).ToList();
        var results = new List<PassResult>();
        foreach (var pass in _passes)
        {
            results.Add(pass.Run(context));
            var problems = graph.CheckInvariants(requireTopologicalOrder: false);
            if (problems.Count > 0)
                throw new InvalidOperationException($"pass '{pass.Name}' broke the graph: {string.Join("; ", problems.Take(5))}");
        }
        if (model.IrVersion != irVersion || !model.OpsetImport.Select(o => (o.Domain, o.Version)).SequenceEqual(opsets))
            throw new InvalidOperationException("a pass changed ir_version or the opsets.");
        model.Graph = graph.ToProto();
        return new PatchResult(model, layout, steered, exposed, results);
    }

    /// <summary>Refuses a model that onnxsteer has already patched (metadata key, or steering/hidden-state names present).</summary>
    /// <exception cref="OnnxSteerException">The model is patched.</exception>
    public static void RefuseIfPatched(ModelProto model)
    {
        if (model.MetadataProps.FirstOrDefault(p => p.Key == SteeringContract.PatchedMetadataKey) is { } mark)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"the model is already patched by onnxsteer (metadata '{SteeringContract.PatchedMetadataKey}' = {mark.Value}); patch the original model instead.");
        var clash = model.Graph.Input.Select(i => i.Name).FirstOrDefault(n => n.StartsWith("steering.", StringComparison.Ordinal))
            ?? model.Graph.Output.Select(o => o.Name).FirstOrDefault(n => n.StartsWith("hidden_states.", StringComparison.Ordinal));
        if (clash is not null)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"the model already has '{clash}': it looks patched; patch the original model instead.");
    }

    /// <summary>True when the model carries onnxsteer's patched mark.</summary>
    public static bool IsPatched(ModelProto model) => model.MetadataProps.Any(p => p.Key == SteeringContract.PatchedMetadataKey);
}

/// <summary>Adds <c>steering.{L}.add|direction|target</c> main-graph inputs in the residual dtype, with symbolic
/// batch <c>steer_batch_{L}</c>, and (optional mode) a zero initializer of batch 1 as each one's default.</summary>
internal sealed class AddSteeringInputsPass : IPatchPass
{
    /// <inheritdoc/>
    public string Name => "add-steering-inputs";

    /// <inheritdoc/>
    public PassResult Run(PatchContext context)
    {
        var (t, h) = (context.Layout.ResidualElemType, context.Layout.HiddenSize);
        var defaults = 0;
        foreach (var layer in context.SteeredLayers)
        {
            if (context.SteeringInputs.ContainsKey(layer)) throw new InvalidOperationException($"layer {layer} already has steering inputs.");
            var batch = SteeringContract.SteerBatchSymbol(layer);
            var add = context.Graph.AddInput(SteeringContract.AddInput(layer), t, [batch, 1, h]);
            var projection = !context.Options.AdditiveOnly;
            var direction = projection ? context.Graph.AddInput(SteeringContract.DirectionInput(layer), t, [batch, 1, h]) : null;
            var target = projection ? context.Graph.AddInput(SteeringContract.TargetInput(layer), t, [batch, 1, 1]) : null;
            if (context.Options.SteerInput == SteerInputMode.Optional)
            {
                context.Graph.AddInitializer(SteeringTensors.Zeros(add.Name, t, [1, 1, h]));
                defaults++;
                if (projection)
                {
                    context.Graph.AddInitializer(SteeringTensors.Zeros(direction!.Name, t, [1, 1, h]));
                    context.Graph.AddInitializer(SteeringTensors.Zeros(target!.Name, t, [1, 1, 1]));
                    defaults += 2;
                }
            }
            context.SteeringInputs[layer] = new SteeringInputValues(add, direction, target);
        }
        return new PassResult(Name, new Dictionary<string, int>
        {
            ["steering inputs added"] = context.SteeredLayers.Count * (context.Options.AdditiveOnly ? 1 : 3),
            ["zero defaults added"] = defaults,
        });
    }
}

/// <summary>Inserts <c>x' = x + add + (target - x·direction)·direction</c> at every residual point of a steered layer
/// (<c>x' = x + add</c> when patched for additive steering only). The projection term is computed in float32. The
/// rewrite is written as <c>x' = x - ((0 - add) - p)</c> so that with all-zero steering the subtracted term is +0 and
/// x' is bit-identical to x for every finite x, -0.0 included (x + 0 would turn -0.0 into +0.0).
/// <para>In a float16 (or bfloat16) residual the nodes that read the model's values and feed the result back are chosen
/// so that ONNX Runtime runs the model's own nodes exactly as before. Its CPU provider has no float16 kernel for Add,
/// Sub, Mul or MatMul: it runs such nodes in float32 behind Casts it inserts (InsertCastTransformer), drops the Cast
/// pairs between two such nodes (values there stay float32, never rounded to float16), and forces a node that does have
/// a float16 kernel into float32 when every reader of its float16 output lacks one (an "isolated" node). So:</para>
/// <list type="bullet">
/// <item>A fused norm's skip operand (genai, ort-fused, gemma2) used to be read by the norm, which has a float16 kernel.
/// Our first reader of it is a Cast to float32 (a float16 kernel everywhere), so its producer (a float16 MatMulNBits,
/// MatMul or SkipLayerNormalization) keeps a float16-kernel reader and its kernel; the sum and the steering run in
/// float32 and one Cast back feeds the norm. Where ONNX Runtime carried the operand in float32, its inserted Cast and
/// ours cancel, so the sum reads that same value and the final Cast rounds it as the inserted one would have. (A float16
/// Sub reading it, the earlier form, flipped a float16 MatMulNBits to float32 and changed its bits.)</item>
/// <item>A plain residual value (optimum: the output of an Add) is read and replaced by float16 Subs, ops of the Add's own
/// kernel class: where the Add runs in float32 behind Casts, so do the Subs, and the model's readers get the same
/// unrounded float32 value; a Cast back from float32 would round it (a model's Cast is never dropped as precision
/// free).</item>
/// </list></summary>
internal sealed class InsertSteeringPass : IPatchPass
{
    private const int F32 = (int)TensorProto.Types.DataType.Float;

    /// <inheritdoc/>
    public string Name => "insert-steering";

    /// <inheritdoc/>
    public PassResult Run(PatchContext context)
    {
        var nodesBefore = context.Graph.AllNodes().Count();
        var rewired = 0;
        var t = context.Layout.ResidualElemType;
        foreach (var point in context.Layout.Points)
        {
            if (!context.SteeringInputs.TryGetValue(point.Layer, out var inputs)) continue;
            var g = point.Graph;
            var prefix = PatchContext.Prefix(point);
            var added = new HashSet<GraphNode>();
            GraphNode Node(string op, string name, GraphValue?[] ins, IEnumerable<AttributeProto>? attrs = null)
            {
                var n = g.AddNode(op, ins, [$"{prefix}/{name}/output_0"], name: $"{prefix}/{name}", attributes: attrs);
                added.Add(n);
                return n;
            }
            GraphValue ToF32(GraphValue v, string name) => t == F32 ? v : Node("Cast", name, [v], [CastTo(F32)]).Output(0)!;
            switch (point)
            {
                case ValueResidualPoint v:
                {
                    var x = v.Residual;
                    var n = NegatedDelta(context, inputs.Direction is null ? null : ToF32(x, "x_f32"), inputs, inF32: t == F32, Node);
                    var steered = Node("Sub", "steer", [x, n]).Output(0)!;
                    rewired += g.ReplaceAllUses(x, steered, use => added.Contains(use.Node));
                    context.SteeredValues[point] = steered;
                    break;
                }
                case FusedNormResidualPoint f:
                {
                    var skip = ToF32(f.Norm.Input(FusedNormResidualPoint.SkipInputIndex)!, "skip_f32");
                    GraphValue n;
                    if (inputs.Direction is null) n = NegatedDelta(context, null, inputs, inF32: true, Node); // additive only: no sum needed
                    else
                    {
                        // The node sums input + skip (+ bias) itself; the projection needs that sum, so compute it explicitly.
                        var x = Node("Add", "residual", [ToF32(f.Norm.Input(0)!, "input_f32"), skip]).Output(0)!;
                        if (f.BiasInputIndex is { } b) x = Node("Add", "residual_bias", [x, ToF32(f.Norm.Input(b)!, "bias_f32")]).Output(0)!;
                        n = NegatedDelta(context, x, inputs, inF32: true, Node);
                    }
                    // The last node is named "steer" in every dtype: the Sub itself in float32, else the Cast back.
                    var steered = t == F32
                        ? Node("Sub", "steer", [skip, n]).Output(0)!
                        : Node("Cast", "steer", [Node("Sub", "steer_f32", [skip, n]).Output(0)!], [CastTo(t)]).Output(0)!;
                    g.SetInput(f.Norm, FusedNormResidualPoint.SkipInputIndex, steered);
                    rewired++;
                    break;
                }
                default:
                    throw new NotSupportedException($"residual point type {point.GetType().Name} has no steering rewrite.");
            }
            context.TapsPerLayer[point.Layer] = context.TapsPerLayer.GetValueOrDefault(point.Layer) + 1;
        }
        foreach (var layer in context.SteeredLayers)
        {
            var expected = context.Layout.PointsOf(layer).Count();
            if (context.TapsPerLayer.GetValueOrDefault(layer) != expected)
                throw new InvalidOperationException($"layer {layer}: {context.TapsPerLayer.GetValueOrDefault(layer)} steering taps, expected {expected}.");
        }
        return new PassResult(Name, new Dictionary<string, int>
        {
            ["steering taps inserted"] = context.TapsPerLayer.Values.Sum(),
            ["nodes added"] = context.Graph.AllNodes().Count() - nodesBefore,
            ["uses rewired"] = rewired,
        });
    }

    private static AttributeProto CastTo(int elemType) => new() { Name = "to", Type = AttributeProto.Types.AttributeType.Int, I = elemType };

    /// <summary>Builds n = (0 - add) - p with p = (target - x·dir)·dir computed in float32 (<paramref name="xF32"/> is x
    /// in float32); x' = x - n. With <paramref name="inF32"/> n is float32; otherwise p is cast back to the residual dtype
    /// and n is computed in it. Patched for additive steering only (no direction input; <paramref name="xF32"/> null),
    /// n = 0 - add: one node, and x' = x - n stays exact for zero add (x - (+0) = x, -0.0 included).</summary>
    private static GraphValue NegatedDelta(PatchContext context, GraphValue? xF32, SteeringInputValues inputs, bool inF32,
        Func<string, string, GraphValue?[], IEnumerable<AttributeProto>?, GraphNode> node)
    {
        var t = context.Layout.ResidualElemType;
        GraphValue ToF32(GraphValue v, string name) => t == F32 ? v : node("Cast", name, [v], [CastTo(F32)]).Output(0)!;
        var nt = inF32 ? F32 : t;
        GraphValue Zero() => context.Constant($"onnxsteer.zero.{DecoderLayout.DtypeName(nt)}", () => SteeringTensors.Zeros("", nt, []));
        if (inputs.Direction is null || inputs.Target is null || xF32 is null)
            return node("Sub", "neg_add", [Zero(), inF32 ? ToF32(inputs.Add, "add_f32") : inputs.Add], null).Output(0)!;
        var df = ToF32(inputs.Direction, "direction_f32");
        var tf = ToF32(inputs.Target, "target_f32");
        var product = node("Mul", "x_dir", [xF32, df], null).Output(0)!;
        GraphValue dot;
        var keepDims = new AttributeProto { Name = "keepdims", Type = AttributeProto.Types.AttributeType.Int, I = 1 };
        if (context.DefaultOpset >= 13)
        {
            var axes = context.Constant("onnxsteer.axes_last", () => SteeringTensors.Int64Vector("", [-1]));
            dot = node("ReduceSum", "dot", [product, axes], [keepDims]).Output(0)!;
        }
        else
        {
            var axesAttr = new AttributeProto { Name = "axes", Type = AttributeProto.Types.AttributeType.Ints };
            axesAttr.Ints.Add(-1);
            dot = node("ReduceSum", "dot", [product], [axesAttr, keepDims]).Output(0)!;
        }
        var gap = node("Sub", "target_minus_dot", [tf, dot], null).Output(0)!;
        var projection = node("Mul", "projection", [gap, df], null).Output(0)!;
        var add = inF32 ? ToF32(inputs.Add, "add_f32") : inputs.Add;
        if (nt != F32) projection = node("Cast", "projection_cast", [projection], [CastTo(nt)]).Output(0)!;
        var negAdd = node("Sub", "neg_add", [Zero(), add], null).Output(0)!;
        return node("Sub", "neg_delta", [negAdd, projection], null).Output(0)!;
    }
}

/// <summary>Adds a <c>hidden_states.{L}</c> output per exposed layer: the residual after block L as the next block
/// sees it (after steering). A fused final norm is given its output 3 so the last residual exists. For a decoder
/// inside If branches, each branch gets a matching output and the If and the main graph surface it.</summary>
internal sealed class ExposeHiddenStatesPass : IPatchPass
{
    /// <inheritdoc/>
    public string Name => "expose-hidden-states";

    /// <inheritdoc/>
    public PassResult Run(PatchContext context)
    {
        var root = context.Graph;
        var (batch, sequence) = context.TokenDims();
        var type = GraphView.TensorType(context.Layout.ResidualElemType, [batch, sequence, context.Layout.HiddenSize]);
        var branchOutputs = 0;
        foreach (var layer in context.ExposedLayers)
        {
            var name = SteeringContract.HiddenStateOutput(layer);
            if (root.IsNameUsed(name))
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot add output '{name}': the model already uses that name.");
            var points = context.Layout.PointsOf(layer).ToList();
            var rootPoint = points.SingleOrDefault(p => p.Graph == root);
            if (rootPoint is not null)
            {
                var id = root.AddNode("Identity", [Residual(context, rootPoint)], [name], name: $"{PatchContext.Prefix(rootPoint)}/hidden_state");
                if (id.Output(0)!.Name != name) throw new InvalidOperationException($"output name '{name}' was taken.");
                root.AddOutput(id.Output(0)!, type);
                continue;
            }
            foreach (var owner in points.Select(p => p.Graph.OwnerNode).Distinct())
            {
                if (owner is null || owner.Owner != root)
                    throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"layer {layer}'s residual sits in a subgraph nested more than one level deep; not supported.");
                var branches = owner.Subgraphs.Values.SelectMany(s => s).ToList();
                foreach (var branch in branches)
                {
                    var point = points.SingleOrDefault(p => p.Graph == branch)
                        ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"layer {layer} is found in only some branches of {owner.Describe()}.");
                    var id = branch.AddNode("Identity", [Residual(context, point)], [$"{PatchContext.Prefix(point)}/hidden_state/output_0"],
                        name: $"{PatchContext.Prefix(point)}/hidden_state");
                    branch.AddOutput(id.Output(0)!, type);
                    branchOutputs++;
                }
                var surfaced = root.EnsureOutput(owner, owner.Outputs.Count, name);
                if (surfaced.Name != name) throw new InvalidOperationException($"output name '{name}' was taken.");
                root.AddOutput(surfaced, type);
            }
        }
        return new PassResult(Name, new Dictionary<string, int>
        {
            ["hidden-state outputs added"] = context.ExposedLayers.Count,
            ["branch outputs added"] = branchOutputs,
        });
    }

    /// <summary>The residual after block L as the next block sees it.</summary>
    private static GraphValue Residual(PatchContext context, ResidualPoint point) => point switch
    {
        ValueResidualPoint v => context.SteeredValues.GetValueOrDefault(point) ?? v.Residual,
        FusedNormResidualPoint f => point.Graph.EnsureOutput(f.Norm, FusedNormResidualPoint.ResidualOutputIndex, $"{PatchContext.Prefix(point)}/residual_output_3"),
        _ => throw new NotSupportedException($"residual point type {point.GetType().Name} cannot be exposed."),
    };
}

/// <summary>Marks the model as patched in metadata_props (<see cref="SteeringContract.PatchedMetadataKey"/>).</summary>
internal sealed class MarkPatchedPass : IPatchPass
{
    /// <inheritdoc/>
    public string Name => "mark-patched";

    /// <inheritdoc/>
    public PassResult Run(PatchContext context)
    {
        PatchPipeline.RefuseIfPatched(context.Model);
        var value = JsonSerializer.Serialize(new
        {
            format_version = SteeringContract.FormatVersion,
            layout = context.Layout.Name,
            steered_layers = context.SteeredLayers,
            exposed_layers = context.ExposedLayers,
            steer_input = context.Options.SteerInput.ToString().ToLowerInvariant(),
        });
        context.Model.MetadataProps.Add(new StringStringEntryProto { Key = SteeringContract.PatchedMetadataKey, Value = value });
        return new PassResult(Name, new Dictionary<string, int> { ["metadata entries added"] = 1 });
    }
}

/// <summary>Sorts every graph topologically and checks the final post-conditions: invariants of the view,
/// one steering tap per residual point of each steered layer, every contract name present exactly once.</summary>
internal sealed class CleanupPass : IPatchPass
{
    /// <inheritdoc/>
    public string Name => "cleanup";

    /// <inheritdoc/>
    public PassResult Run(PatchContext context)
    {
        var root = context.Graph;
        root.TopologicalSort();
        var problems = root.CheckInvariants(requireTopologicalOrder: true).ToList();
        foreach (var layer in context.SteeredLayers)
        {
            foreach (var name in new[] { SteeringContract.AddInput(layer), SteeringContract.DirectionInput(layer), SteeringContract.TargetInput(layer) })
            {
                var expected = context.Options.AdditiveOnly && name != SteeringContract.AddInput(layer) ? 0 : 1;
                if (root.Inputs.Count(i => i.Name == name) != expected)
                    problems.Add(expected == 1 ? $"input '{name}' is missing or duplicated." : $"input '{name}' is present in an additive-only patch.");
            }
            if (context.TapsPerLayer.GetValueOrDefault(layer) != context.Layout.PointsOf(layer).Count())
                problems.Add($"layer {layer} has {context.TapsPerLayer.GetValueOrDefault(layer)} steering taps.");
        }
        foreach (var layer in context.ExposedLayers)
            if (root.Outputs.Count(o => o.Name == SteeringContract.HiddenStateOutput(layer)) != 1)
                problems.Add($"output '{SteeringContract.HiddenStateOutput(layer)}' is missing or duplicated.");
        var outputNames = root.Outputs.Select(o => o.Name).ToList();
        if (outputNames.Distinct(StringComparer.Ordinal).Count() != outputNames.Count) problems.Add("graph output names are not unique.");
        if (problems.Count > 0)
            throw new InvalidOperationException($"patched graph fails its post-conditions: {string.Join("; ", problems.Take(5))}");
        return new PassResult(Name, new Dictionary<string, int> { ["nodes in order"] = root.AllNodes().Count() });
    }
}

/// <summary>Small tensors the rewrite adds (never the model's own weights).</summary>
internal static class SteeringTensors
{
    public static TensorProto Zeros(string name, int elemType, long[] dims)
    {
        var count = dims.Aggregate(1L, (a, b) => a * b);
        var size = elemType switch { 1 => 4, 10 or 16 => 2, 11 => 8, _ => throw new NotSupportedException($"element type {elemType}") };
        var t = new TensorProto { Name = name, DataType = elemType, RawData = Google.Protobuf.ByteString.CopyFrom(new byte[count * size]) };
        t.Dims.AddRange(dims);
        return t;
    }

    public static TensorProto Int64Vector(string name, long[] values)
    {
        var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
        t.Dims.Add(values.Length);
        t.Int64Data.AddRange(values);
        return t;
    }
}
