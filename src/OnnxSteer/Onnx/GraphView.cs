using Google.Protobuf;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>One use of a value: <see cref="Node"/> reads it at input <see cref="InputIndex"/>.</summary>
internal readonly record struct ValueUse(GraphNode Node, int InputIndex);

/// <summary>A named value of a graph: a graph input, an initializer, a node output, or (in a subgraph)
/// a value captured from an enclosing graph. Knows its producer and its uses.</summary>
internal sealed class GraphValue
{
    internal readonly List<ValueUse> UseList = [];
    internal readonly List<GraphNode> CapturingNodes = [];

    internal GraphValue(GraphView owner, string name) { Owner = owner; Name = name; }

    /// <summary>The value's name (unique in the model).</summary>
    public string Name { get; }

    /// <summary>The graph this value belongs to.</summary>
    public GraphView Owner { get; }

    /// <summary>The node that computes this value, or null for inputs, initializers and captured values.</summary>
    public GraphNode? Producer { get; internal set; }

    /// <summary>Which output of <see cref="Producer"/> this value is.</summary>
    public int ProducerOutputIndex { get; internal set; }

    /// <summary>Nodes of <see cref="Owner"/> that read this value. A snapshot is safe to iterate while rewiring.</summary>
    public IReadOnlyList<ValueUse> Uses => UseList;

    /// <summary>Nodes of <see cref="Owner"/> whose subgraphs read this value from the outer scope.</summary>
    public IReadOnlyList<GraphNode> CapturedBy => CapturingNodes;

    /// <summary>True for a declared graph input (which may also have a default initializer).</summary>
    public bool IsGraphInput { get; internal set; }

    /// <summary>The initializer holding this value's constant (or default, for an input), if any.</summary>
    public TensorProto? Initializer { get; internal set; }

    /// <summary>True when a graph output of <see cref="Owner"/> carries this value.</summary>
    public bool IsGraphOutput => Owner.OutputList.Contains(this);

    /// <summary>In a subgraph, the enclosing graph's value this one stands for; null otherwise.</summary>
    public GraphValue? OuterValue { get; internal set; }

    /// <summary>True when the value is defined in an enclosing graph.</summary>
    public bool IsOuterScope => OuterValue is not null;

    /// <summary>Type as declared (inputs, outputs, value_info) or derived from the initializer; null when unknown.</summary>
    public TypeProto? Type
    {
        get
        {
            if (OuterValue is not null) return OuterValue.Type;
            if (DeclaredType is not null) return DeclaredType;
            if (Initializer is null) return null;
            var shape = new TensorShapeProto();
            foreach (var d in Initializer.Dims) shape.Dim.Add(new TensorShapeProto.Types.Dimension { DimValue = d });
            return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = Initializer.DataType, Shape = shape } };
        }
    }

    internal TypeProto? DeclaredType { get; set; }

    /// <summary>The tensor element type (<see cref="TensorProto.Types.DataType"/> as int), or 0 when unknown.</summary>
    public int ElemType => Type?.TensorType?.ElemType ?? 0;

    /// <summary>The tensor shape's dimensions when known: a number, or null for a symbolic/unknown dimension.</summary>
    public IReadOnlyList<long?>? Dims =>
        Type?.TensorType?.Shape is { } s ? s.Dim.Select(d => d.HasDimValue ? d.DimValue : (long?)null).ToList() : null;

    /// <inheritdoc/>
    public override string ToString() => Name;
}

/// <summary>A node of a graph view. Inputs and outputs are values (null for an omitted optional slot);
/// attributes and other fields are kept from the original NodeProto.</summary>
internal sealed class GraphNode
{
    internal readonly List<GraphValue?> InputList = [];
    internal readonly List<GraphValue?> OutputList = [];
    internal readonly NodeProto Template;
    internal readonly Dictionary<string, List<GraphView>> SubgraphMap = new(StringComparer.Ordinal);

    internal GraphNode(GraphView owner, NodeProto template) { Owner = owner; Template = template; }

    /// <summary>The graph holding this node.</summary>
    public GraphView Owner { get; }

    /// <summary>Operator type, e.g. <c>SkipSimplifiedLayerNormalization</c>.</summary>
    public string OpType => Template.OpType;

