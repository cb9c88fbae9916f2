using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using OnnxSteer.Onnx;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

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
        long loadStart = Stopwatch.GetTimestamp();
        using var model = SteeredGenerator.Load(job.ModelDirectory, job.Runtime);
        var loadTime = Stopwatch.GetElapsedTime(loadStart);
        if (job.Generator.UseChatTemplate && model.ChatTemplate.Warning is string warning) stderr.WriteLine($"onnxsteer: warning: {TerminalText.Escape(warning)}");
        model.Validate(steering);
        List<ChatTurn> messages = job.System is null ? [new ChatTurn("user", job.Prompt)] : [new ChatTurn("system", job.System), new ChatTurn("user", job.Prompt)];
        var request = new GenerationRequest { Messages = messages, Steering = steering };
        if (job.Json)
        {
            // On this thread: a worker thread would only add a hand-over (the CLI has nothing else to do meanwhile).
            var result = model.Generate([request], job.Generator, null, cancellationToken)[0];
            var report = new GenerateReport(
                result.PromptText ?? job.Prompt, result.PromptTokenIds, result.TokenIds, result.Text,
                result.FinishReason.ToString() switch { "EndOfSequence" => "eos", "StopString" => "stop", _ => "length" },
                model.ContextLength, steering.ToString(), model.Engine, model.Provider.ToString().ToLowerInvariant(), job.Generator.Temperature > 0 ? job.Generator.Seed : null,
                new GenerateTiming(loadTime.TotalMilliseconds, result.PrefillTime.TotalMilliseconds, result.TimeToFirstToken.TotalMilliseconds,
                    SinceProcessStart(result.FirstTokenTimestamp), result.DecodeTime.TotalMilliseconds, result.TokenIds.Length, result.TokensPerSecond,
                    result.BoundDecode, SessionThreads.Resolve(job.Runtime.IntraOpThreads)));
            stdout.WriteLine(CliJson.Serialize(report, JsonOptions));
            return 0;
        }
        // Streamed from the decode loop's own thread. GenerateAsync would run the loop on a worker and hand every piece to
        // this thread through a channel: on a machine whose cores ONNX Runtime's pool already keeps busy, waking a second
        // managed thread per token costs decode speed (issue 12), and a console has nothing to overlap it with.
        model.Generate([request], job.Generator, piece =>
        {
            if (piece.Text.Length == 0) return;
            stdout.Write(piece.Text);
            stdout.Flush();
        }, cancellationToken);
        stdout.WriteLine();
        await stdout.FlushAsync(cancellationToken).ConfigureAwait(false);
        return 0;
    }

    /// <summary>Milliseconds from this process's start to <paramref name="timestamp"/> (a <see cref="Stopwatch"/> timestamp;
    /// 0 when there was no first token), or null where the start time cannot be read.</summary>
    private static double? SinceProcessStart(long timestamp)
    {
        if (timestamp == 0) return null;
        try
        {
            using var process = Process.GetCurrentProcess();
            var sinceStart = DateTime.Now - process.StartTime; // StartTime is local time
            return (sinceStart - Stopwatch.GetElapsedTime(timestamp)).TotalMilliseconds;
        }
        catch (Exception e) when (e is InvalidOperationException or NotSupportedException or System.ComponentModel.Win32Exception)
        {
            return null;
        }
    }

    private static readonly JsonSerializerOptions JsonOptions = new()
    {
        WriteIndented = true,
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
    };

    private sealed record GenerateReport(
        string Prompt, int[] PromptTokenIds, int[] TokenIds, string Text, string FinishReason, int? ContextLength, string Steering, string Engine, string Provider,
        int? Seed, GenerateTiming Timing);

    /// <param name="LoadMs">Loading the model folder: configs, tokenizer, chat template, ONNX Runtime session.</param>
    /// <param name="PrefillMs">The prompt's run, up to the first token.</param>
    /// <param name="FirstTokenMs">From the generation call (prompt encoding included) to the first token.</param>
    /// <param name="TimeToFirstTokenMs">From process start to the first token: runtime start-up, load, encoding, prefill.</param>
    /// <param name="DecodeMs">From the first token to the last (decode steps only).</param>
    /// <param name="GeneratedTokens">Tokens generated.</param>
    /// <param name="TokensPerSecond">Decode steps per second of <paramref name="DecodeMs"/>.</param>
    /// <param name="BoundDecode">Whether decode ran through the IO binding.</param>
    /// <param name="Threads">ONNX Runtime intra-op threads.</param>
    private sealed record GenerateTiming(
        double LoadMs, double PrefillMs, double FirstTokenMs, double? TimeToFirstTokenMs, double DecodeMs, int GeneratedTokens,
        [property: JsonPropertyName("tokens_per_second")] double TokensPerSecond, bool BoundDecode, int Threads);
}
