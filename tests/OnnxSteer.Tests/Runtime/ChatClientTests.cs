using System.Text.Json;
using Microsoft.Extensions.AI;
using Microsoft.Extensions.DependencyInjection;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Chat;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The <see cref="SteeredChatClient"/> as a Microsoft.Extensions.AI app meets it: finish reason and usage on
/// both paths, refusals instead of silently ignored requests, compact logging of the steering, ModelId, DI.</summary>
public sealed class ChatClientTests(PatchedFixtureModel fixture) : IClassFixture<PatchedFixtureModel>
{
    private SteeredModel Model => fixture.Model;
    private static readonly ChatMessage[] Hello = [new(ChatRole.User, "Hello")];

    private static Steering Steer()
    {
        var random = new Random(1);
        var vector = SteeringVector.FromRaw(Enumerable.Range(0, 16).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray(), zBar: 3f);
        return Steering.None.Add(vector, 0, 8f).Project(vector, 1);
    }

    [Theory]
    [InlineData(false)] // stops at MaxOutputTokens: Length
    [InlineData(true)]  // stops at a stop sequence: Stop
    public async Task Streaming_ends_with_the_finish_reason_and_usage_of_the_whole_call(bool stopSequence)
    {
        using var client = Model.AsChatClient();
        var options = new ChatOptions { MaxOutputTokens = 8 }.WithSteering(Steer());
        var whole = await client.GetResponseAsync(Hello, options);
        if (stopSequence)
        {
            Assert.True(whole.Text.Length >= 4, whole.Text);
            options.StopSequences = [whole.Text.Substring(2, 2)];
            whole = await client.GetResponseAsync(Hello, options);
        }
        var updates = new List<ChatResponseUpdate>();
        await foreach (var update in client.GetStreamingResponseAsync(Hello, options)) updates.Add(update);

        var last = updates[^1];
        Assert.Equal(whole.FinishReason, last.FinishReason);
        Assert.Equal(stopSequence ? ChatFinishReason.Stop : ChatFinishReason.Length, last.FinishReason);
        var usage = Assert.IsType<UsageContent>(Assert.Single(last.Contents)).Details;
        Assert.Equal(whole.Usage!.InputTokenCount, usage.InputTokenCount);
        Assert.Equal(whole.Usage.OutputTokenCount, usage.OutputTokenCount);
        Assert.Equal(whole.Usage.TotalTokenCount, usage.TotalTokenCount);
        Assert.All(updates[..^1], u => Assert.Null(u.FinishReason));

        var merged = updates.ToChatResponse();
        Assert.Equal(whole.Text, merged.Text);
        Assert.Equal(whole.FinishReason, merged.FinishReason);
        Assert.Equal(whole.Usage.OutputTokenCount, merged.Usage!.OutputTokenCount);
        Assert.Equal(Model.ModelId, merged.ModelId);
    }

    public static TheoryData<string> Refused() => ["tools", "json", "image", "function-call", "tool-role", "custom-role"];

    [Theory]
    [MemberData(nameof(Refused))]
    public async Task Requests_the_model_cannot_honour_are_refused(string what)
    {
        using var client = Model.AsChatClient(new GeneratorOptions { MaxNewTokens = 2 });
        var options = new ChatOptions();
        List<ChatMessage> messages = [.. Hello];
        switch (what)
        {
            case "tools": options.Tools = [AIFunctionFactory.Create(() => 42, "answer")]; break;
            case "json": options.ResponseFormat = ChatResponseFormat.Json; break;
            case "image": messages.Add(new ChatMessage(ChatRole.User, [new DataContent(new byte[] { 1, 2, 3 }, "image/png")])); break;
            case "function-call": messages.Add(new ChatMessage(ChatRole.Assistant, [new FunctionCallContent("1", "answer")])); break;
            case "tool-role": messages.Add(new ChatMessage(ChatRole.Tool, "42")); break;
            default: messages.Add(new ChatMessage(new ChatRole("critic"), "no")); break;
        }
        await Assert.ThrowsAsync<NotSupportedException>(() => client.GetResponseAsync(messages, options));
        await Assert.ThrowsAsync<NotSupportedException>(async () => { await foreach (var _ in client.GetStreamingResponseAsync(messages, options)) { } });
        // A plain text format and an empty tool list are fine.
        Assert.NotNull(await client.GetResponseAsync(Hello, new ChatOptions { ResponseFormat = ChatResponseFormat.Text, Tools = [] }));
    }