    /// <summary>Operator domain ("" for the default ONNX domain; "ai.onnx" is normalised to "").</summary>
    public string Domain => Template.Domain is "ai.onnx" ? "" : Template.Domain;

    /// <summary>The node's name (may be empty in some exports).</summary>
    public string Name => Template.Name;

    /// <summary>Inputs by position; null where an optional input is omitted.</summary>
    public IReadOnlyList<GraphValue?> Inputs => InputList;

    /// <summary>Outputs by position; null where an optional output is not produced.</summary>
    public IReadOnlyList<GraphValue?> Outputs => OutputList;

    /// <summary>Subgraph views by attribute name (If: then_branch/else_branch; Loop/Scan: body).</summary>
    public IReadOnlyDictionary<string, List<GraphView>> Subgraphs => SubgraphMap;

    /// <summary>The attribute with the given name, or null.</summary>
    public AttributeProto? Attribute(string name) => Template.Attribute.FirstOrDefault(a => a.Name == name);

    /// <summary>Input <paramref name="index"/> or null when absent.</summary>
    public GraphValue? Input(int index) => index < InputList.Count ? InputList[index] : null;

    /// <summary>Output <paramref name="index"/> or null when absent.</summary>
    public GraphValue? Output(int index) => index < OutputList.Count ? OutputList[index] : null;

    /// <summary>"OpType 'name'" for messages.</summary>
    public string Describe() => string.IsNullOrEmpty(Name) ? $"{OpType} (unnamed, output '{OutputList.FirstOrDefault(o => o is not null)?.Name}')" : $"{OpType} '{Name}'";

    /// <inheritdoc/>
    public override string ToString() => Describe();
}

/// <summary>An editable view over an ONNX <see cref="GraphProto"/> that knows every value's producer and uses.
/// All edits go through it so the use lists stay in step; <see cref="ToProto"/> converts back for saving.
/// Subgraphs (If branches, Loop bodies) get their own child views whose captured outer values are
/// linked to the enclosing graph's values.</summary>
internal sealed class GraphView
{
    private readonly GraphProto _source;
    private readonly Dictionary<string, GraphValue> _values = new(StringComparer.Ordinal);
    private readonly List<GraphNode> _nodes = [];
    private readonly List<GraphValue> _inputs = [];
    internal readonly List<GraphValue> OutputList = [];
    private readonly List<TensorProto> _initializers = [];
    private readonly Dictionary<string, ValueInfoProto> _outputInfo = new(StringComparer.Ordinal);
    private readonly Dictionary<string, ValueInfoProto> _inputInfo = new(StringComparer.Ordinal);
    private readonly HashSet<string> _usedNames;
    private int _nameCounter;

