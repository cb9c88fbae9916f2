using System.Diagnostics;
using System.Text;
using System.Text.Json.Nodes;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling.Chat.Jinja;
using OnnxSteer.Tests.Runtime;
using Xunit.Abstractions;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

namespace OnnxSteer.Tests.Reliability;

/// <summary>The chat-template fuzzer (issue 16): text mutations of every real template in the repository and tests,
/// plus the hostile constructs of the issue spliced in. Each case is parsed and rendered twice: by the engine itself,
/// where the only allowed failure is <see cref="JinjaException"/> (so a bug cannot hide behind the catch-all of
/// <see cref="ChatTemplate.Apply"/>), and through <see cref="ChatTemplate"/>, where it must be an
/// <see cref="OnnxSteerException"/> whose message is one line with no control characters. Any other exception,
/// a case running past <see cref="CaseTimeout"/>, or a case allocating more than <see cref="MaxCaseAllocation"/>
/// is a failure. Limits are tightened (<see cref="Limits"/>) so hostile cases fail in milliseconds; the bounds
/// themselves at their shipped values are tested in <see cref="ChatTemplateLimitTests"/>.
/// CI: 6 seeds x <c>ONNXSTEER_FUZZ_CASES</c> (default 60) cases. Long run:
/// <c>ONNXSTEER_FUZZ_CASES=5000 ONNXSTEER_FUZZ_SEED=1001 dotnet test tests/OnnxSteer.Tests --filter FullyQualifiedName~FuzzTemplateTests</c>;
/// <c>ONNXSTEER_FUZZ_TEMPLATE_LIMITS=default</c> runs it with the shipped limits instead.</summary>
public sealed class FuzzTemplateTests(ITestOutputHelper output)
{
    private static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(30);

    private static readonly bool DefaultLimits = Environment.GetEnvironmentVariable("ONNXSTEER_FUZZ_TEMPLATE_LIMITS") == "default";

    private static readonly JinjaLimits Limits = DefaultLimits ? JinjaLimits.Default : new JinjaLimits
    {
        MaxSteps = 200_000, BaseOutputChars = 64 << 10, MaxAllocatedBytes = 16 << 20, MaxRenderTime = TimeSpan.FromSeconds(5),
    };

    // Everything a render may allocate: its value budget (strings and collections), work per step (scopes, argument
    // lists) and the parse; far below what an unbounded case (gigabytes) would take.
    private static readonly long MaxCaseAllocation = DefaultLimits ? 4L << 30 : 256L << 20;

    private static readonly ChatTurn[] Conversation =
    [
        new("system", "Be brief."), new("user", "Hi there \x1b[31m"), new("assistant", "Hello!"), new("user", "Name a river."),
    ];

    /// <summary>The hostile constructs of issue 16 and their relatives; spliced into real templates.</summary>
    private static readonly string[] Hostile =
    [
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
        "{{ 'aaaaaaaaaa' * 1000000000 }}", "{{ [1] * 1000000000 }}", "{{ range(9223372036854775807) }}",
        "{{ 1 % 0 }}", "{{ 1 // 0 }}", "{{ 1.0 / 0 }}", "{{ {'a': 1, 'a': 2} }}", "{{ 'x'|indent(-5) }}", "{{ 'x\ny'|indent(1000000000) }}",
        "{{ 'abc'.startswith() }}", "{{ strftime_now('%') }}", "{{ strftime_now('%-') }}", "{{ 9223372036854775807 + 1 }}",
        "{{ -9223372036854775807 - 2 }}", "{{ raise_exception('\x1b]0;pwned\x07\x1b[2J') }}", "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}", "{{ messages.GetType() }}", "{% include 'x' %}", "{% import 'x' as y %}",
        "{% set l = [] %}{{ l.append(l) }}{{ l }}", "{% set ns = namespace(a=1) %}{% set ns.a = ns %}{{ ns|tojson }}",
        "{{ range(0, 10, 0) }}", "{{ 'a'.replace('', 'bb') }}", "{{ 'a b'.split('') }}", "{{ messages[::0] }}", "{{ messages[-9223372036854775807:] }}",
        "{{ (1.5 * 1e0) }}", "{{ 1e308 }}", "{{ 99999999999999999999 }}", "{{ 'x'|tojson(indent=4) }}", "{{ messages|tojson }}",
        "{{ messages|map('content')|join(', ') }}", "{{ messages|first|items|list }}", "{{ 'abc'[1:2:-1] }}", "{{ 0.1 + 0.2 }}",
    ];

