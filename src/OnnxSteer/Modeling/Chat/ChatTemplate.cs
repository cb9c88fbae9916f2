using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Modeling.Chat.Jinja;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;

namespace OnnxSteer.Modeling.Chat;

/// <summary>A model's chat template: the Jinja <c>chat_template</c> of tokenizer_config.json (or chat_template.jinja /
/// chat_template.json), rendered by a Jinja-subset interpreter the way transformers' apply_chat_template renders it.
/// A folder without a template, or with one outside the supported subset, gets the plain fallback format:
/// <code>
/// System: {system}
/// User: {user}
/// Assistant: {assistant}
/// Assistant:
/// </code>
/// (one line per message, contents as given, the last line opening the reply) and a <see cref="Warning"/>.
/// <para>The template comes with the model, so it is untrusted: parsing and rendering are bounded (nesting, steps,
/// output size, memory, wall time; docs/reliability.md), rendering observes cancellation, and every failure is an
/// <see cref="OnnxSteerException"/> naming the template, its model text made safe for a terminal.</para></summary>
public sealed class ChatTemplate
{
    // Longest raise_exception message passed on: a template cannot fill the user's screen through an error line.
    private const int MaxMessageChars = 300;

    private readonly JinjaTemplate? _template;
    private readonly Dictionary<string, object?> _specials;
    private readonly string _origin;
    private readonly string? _rejection;

    private ChatTemplate(JinjaTemplate? template, string? source, Dictionary<string, object?> specials, string origin, string? warning, string? rejection = null)
    {
        _template = template; Source = source; _specials = specials; _origin = origin; Warning = warning; _rejection = rejection;
    }

    /// <summary>The template text, or null for the fallback format.</summary>
    public string? Source { get; }

    /// <summary>Why the fallback format is used (no template, or a template the interpreter cannot parse); null otherwise.</summary>
    public string? Warning { get; }

    /// <summary>True when the model's own template is used.</summary>
    public bool IsModelTemplate => _template is not null || _rejection is not null;

    /// <summary>Whether rendered prompts already contain the special tokens (BOS, role markers): true for real
    /// templates, so the prompt is tokenized without adding special tokens again (as transformers does).</summary>
    public bool WritesSpecialTokens => IsModelTemplate;

    /// <summary>Reads the template from a model folder (tokenizer_config.json's chat_template, chat_template.jinja
    /// or chat_template.json), with bos/eos/pad/unk token texts from the tokenizer.</summary>
    public static ChatTemplate Load(string directory, TextTokenizer tokenizer)
    {
        string? source = null, origin = null;
        // Every file is read through the folder's path rule: a template file that is a symlink out of the folder is
        // refused (UnsafePath), and sizes are bounded before reading.
        var folder = new ModelFolder(directory);
        // Every template file a folder may hold is checked, used or not: a folder that points one out of itself is refused.
        folder.CheckFiles(ModelFolder.TemplateFileNames);
        if (FromJson(folder, "tokenizer_config.json") is string fromConfig) { source = fromConfig; origin = $"{folder.Describe("tokenizer_config.json")} (chat_template)"; }
        if (source is null)
        {
            var jinja = Path.Combine(directory, "chat_template.jinja");
            // A file past what the parser accepts (4 bytes a character at most in UTF-8) is refused unread, not loaded,
            // and only when the template is used, so --no-chat-template still works with the folder.
            long limit = 4L * JinjaLimits.Default.MaxSourceChars;
            try { source = folder.ReadText("chat_template.jinja", limit); }
            catch (OnnxSteerException e) when (e.Kind == ErrorKind.InvalidModel)
            {
                // The path rule has passed (it runs before the size check), so the file may be measured.
                var bytes = new FileInfo(jinja).Length;
                return new ChatTemplate(null, null, Specials(tokenizer.BosToken, tokenizer.EosToken, tokenizer.PadToken, null), $"the chat template in {jinja}", null,
                    $"the chat template in {jinja} is refused: {bytes:N0} bytes (limit {limit:N0})");
            }
            if (source is not null) origin = jinja;
        }
        if (source is null && FromJson(folder, "chat_template.json") is string fromJson) { source = fromJson; origin = $"{folder.Describe("chat_template.json")} (chat_template)"; }
        return Create(source, origin, tokenizer.BosToken, tokenizer.EosToken, tokenizer.PadToken, null);
    }

