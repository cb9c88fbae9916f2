using System.Text.Json;

namespace OnnxSteer.Evaluation;

/// <summary>One evaluation prompt: a base query, the instruction text that the with-instruction settings append,
/// and the checks that score the response (several for composition prompts).</summary>
public sealed record EvalItem
{
    /// <summary>Identifier from the data file (<c>key</c>).</summary>
    public required string Key { get; init; }

    /// <summary>The base query without the instruction.</summary>
    public required string Prompt { get; init; }

    /// <summary>The instruction text (one or more sentences), appended for the with-instruction settings.</summary>
    public required string Instruction { get; init; }

    /// <summary>The checks, one per id in <c>instruction_id_list</c>.</summary>
    public required IReadOnlyList<InstructionCheck> Checks { get; init; }

    /// <summary>The prompt the with-instruction settings send: <c>prompt + " " + instruction</c>, as IFEval prompts read.</summary>
    public string PromptWithInstruction => $"{Prompt} {Instruction}";

    /// <summary>The ids of <see cref="Checks"/>, joined with <c>+</c> (the row name of a composition prompt).</summary>
    public string IdSignature => string.Join("+", Checks.Select(c => c.Id));
}

/// <summary>Reads evaluation data: JSON lines of
/// <c>{"key", "prompt", "instruction", "instruction_id_list": [...], "kwargs": [{...}]}</c>.</summary>
public static class EvalDataset
{
    /// <summary>Loads a .jsonl file.</summary>
    /// <exception cref="OnnxSteerException">NotFound for a missing file; InvalidData, naming the line, for bad content.</exception>
    public static IReadOnlyList<EvalItem> Load(string path)
    {
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"evaluation data '{path}' does not exist.");
        using var reader = new StreamReader(path);
        return Parse(reader, path);
    }

    /// <summary>Parses JSON lines; blank lines are skipped. <paramref name="source"/> names the input in errors.</summary>
    /// <exception cref="OnnxSteerException">(InvalidData) a line that is not valid JSON, misses a field, has an unknown
    /// instruction id, kwargs that do not match the ids, a duplicate key, or no items at all.</exception>
    public static IReadOnlyList<EvalItem> Parse(TextReader reader, string source)
    {
        var items = new List<EvalItem>();
        var keys = new HashSet<string>(StringComparer.Ordinal);
        var lineNumber = 0;
        while (reader.ReadLine() is { } line)
        {
            lineNumber++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            try
            {
                var item = ParseLine(line, lineNumber);
                if (!keys.Add(item.Key)) throw new FormatException($"duplicate key \"{item.Key}\"");
                items.Add(item);
            }
            catch (Exception e) when (e is FormatException or JsonException or InvalidOperationException)
            {
                throw new OnnxSteerException(ErrorKind.InvalidData, $"{source}:{lineNumber}: {e.Message}");
            }
            catch (OnnxSteerException e) when (e.Kind == ErrorKind.InvalidData)
            {
                throw new OnnxSteerException(ErrorKind.InvalidData, $"{source}:{lineNumber}: {e.Message}");
            }
        }
        if (items.Count == 0) throw new OnnxSteerException(ErrorKind.InvalidData, $"{source} holds no evaluation items.");
        return items;
    }

    private static EvalItem ParseLine(string line, int lineNumber)
    {
        using var doc = JsonDocument.Parse(line);
        var root = doc.RootElement;
        if (root.ValueKind != JsonValueKind.Object) throw new FormatException($"expected a JSON object, found {root.ValueKind}");
        var key = root.TryGetProperty("key", out var k)
            ? k.ValueKind switch
            {
                JsonValueKind.String => k.GetString()!,
                JsonValueKind.Number => k.GetRawText(),
                _ => throw new FormatException($"\"key\" must be a string or number, not {k.ValueKind}"),
            }
            : lineNumber.ToString(System.Globalization.CultureInfo.InvariantCulture);
        var prompt = RequiredString(root, "prompt");
        var instruction = RequiredString(root, "instruction");
        if (!root.TryGetProperty("instruction_id_list", out var ids) || ids.ValueKind != JsonValueKind.Array || ids.GetArrayLength() == 0)
            throw new FormatException("missing \"instruction_id_list\" (a non-empty list of instruction ids)");
        JsonElement[] kwargs = [];
        if (root.TryGetProperty("kwargs", out var kw) && kw.ValueKind != JsonValueKind.Null)
        {
            if (kw.ValueKind != JsonValueKind.Array) throw new FormatException("\"kwargs\" must be a list with one object per instruction id");
            kwargs = [.. kw.EnumerateArray()];
            if (kwargs.Length != ids.GetArrayLength())
                throw new FormatException($"\"kwargs\" has {kwargs.Length} entries; \"instruction_id_list\" has {ids.GetArrayLength()}");
        }
        var checks = new List<InstructionCheck>();
        var index = 0;
        foreach (var id in ids.EnumerateArray())
        {
            if (id.ValueKind != JsonValueKind.String) throw new FormatException($"instruction ids must be strings, not {id.GetRawText()}");
            var args = kwargs.Length == 0 ? InstructionArgs.None : InstructionArgs.FromJson(kwargs[index]);
            checks.Add(InstructionCheck.Create(id.GetString()!, args));
            index++;
        }
        return new EvalItem { Key = key, Prompt = prompt, Instruction = instruction, Checks = checks };
    }

    private static string RequiredString(JsonElement root, string name) =>
        root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String && !string.IsNullOrWhiteSpace(v.GetString())
            ? v.GetString()!
            : throw new FormatException($"missing \"{name}\" (a non-empty string)");
}