    [Fact]
    public async Task A_steering_value_of_the_wrong_type_is_an_error_not_an_unsteered_answer()
    {
        using var client = Model.AsChatClient(new GeneratorOptions { MaxNewTokens = 2 });
        var options = new ChatOptions { AdditionalProperties = new() { [ChatOptionsSteeringExtensions.PropertyKey] = "format.lowercase@1" } };
        var error = await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync(Hello, options));
        Assert.Contains("System.String", error.Message);
        // null under the key means no steering.
        options.AdditionalProperties[ChatOptionsSteeringExtensions.PropertyKey] = null;
        Assert.Null(options.GetSteering());
    }

    [Fact]
    public void Steering_serializes_to_names_layers_modes_and_weights_without_floats()
    {
        var options = new ChatOptions { MaxOutputTokens = 8 }.WithSteering(Steer().At(SteeringPositions.Prompt));
        // What Microsoft.Extensions.AI's LoggingChatClient writes at Trace level: the options with its default JSON settings.
        var json = JsonSerializer.Serialize(options, AIJsonUtilities.DefaultOptions);
        var steering = JsonDocument.Parse(json).RootElement.GetProperty("additionalProperties").GetProperty(ChatOptionsSteeringExtensions.PropertyKey);
        Assert.Equal("prompt", steering.GetProperty("positions").GetString());
        var terms = steering.GetProperty("terms").EnumerateArray().ToList();
        Assert.Equal(2, terms.Count);
        Assert.Equal("add", terms[0].GetProperty("mode").GetString());
        Assert.Equal(0, terms[0].GetProperty("layer").GetInt32());
        Assert.Equal(8f, terms[0].GetProperty("weight").GetSingle());
        Assert.Equal("project", terms[1].GetProperty("mode").GetString());
        Assert.Equal(3f, terms[1].GetProperty("target").GetSingle());
        var compact = JsonSerializer.Serialize(steering);
        Assert.True(compact.Length < 200, compact);
        Assert.Throws<JsonException>(() => JsonSerializer.Deserialize<Steering>(steering.GetRawText()));
    }

    [Fact]
    public async Task Instructions_become_a_system_message_and_ModelId_comes_from_the_model()
    {
        using var client = Model.AsChatClient(new GeneratorOptions { MaxNewTokens = 6 });
        var reply = await client.GetResponseAsync(Hello, new ChatOptions { Instructions = "Answer in one word." });
        var expected = Model.Generate([new ChatTurn("system", "Answer in one word."), new ChatTurn("user", "Hello")], null, new GeneratorOptions { MaxNewTokens = 6 });
        Assert.Equal(expected.Text, reply.Text);
        // The patched folder is a temp folder; the model is named after the folder it was patched from (steering.json).
        Assert.Equal("genai-tiny-llama-fp16", reply.ModelId);
        Assert.Equal("genai-tiny-llama-fp16", client.GetService<ChatClientMetadata>()!.DefaultModelId);
    }

    [Fact]
    public void ModelId_prefers_the_name_transformers_recorded()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.Combine("config.json"), """{"_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct", "model_type": "qwen2"}""");
        Assert.Equal("Qwen/Qwen2.5-0.5B-Instruct", ModelConfig.Load(dir.Path).NameOrPath);
        // A local path says nothing about the model.
        File.WriteAllText(dir.Combine("config.json"), """{"_name_or_path": "/tmp/checkpoints/run3"}""");
        File.WriteAllText(dir.Combine("tokenizer_config.json"), """{"name_or_path": "meta-llama/Llama-3.2-1B"}""");
        Assert.Equal("meta-llama/Llama-3.2-1B", ModelConfig.Load(dir.Path).NameOrPath);
    }

    [Fact]
    public async Task The_DI_helper_registers_the_model_and_the_client_and_disposes_the_model_with_the_container()
    {
        var services = new ServiceCollection().AddSteeredChatClient(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"),
            new RuntimeOptions { IntraOpThreads = 1 }, new GeneratorOptions { MaxNewTokens = 4 });
        SteeredModel model;
        await using (var provider = services.BuildServiceProvider())
        {
            var client = provider.GetRequiredService<IChatClient>();
            model = provider.GetRequiredService<SteeredModel>();
            Assert.Same(model, client.GetService<SteeredModel>());
            var reply = await client.GetResponseAsync("Hello");
            Assert.Equal(4, reply.Usage!.OutputTokenCount);
        }
        Assert.Throws<ObjectDisposedException>(() => model.Generate("Hello"));
    }
}
