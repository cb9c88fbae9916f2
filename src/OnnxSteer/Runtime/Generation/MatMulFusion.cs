using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Runtime;

/// <summary>A decode step multiplies one row by every weight matrix, and an exported Llama does it in separate MatMuls that
/// read the same input: q, k and v after the input norm, gate and up after the post-attention norm. This rewrite, done in
/// memory at load (the folder is never changed), replaces each such group by one MatMul over the weights concatenated
/// along N, followed by a Split that gives back the original output names, so everything downstream (attention, rotary,
/// the patch's steering nodes, exposed residuals) reads the same tensors as before.
/// <para>The concatenation is a Concat node over the original initializers, not new weight bytes: ONNX Runtime's constant
/// folding (any optimization level but none) computes it once at session creation and drops the originals, which are no
/// longer read, and MatMul's prepacking then releases the folded tensor as it would an original weight. So the rewrite
/// reads no external data and the .onnx file stays small, and resident weights end the load as they would unfused.</para>
/// <para>Applied only to plain ONNX MatMuls whose second input is a 2-D float32 initializer that no other node reads and
/// that is not a graph input (an overridable initializer), grouped by the same first input and the same K; a graph with
/// subgraphs (If/Loop) is left alone, as are quantized MatMulNBits. MLAS computes each output column from the same row and
/// column whatever N is, so the logits are those of the unfused graph bit for bit (tests compare them). Float16 is left
/// alone: on the CPU, ONNX Runtime runs those MatMuls in float32 between inserted Casts and keeps float32 across the
/// following nodes where it can, which the Split interrupts (the fp16 export's logits moved by up to 2.4e-4).</para></summary>
internal static class MatMulFusion
{
    internal const string NamePrefix = "/onnxsteer/fused_matmul";

    /// <summary>Fuses every group in <paramref name="model"/>; the number of groups fused (0: the model untouched).</summary>
    internal static int Rewrite(ModelProto model)
    {
        var graph = model.Graph;
        var opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 0;
        if (opset < 11) return 0; // Split with a negative axis
        // Names in a subgraph may read the outer graph's tensors: counting uses there is not worth the complexity.
        if (graph.Node.Any(n => n.Attribute.Any(a => a.G is not null || a.Graphs.Count > 0))) return 0;

        var inputs = new HashSet<string>(graph.Input.Select(i => i.Name), StringComparer.Ordinal);
        var outputs = new HashSet<string>(graph.Output.Select(o => o.Name), StringComparer.Ordinal);
        var initializers = new Dictionary<string, TensorProto>(StringComparer.Ordinal);
        foreach (var t in graph.Initializer) initializers.TryAdd(t.Name, t);
        var uses = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var n in graph.Node)
            foreach (var i in n.Input)
                uses[i] = uses.GetValueOrDefault(i) + 1;

        TensorProto? Weight(NodeProto n)
        {
            if (n.OpType != "MatMul" || n.Domain is not ("" or "ai.onnx") || n.Input.Count != 2 || n.Output.Count != 1) return null;
            if (outputs.Contains(n.Output[0]) || inputs.Contains(n.Input[1]) || uses.GetValueOrDefault(n.Input[1]) != 1) return null;
            if (!initializers.TryGetValue(n.Input[1], out var w) || w.Dims.Count != 2 || w.Dims[0] <= 0 || w.Dims[1] <= 0) return null;
            return w.DataType == (int)TensorProto.Types.DataType.Float ? w : null;
        }

        // Groups keep the graph's node order, so the fused node goes where the first member was: its input is ready there,
        // and every member's consumers come after it.
        var groups = graph.Node.Select(n => (Node: n, Weight: Weight(n)))
            .Where(z => z.Weight is not null)
            .GroupBy(z => (z.Node.Input[0], z.Weight!.DataType, z.Weight.Dims[0]))
            .Where(g => g.Count() > 1)
            .Select(g => g.ToList())
            .ToList();
        if (groups.Count == 0) return 0;

        var used = new HashSet<string>(graph.Node.SelectMany(n => n.Output).Concat(inputs).Concat(initializers.Keys), StringComparer.Ordinal);
        string Fresh(string name)
        {
            var candidate = name;
            for (int i = 1; used.Contains(candidate); i++) candidate = $"{name}_{i}";
            used.Add(candidate);
            return candidate;
        }
        static AttributeProto Int(string name, long value) => new() { Name = name, Type = AttributeProto.Types.AttributeType.Int, I = value };

        int index = 0;
        foreach (var group in groups)
        {
            var first = group[0].Node;
            var prefix = $"{NamePrefix}_{index++}";
            var concat = new NodeProto { OpType = "Concat", Name = Fresh($"{prefix}/weights") };
            concat.Input.AddRange(group.Select(z => z.Node.Input[1]));
            concat.Output.Add(Fresh($"{prefix}/weights/output_0"));
            concat.Attribute.Add(Int("axis", 1));
            var matmul = new NodeProto { OpType = "MatMul", Name = Fresh($"{prefix}/MatMul") };
            matmul.Input.Add(first.Input[0]);
            matmul.Input.Add(concat.Output[0]);
            matmul.Output.Add(Fresh($"{prefix}/MatMul/output_0"));
            var split = new NodeProto { OpType = "Split", Name = Fresh($"{prefix}/Split") };
            split.Input.Add(matmul.Output[0]);
            split.Output.AddRange(group.Select(z => z.Node.Output[0]));
            split.Attribute.Add(Int("axis", -1));
            var sizes = group.Select(z => z.Weight!.Dims[1]).ToArray();
            if (opset >= 13)
            {
                var t = new TensorProto { Name = Fresh($"{prefix}/split_sizes"), DataType = (int)TensorProto.Types.DataType.Int64 };
                t.Dims.Add(sizes.Length);
                t.Int64Data.AddRange(sizes);
                graph.Initializer.Add(t);
                split.Input.Add(t.Name);
            }
            else
                split.Attribute.Add(new AttributeProto { Name = "split", Type = AttributeProto.Types.AttributeType.Ints, Ints = { sizes } });

            int at = graph.Node.IndexOf(first);
            graph.Node.RemoveAt(at);
            graph.Node.Insert(at, split);
            graph.Node.Insert(at, matmul);
            graph.Node.Insert(at, concat);
            foreach (var (node, _) in group.Skip(1)) graph.Node.Remove(node);
        }
        return groups.Count;
    }
}
