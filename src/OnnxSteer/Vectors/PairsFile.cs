using System.Text.Json;

namespace OnnxSteer.Vectors;

/// <summary>One contrast pair: the same query with the instruction (x+) and without it (x−).</summary>
/// <param name="With">The prompt with the instruction.</param>
/// <param name="Without">The prompt without it.</param>
/// <param name="Line">1-based line of the pairs file it came from (0 when built in code).</param>
public sealed record PromptPair(string With, string Without, int Line = 0);

/// <summary>Reads <c>pairs.jsonl</c>: one JSON object per line, either <c>{"with": "...", "without": "..."}</c> or
/// <c>{"prompt": "...", "instruction": "..."}</c> (with = prompt + " " + instruction, as IFEval prompts append their
/// instructions; without = prompt). Blank lines are skipped. Reading is lazy so memory stays flat however long the file is.</summary>
public static class PairsFile
{
    /// <summary>Enumerates the pairs of a file, line by line.</summary>
    /// <exception cref="OnnxSteerException">Missing file (NotFound) or a bad line (InvalidData, naming the line).</exception>
    public static IEnumerable<PromptPair> Read(string path)
    {
        if (!File.Exists(path)) throw new OnnxSteerException(ErrorKind.NotFound, $"pairs file '{path}' does not exist.");
        return ReadLines(path);
    }

    /// <summary>Reads the whole file once to validate every line and count the pairs (before any model work starts).</summary>
    /// <exception cref="OnnxSteerException">As <see cref="Read"/>, or a file without pairs (InvalidData).</exception>
    public static int Count(string path)
    {
        var n = 0;
        foreach (var _ in Read(path)) n++;
        if (n == 0) throw new OnnxSteerException(ErrorKind.InvalidData, $"pairs file '{path}' holds no pairs.");
        return n;
    }

    private static IEnumerable<PromptPair> ReadLines(string path)
    {
        var number = 0;
        foreach (var line in File.ReadLines(path))
        {
            number++;
            if (string.IsNullOrWhiteSpace(line)) continue;
            yield return ParseLine(line, number, path);
        }
    }

    /// <summary>Parses one line; <paramref name="number"/> and <paramref name="path"/> name it in errors.</summary>
    public static PromptPair ParseLine(string line, int number, string path)
    {
        OnnxSteerException Bad(string why) => new(ErrorKind.InvalidData, $"{path}:{number}: {why}");
        JsonDocument doc;
        try { doc = JsonDocument.Parse(line, new JsonDocumentOptions { MaxDepth = 4 }); }
        catch (JsonException e) { throw Bad($"not valid JSON ({e.Message})."); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object)
                throw Bad("expected an object {\"with\": ..., \"without\": ...} or {\"prompt\": ..., \"instruction\": ...}.");
            string? Text(string name)
            {
                if (!root.TryGetProperty(name, out var v)) return null;
                if (v.ValueKind != JsonValueKind.String) throw Bad($"\"{name}\" must be a string.");
                var s = v.GetString()!;
                if (s.Trim().Length == 0) throw Bad($"\"{name}\" is empty.");
                return s;
            }
            var with = Text("with");
            var without = Text("without");
            var prompt = Text("prompt");
            var instruction = Text("instruction");
            if (with is not null || without is not null)
            {
                if (prompt is not null || instruction is not null) throw Bad("mixes \"with\"/\"without\" with \"prompt\"/\"instruction\"; use one form.");
                if (with is null || without is null) throw Bad($"has \"{(with is null ? "without" : "with")}\" but no \"{(with is null ? "with" : "without")}\".");
                return new PromptPair(with, without, number);
            }
            if (prompt is not null && instruction is not null) return new PromptPair(prompt + " " + instruction, prompt, number);
            throw Bad("expected {\"with\": ..., \"without\": ...} or {\"prompt\": ..., \"instruction\": ...}.");
        }
    }
}
