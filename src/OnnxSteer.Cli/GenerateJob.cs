using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;

namespace OnnxSteer.Cli;

/// <summary>What <c>onnxsteer generate</c> was asked to do.</summary>
internal sealed record GenerateJob
{
    /// <summary>The model folder (patched, or unpatched when nothing is steered).</summary>
    public required string ModelDirectory { get; init; }
    /// <summary>The user prompt.</summary>
    public required string Prompt { get; init; }
    /// <summary>An optional system message.</summary>
    public string? System { get; init; }
    /// <summary>Steering specs (<c>--steer</c>).</summary>
    public IReadOnlyList<SteerSpec> Steer { get; init; } = [];
    /// <summary>Positions steered.</summary>
    public SteeringPositions Positions { get; init; } = SteeringPositions.All;
    /// <summary>Decoding options.</summary>
    public GeneratorOptions Generator { get; init; } = new();
    /// <summary>Runtime options (engine, execution provider).</summary>
    public RuntimeOptions Runtime { get; init; } = new();
    /// <summary>Print JSON instead of streaming text.</summary>
    public bool Json { get; init; }
    /// <summary>The sampling seed was drawn at random (sampling without <c>--seed</c>); it is reported so the run can be repeated.</summary>
    public bool RandomSeed { get; init; }
}

/// <summary>The worker behind <c>onnxsteer generate</c>: loads the model and vectors, streams the reply (or prints JSON).</summary>
internal static class GenerateRunner
{
    /// <summary>Runs the job; returns the exit code (0).</summary>
    /// <exception cref="OnnxSteerException">Anything loading or steering refuses.</exception>
    public static async Task<int> RunAsync(GenerateJob job, TextWriter stdout, TextWriter stderr, CancellationToken cancellationToken = default)
    {
        // @all means the layers the model steers; steering.json says which, before the weights are loaded.
        var steered = Directory.Exists(job.ModelDirectory) ? SteeringManifest.TryLoad(job.ModelDirectory)?.SteeredLayers : null;
        var steering = job.Steer.Count == 0 ? Steering.None.At(job.Positions) : SteerSpec.ToSteering(job.Steer, job.Positions, steered);
        if (job.RandomSeed && !job.Json)
            stderr.WriteLine($"onnxsteer: note: sampling with random seed {job.Generator.Seed} (pass --seed {job.Generator.Seed} to repeat this run)");
        using var model = SteeredGenerator.Load(job.ModelDirectory, job.Runtime);
        if (job.Generator.UseChatTemplate && model.ChatTemplate.Warning is string warning) stderr.WriteLine($"onnxsteer: warning: {warning}");
        model.Validate(steering);
        List<ChatTurn> messages = job.System is null ? [new ChatTurn("user", job.Prompt)] : [new ChatTurn("system", job.System), new ChatTurn("user", job.Prompt)];
        var request = new GenerationRequest { Messages = messages, Steering = steering };
        if (job.Json)
        {
            var result = await Task.Run(() => model.Generate([request], job.Generator, null, cancellationToken)[0], cancellationToken).ConfigureAwait(false);
            var report = new GenerateReport(
                result.PromptText ?? job.Prompt, result.PromptTokenIds, result.TokenIds, result.Text,
                result.FinishReason.ToString() switch { "EndOfSequence" => "eos", "StopString" => "stop", _ => "length" },
                steering.ToString(), model.Engine, model.Provider.ToString().ToLowerInvariant(), job.Generator.Temperature > 0 ? job.Generator.Seed : null,
                new GenerateTiming(result.PrefillTime.TotalMilliseconds, result.DecodeTime.TotalMilliseconds, result.TokenIds.Length, result.TokensPerSecond,
                    result.BoundDecode));
            stdout.WriteLine(CliJson.Serialize(report, JsonOptions));
            return 0;
        }
        await foreach (var piece in model.GenerateAsync([request], job.Generator, cancellationToken).ConfigureAwait(false))
        {
            stdout.Write(piece.Text);
            stdout.Flush();
        }
        stdout.WriteLine();
        return 0;
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    private sealed record GenerateReport(
        string Prompt, int[] PromptTokenIds, int[] TokenIds, string Text, string FinishReason, string Steering, string Engine, string Provider, int? Seed, GenerateTiming Timing);

    private sealed record GenerateTiming(
        double PrefillMs, double DecodeMs, int GeneratedTokens, [property: JsonPropertyName("tokens_per_second")] double TokensPerSecond,
        bool BoundDecode);
}
