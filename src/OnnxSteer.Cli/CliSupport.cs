using System.CommandLine;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;

namespace OnnxSteer.Cli;

/// <summary>The one JSON policy of the CLI: every <c>--json</c> print and <c>--json-out</c> file goes through here, so all
/// verbs indent and escape the same way (readable &lt;, &gt;, quotes and non-ASCII text; only what JSON requires is escaped).</summary>
internal static class CliJson
{
    public static readonly JsonSerializerOptions Options = new()
    {
        WriteIndented = true,
        Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping,
    };

    /// <summary>Re-writes JSON text (from a library report's <c>ToJson</c>) with <see cref="Options"/>.</summary>
    public static string Format(string json) => JsonNode.Parse(json)?.ToJsonString(Options) ?? "null";

    /// <summary>Writes a JSON node with <see cref="Options"/>.</summary>
    public static string Format(JsonNode node) => node.ToJsonString(Options);

    /// <summary>Serialises an object with <see cref="Options"/>.</summary>
    public static string Serialize<T>(T value, JsonSerializerOptions? options = null) =>
        Format(JsonSerializer.Serialize(value, options ?? Options));
}

/// <summary>The one output policy of the CLI for <c>-o</c>, <c>--plot</c> and <c>--json-out</c>: an existing output is
/// refused without <c>--overwrite</c>, a folder where a file goes is refused, and missing parent folders are created
/// (by <see cref="AtomicFile"/>, which also keeps the temporary file's name out of messages).</summary>
internal static class OutputPolicy
{
    /// <summary>Checks a file output before any work is done.</summary>
    /// <exception cref="OnnxSteerException">(Output) the path is a folder, or exists and <paramref name="overwrite"/> is false.</exception>
    public static void CheckFile(string? path, bool overwrite, string option)
    {
        if (path is null) return;
        if (Directory.Exists(path)) throw new OnnxSteerException(ErrorKind.Output, $"{option} '{path}' is a folder.");
        if (File.Exists(path) && !overwrite) throw new OnnxSteerException(ErrorKind.Output, $"{option} '{path}' already exists; pass --overwrite to replace it.");
    }

    /// <summary>Checks a folder output (patch <c>-o</c>).</summary>
    /// <exception cref="OnnxSteerException">(Output) the path is a file, or a folder that exists and <paramref name="overwrite"/> is false.</exception>
    public static void CheckFolder(string path, bool overwrite, string option)
    {
        if (File.Exists(path)) throw new OnnxSteerException(ErrorKind.Output, $"{option} '{path}' is a file.");
        if (Directory.Exists(path) && !overwrite) throw new OnnxSteerException(ErrorKind.Output, $"{option} '{path}' already exists; pass --overwrite to replace it.");
    }

    /// <summary>Writes text atomically (parent folders created) and says so on stderr.</summary>
    public static void WriteText(string path, string text, TextWriter stderr)
    {
        AtomicFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(text)));
        stderr.WriteLine($"wrote {path}");
    }
}

/// <summary>Option validators that never throw: System.CommandLine runs validators even when the value did not parse
/// ("--max-new-tokens z"), and reading the value there throws, which surfaced as an internal error. An unparsable
/// value is left to the parser's own one-line error.</summary>
internal static class CliValidators
{
    public static void Positive(Option<int> option) => option.Validators.Add(r =>
    {
        if (r.Tokens.Count == 1 && int.TryParse(r.Tokens[0].Value, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var v) && v <= 0)
            r.AddError($"{option.Name} must be positive.");
    });

    public static void Positive(Option<int?> option) => option.Validators.Add(r =>
    {
        if (r.Tokens.Count == 1 && int.TryParse(r.Tokens[0].Value, System.Globalization.NumberStyles.Integer, System.Globalization.CultureInfo.InvariantCulture, out var v) && v <= 0)
            r.AddError($"{option.Name} must be positive.");
    });
}

/// <summary>Layer lists on the command line: every <c>--layers</c>/<c>--expose</c> goes through <see cref="LayerSelection"/>.</summary>
internal static class CliLayers
{
    public static LayerSelection Parse(string? text, string option) => text is null ? LayerSelection.All : LayerSelection.Parse(text, option);

    /// <summary>A layer list where "none" leaves nothing to do (extract, sweep, vectors convert).</summary>
    /// <exception cref="OnnxSteerException">(Usage) "none", or text that is not a layer list.</exception>
    public static LayerSelection ParseSome(string text, string option)
    {
        var selection = LayerSelection.Parse(text, option);
        return selection.IsNone ? throw new OnnxSteerException(ErrorKind.Usage, $"{option} none leaves nothing to do; give all or a list such as 3,5,10-12.") : selection;
    }
}
