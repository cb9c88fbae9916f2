using System.Runtime.CompilerServices;
using Microsoft.Extensions.AI;

namespace OnnxSteer.Runtime.Chat;

/// <summary>An <see cref="IChatClient"/> (Microsoft.Extensions.AI) over a <see cref="ISteeredGenerator"/> (either engine), so existing .NET
/// chat applications can use a steered model unchanged. Steering is chosen per request with
/// <see cref="ChatOptionsSteeringExtensions.WithSteering"/>; ChatOptions' MaxOutputTokens, Temperature, TopP, TopK,
/// Seed and StopSequences map to <see cref="GeneratorOptions"/>. Thread-safe like the model.</summary>
public sealed class SteeredChatClient : IChatClient
{
    private readonly ISteeredGenerator _model;
    private readonly GeneratorOptions _defaults;
    private readonly bool _ownsModel;

    /// <summary>Wraps <paramref name="model"/>. <paramref name="defaults"/> apply where a request's ChatOptions are silent;
    /// with <paramref name="ownsModel"/> disposing the client disposes the model.</summary>
    public SteeredChatClient(ISteeredGenerator model, GeneratorOptions? defaults = null, bool ownsModel = false)
    {
        _model = model ?? throw new ArgumentNullException(nameof(model));
        _defaults = defaults ?? new GeneratorOptions();
        _ownsModel = ownsModel;
    }

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var (turns, steering, generator) = Map(messages, options);
        var result = await Task.Run(() => _model.Generate(turns, steering, generator, cancellationToken), cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            FinishReason = result.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop,
            ModelId = ModelId,
            Usage = new UsageDetails
            {
                InputTokenCount = result.PromptTokenIds.Length,
                OutputTokenCount = result.TokenIds.Length,
                TotalTokenCount = result.PromptTokenIds.Length + result.TokenIds.Length,
            },
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var (turns, steering, generator) = Map(messages, options);
        var responseId = Guid.NewGuid().ToString("N");
        await foreach (var piece in _model.GenerateAsync(turns, steering, generator, cancellationToken).ConfigureAwait(false))
        {
            if (piece.Text.Length == 0) continue;
            yield return new ChatResponseUpdate(ChatRole.Assistant, piece.Text) { ModelId = ModelId, ResponseId = responseId, MessageId = responseId };
        }
    }

    /// <inheritdoc/>
    public object? GetService(Type serviceType, object? serviceKey = null)
    {
        ArgumentNullException.ThrowIfNull(serviceType);
        if (serviceKey is not null) return null;
        if (serviceType == typeof(ChatClientMetadata)) return new ChatClientMetadata("onnxsteer", null, ModelId);
        if (serviceType.IsInstanceOfType(_model)) return _model;
        return serviceType.IsInstanceOfType(this) ? this : null;
    }

    /// <inheritdoc/>
    public void Dispose()
    {
        if (_ownsModel) _model.Dispose();
    }

    private string ModelId => Path.GetFileName(_model.Directory);

    private (List<ChatTurn> Turns, Steering? Steering, GeneratorOptions Options) Map(IEnumerable<ChatMessage> messages, ChatOptions? options)
    {
        ArgumentNullException.ThrowIfNull(messages);
        var turns = messages.Select(m => new ChatTurn(m.Role.Value, m.Text)).ToList();
        var generator = _defaults;
        if (options is not null)
        {
            generator = generator with
            {
                MaxNewTokens = options.MaxOutputTokens ?? generator.MaxNewTokens,
                Temperature = options.Temperature ?? generator.Temperature,
                TopP = options.TopP ?? generator.TopP,
                TopK = options.TopK ?? generator.TopK,
                Seed = options.Seed is long seed ? unchecked((int)seed) : generator.Seed,
                StopStrings = options.StopSequences is { Count: > 0 } stops ? [.. stops] : generator.StopStrings,
            };
        }
        return (turns, options.GetSteering(), generator);
    }
}

/// <summary>Passing a <see cref="Steering"/> through Microsoft.Extensions.AI's <see cref="ChatOptions"/>.</summary>
public static class ChatOptionsSteeringExtensions
{
    /// <summary>The AdditionalProperties key that carries the steering.</summary>
    public const string PropertyKey = "onnxsteer.steering";

    /// <summary>Sets the steering for requests made with these options; returns the same options.</summary>
    public static ChatOptions WithSteering(this ChatOptions options, Steering steering)
    {
        ArgumentNullException.ThrowIfNull(options);
        (options.AdditionalProperties ??= [])[PropertyKey] = steering ?? throw new ArgumentNullException(nameof(steering));
        return options;
    }

    /// <summary>The steering set by <see cref="WithSteering"/>, or null.</summary>
    public static Steering? GetSteering(this ChatOptions? options) =>
        options?.AdditionalProperties is { } p && p.TryGetValue(PropertyKey, out var value) ? value as Steering : null;
}