    /// <summary>The chat_template of a JSON file, or null where the file holds none or is not a usable JSON object
    /// (the loader of that file reports its own errors; here it only means "no template").</summary>
    private static string? FromJson(ModelFolder folder, string name)
    {
        if (folder.ReadText(name) is not { } text) return null;
        try { return TemplateText((JsonNode.Parse(text) as JsonObject)?["chat_template"]); }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException) { return null; }
    }

    /// <summary>Makes a template from its Jinja source (null gives the fallback format).</summary>
    public static ChatTemplate Create(string? source, string? bosToken = null, string? eosToken = null, string? padToken = null, string? unkToken = null) =>
        Create(source, null, bosToken, eosToken, padToken, unkToken);

    /// <summary>Makes a template; <paramref name="origin"/> names where it came from in error messages.</summary>
    internal static ChatTemplate Create(string? source, string? origin, string? bosToken, string? eosToken, string? padToken, string? unkToken, JinjaLimits? limits = null)
    {
        var specials = Specials(bosToken, eosToken, padToken, unkToken);
        origin = origin is null ? "the chat template" : $"the chat template in {origin}";
        if (source is null) return new ChatTemplate(null, null, specials, origin, "the model has no chat_template; using the plain fallback format");
        try
        {
            return new ChatTemplate(JinjaTemplate.Parse(source, limits), source, specials, origin, null);
        }
        catch (JinjaException e) when (e.LimitExceeded)
        {
            // Past a bound (100,000 nested ifs, a 50 MB template) the template is hostile, not merely unusual: no
            // fallback, which would quietly prompt the model in a format it was not trained on. The error comes at
            // Apply, so a run that does not use the template (--no-chat-template) is unaffected.
            return new ChatTemplate(null, source, specials, origin, null, $"{origin} is refused: {TerminalText.Escape(e.Message)}");
        }
        catch (JinjaException e)
        {
            return new ChatTemplate(null, source, specials, origin,
                $"the model's chat_template is outside the supported Jinja subset ({TerminalText.Escape(Clip(e.Message))}); using the plain fallback format");
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // Defence in depth, as in Apply: a parser bug must not turn a model file into an "internal error".
            return new ChatTemplate(null, source, specials, origin, null, $"{origin} cannot be parsed: {e.GetType().Name}: {TerminalText.Escape(Clip(e.Message))}");
        }
    }

    private static Dictionary<string, object?> Specials(string? bosToken, string? eosToken, string? padToken, string? unkToken) => new()
    {
        ["bos_token"] = bosToken ?? "", ["eos_token"] = eosToken ?? "", ["pad_token"] = padToken ?? "", ["unk_token"] = unkToken ?? "",
    };

    /// <summary>Renders a conversation. With <paramref name="addGenerationPrompt"/> the text ends where the assistant's reply begins.</summary>
    /// <exception cref="OnnxSteerException">The template rejected the conversation with raise_exception, e.g. roles that
    /// do not alternate (Usage); the template is broken or exceeded a bound (InvalidModel).</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled during rendering.</exception>
    public string Apply(IReadOnlyList<ChatTurn> messages, bool addGenerationPrompt = true, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(messages);
        if (_rejection is not null) throw new OnnxSteerException(ErrorKind.InvalidModel, _rejection);
        if (_template is null) return Fallback(messages, addGenerationPrompt);
        long inputChars = 0;
        foreach (var m in messages) inputChars += (long)m.Role.Length + m.Content.Length;
        var variables = new Dictionary<string, object?>(_specials)
        {
            ["messages"] = messages.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            ["add_generation_prompt"] = addGenerationPrompt,
        };
        try
        {
            return _template.Render(variables, inputChars, cancellationToken);
        }
        catch (JinjaException e) when (e.Raised)
        {
            throw new OnnxSteerException(ErrorKind.Usage, $"{_origin} rejected the conversation: {TerminalText.Escape(Clip(e.Message, MaxMessageChars))}");
        }
        catch (JinjaException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{_origin} failed: {TerminalText.Escape(e.Message)}");
        }
        catch (Exception e) when (e is not (OperationCanceledException or OutOfMemoryException))
        {
            // Defence in depth: the interpreter reports its own errors as JinjaException (the template fuzzer holds
            // it to that); anything else is still the template's fault and must not end the process as a bug.
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{_origin} failed: {e.GetType().Name}: {TerminalText.Escape(Clip(e.Message, MaxMessageChars))}", e);
        }
    }

    private static string Clip(string s, int max = 200) => s.Length <= max ? s : string.Concat(s.AsSpan(0, max), "...");

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
        JsonArray list => list.OfType<JsonObject>().FirstOrDefault(o => o["name"] is JsonValue n && n.TryGetValue<string>(out var name) && name == "default")?["template"]
            is JsonValue t && t.TryGetValue<string>(out var text) ? text : null,
        _ => null,
    };
}

/// <summary>The one rule for turning messages into the token ids a generation sees; used by generation and by
/// vector extraction so both encode a prompt identically.</summary>
internal static class PromptEncoder
{
    // template is needed only when useChatTemplate is true.
    public static (string Text, int[] Ids) Encode(TextTokenizer tokenizer, ChatTemplate? template, IReadOnlyList<ChatTurn> messages, bool useChatTemplate,
        CancellationToken cancellationToken = default)
    {
        if (!useChatTemplate)
        {
            var raw = string.Join("\n", messages.Select(m => m.Content));
            return (raw, tokenizer.Encode(raw, addSpecialTokens: true));
        }
        ArgumentNullException.ThrowIfNull(template);
        var text = template.Apply(messages, addGenerationPrompt: true, cancellationToken);
        // A real chat template writes the special tokens (BOS, role markers) itself, as transformers'
        // apply_chat_template assumes; the fallback format does not.
        return (text, tokenizer.Encode(text, addSpecialTokens: !template.WritesSpecialTokens));
    }
}
