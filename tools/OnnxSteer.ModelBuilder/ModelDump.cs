using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.ModelBuilder;

/// <summary>Prints a model's graph one line per item (inputs, outputs, initializers, nodes with domain, attributes and
/// wiring); used to compare fixtures with real exports.</summary>
internal static class ModelDump
{
    /// <summary>Writes the dump of the .onnx file at <paramref name="path"/> to <paramref name="w"/>.</summary>
    public static void Write(string path, TextWriter w)
    {
        var m = OnnxModelFile.Parse(path);
        w.WriteLine($"ir={m.IrVersion} producer={m.ProducerName} {m.ProducerVersion} opsets={string.Join(",", m.OpsetImport.Select(o => o.Domain + ":" + o.Version))}");
        WriteGraph(m.Graph, w, "");
    }

    private static void WriteGraph(GraphProto g, TextWriter w, string indent)
    {
        foreach (var i in g.Input) w.WriteLine($"{indent}input {i.Name} {Type(i)}");
        foreach (var i in g.Output) w.WriteLine($"{indent}output {i.Name} {Type(i)}");
        foreach (var i in g.Initializer)
            w.WriteLine($"{indent}init {i.Name} {(TensorProto.Types.DataType)i.DataType}[{string.Join(",", i.Dims)}]{(i.DataLocation == TensorProto.Types.DataLocation.External ? " external" : "")}");
        foreach (var n in g.Node)
        {
            w.WriteLine($"{indent}node {n.Name} {(n.Domain.Length > 0 ? n.Domain + "::" : "")}{n.OpType} in=[{string.Join(",", n.Input)}] out=[{string.Join(",", n.Output)}] {string.Join(" ", n.Attribute.Where(a => a.Type != AttributeProto.Types.AttributeType.Graph).Select(Attr))}");
            foreach (var a in n.Attribute.Where(a => a.Type == AttributeProto.Types.AttributeType.Graph))
            {
                w.WriteLine($"{indent}  subgraph {a.Name}:");
                WriteGraph(a.G, w, indent + "    ");
            }
        }
    }

    private static string Type(ValueInfoProto v) => v.Type?.TensorType is { } t
        ? $"{(TensorProto.Types.DataType)t.ElemType}[{string.Join(",", t.Shape?.Dim.Select(d => d.HasDimParam ? d.DimParam : d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture)) ?? [])}]"
        : "?";

    private static string Attr(AttributeProto a) => a.Name + "=" + a.Type switch
    {
        AttributeProto.Types.AttributeType.Int => a.I.ToString(System.Globalization.CultureInfo.InvariantCulture),
        AttributeProto.Types.AttributeType.Float => a.F.ToString("R", System.Globalization.CultureInfo.InvariantCulture),
        AttributeProto.Types.AttributeType.Ints => "[" + string.Join(",", a.Ints) + "]",
        AttributeProto.Types.AttributeType.String => a.S.ToStringUtf8(),
        AttributeProto.Types.AttributeType.Tensor => $"tensor({(TensorProto.Types.DataType)a.T.DataType}[{string.Join(",", a.T.Dims)}])",
        _ => a.Type.ToString(),
    };
}