    /// <summary>Fragments inserted at random places: syntax pieces, operators, hostile numbers and control text.</summary>
    private static readonly string[] Fragments =
    [
        "{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "{{-", "-}}", "(", ")", "[", "]", "{", "}", ",", ":", ".", "|", "~", "'", "\"", "\\",
        " if ", " else ", " and ", " or ", " not ", " in ", " is ", " is not ", "{% endif %}", "{% endfor %}", "{% else %}", "{% elif x %}",
        " * 1000000000", " % 0", " // 0", " / 0", " + 9223372036854775807", " - 1", "-", "|indent(-5)", "|trim", "|length", "|tojson", "|join",
        "|default('x')", "|list", "|reverse", "|first", "|last", "|int", "|float", "|string", "|upper", "|items", "|map('role')",
        ".strip()", ".startswith()", ".split('')", ".replace('')", ".append(messages)", ".items()", ".get()", ".__class__", ".GetType()",
        "loop.index0", "loop.nextitem", "ns.x", "messages", "messages[0]", "messages[-1]", "message['content']", "bos_token", "undefined_name",
        "range(1000000)", "range(-1)", "namespace(x=1)", "dict()", "strftime_now('%Y-%m-%d %')", "raise_exception('\x1b[2J')",
        "9223372036854775807", "-9223372036854775808", "1e9", "0.0", "1.5", "99999999999999999999", "True", "None", "\x00", "\x1b", "\u202e",
        "\n", "\r\n", "\t", "  ",
    ];

    /// <summary>Valid expressions (hostile or not) that replace an operand inside a tag, keeping the template parseable
    /// so the mutation reaches rendering.</summary>
    private static readonly string[] Expressions =
    [
        "messages", "messages|length", "messages[0]", "messages[-1]['content']", "message", "loop", "loop.index0 // 0", "1 % 0", "1.0 / 0",
        "'x' * 1000000000", "1000000000 * 'xy'", "[messages] * 1000000", "range(100000)", "range(100000)|list|length", "range(3, 0, -1)",
        "9223372036854775807 + 1", "-9223372036854775807 - 1", "-(-9223372036854775807 - 1)", "3037000500 * 3037000500", "0.1 * 3",
        "messages|tojson", "messages|tojson(indent=2)", "messages|map('content')|join('\n')", "messages|first|items|list", "messages|reverse",
        "'abc'.startswith()", "'abc'.split('')", "'abc'.replace('', 'x')", "'a\nb'|indent(-5)", "'a\nb'|indent(1000000000)", "strftime_now('%')",
        "strftime_now('%d %b %Y %-d %%')", "raise_exception('\x1b]0;pwned\x07')", "namespace(a=1, a=2)", "{'k': 1, 'k': 2}", "dict(x=messages)",
        "''.__class__", "cycler.__init__.__globals__", "messages.GetType()", "undefined_name.attr[0]", "none", "true and 1 or 'x'",
        "messages[::0]", "messages[9223372036854775807:]", "'abc'[::-1]", "'x' in messages", "messages == messages", "messages is sequence",
        "1 is equalto", "1 is odd", "'1.5'|float", "'x'|int", "1e9", "1 if true else 2", "not not not true", "(((((((((((1)))))))))))",
    ];

    private static readonly string[] Keywords = ["if", "elif", "else", "endif", "for", "endfor", "in", "set", "not", "and", "or", "is", "true", "false", "none", "True", "False", "None"];

    private static readonly string[] HostileNumbers =
        ["0", "-1", "1000000000", "9223372036854775807", "99999999999999999999", "100000", "3037000500", "-0", "0.0", "1.5"];

