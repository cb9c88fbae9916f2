using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Decoder;

/// <summary>A graph input or output as <c>inspect</c> reports it.</summary>
public sealed record TensorInfo(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("dtype")] string Dtype,
    [property: JsonPropertyName("shape")] IReadOnlyList<string> Shape,
    [property: JsonPropertyName("has_default")] bool HasDefault);

/// <summary>One layout matcher's verdict, for <c>inspect --explain</c>.</summary>
public sealed record LayoutExplanation(
    [property: JsonPropertyName("layout")] string Layout,
    [property: JsonPropertyName("matched")] bool Matched,
    [property: JsonPropertyName("reason")] string Reason,
    [property: JsonPropertyName("stopped_at")] string? StoppedAt);

/// <summary>The residual stream of one layer as the graph holds it.</summary>
public sealed record ResidualInfo(
    [property: JsonPropertyName("layer")] int Layer,
    [property: JsonPropertyName("value")] string Value);

/// <summary>What <c>onnxsteer inspect</c> reports about a model.</summary>
public sealed record InspectionReport
{
    [JsonPropertyName("model_file")] public required string ModelFile { get; init; }
    /// <summary>Layout name, or null when no layout matches.</summary>
    [JsonPropertyName("layout")] public string? Layout { get; init; }
    /// <summary>Why nothing matched (closest layout and where it stopped), when <see cref="Layout"/> is null.</summary>
    [JsonPropertyName("not_a_decoder")] public string? NotADecoder { get; init; }
    [JsonPropertyName("num_layers")] public int? NumLayers { get; init; }
    [JsonPropertyName("hidden_size")] public int? HiddenSize { get; init; }
    /// <summary>Residual dtype (float32, float16, bfloat16).</summary>
    [JsonPropertyName("dtype")] public string? Dtype { get; init; }
    [JsonPropertyName("ir_version")] public required long IrVersion { get; init; }
    [JsonPropertyName("opsets")] public required IReadOnlyDictionary<string, long> Opsets { get; init; }
    [JsonPropertyName("residuals")] public required IReadOnlyList<ResidualInfo> Residuals { get; init; }
    [JsonPropertyName("inputs")] public required IReadOnlyList<TensorInfo> Inputs { get; init; }
    [JsonPropertyName("outputs")] public required IReadOnlyList<TensorInfo> Outputs { get; init; }
    [JsonPropertyName("external_data")] public required IReadOnlyList<string> ExternalData { get; init; }
    [JsonPropertyName("patched")] public required bool Patched { get; init; }
    /// <summary>The manifest of a patched folder, when present.</summary>
    [JsonPropertyName("steering")] public SteeringManifest? Steering { get; init; }
    /// <summary>Every layout's verdict (only with --explain).</summary>
    [JsonPropertyName("explain")] public IReadOnlyList<LayoutExplanation>? Explain { get; init; }

    /// <summary>Indented JSON (null fields left out).</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions
        { WriteIndented = true, DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull });
}

/// <summary>Reads a model (never its weights) and reports its decoder layout, sizes and interface.</summary>
public static class ModelInspector
{
    /// <summary>Inspects a folder or .onnx file.</summary>
    /// <exception cref="OnnxSteerException">Anything <see cref="OnnxModelFile.Load"/> refuses.</exception>
    public static InspectionReport Inspect(string path, bool explain = false)
    {
        var model = OnnxModelFile.Load(path);
        var proto = model.Proto;
        var graph = GraphView.Create(proto.Graph);
        var results = LayoutMatchers.Explain(graph);
        var match = results.FirstOrDefault(r => r.IsMatch);
        var patched = PatchPipeline.IsPatched(proto);
        var manifest = patched ? SteeringManifest.TryLoad(model.Directory) : null;
        var layout = match?.Decoder;
        var residuals = layout?.Points.Select(p => new ResidualInfo(p.Layer,
            p.Graph.Parent is null ? p.Describe() : $"{p.Graph.Name}: {p.Describe()}")).ToList() ?? [];
        if (layout is null && manifest is not null)
            residuals = manifest.Outputs.Select(kv => new ResidualInfo(int.Parse(kv.Key, System.Globalization.CultureInfo.InvariantCulture), kv.Value)).OrderBy(r => r.Layer).ToList();
        string? notADecoder = null;
        if (layout is null && manifest is null) notADecoder = LayoutMatchers.NotADecoder(results).Message;
        return new InspectionReport
        {
            ModelFile = model.FilePath,
            Layout = layout?.Name ?? manifest?.Layout,
            NotADecoder = notADecoder,
            NumLayers = layout?.NumLayers ?? manifest?.NumLayers,
            HiddenSize = layout?.HiddenSize ?? manifest?.HiddenSize,
            Dtype = layout?.ResidualDtype ?? manifest?.ResidualDtype,
            IrVersion = proto.IrVersion,
            Opsets = proto.OpsetImport.GroupBy(o => o.Domain.Length == 0 ? "ai.onnx" : o.Domain).ToDictionary(g => g.Key, g => g.Max(o => o.Version)),
            Residuals = residuals,
            Inputs = graph.Inputs.Select(Describe).ToList(),
            Outputs = graph.Outputs.Select(Describe).ToList(),
            ExternalData = model.ExternalDataFiles,
            Patched = patched,
            Steering = manifest,
            Explain = explain ? results.Select(r => new LayoutExplanation(r.LayoutName, r.IsMatch, r.Reason, r.StoppedAt)).ToList() : null,
        };
    }

    private static TensorInfo Describe(GraphValue v)
    {
        var tensor = v.Type?.TensorType;
        var shape = tensor?.Shape?.Dim.Select(d => d.HasDimValue ? d.DimValue.ToString(System.Globalization.CultureInfo.InvariantCulture) : d.HasDimParam ? d.DimParam : "?").ToList()
            ?? [];
        return new TensorInfo(v.Name, tensor is null ? "?" : DecoderLayout.DtypeName(tensor.ElemType), shape, v.IsGraphInput && v.Initializer is not null);
    }
}
