using System.Globalization;
using System.Text.Json.Nodes;
using OnnxSteer.Contract;
using OnnxSteer.Vectors;

namespace OnnxSteer.Cli;

/// <summary>How <c>vectors show</c> and <c>extract --json</c> print a vector file (moved out of the library: printing is the CLI's).</summary>
internal static class VectorPrinting
{
    /// <summary>A JSON description of a vector file for <c>vectors show --json</c>.</summary>
    public static JsonObject Describe(InstructionVectorFile file, string path)
    {
        var vectors = new JsonArray();
        foreach (var v in file.Vectors)
        {
            var layers = new JsonArray();
            foreach (var l in v.Layers.Values.OrderBy(l => l.Layer))
                layers.Add(new JsonObject
                {
                    ["layer"] = l.Layer, ["norm"] = l.Norm, ["z_bar"] = l.ZBar, ["mean_projection_without"] = l.MeanProjectionWithout,
                    ["separability"] = l.Separability,
                });
            vectors.Add(new JsonObject
            {
                ["name"] = v.Name, ["method"] = v.Method, ["pair_count"] = v.PairCount, ["chat_template"] = v.ChatTemplate,
                ["hidden_size"] = v.HiddenSize, ["layers"] = layers,
            });
        }
        return new JsonObject
        {
            ["path"] = path,
            ["model"] = file.Model is { } m ? new JsonObject
            {
                ["hidden_size"] = m.HiddenSize, ["num_layers"] = m.NumLayers, ["model_type"] = m.ModelType, ["source_graph_sha256"] = m.SourceGraphSha256,
                ["source_weights_fingerprint"] = m.SourceWeightsFingerprint,
            } : null,
            ["vectors"] = vectors,
            ["warnings"] = new JsonArray(file.Warnings.Select(w => (JsonNode)JsonValue.Create(w)!).ToArray()),
        };
    }

    /// <summary>Human-readable description for <c>vectors show</c>.</summary>
    public static void Print(InstructionVectorFile file, string path, TextWriter output)
    {
        string F(double? x, string format = "F3") => x is { } v ? v.ToString(format, CultureInfo.InvariantCulture) : "-";
        output.WriteLine(path);
        output.WriteLine(file.Model is { } m
            ? $"  model: {m.ModelType ?? "unknown type"}, hidden size {m.HiddenSize}, {m.NumLayers} layers, source graph {(m.SourceGraphSha256 is { Length: >= 12 } h ? h[..12] : m.SourceGraphSha256 ?? "unknown")}"
            : "  model: unknown (no fingerprint)");
        foreach (var v in file.Vectors)
        {
            output.WriteLine($"  vector '{v.Name}': {v.Method}, {(v.PairCount is { } n ? $"{n} pairs" : "pair count unknown")}, hidden {v.HiddenSize}, layers {LayerSelection.Format(v.Layers.Keys)}");
            output.WriteLine($"    {"layer",5} {"norm",12} {"z_bar",12} {"mean_proj_without",18} {"separability",12}");
            foreach (var l in v.Layers.Values.OrderBy(l => l.Layer))
                output.WriteLine($"    {l.Layer,5} {F(l.Norm, "G6"),12} {F(l.ZBar, "G6"),12} {F(l.MeanProjectionWithout, "G6"),18} {F(l.Separability),12}");
        }
        foreach (var w in file.Warnings) output.WriteLine($"  warning: {w}");
    }
}