    private GraphView(GraphProto source, GraphView? parent, GraphNode? ownerNode, int depth)
    {
        if (depth > GraphWalker.MaxDepth)
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"subgraphs nest deeper than {GraphWalker.MaxDepth} levels.");
        _source = source;
        Parent = parent;
        OwnerNode = ownerNode;
        _usedNames = parent?._usedNames ?? new HashSet<string>(StringComparer.Ordinal);
        Build(depth);
    }

    /// <summary>Builds a view over <paramref name="graph"/> (the main graph of a model) and all its subgraphs.</summary>
    /// <exception cref="OnnxSteerException">The graph reads values nothing defines, defines a value twice, or nests too deep.</exception>
    public static GraphView Create(GraphProto graph) => new(graph, null, null, 0);

    /// <summary>The enclosing graph for a subgraph view; null for the main graph.</summary>
    public GraphView? Parent { get; }

    /// <summary>The node (If, Loop, Scan) that owns this subgraph; null for the main graph.</summary>
    public GraphNode? OwnerNode { get; }

    /// <summary>The graph's name.</summary>
    public string Name => _source.Name;

    /// <summary>Nodes in their current order (topological after <see cref="TopologicalSort"/>).</summary>
    public IReadOnlyList<GraphNode> Nodes => _nodes;

    /// <summary>Declared graph inputs in order.</summary>
    public IReadOnlyList<GraphValue> Inputs => _inputs;

    /// <summary>Graph outputs in order.</summary>
    public IReadOnlyList<GraphValue> Outputs => OutputList;

    /// <summary>Initializers of this graph (their bytes, inline or external, are never touched).</summary>
    public IReadOnlyList<TensorProto> Initializers => _initializers;

    /// <summary>The main graph at the top of the nesting.</summary>
    public GraphView Root => Parent?.Root ?? this;

    /// <summary>Looks up a value visible in this graph (its own or, for a subgraph, an enclosing graph's).</summary>
    public GraphValue? FindValue(string name)
    {
        if (_values.TryGetValue(name, out var v)) return v;
        return Parent?.FindValue(name);
    }

    /// <summary>The value to use inside this graph for <paramref name="name"/>: the local value, or a captured
    /// proxy of an enclosing graph's value (created on first use).</summary>
    /// <exception cref="OnnxSteerException">No graph in scope defines the name.</exception>
    public GraphValue Resolve(string name)
    {
        if (_values.TryGetValue(name, out var v)) return v;
        var outer = Parent?.FindValue(name)
            ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"graph '{Name}' reads '{name}', which no node, input or initializer defines.");
        v = new GraphValue(this, name) { OuterValue = outer };
        _values[name] = v;
        RegisterCapture(outer);
        return v;
    }

    /// <summary>The opset version imported for <paramref name="domain"/> by <paramref name="model"/>, or 0.</summary>
    public static long OpsetVersion(ModelProto model, string domain) =>
        model.OpsetImport.Where(o => (o.Domain is "ai.onnx" ? "" : o.Domain) == domain).Select(o => o.Version).DefaultIfEmpty(0).Max();

    private void Build(int depth)
    {
        foreach (var name in ModelNames(_source)) _usedNames.Add(name);
        foreach (var init in _source.Initializer)
        {
            var v = Define(init.Name, "initializer");
            v.Initializer = init;
            _initializers.Add(init);
        }
        foreach (var input in _source.Input)
        {
            GraphValue v;
            if (_values.TryGetValue(input.Name, out var existing) && existing.Initializer is not null) v = existing;
            else v = Define(input.Name, "graph input");
            v.IsGraphInput = true;
            v.DeclaredType = input.Type;
            _inputs.Add(v);
            _inputInfo[input.Name] = input;
        }
        foreach (var info in _source.ValueInfo)
            if (info.Type is not null) _pendingTypes[info.Name] = info.Type;
        foreach (var proto in _source.Node)
        {
            var node = new GraphNode(this, proto);
            foreach (var output in proto.Output)
            {
                if (output.Length == 0) { node.OutputList.Add(null); continue; }
                var v = Define(output, $"output of {proto.OpType} '{proto.Name}'");
                v.Producer = node;
                v.ProducerOutputIndex = node.OutputList.Count;
                node.OutputList.Add(v);
            }
            _nodes.Add(node);
        }
        foreach (var node in _nodes)
        {
            foreach (var input in node.Template.Input)
            {
                if (input.Length == 0) { node.InputList.Add(null); continue; }
                var v = Resolve(input);
                v.UseList.Add(new ValueUse(node, node.InputList.Count));
                node.InputList.Add(v);
            }
        }
        foreach (var output in _source.Output)
        {
            // A model output listed twice is not a valid model (ONNX Runtime refuses it); found by the fuzzer, where it
            // used to surface as a failed post-condition (InvalidOperationException) after the rewrite.
            if (Parent is null && _outputInfo.ContainsKey(output.Name))
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"graph '{Name}' lists output '{output.Name}' twice.");
            var v = Resolve(output.Name);
            if (v.DeclaredType is null && v.Initializer is null && output.Type is not null) v.DeclaredType = output.Type;
            OutputList.Add(v);
            _outputInfo[output.Name] = output;
        }
        foreach (var (name, type) in _pendingTypes)
            if (_values.TryGetValue(name, out var v) && v.DeclaredType is null && !v.IsOuterScope) v.DeclaredType = type;
        // Subgraphs last: they may capture any value of this graph.
        foreach (var node in _nodes)
            foreach (var attr in node.Template.Attribute)
            {
                var graphs = attr.G is not null ? [attr.G] : attr.Graphs.ToList();
                if (graphs.Count == 0) continue;
                node.SubgraphMap[attr.Name] = graphs.Select(g => new GraphView(g, this, node, depth + 1)).ToList();
            }
    }

    private readonly Dictionary<string, TypeProto> _pendingTypes = new(StringComparer.Ordinal);

    private static IEnumerable<string> ModelNames(GraphProto g)
    {
        foreach (var i in g.Initializer) yield return i.Name;
        foreach (var i in g.Input) yield return i.Name;
        foreach (var n in g.Node)
        {
            if (n.Name.Length > 0) yield return n.Name;
            foreach (var o in n.Output) if (o.Length > 0) yield return o;
        }
    }

    private GraphValue Define(string name, string what)
    {
        if (_values.TryGetValue(name, out var existing))
        {
            var before = existing.Producer is { } p ? $"output of {p.OpType} '{p.Name}'" : existing.IsGraphInput ? "graph input" : "initializer";
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"value '{name}' is defined twice in graph '{Name}' (as {before} and as {what}).");
        }
        var v = new GraphValue(this, name);
        _values[name] = v;
        return v;
    }

    /// <summary>Records that the subgraph chain down to this view captures <paramref name="outer"/>, on the node
    /// of <paramref name="outer"/>'s graph that (transitively) owns this view: its implicit input.</summary>
    private void RegisterCapture(GraphValue outer)
    {
        var view = this;
        while (view.Parent is not null && view.Parent != outer.Owner) view = view.Parent;
        var owner = view.OwnerNode;
        if (owner is not null && !outer.CapturingNodes.Contains(owner)) outer.CapturingNodes.Add(owner);
    }

    // ---------------------------------------------------------------- edits

    /// <summary>Returns a name not used anywhere in the model, based on <paramref name="hint"/>.</summary>
    public string UniqueName(string hint)
    {
        if (_usedNames.Add(hint)) return hint;
        while (true)
        {
            var candidate = $"{hint}_{++_nameCounter}";
            if (_usedNames.Add(candidate)) return candidate;
        }
    }

    /// <summary>True when <paramref name="name"/> is already taken by a value or node anywhere in the model.</summary>
    public bool IsNameUsed(string name) => _usedNames.Contains(name);

    /// <summary>Appends a node. Output names are made unique from <paramref name="outputNames"/>;
    /// the new node is placed at the end (run <see cref="TopologicalSort"/> before saving).</summary>
    public GraphNode AddNode(string opType, IReadOnlyList<GraphValue?> inputs, IReadOnlyList<string> outputNames,
        string domain = "", string? name = null, IEnumerable<AttributeProto>? attributes = null)
    {
        var proto = new NodeProto { OpType = opType, Domain = domain, Name = UniqueName(name ?? $"/onnxsteer/{opType}") };
        if (attributes is not null) proto.Attribute.AddRange(attributes);
        var node = new GraphNode(this, proto);
        for (var i = 0; i < inputs.Count; i++)
        {
            var v = inputs[i];
            if (v is not null) v = Local(v);
            node.InputList.Add(v);
            v?.UseList.Add(new ValueUse(node, i));
        }
        foreach (var outName in outputNames)
        {
            var unique = UniqueName(outName);
            var v = new GraphValue(this, unique) { Producer = node, ProducerOutputIndex = node.OutputList.Count };
            _values[unique] = v;
            node.OutputList.Add(v);
        }
        _nodes.Add(node);
        return node;
    }

    /// <summary>The value of this graph standing for <paramref name="value"/> (a captured proxy when it belongs to an enclosing graph).</summary>
    public GraphValue Local(GraphValue value)
    {
        if (value.Owner == this) return value;
        var outer = value.OuterValue ?? value;
        for (var g = Parent; g is not null; g = g.Parent)
            if (g == outer.Owner) return Resolve(outer.Name);
        throw new InvalidOperationException($"value '{value.Name}' is not visible in graph '{Name}'.");
    }

    /// <summary>Sets input <paramref name="index"/> of <paramref name="node"/> to <paramref name="value"/>, keeping use lists in step.</summary>
    public void SetInput(GraphNode node, int index, GraphValue? value)
    {
        if (node.Owner != this) throw new InvalidOperationException($"node {node.Describe()} is not in graph '{Name}'.");
        if (value is not null) value = Local(value);
        while (node.InputList.Count <= index) node.InputList.Add(null);
        var old = node.InputList[index];
        old?.UseList.Remove(new ValueUse(node, index));
        node.InputList[index] = value;
        value?.UseList.Add(new ValueUse(node, index));
    }

    /// <summary>Gives <paramref name="node"/> output <paramref name="index"/> (an optional output it did not produce)
    /// and returns it; returns the existing value when the output is already there.</summary>
    public GraphValue EnsureOutput(GraphNode node, int index, string nameHint)
    {
        if (node.Owner != this) throw new InvalidOperationException($"node {node.Describe()} is not in graph '{Name}'.");
        if (node.Output(index) is { } existing) return existing;
        while (node.OutputList.Count <= index) node.OutputList.Add(null);
        var name = UniqueName(nameHint);
        var v = new GraphValue(this, name) { Producer = node, ProducerOutputIndex = index };
        _values[name] = v;
        node.OutputList[index] = v;
        return v;
    }

    /// <summary>Makes every use of <paramref name="old"/> read <paramref name="replacement"/> instead, except uses for which
    /// <paramref name="keep"/> returns true. Refuses to rewire a graph output or a value captured by a subgraph,
    /// which would silently change what callers or branches see.</summary>
    /// <returns>The number of uses rewired.</returns>
    public int ReplaceAllUses(GraphValue old, GraphValue replacement, Func<ValueUse, bool>? keep = null)
    {
        if (old.Owner != this) throw new InvalidOperationException($"value '{old.Name}' is not in graph '{Name}'.");
        if (old.IsGraphOutput)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"value '{old.Name}' is a graph output of '{Name}'; rewiring it would change the model's outputs.");
        if (old.CapturingNodes.Count > 0)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"value '{old.Name}' is read inside the subgraph of {old.CapturingNodes[0].Describe()}; rewiring it is not supported.");
        var count = 0;
        foreach (var use in old.UseList.ToList())
        {
            if (keep?.Invoke(use) == true) continue;
            SetInput(use.Node, use.InputIndex, replacement);
            count++;
        }
        return count;
    }

    /// <summary>Declares a new graph input of the given element type and shape (numbers or symbolic names).</summary>
    public GraphValue AddInput(string name, int elemType, IReadOnlyList<object> dims)
    {
        if (!_usedNames.Add(name) || _values.ContainsKey(name))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot add input '{name}': the model already uses that name.");
        var info = new ValueInfoProto { Name = name, Type = TensorType(elemType, dims) };
        var v = new GraphValue(this, name) { IsGraphInput = true, DeclaredType = info.Type };
        _values[name] = v;
        _inputs.Add(v);
        _inputInfo[name] = info;
        return v;
    }

    /// <summary>Adds an initializer. When a graph input of the same name exists the initializer becomes its
    /// overridable default (IR version 4 and later).</summary>
    public GraphValue AddInitializer(TensorProto tensor)
    {
        if (_values.TryGetValue(tensor.Name, out var existing))
        {
            if (!existing.IsGraphInput || existing.Initializer is not null)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot add initializer '{tensor.Name}': the name is taken.");
            existing.Initializer = tensor;
            _initializers.Add(tensor);
            return existing;
        }
        if (!_usedNames.Add(tensor.Name))
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"cannot add initializer '{tensor.Name}': the name is taken.");
        var v = new GraphValue(this, tensor.Name) { Initializer = tensor };
        _values[tensor.Name] = v;
        _initializers.Add(tensor);
        return v;
    }

    /// <summary>Makes <paramref name="value"/> a graph output with the given declared type.</summary>
    public void AddOutput(GraphValue value, TypeProto type)
    {
        if (value.Owner != this) throw new InvalidOperationException($"value '{value.Name}' is not in graph '{Name}'.");
        if (OutputList.Contains(value)) throw new InvalidOperationException($"'{value.Name}' is already an output of '{Name}'.");
        value.DeclaredType ??= type;
        OutputList.Add(value);
        _outputInfo[value.Name] = new ValueInfoProto { Name = value.Name, Type = type };
    }

    /// <summary>Builds a tensor TypeProto; each dim is a number (long/int) or a symbolic name (string).</summary>
    public static TypeProto TensorType(int elemType, IReadOnlyList<object> dims)
    {
        var shape = new TensorShapeProto();
        foreach (var d in dims)
            shape.Dim.Add(d switch
            {
                string s => new TensorShapeProto.Types.Dimension { DimParam = s },
                int i => new TensorShapeProto.Types.Dimension { DimValue = i },
                long l => new TensorShapeProto.Types.Dimension { DimValue = l },
                _ => new TensorShapeProto.Types.Dimension(),
            });
        return new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = elemType, Shape = shape } };
    }

    // ---------------------------------------------------------------- order and checks

    /// <summary>Sorts nodes so every node follows the producers of its inputs and of the values its subgraphs
    /// capture. Stable: among ready nodes the original order wins. Sorts subgraphs too.</summary>
    /// <exception cref="OnnxSteerException">The graph has a cycle.</exception>
    public void TopologicalSort()
    {
        var index = new Dictionary<GraphNode, int>();
        for (var i = 0; i < _nodes.Count; i++) index[_nodes[i]] = i;
        var pending = new int[_nodes.Count];
        var dependents = new List<int>[_nodes.Count];
        for (var i = 0; i < _nodes.Count; i++) dependents[i] = [];
        for (var i = 0; i < _nodes.Count; i++)
        {
            var deps = new HashSet<int>();
            foreach (var v in Dependencies(_nodes[i]))
                if (v.Producer is { } p && p.Owner == this && index.TryGetValue(p, out var pi) && pi != i) deps.Add(pi);
            pending[i] = deps.Count;
            foreach (var d in deps) dependents[d].Add(i);
        }
        var ready = new PriorityQueue<int, int>();
        for (var i = 0; i < _nodes.Count; i++) if (pending[i] == 0) ready.Enqueue(i, i);
        var order = new List<GraphNode>(_nodes.Count);
        while (ready.TryDequeue(out var i, out _))
        {
            order.Add(_nodes[i]);
            foreach (var d in dependents[i]) if (--pending[d] == 0) ready.Enqueue(d, d);
        }
        if (order.Count != _nodes.Count)
        {
            var stuck = _nodes.First(n => pending[index[n]] > 0);
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"graph '{Name}' has a cycle through {stuck.Describe()}.");
        }
        _nodes.Clear();
        _nodes.AddRange(order);
        foreach (var node in _nodes)
            foreach (var sub in node.SubgraphMap.Values.SelectMany(s => s)) sub.TopologicalSort();
    }

    /// <summary>Values a node needs before it can run: its inputs and what its subgraphs capture from this graph.</summary>
    private IEnumerable<GraphValue> Dependencies(GraphNode node)
    {
        foreach (var v in node.InputList) if (v is not null) yield return v;
        foreach (var sub in node.SubgraphMap.Values.SelectMany(s => s))
            foreach (var captured in sub.CapturedValues())
                if (captured.Owner == this) yield return captured;
    }

    /// <summary>Outer values read by this graph or any graph nested in it, resolved to their defining values.</summary>
    private IEnumerable<GraphValue> CapturedValues()
    {
        foreach (var v in _values.Values)
            if (v.OuterValue is { } outer) yield return outer;
        foreach (var node in _nodes)
            foreach (var sub in node.SubgraphMap.Values.SelectMany(s => s))
                foreach (var c in sub.CapturedValues())
                    if (c.Owner != this) yield return c;
    }

    /// <summary>Checks the invariants a saved graph must hold: topological order, each value produced once,
    /// use lists in step with node inputs, unique non-empty node names. Returns the problems found (empty when fine).</summary>
    public IReadOnlyList<string> CheckInvariants(bool requireTopologicalOrder = true)
    {
        var problems = new List<string>();
        var available = new HashSet<GraphValue>();
        foreach (var v in _values.Values)
            if (v.Producer is null) available.Add(v);
        foreach (var node in _nodes)
        {
            for (var i = 0; i < node.InputList.Count; i++)
            {
                var v = node.InputList[i];
                if (v is null) continue;
                if (requireTopologicalOrder && !available.Contains(v)) problems.Add($"{node.Describe()} reads '{v.Name}' before it is computed.");
                if (!v.UseList.Contains(new ValueUse(node, i))) problems.Add($"use list of '{v.Name}' misses {node.Describe()} input {i}.");
            }
            foreach (var o in node.OutputList)
                if (o is not null && !available.Add(o)) problems.Add($"'{o.Name}' is produced twice.");
            foreach (var sub in node.SubgraphMap.Values.SelectMany(s => s)) problems.AddRange(sub.CheckInvariants(requireTopologicalOrder));
        }
        foreach (var v in _values.Values)
            foreach (var use in v.UseList)
                if (use.Node.Input(use.InputIndex) != v) problems.Add($"use list of '{v.Name}' names {use.Node.Describe()} input {use.InputIndex}, which reads something else.");
        if (Parent is null)
        {
            var names = new HashSet<string>(StringComparer.Ordinal);
            foreach (var n in AllNodes())
                if (n.Name.Length > 0 && !names.Add(n.Name) && n.Name.StartsWith("/onnxsteer/", StringComparison.Ordinal))
                    problems.Add($"node name '{n.Name}' is used twice.");
        }
        return problems;
    }

    /// <summary>All nodes of this graph and nested subgraphs.</summary>
    public IEnumerable<GraphNode> AllNodes()
    {
        foreach (var node in _nodes)
        {
            yield return node;
            foreach (var sub in node.SubgraphMap.Values.SelectMany(s => s))
                foreach (var n in sub.AllNodes()) yield return n;
        }
    }

    // ---------------------------------------------------------------- back to protobuf

    /// <summary>A copy of <paramref name="source"/> without nodes, inputs, outputs, initializers and value_info,
    /// keeping every other field (unknown ones included) byte for byte. The big repeated fields are set aside
    /// while cloning so an embedded-weight model is not copied.</summary>
    private static GraphProto ShellClone(GraphProto source)
    {
        var nodes = source.Node.ToList();
        var inits = source.Initializer.ToList();
        var inputs = source.Input.ToList();
        var outputs = source.Output.ToList();
        var infos = source.ValueInfo.ToList();
        source.Node.Clear(); source.Initializer.Clear(); source.Input.Clear(); source.Output.Clear(); source.ValueInfo.Clear();
        try { return source.Clone(); }
        finally
        {
            source.Node.AddRange(nodes); source.Initializer.AddRange(inits); source.Input.AddRange(inputs);
            source.Output.AddRange(outputs); source.ValueInfo.AddRange(infos);
        }
    }

    /// <summary>Converts the view back to a GraphProto (a new message; the source is not modified).
    /// Initializer messages are carried over as they are, external-data references included.</summary>
    public GraphProto ToProto()
    {
        var g = ShellClone(_source);
        g.Initializer.AddRange(_initializers);
        foreach (var v in _inputs) g.Input.Add(_inputInfo[v.Name]);
        foreach (var v in OutputList)
            g.Output.Add(_outputInfo.TryGetValue(v.Name, out var info) ? info : new ValueInfoProto { Name = v.Name, Type = v.Type });
        var live = new HashSet<string>(_values.Keys, StringComparer.Ordinal);
        foreach (var info in _source.ValueInfo)
            if (live.Contains(info.Name)) g.ValueInfo.Add(info);
        foreach (var node in _nodes)
        {
            var proto = new NodeProto { OpType = node.Template.OpType, Name = node.Template.Name };
            if (node.Template.HasDomain) proto.Domain = node.Template.Domain;
            if (node.Template.HasOverload) proto.Overload = node.Template.Overload;
            if (node.Template.HasDocString) proto.DocString = node.Template.DocString;
            proto.MetadataProps.AddRange(node.Template.MetadataProps);
            foreach (var attr in node.Template.Attribute)
            {
                if (node.SubgraphMap.TryGetValue(attr.Name, out var subs))
                {
                    // Set the old subgraphs aside while cloning the attribute: they are replaced anyway.
                    var (oldG, oldGraphs) = (attr.G, attr.Graphs.ToList());
                    attr.G = null; attr.Graphs.Clear();
                    var copy = attr.Clone();
                    attr.G = oldG; attr.Graphs.AddRange(oldGraphs);
                    if (oldG is not null) copy.G = subs[0].ToProto();
                    else copy.Graphs.AddRange(subs.Select(s => s.ToProto()));
                    proto.Attribute.Add(copy);
                }
                else proto.Attribute.Add(attr);
            }
            var lastInput = node.InputList.FindLastIndex(v => v is not null);
            for (var i = 0; i <= lastInput; i++) proto.Input.Add(node.InputList[i]?.Name ?? "");
            var lastOutput = node.OutputList.FindLastIndex(v => v is not null);
            for (var i = 0; i <= lastOutput; i++) proto.Output.Add(node.OutputList[i]?.Name ?? "");
            g.Node.Add(proto);
        }
        return g;
    }
}
