namespace OnnxSteer.Evaluation;

/// <summary>Progress of an evaluation or sweep: generations done out of those needed.</summary>
public readonly record struct EvalProgress(int Done, int Total);

/// <summary>Runs a set of requests through a generator once each. Greedy decoding is deterministic, so identical
/// requests (same prompt, same steering) are generated once and shared: the unsteered baseline of an instruction
/// without a selected layer, or the "no steering" candidate of every sweep row, costs nothing extra.</summary>
internal static class GenerationPool
{
    public static async Task<IReadOnlyDictionary<string, GeneratedResponse>> RunAsync(
        IEnumerable<EvalRequest> requests, IResponseGenerator generator, IProgress<EvalProgress>? progress, CancellationToken cancellationToken)
    {
        var unique = new Dictionary<string, EvalRequest>(StringComparer.Ordinal);
        foreach (var r in requests) unique.TryAdd(r.CacheKey, r);
        // Rows that share steering and have similar lengths batch best (less padding, one steer_batch of 1).
        var ordered = unique.Values
            .OrderBy(r => EvalRequest.SteeringKey(r.Steering), StringComparer.Ordinal)
            .ThenBy(r => r.Prompt.Length)
            .ThenBy(r => r.Prompt, StringComparer.Ordinal)
            .ToList();
        var results = new Dictionary<string, GeneratedResponse>(StringComparer.Ordinal);
        var batchSize = Math.Max(1, generator.BatchSize);
        progress?.Report(new EvalProgress(0, ordered.Count));
        for (var start = 0; start < ordered.Count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var batch = ordered.GetRange(start, Math.Min(batchSize, ordered.Count - start));
            var responses = await generator.GenerateAsync(batch, cancellationToken).ConfigureAwait(false);
            if (responses.Count != batch.Count)
                throw new InvalidOperationException($"generator returned {responses.Count} responses for {batch.Count} requests");
            for (var i = 0; i < batch.Count; i++) results[batch[i].CacheKey] = responses[i];
            progress?.Report(new EvalProgress(start + batch.Count, ordered.Count));
        }
        return results;
    }
}