    private static List<(string Name, string Source)> Corpus()
    {
        var corpus = new List<(string, string)>
        {
            ("llama2", ChatTemplateTests.Llama2), ("llama3", ChatTemplateTests.Llama3), ("phi3", ChatTemplateTests.Phi3),
            ("mistral", ChatTemplateTests.Mistral), ("qwen2", ChatTemplateTests.Qwen2), ("gemma2", ChatTemplateTests.Gemma2),
            ("chatml-multiline", ChatTemplateTests.ChatMlMultiLine),
        };
        foreach (var dir in Directory.GetDirectories(Path.Combine(TestPaths.RepoRoot, "models")).Append(TestPaths.GenAiTinyLlamaFp16))
        {
            var config = Path.Combine(dir, "tokenizer_config.json");
            if (File.Exists(config) && JsonNode.Parse(File.ReadAllText(config))?["chat_template"]?.GetValue<string>() is string t)
                corpus.Add((Path.GetFileName(dir), t));
        }
        return corpus;
    }

    public static TheoryData<int> Seeds() => [0, 1, 2, 3, 4, 5];

    [Theory]
    [MemberData(nameof(Seeds))]
    public void Mutated_templates_end_cleanly(int seedOffset)
    {
        var corpus = Corpus();
        var rng = new Random(Fuzz.Seed * 1000 + seedOffset);
        int cases = Fuzz.Cases(60);
        var failures = new List<string>();
        long maxAllocated = 0;
        int rendered = 0, refused = 0, fallback = 0;
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < cases; i++)
        {
            var (name, source) = corpus[rng.Next(corpus.Count)];
            var (kind, mutated) = Mutate(source, corpus, rng);
            var outcome = RunCase(mutated, out long allocated);
            maxAllocated = Math.Max(maxAllocated, allocated);
            if (outcome == "rendered") rendered++;
            else if (outcome == "refused") refused++;
            else if (outcome == "fallback") fallback++;
            else failures.Add($"case {seedOffset}/{i} ({name}, {kind}): {outcome}\ntemplate: {Escape(mutated)}");
        }
        output.WriteLine($"{cases} cases in {clock.Elapsed.TotalSeconds:0.0} s: {rendered} rendered, {fallback} outside the subset (fallback), {refused} refused, {failures.Count} failed; " +
            $"most allocated by one case {maxAllocated / (1 << 20)} MiB; peak working set {Process.GetCurrentProcess().PeakWorkingSet64 / (1 << 20)} MiB");
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases} cases failed:\n" + string.Join("\n\n", failures.Take(5)));
    }

    [Fact]
    public void Hostile_cases_of_the_issue_end_cleanly()
    {
        var failures = new List<string>();
        foreach (var hostile in Hostile)
        {
            var outcome = RunCase(hostile, out _);
            if (outcome is not ("rendered" or "refused" or "fallback")) failures.Add($"{Escape(hostile)}: {outcome}");
        }
        Assert.True(failures.Count == 0, string.Join("\n\n", failures));
    }

    /// <summary>"rendered", "fallback" (outside the supported subset), "refused", or a failure description.</summary>
    private static string RunCase(string source, out long allocated)
    {
        long used = 0;
        string? failure = null;
        var task = Task.Factory.StartNew(() =>
        {
            long before = GC.GetAllocatedBytesForCurrentThread();
            failure = Engine(source) ?? Wrapper(source);
            used = GC.GetAllocatedBytesForCurrentThread() - before;
        }, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        if (!task.Wait(CaseTimeout)) { allocated = 0; return $"no result after {CaseTimeout.TotalSeconds} s (hang)"; }
        allocated = used;
        if (failure is not null && failure is not ("refused" or "fallback")) return failure;
        if (used > MaxCaseAllocation) return $"allocated {used / (1 << 20)} MiB (bound {MaxCaseAllocation / (1 << 20)} MiB)";
        return failure ?? "rendered";
    }

    private static string? Engine(string source)
    {
        try
        {
            var template = JinjaTemplate.Parse(source, Limits);
            var variables = new Dictionary<string, object?>
            {
                ["bos_token"] = "<s>", ["eos_token"] = "</s>", ["add_generation_prompt"] = true,
                ["messages"] = Conversation.Select(m => (object?)new Dictionary<string, object?> { ["role"] = m.Role, ["content"] = m.Content }).ToList(),
            };
            template.Render(variables, Conversation.Sum(m => m.Role.Length + m.Content.Length));
            return null;
        }
        catch (JinjaException) { return null; }
        catch (Exception e) { return $"engine: {e.GetType().FullName}: {e.Message}\n{e.StackTrace}"; }
    }

    private static string? Wrapper(string source)
    {
        try
        {
            var template = ChatTemplate.Create(source, "fuzz.jinja", "<s>", "</s>", null, null, Limits);
            template.Apply(Conversation);
            if (template.Warning is { } w && w.Any(char.IsControl)) return $"warning with control characters: {Escape(w)}";
            return template.Warning is null ? null : "fallback";
        }
        catch (OnnxSteerException e)
        {
            if (e.Message.Any(c => char.IsControl(c) || c is >= '\u202a' and <= '\u202e'))
                return $"message with control characters: {Escape(e.Message)}";
            if (!e.Message.Contains("fuzz.jinja", StringComparison.Ordinal)) return $"message not naming the template: {e.Message}";
            return "refused";
        }
        catch (Exception e) { return $"ChatTemplate: {e.GetType().FullName}: {e.Message}\n{e.StackTrace}"; }
    }

    private static (string Kind, string Text) Mutate(string source, List<(string Name, string Source)> corpus, Random rng)
    {
        var s = source;
        int rounds = 1 + rng.Next(3);
        var kinds = new List<string>();
        for (int r = 0; r < rounds; r++)
        {
            // Most mutations keep the template parseable, so that rendering, not the parser, meets the hostile input;
            // the rest (character-level) exercise the lexer and parser.
            switch (rng.Next(12))
            {
                case 0 or 1:
                    s = s.Insert(Boundary(s, rng), Hostile[rng.Next(Hostile.Length)]); kinds.Add("insert-hostile"); break;
                case 2 or 3 or 4:
                    s = ReplaceOperand(s, rng, kinds); break;
                case 5:
                    s = s.Insert(Boundary(s, rng), "{{ " + Expressions[rng.Next(Expressions.Length)] + " }}"); kinds.Add("insert-output"); break;
                case 6:
                {
                    // Every integer literal of the template replaced by one hostile number.
                    var n = HostileNumbers[rng.Next(HostileNumbers.Length)];
                    var sb = new StringBuilder();
                    for (int i = 0; i < s.Length; i++)
                    {
                        if (char.IsAsciiDigit(s[i]) && (i == 0 || !char.IsLetterOrDigit(s[i - 1])))
                        {
                            while (i + 1 < s.Length && char.IsAsciiDigit(s[i + 1])) i++;
                            sb.Append(n);
                        }
                        else sb.Append(s[i]);
                    }
                    s = sb.ToString(); kinds.Add("numbers"); break;
                }
                case 7:
                {
                    var n = new[] { "3", "1000", "100000", "1000000000" }[rng.Next(4)];
                    s = $"{{% for i{r} in range({n}) %}}{s}{{% endfor %}}"; kinds.Add($"loop-{n}"); break;
                }
                case 8:
                {
                    // Deep nesting, sometimes past the limits.
                    int depth = new[] { 10, 60, 200, 5000 }[rng.Next(4)];
                    var (open, close, pre, post) = new[]
                    {
                        ("(", ")", "{{ ", " }}"), ("[", "]", "{{ ", " }}"), ("{% if true %}", "{% endif %}", "", ""), ("not ", "", "{{ ", " }}"),
                        ("-", "", "{{ ", " }}"), ("{'k': ", "}", "{{ ", " }}"), ("{% for m in messages %}", "{% endfor %}", "", ""),
                    }[rng.Next(7)];
                    s = s.Insert(Boundary(s, rng), pre + string.Concat(Enumerable.Repeat(open, depth)) + "1" + string.Concat(Enumerable.Repeat(close, depth)) + post);
                    kinds.Add($"nest-{depth}"); break;
                }
                case 9:
                {
                    // Wrap an output expression in a hostile operation.
                    int open = s.IndexOf("{{", rng.Next(s.Length + 1), StringComparison.Ordinal);
                    int close = open < 0 ? -1 : s.IndexOf("}}", open, StringComparison.Ordinal);
                    if (close < 0) { kinds.Add("wrap-none"); break; }
                    var inner = s[(open + 2)..close].Trim('-', ' ');
                    var wrapped = new[] { "({0}) * 1000000000", "({0}) ~ ({0}) ~ ({0})", "[{0}] * 100000", "({0})|indent(-5)", "({0}) % 0", "({0})|tojson", "({0}).startswith()" }[rng.Next(7)];
                    s = s[..(open + 2)] + " " + string.Format(System.Globalization.CultureInfo.InvariantCulture, wrapped, inner) + " " + s[close..];
                    kinds.Add("wrap"); break;
                }
                default:
                    s = CharacterLevel(s, corpus, rng, kinds); break;
            }
        }
        return (string.Join("+", kinds), s);
    }

    /// <summary>A position between tags (after a "%}" or "}}"), or the start.</summary>
    private static int Boundary(string s, Random rng)
    {
        var ends = new List<int> { 0, s.Length };
        for (int i = 1; i < s.Length; i++)
            if (s[i] == '}' && s[i - 1] is '%' or '}') ends.Add(i + 1);
        return ends[rng.Next(ends.Count)];
    }

    /// <summary>Replaces one operand (a name with its subscripts, a string or a number) inside a tag by a valid expression.</summary>
    private static string ReplaceOperand(string s, Random rng, List<string> kinds)
    {
        var tags = System.Text.RegularExpressions.Regex.Matches(s, @"\{\{.*?\}\}|\{%.*?%\}", System.Text.RegularExpressions.RegexOptions.Singleline);
        if (tags.Count == 0) { kinds.Add("operand-none"); return s; }
        var tag = tags[rng.Next(tags.Count)];
        var operands = System.Text.RegularExpressions.Regex.Matches(tag.Value, @"[A-Za-z_][A-Za-z_0-9]*(\[[^\]]*\]|\.[A-Za-z_]+)*|'[^']*'|\d+")
            .Where(m => !Keywords.Contains(m.Value) && m.Index > 2).ToList();
        if (operands.Count == 0) { kinds.Add("operand-none"); return s; }
        var operand = operands[rng.Next(operands.Count)];
        kinds.Add("operand");
        return s[..(tag.Index + operand.Index)] + "(" + Expressions[rng.Next(Expressions.Length)] + ")" + s[(tag.Index + operand.Index + operand.Length)..];
    }

    private static string CharacterLevel(string s, List<(string Name, string Source)> corpus, Random rng, List<string> kinds)
    {
        int at = rng.Next(s.Length + 1);
        switch (rng.Next(5))
        {
            case 0:
                kinds.Add("insert-fragment");
                return s.Insert(at, Fragments[rng.Next(Fragments.Length)]);
            case 1:
                kinds.Add("delete");
                return s.Remove(Math.Min(at, s.Length), Math.Min(1 + rng.Next(40), s.Length - Math.Min(at, s.Length)));
            case 2:
            {
                int from = rng.Next(s.Length + 1), len = Math.Min(1 + rng.Next(200), s.Length - from);
                kinds.Add("duplicate");
                return s.Insert(at, s.Substring(from, len));
            }
            case 3:
            {
                var other = corpus[rng.Next(corpus.Count)].Source;
                int from = rng.Next(other.Length), len = Math.Min(1 + rng.Next(300), other.Length - from);
                kinds.Add("splice");
                return s.Insert(at, other.Substring(from, len));
            }
            default:
            {
                var chars = "{}%#()[]'\"\\|.,:~-+*/ \n\x00\x1b=<>!_aZ09";
                var arr = s.ToCharArray();
                for (int k = 0, flips = 1 + rng.Next(6); k < flips && arr.Length > 0; k++) arr[rng.Next(arr.Length)] = chars[rng.Next(chars.Length)];
                kinds.Add("flip");
                return new string(arr);
            }
        }
    }

    private static string Escape(string s) => TerminalText.Escape(s.Length > 400 ? s[..400] + "..." : s);
}
