using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Runtime;

/// <summary>The generation loop reads the logits of the last position only, but an exported decoder computes its LM head
/// for every position of the prompt: on the 134M medium model that is about a fifth of the prefill's matrix work (vocab
/// 32000 x hidden 768 against 110M other weights), and GenAI pays it too. This rewrite, done in memory at load (the
/// folder is never changed), slices the LM head's input to the last position, so prefill computes logits
/// <c>[batch, 1, vocab]</c>; a decode step's input has one position already, so the Slice passes it through.
/// <para>Applied only where it is unambiguous and exact: the graph output <c>logits</c> is declared rank 3 and is
/// produced directly by a MatMul with a 2-D weight, whose output rank is its first input's, so that input is
/// <c>[batch, sequence, hidden]</c>; default opset 10 or later (Slice with input starts/ends); and the .onnx file is small
/// (weights external), so parsing it costs milliseconds (<see cref="LoadRewrites"/>). ONNX Runtime's float MatMul gives the last row the same bits
/// for one row as for the whole prompt (tests compare log-probabilities exactly); its 4-bit MatMulNBits does not (another
/// kernel for a single row, about 1e-9 apart), so int4 LM heads are left alone, as is anything else (an If-wrapped
/// merged decoder, a logits Cast or bias Add, weights inside the file).</para></summary>
internal static class LastPositionLogits
{
    internal const string SliceNodeName = "/onnxsteer/last_position_logits";

    /// <summary>Inserts the Slice into <paramref name="model"/>; false (and the model untouched) when it does not apply.</summary>
    internal static bool Rewrite(ModelProto model)
    {
        var graph = model.Graph;
        var opset = model.OpsetImport.FirstOrDefault(o => o.Domain is "" or "ai.onnx")?.Version ?? 0;
        if (opset < 10) return false;
        var output = graph.Output.FirstOrDefault(o => o.Name == "logits");
        var dims = output?.Type?.TensorType?.Shape?.Dim;
        if (output is null || dims is null || dims.Count != 3) return false;
        if (dims[1].HasDimValue && dims[1].DimValue == 1) return false; // already one position
        var producer = graph.Node.FirstOrDefault(n => n.Output.Contains("logits"));
        if (producer is null || producer.Input.Count < 2) return false;
        if (producer.OpType != "MatMul" || producer.Domain is not ("" or "ai.onnx")) return false;
        if (graph.Initializer.FirstOrDefault(i => i.Name == producer.Input[1]) is not { Dims.Count: 2 }) return false;
        var used = new HashSet<string>(graph.Node.SelectMany(n => n.Output).Concat(graph.Input.Select(i => i.Name)).Concat(graph.Initializer.Select(i => i.Name)), StringComparer.Ordinal);
        string Fresh(string name)
        {
            var candidate = name;
            for (int i = 1; used.Contains(candidate); i++) candidate = $"{name}_{i}";
            used.Add(candidate);
            return candidate;
        }
        TensorProto Int64(string name, long value)
        {
            var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            t.Dims.Add(1);
            t.Int64Data.Add(value);
            return t;
        }
        var starts = Int64(Fresh("onnxsteer.last_position.starts"), -1);
        var ends = Int64(Fresh("onnxsteer.last_position.ends"), long.MaxValue);
        var axes = Int64(Fresh("onnxsteer.last_position.axes"), 1);
        graph.Initializer.Add(starts);
        graph.Initializer.Add(ends);
        graph.Initializer.Add(axes);
        var sliced = Fresh($"{SliceNodeName}/output_0");
        var slice = new NodeProto { OpType = "Slice", Name = SliceNodeName };
        slice.Input.Add(producer.Input[0]);
        slice.Input.Add(starts.Name);
        slice.Input.Add(ends.Name);
        slice.Input.Add(axes.Name);
        slice.Output.Add(sliced);
        // Nodes are in topological order: the Slice goes right before the LM head that now reads it.
        graph.Node.Insert(graph.Node.IndexOf(producer), slice);
        producer.Input[0] = sliced;
        dims[1] = new TensorShapeProto.Types.Dimension { DimValue = 1 };
        return true;
    }
}
