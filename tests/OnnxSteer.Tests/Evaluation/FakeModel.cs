using OnnxSteer.Evaluation;

namespace OnnxSteer.Tests.Evaluation;

/// <summary>A deterministic stand-in for a steered model: answers in a default style (normal case, commas, three
/// sentences) and changes style when the prompt carries an instruction or when steering of the right kind is
/// applied at the layers where the test says it works.</summary>
internal sealed class FakeModel : IResponseGenerator, IVectorCatalog
{
    public int BatchSize { get; init; } = 4;
    public int NumLayers { get; init; } = 6;
    public List<IReadOnlyList<EvalRequest>> Batches { get; } = [];
    public int Generated => Batches.Sum(b => b.Count);

    /// <summary>Vector names this model has, each at every layer with norm 2.</summary>
    public HashSet<string> Vectors { get; init; } = ["change_case.english_lowercase", "change_case.english_capital", "detectable_format.json_format", "length_constraints.number_sentences.at_most", "keywords.existence.ocean", "keywords.existence.salt"];

    public bool Contains(string name) => Vectors.Contains(name);
    public IReadOnlyList<int> Layers(string name) => [.. Enumerable.Range(0, NumLayers)];
    public float Norm(string name, int layer) => 2f;
    public double? Separability(string name, int layer) => name == "change_case.english_capital" && layer == 3 ? 1.0 : 0.5;

    public Task<IReadOnlyList<GeneratedResponse>> GenerateAsync(IReadOnlyList<EvalRequest> batch, CancellationToken cancellationToken = default)
    {
        Batches.Add(batch);
        return Task.FromResult<IReadOnlyList<GeneratedResponse>>([.. batch.Select(r => new GeneratedResponse(Respond(r), -1.0))]);
    }

    public static string Respond(EvalRequest r)
    {
        var p = r.Prompt.ToLowerInvariant();
        var topic = p.Contains("river") ? "river" : p.Contains("ocean") ? "ocean" : "mountain";
        var text = $"The {topic} is old, and it is beautiful. People visit the {topic} often. It has a long history.";
        bool Steered(string vector, Func<SteerOp, bool> works) => r.Steering.Any(o => o.Vector == vector && works(o));

        // Lowercase steers at layers 2-5 by projection, but at layer 2 it breaks prompts that carry the instruction;
        // capital only at layer 3; JSON never.
        if (p.Contains("lowercase") && Steered("change_case.english_lowercase", o => o.Layer == 2)) return "";
        // At layer 1 lowercase projection works but makes mountain answers talk about a valley (off topic).
        if (Steered("change_case.english_lowercase", o => o.Mode == SteerMode.Project && o.Layer == 1))
            return text.Replace("mountain", "valley").ToLowerInvariant();
        if (p.Contains("lowercase") || Steered("change_case.english_lowercase", o => o.Mode == SteerMode.Project && o.Layer >= 2)) text = text.ToLowerInvariant();
        if (p.Contains("capital letters") || Steered("change_case.english_capital", o => o.Mode == SteerMode.Project && o.Layer == 3)) text = text.ToUpperInvariant();
        // JSON steers only by header steering at layer 0 (vectors with header positions).
        if (p.Contains("json") || Steered("detectable_format.json_format", o => o.Mode == SteerMode.Header && o.Layer == 0 && o.Weight >= 1)) text = $"{{\"answer\": \"{text.Replace("\"", "'")}\"}}";
        // Conciseness: weight >= 4 (2 x norm) at layer 4 gives one sentence; weight >= 16 collapses into repetition.
        if (Steered("length_constraints.number_sentences.at_most", o => o.Mode == SteerMode.Add && o.Weight >= 16)) return "short short short short short short short short short short short short";
        if (p.Contains("at most 1 sentence") || Steered("length_constraints.number_sentences.at_most", o => o.Mode == SteerMode.Add && o.Layer == 4 && o.Weight >= 4))
            text = text[..(text.IndexOf('.') + 1)];
        // Word inclusion at layer 1 with weight >= 4; exclusion (negative weight) at layer 5 with weight <= -8.
        if (p.Contains("include the word ocean") || Steered("keywords.existence.ocean", o => o.Layer == 1 && o.Weight >= 4)) text += " The ocean is near.";
        // The per-word exclusion vector works added by header steering at layer 1.
        if (p.Contains("do not use the word ocean") || Steered("keywords.existence.ocean", o => o.Layer == 5 && o.Weight <= -8)
            || Steered("keywords.forbidden_words.ocean", o => o.Mode == SteerMode.Header && o.Layer == 1 && o.Weight >= 1))
            text = text.Replace("ocean", "sea").Replace("OCEAN", "SEA");
        return text;
    }
}
