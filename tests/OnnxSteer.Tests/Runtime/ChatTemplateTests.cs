using OnnxSteer.Runtime;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;
using OnnxSteer.Modeling.Tokenization;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The published chat templates of each family (copied from the models' tokenizer_config.json), rendered
/// by the Jinja-subset interpreter; expected strings are written by hand from each family's documented format.</summary>
public sealed class ChatTemplateTests
{
    private static readonly ChatTurn System = new("system", "Be brief.");
    private static readonly ChatTurn User = new("user", "Hi there");
    private static readonly ChatTurn Assistant = new("assistant", "Hello!");
    private static readonly ChatTurn User2 = new("user", "Name a river.");

    internal const string Llama2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif USE_DEFAULT_PROMPT == true and not '<<SYS>>' in messages[0]['content'] %}{% set loop_messages = messages %}{% set system_message = 'DEFAULT_SYSTEM_MESSAGE' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'system' %}{{ '<<SYS>>\\n' + content.strip() + '\\n<</SYS>>\\n\\n' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

    internal const string Llama3 = "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}";

    internal const string Phi3 = "{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'user' %}{{'<|user|>\n' + message['content'] + '<|end|>\n'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>\n' + message['content'] + '<|end|>\n'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}";

    internal const string Mistral = "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}";

    internal const string Qwen2 = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    internal const string Gemma2 = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}";

    // Multi-line, whitespace-controlled style of newer templates (Qwen2.5, Llama 3.1).
    internal const string ChatMlMultiLine = """
        {%- for message in messages %}
            {%- if message.role == 'system' %}
                {{- '<|im_start|>system\n' + message.content + '<|im_end|>\n' }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
            {%- endif %}
        {%- endfor %}
        {%- if add_generation_prompt %}
            {{- '<|im_start|>assistant\n' }}
        {%- endif %}

        """;

    [Fact]
    public void Llama2_with_system_and_history() => Assert.Equal(
        "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi there [/INST] Hello! </s><s>[INST] Name a river. [/INST]",
        ChatTemplate.Create(Llama2, "<s>", "</s>").Apply([System, User, Assistant, User2]));

    [Fact]
    public void Llama3_template() => Assert.Equal(
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
        ChatTemplate.Create(Llama3, "<|begin_of_text|>", "<|eot_id|>").Apply([System, User]));

    [Fact]
    public void Phi3_template() => Assert.Equal(
        "<|system|>\nBe brief.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\n",
        ChatTemplate.Create(Phi3, "<s>", "<|endoftext|>").Apply([System, User]));

    [Fact]
    public void Phi3_without_generation_prompt_ends_with_eos() => Assert.Equal(
        "<|user|>\nHi there<|end|>\n<|assistant|>\nHello!<|end|>\n<|endoftext|>",
        ChatTemplate.Create(Phi3, "<s>", "<|endoftext|>").Apply([User, Assistant], addGenerationPrompt: false));

    [Fact]
    public void Mistral_template() => Assert.Equal(
        "<s>[INST] Hi there [/INST]Hello!</s>[INST] Name a river. [/INST]",
        ChatTemplate.Create(Mistral, "<s>", "</s>").Apply([User, Assistant, User2]));

    [Fact]
    public void Qwen2_chatml_adds_default_system() => Assert.Equal(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        ChatTemplate.Create(Qwen2, null, "<|im_end|>").Apply([User]));

    [Fact]
    public void Gemma2_maps_assistant_to_model() => Assert.Equal(
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nName a river.<end_of_turn>\n<start_of_turn>model\n",
        ChatTemplate.Create(Gemma2, "<bos>", "<eos>").Apply([User, Assistant, User2]));

    [Fact]
    public void Multi_line_template_with_whitespace_control() => Assert.Equal(
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        ChatTemplate.Create(ChatMlMultiLine).Apply([System, User]));

    [Fact]
    public void Trim_blocks_and_lstrip_blocks_as_transformers_sets_them() => Assert.Equal(
        "Hi there\nHello!\n",
        ChatTemplate.Create("{% for m in messages %}\n  {% if m.content %}\n{{ m.content }}\n  {% endif %}\n{% endfor %}").Apply([User, Assistant]));

    [Fact]
    public void Namespace_loop_and_filters()
    {
        var t = ChatTemplate.Create("{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'system' %}{% set ns.found = true %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}"
            + "{{ ns.found }} {{ ns.n }} {{ messages|length }} {{ messages[-1].content|upper }} {{ (messages|last).role ~ '!' }} {{ 'x' if ns.found else 'y' }} {{ messages[0].content[:2] }} {{ undefined_var is defined }}");
        Assert.Equal("True 2 2 HI THERE user! x Be False", t.Apply([System, User]));
    }

    [Fact]
    public void Raise_exception_becomes_a_usage_error()
    {
        var e = Assert.Throws<OnnxSteerException>(() => ChatTemplate.Create(Gemma2, "<bos>").Apply([System, User]));
        Assert.Equal(ErrorKind.Usage, e.Kind);
        Assert.Contains("System role not supported", e.Message);
    }

    [Fact]
    public void Missing_or_unsupported_template_falls_back_with_a_warning()
    {
        var none = ChatTemplate.Create(null);
        Assert.False(none.IsModelTemplate);
        Assert.NotNull(none.Warning);
        Assert.Equal("System: Be brief.\nUser: Hi there\nAssistant:", none.Apply([System, User]));

        var odd = ChatTemplate.Create("{% macro x() %}{% endmacro %}");
        Assert.False(odd.IsModelTemplate);
        Assert.Contains("Jinja subset", odd.Warning);
    }

    [Fact]
    public void Fixture_template_is_llama2()
    {
        var template = ChatTemplate.Load(TestPaths.GenAiTinyLlamaFp16, OnnxSteer.Modeling.Tokenization.TextTokenizer.Load(TestPaths.GenAiTinyLlamaFp16));
        Assert.True(template.IsModelTemplate);
        Assert.Equal("<s>[INST] Hi there [/INST]", template.Apply([User]));
    }
}
