using OnnxSteer.Modeling;

namespace OnnxSteer.Runtime;

/// <summary>Decoding settings for one generation call.</summary>
public sealed record GeneratorOptions
{
    /// <summary>At most this many new tokens per sequence (default 128; at least 1).</summary>
    public int MaxNewTokens { get; init; } = 128;

    /// <summary>0 (default) is greedy decoding; above 0 samples from softmax(logits / temperature).</summary>
    public float Temperature { get; init; }

    /// <summary>When sampling, keep only the k most likely tokens (0 = no limit).</summary>
    public int TopK { get; init; }

    /// <summary>When sampling, keep the smallest set of tokens whose probability reaches p (1 = no limit).</summary>
    public float TopP { get; init; } = 1f;

    /// <summary>Seed of the sampling random generator; the same seed, prompt and steering give the same text.</summary>
    public int Seed { get; init; }

    /// <summary>Generation stops when the text contains one of these; the stop string is not returned.</summary>
    public IReadOnlyList<string> StopStrings { get; init; } = [];

    /// <summary>Extra end-of-sequence ids besides the model's (generation_config.json, genai_config.json, tokenizer).</summary>
    public IReadOnlyList<int> ExtraEosTokenIds { get; init; } = [];

    /// <summary>Whether prompts pass through the model's chat template (default true; false sends raw text).</summary>
    public bool UseChatTemplate { get; init; } = true;

    /// <summary>Whether to compute the model's log-probability of each generated token (softmax of the raw logits,
    /// temperature 1), reported as <see cref="GenerationResult.MeanLogProb"/>. Costs one pass over the vocabulary per token.</summary>
    public bool ComputeLogProbs { get; init; }

    internal void Validate()
    {
        // 0 would run nothing and return empty text with finish reason Length: a mistake, not a request.
        if (MaxNewTokens < 1) throw new OnnxSteerException(ErrorKind.Usage, $"max new tokens must be at least 1, got {MaxNewTokens}");
        if (Temperature < 0 || float.IsNaN(Temperature)) throw new OnnxSteerException(ErrorKind.Usage, $"temperature must be >= 0, got {Temperature}");
        if (TopK < 0) throw new OnnxSteerException(ErrorKind.Usage, $"top-k must be >= 0, got {TopK}");
        if (!(TopP > 0 && TopP <= 1)) throw new OnnxSteerException(ErrorKind.Usage, $"top-p must be in (0, 1], got {TopP}");
    }
}

/// <summary>One prompt of a batch with its own steering.</summary>
public sealed record GenerationRequest
{
    /// <summary>The prompt as token ids (already templated and tokenized). Set this or <see cref="Messages"/>/<see cref="Prompt"/>.</summary>
    public IReadOnlyList<int>? PromptTokenIds { get; init; }

    /// <summary>A single user message (goes through the chat template unless the options say not to).</summary>
    public string? Prompt { get; init; }

    /// <summary>A conversation (goes through the chat template).</summary>
    public IReadOnlyList<ChatTurn>? Messages { get; init; }

    /// <summary>The steering of this row; null or <see cref="Steering.None"/> for none.</summary>
    public Steering? Steering { get; init; }

    /// <summary>A request for a single user message.</summary>
    public static GenerationRequest FromPrompt(string prompt, Steering? steering = null) => new() { Prompt = prompt, Steering = steering };
}

/// <summary>A piece of streamed output: the text one token completed (may be empty while a multi-byte character is
/// incomplete or while text that may begin a stop string is held back).</summary>
/// <param name="Row">The batch row (0 for a single prompt).</param>
/// <param name="TokenId">The generated token.</param>
/// <param name="Text">The new text.</param>
public readonly record struct GeneratedPiece(int Row, int TokenId, string Text)
{
    /// <summary>The text, so <c>Console.Write(piece)</c> prints the output.</summary>
    public override string ToString() => Text;
}

/// <summary>Why a sequence stopped.</summary>
public enum FinishReason
{
    /// <summary>An end-of-sequence token was generated (it is included in the ids, not in the text).</summary>
    EndOfSequence,
    /// <summary>A stop string appeared (the text ends before it).</summary>
    StopString,
    /// <summary><see cref="GeneratorOptions.MaxNewTokens"/> was reached, or the model's context length
    /// (<see cref="SteeredModel.ContextLength"/>: prompt plus generated tokens).</summary>
    Length,
}

/// <summary>The result of one generated sequence.</summary>
public sealed record GenerationResult
{
    /// <summary>The prompt text after the chat template (null when the request gave token ids).</summary>
    public string? PromptText { get; init; }
    /// <summary>The prompt token ids fed to the model.</summary>
    public required int[] PromptTokenIds { get; init; }
    /// <summary>The generated token ids (including a final EOS token, if one ended the sequence).</summary>
    public required int[] TokenIds { get; init; }
    /// <summary>The generated text.</summary>
    public required string Text { get; init; }
    /// <summary>Why generation stopped.</summary>
    public required FinishReason FinishReason { get; init; }
    /// <summary>Wall time of the prefill run (the whole batch).</summary>
    public TimeSpan PrefillTime { get; init; }
    /// <summary>Wall time of the decode steps (the whole batch).</summary>
    public TimeSpan DecodeTime { get; init; }
    /// <summary>Wall time from the start of the generation call (prompt encoding included) to the first token.</summary>
    public TimeSpan TimeToFirstToken { get; init; }
    /// <summary><see cref="System.Diagnostics.Stopwatch"/> timestamp of the first token (0 when none); the CLI reports
    /// the time from process start to it.</summary>
    public long FirstTokenTimestamp { get; init; }
    /// <summary>Decode steps per second (tokens after the first, per sequence), or 0 when there were none.</summary>
    public double TokensPerSecond => DecodeSteps > 0 && DecodeTime > TimeSpan.Zero ? DecodeSteps / DecodeTime.TotalSeconds : 0;
    /// <summary>Number of decode runs (each produced one token per unfinished row).</summary>
    public int DecodeSteps { get; init; }
    /// <summary>Mean natural-log probability the model gave its generated tokens (exp of its negative is the
    /// perplexity); null unless <see cref="GeneratorOptions.ComputeLogProbs"/> was set or when nothing was generated.</summary>
    public double? MeanLogProb { get; init; }
    /// <summary>Whether decode ran through pre-bound buffers (<see cref="RuntimeOptions.BoundDecode"/>), the path that
    /// allocates no managed memory per step.</summary>
    public bool BoundDecode { get; init; }
    /// <summary>Managed bytes the generating thread allocated from the second decode step to the end (steady state),
    /// over <see cref="SteadySteps"/> steps; for tests and benchmarks.</summary>
    internal long SteadyAllocatedBytes { get; init; }
    internal int SteadySteps { get; init; }
}
