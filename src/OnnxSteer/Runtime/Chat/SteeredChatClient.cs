using System.Runtime.CompilerServices;
using System.Threading.Channels;
using Microsoft.Extensions.AI;
using OnnxSteer.Modeling;

namespace OnnxSteer.Runtime.Chat;

/// <summary>An <see cref="IChatClient"/> (Microsoft.Extensions.AI) over a <see cref="ISteeredGenerator"/> (either engine), so existing .NET
/// chat applications can use a steered model unchanged. Thread-safe like the model.</summary>
/// <remarks>
/// <para>Steering is chosen per request with <see cref="ChatOptionsSteeringExtensions.WithSteering"/>. ChatOptions'
/// MaxOutputTokens, Temperature, TopP, TopK, Seed and StopSequences map to <see cref="GeneratorOptions"/>;
/// Instructions become a system message before the conversation. FrequencyPenalty, PresencePenalty, ModelId,
/// ConversationId, ToolMode without tools and Reasoning have no counterpart and are ignored.</para>
/// <para>Refused with <see cref="NotSupportedException"/>, because the model would silently not do them: tools
/// (ChatOptions.Tools), a JSON response format, message content other than text (images, data, function calls and
/// results), and roles other than system, user and assistant. A value under the steering key that is not a
/// <see cref="Steering"/> is an <see cref="ArgumentException"/>.</para>
/// <para>Both calls report the finish reason (Stop for an end-of-sequence token or a stop sequence, Length for
/// MaxOutputTokens) and token usage; a stream's last update carries them (its text is empty), so
/// <c>ToChatResponse()</c> has both. ModelId is <see cref="ISteeredGenerator.ModelId"/>.</para>
/// </remarks>
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

    /// <summary>The model's id (<see cref="ISteeredGenerator.ModelId"/>), reported in every response.</summary>
    public string ModelId => _model.ModelId;

    /// <inheritdoc/>
    public async Task<ChatResponse> GetResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null, CancellationToken cancellationToken = default)
    {
        var request = Map(messages, options, out var generator);
        var result = await Task.Run(() => _model.Generate([request], generator, null, cancellationToken)[0], cancellationToken).ConfigureAwait(false);
        return new ChatResponse(new ChatMessage(ChatRole.Assistant, result.Text))
        {
            FinishReason = Finish(result),
            ModelId = ModelId,
            ResponseId = Guid.NewGuid().ToString("N"),
            Usage = Usage(result),
        };
    }

    /// <inheritdoc/>
    public async IAsyncEnumerable<ChatResponseUpdate> GetStreamingResponseAsync(IEnumerable<ChatMessage> messages, ChatOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var request = Map(messages, options, out var generator);
        var responseId = Guid.NewGuid().ToString("N");
        // The batch Generate with a piece callback gives both the pieces and, at the end, the result whose finish reason
        // and token counts the last update carries. It runs on a worker; the channel hands pieces to this enumeration.
        var pieces = Channel.CreateUnbounded<string>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        using var stop = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        var worker = Task.Run(() =>
        {
            try
            {
                var result = _model.Generate([request], generator, p => { if (p.Text.Length > 0) pieces.Writer.TryWrite(p.Text); }, stop.Token)[0];
                pieces.Writer.TryComplete();
                return result;
            }
            catch (Exception e)
            {
                pieces.Writer.TryComplete(e);
                throw;
            }
        }, CancellationToken.None);
        GenerationResult final;
        try
        {
            await foreach (var text in pieces.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                // ReadAllAsync drains buffered pieces without looking at the token (see SteeredModel.GenerateAsync).
                cancellationToken.ThrowIfCancellationRequested();
                yield return Update(responseId, [new TextContent(text)]);
            }
            final = await worker.ConfigureAwait(false);
        }
        finally
        {
            // Leaving early (break, cancellation, an error) stops the worker and waits for it, so nothing runs on after.
            await stop.CancelAsync().ConfigureAwait(false);
            try { await worker.ConfigureAwait(false); }
            catch (Exception) when (!worker.IsCompletedSuccessfully) { /* already surfaced through the channel, or cancelled */ }
        }
        var last = Update(responseId, [new UsageContent(Usage(final))]);
        last.FinishReason = Finish(final);
        yield return last;
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

    /// <summary>Disposes the model when the client owns it (see the constructor); otherwise does nothing.</summary>
    public void Dispose()
    {
        if (_ownsModel) _model.Dispose();
    }

    private ChatResponseUpdate Update(string responseId, IList<AIContent> contents) =>
        new(ChatRole.Assistant, contents) { ModelId = ModelId, ResponseId = responseId, MessageId = responseId };

    private static ChatFinishReason Finish(GenerationResult result) =>
        result.FinishReason == FinishReason.Length ? ChatFinishReason.Length : ChatFinishReason.Stop;

    private static UsageDetails Usage(GenerationResult result) => new()
    {
        InputTokenCount = result.PromptTokenIds.Length,
        OutputTokenCount = result.TokenIds.Length,
        TotalTokenCount = result.PromptTokenIds.Length + result.TokenIds.Length,
    };

    private GenerationRequest Map(IEnumerable<ChatMessage> messages, ChatOptions? options, out GeneratorOptions generator)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (options?.Tools is { Count: > 0 } tools)
            throw new NotSupportedException($"{nameof(SteeredChatClient)} does not call tools ({tools.Count} given): the model runs no function-calling protocol");
        if (options?.ResponseFormat is ChatResponseFormatJson)
            throw new NotSupportedException($"{nameof(SteeredChatClient)} cannot constrain output to JSON; ask for it in the prompt, or steer towards it");
        var turns = new List<ChatTurn>();
        if (!string.IsNullOrEmpty(options?.Instructions)) turns.Add(new ChatTurn("system", options.Instructions));
        foreach (var message in messages)
        {
            var role = message.Role.Value;
            if (role != ChatRole.System.Value && role != ChatRole.User.Value && role != ChatRole.Assistant.Value)
                throw new NotSupportedException($"{nameof(SteeredChatClient)} takes system, user and assistant messages; got a '{role}' message");
            foreach (var content in message.Contents)
                if (content is not TextContent)
                    throw new NotSupportedException($"{nameof(SteeredChatClient)} takes text only; a '{role}' message holds {content.GetType().Name}");
            turns.Add(new ChatTurn(role, message.Text));
        }
        generator = _defaults;
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
        return new GenerationRequest { Messages = turns, Steering = options.GetSteering() };
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

    /// <summary>The steering set by <see cref="WithSteering"/>, or null when there is none.</summary>
    /// <exception cref="ArgumentException">Something other than a <see cref="Steering"/> is stored under
    /// <see cref="PropertyKey"/> (generating unsteered instead would hide the mistake).</exception>
    public static Steering? GetSteering(this ChatOptions? options)
    {
        if (options?.AdditionalProperties is not { } p || !p.TryGetValue(PropertyKey, out var value) || value is null) return null;
        return value as Steering ?? throw new ArgumentException(
            $"ChatOptions.AdditionalProperties[\"{PropertyKey}\"] holds a {value.GetType().FullName}; it takes an OnnxSteer.Runtime.Steering (use WithSteering)",
            nameof(options));
    }
}

/// <summary>Making a chat client of a loaded model.</summary>
public static class SteeredModelChatExtensions
{
    /// <summary>An <see cref="IChatClient"/> over <paramref name="model"/>; disposing the client leaves the model alone
    /// unless <paramref name="ownsModel"/> is true.</summary>
    public static IChatClient AsChatClient(this ISteeredGenerator model, GeneratorOptions? defaults = null, bool ownsModel = false) =>
        new SteeredChatClient(model, defaults, ownsModel);
}
