using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Runtime.Tokenization;

namespace OnnxSteer.Runtime.Chat;

/// <summary>A model's chat template: the Jinja <c>chat_template</c> of tokenizer_config.json (or chat_template.jinja /
/// chat_template.json), rendered by a Jinja-subset interpreter the way transformers' apply_chat_template renders it.
/// A folder without a template, or with one outside the supported subset, gets the plain fallback format:
/// <code>
/// System: {system}
/// User: {user}
/// Assistant: {assistant}
/// Assistant:
/// </code>
/// (one line per message, contents as given, the last line opening the reply) and a <see cref="Warning"/>.</summary>
public sealed class ChatTemplate
{
    private readonly JinjaTemplate? _template;
    private readonly Dictionary<string, object?> _specials;

    private ChatTemplate(JinjaTemplate? template, string? source, Dictionary<string, object?> specials, string? warning)
    {
        _template = template; Source = source; _specials = specials; Warning = warning;
    }

    /// <summary>The template text, or null for the fallback format.</summary>
    public string? Source { get; }

    /// <summary>Why the fallback format is used (no template, or a template the interpreter cannot parse); null otherwise.</summary>
    public string? Warning { get; }

    /// <summary>True when the model's own template is used.</summary>
    public bool IsModelTemplate => _template is not null;

    /// <summary>Whether rendered prompts already contain the special tokens (BOS, role markers): true for real
    /// templates, so the prompt is tokenized without adding special tokens again (as transformers does).</summary>
    public bool WritesSpecialTokens => _template is not null;

    /// <summary>Reads the template from a model folder (tokenizer_config.json's chat_template, chat_template.jinja
    /// or chat_template.json), with bos/eos/pad/unk token texts from the tokenizer.</summary>
    public static ChatTemplate Load(string directory, TextTokenizer tokenizer)
    {
        string? source = null;
        // Read through the folder's path rule: a template file that is a symlink out of the folder is refused (UnsafePath).
        var folder = new OnnxSteer.Onnx.ModelFolder(directory);
        if (folder.ReadText("tokenizer_config.json") is { } config)
        {
            try { source = TemplateText(JsonNode.Parse(config)?["chat_template"]); }
            catch (JsonException) { }
        }
        if (source is null) source = folder.ReadText("chat_template.jinja");
        if (source is null && folder.ReadText("chat_template.json") is { } json)
        {
            try { source = TemplateText(JsonNode.Parse(json)?["chat_template"]); }
            catch (JsonException) { }
        }
        return Create(source, tokenizer.BosToken, tokenizer.EosToken, tokenizer.PadToken, null);
    }

    /// <summary>Makes a template from its Jinja source (null gives the fallback format).</summary>
    public static ChatTemplate Create(string? source, string? bosToken = null, string? eosToken = null, string? padToken = null, string? unkToken = null)
    {
        var specials = new Dictionary<string, object?>
        {
            ["bos_token"] = bosToken ?? "", ["eos_token"] = eosToken ?? "", ["pad_token"] = padToken ?? "", ["unk_token"] = unkToken ?? "",
        };
        if (source is null) return new ChatTemplate(null, null, specials, "the model has no chat_template; using the plain fallback format");
        try
        {
            return new ChatTemplate(JinjaTemplate.Parse(source), source, specials, null);
        }
        catch (JinjaException e)
        {
            return new ChatTemplate(null, source, specials, $"the model's chat_template is outside the supported Jinja subset ({e.Message}); using the plain fallback format");
        }
    }

    /// <summary>Renders a conversation. With <paramref name="addGenerationPrompt"/> the text ends where the assistant's reply begins.</summary>
    /// <exception cref="OnnxSteerException">The template rejected the conversation (raise_exception), e.g. roles that do not alternate.</exception>
    public string Apply(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (_template is null) return Fallback(messages, addGenerationPrompt);
        var variables = new Dictionary<string, object?>(_specials)
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        try
        {
            return _template.Render(variables);
        }
        catch (JinjaException e)
        {
            throw new OnnxSteerException(ErrorKind.Usage, e.Raised ? $"the chat template rejected the conversation: {e.Message}" : $"the chat template failed: {e.Message}");
        }
    }

    private static string Fallback(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt)
    {
        var sb = new StringBuilder();
        foreach (var m in messages)
        {
            var role = m.Role.Length == 0 ? m.Role : char.ToUpperInvariant(m.Role[0]) + m.Role[1..];
            sb.Append(role).Append(": ").Append(m.Content).Append('\n');
        }
        if (addGenerationPrompt) sb.Append("Assistant:");
        return sb.ToString();
    }

    private static string? TemplateText(JsonNode? node) => node switch
    {
        JsonValue v when v.TryGetValue<string>(out var s) => s,
        // A list of named templates: use "default".
        JsonArray list => list.OfType<JsonObject>().FirstOrDefault(o => o["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>(),
        _ => null,
    };
}

/// <summary>The one rule for turning messages into the token ids a generation sees; used by generation and by
/// vector extraction so both encode a prompt identically.</summary>
internal static class PromptEncoder
{
    // template is needed only when useChatTemplate is true.
    public static (string Text, int[] Ids) Encode(TextTokenizer tokenizer, ChatTemplate? template, IReadOnlyList<ChatTurn> messages, bool useChatTemplate)
    {
        if (!useChatTemplate)
        {
            var raw = string.Join("\n", messages.Select(m => m.Content));
            return (raw, tokenizer.Encode(raw, addSpecialTokens: true));
        }
        ArgumentNullException.ThrowIfNull(template);
        var text = template.Apply(messages, addGenerationPrompt: true);
        // A real chat template writes the special tokens (BOS, role markers) itself, as transformers'
        // apply_chat_template assumes; the fallback format does not.
        return (text, tokenizer.Encode(text, addSpecialTokens: !template.WritesSpecialTokens));
    }
}
