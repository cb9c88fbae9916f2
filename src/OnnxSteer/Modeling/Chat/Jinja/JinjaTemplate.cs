using System.Diagnostics;
using System.Text;

namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>The subset of Jinja2 that Hugging Face chat templates use, rendered the way transformers renders them
/// (trim_blocks and lstrip_blocks on). Statements: for (with loop.*, tuple unpacking, else), if/elif/else, set
/// (including namespace attributes), macro-free. Expressions: literals, lists, dicts, attribute and item access,
/// slices, calls, filters, tests, arithmetic, comparison, <c>in</c>, <c>~</c>, boolean logic and inline if.
/// Values are C# strings, longs, doubles, bools, null, lists and string-keyed dictionaries.
/// <para>A template is untrusted input (it comes with a downloaded model), so parsing and rendering are bounded by
/// <see cref="JinjaLimits"/>: nesting, steps, output and allocation sizes and wall time; rendering also observes a
/// cancellation token. The pipeline is <see cref="Lexer"/> (tags and expression tokens), <see cref="Parser"/> (node
/// and expression trees), the nodes' own Render/Eval (<c>Nodes.cs</c>, <c>Expressions.cs</c>) and
/// <see cref="Values"/>/<see cref="Builtins"/> (Python-like value semantics, filters, methods, tests).</para></summary>
internal sealed class JinjaTemplate
{
    private readonly List<Node> _body;
    private readonly JinjaLimits _limits;

    private JinjaTemplate(List<Node> body, JinjaLimits limits) { _body = body; _limits = limits; }

    /// <summary>Parses a template.</summary>
    /// <exception cref="JinjaException">The template uses syntax outside the supported subset, or exceeds a parse
    /// limit (<see cref="JinjaException.LimitExceeded"/>).</exception>
    public static JinjaTemplate Parse(string source, JinjaLimits? limits = null)
    {
        limits ??= JinjaLimits.Default;
        if (source.Length > limits.MaxSourceChars)
            throw new JinjaException($"the template has {source.Length} characters (limit {limits.MaxSourceChars})", limitExceeded: true);
        try
        {
            return new JinjaTemplate(new Parser(Lexer.Tokenize(source), limits).ParseAll(), limits);
        }
        catch (InsufficientExecutionStackException)
        {
            // A backstop for threads with small stacks: the depth limits keep real templates far from the stack's end.
            throw new JinjaException("the template nests too deeply for the stack", limitExceeded: true);
        }
    }

    /// <summary>Renders with the given variables. <paramref name="inputChars"/> is the size of the caller's own text
    /// among the variables (the messages): output and allocation limits grow with it, so a long conversation is never
    /// refused while a template that multiplies text is.</summary>
    /// <exception cref="JinjaException">An error in the template, raise_exception, or a limit exceeded.</exception>
    /// <exception cref="OperationCanceledException"><paramref name="cancellationToken"/> was cancelled.</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables, long inputChars = 0, CancellationToken cancellationToken = default)
    {
        var context = new RenderContext(_limits, inputChars, cancellationToken);
        var scope = new Scope(null, context);
        foreach (var (k, v) in variables) scope.Set(k, v);
        try
        {
            foreach (var node in _body) node.Render(scope);
        }
        catch (InsufficientExecutionStackException)
        {
            // A backstop, as in Parse.
            throw new JinjaException("the template nests too deeply for the stack", limitExceeded: true);
        }
        return context.Output.ToString();
    }
}

/// <summary>Bounds on one template's parse and render. The defaults leave real chat templates (a few KB, a few
/// thousand steps per conversation) orders of magnitude of headroom; docs/reliability.md lists them.</summary>
internal sealed record JinjaLimits
{
    /// <summary>The defaults.</summary>
    public static readonly JinjaLimits Default = new();

    /// <summary>Longest template source, in characters.</summary>
    public int MaxSourceChars { get; init; } = 1 << 20;
    /// <summary>Deepest nesting of block statements (if/for).</summary>
    public int MaxBlockDepth { get; init; } = 64;
    /// <summary>Deepest expression tree (parentheses, lists, operator chains, filter and attribute chains).</summary>
    public int MaxExpressionDepth { get; init; } = 128;
    /// <summary>Deepest nesting of list/dict values when printed, compared or serialised (values can contain themselves).</summary>
    public int MaxValueDepth { get; init; } = 64;
    /// <summary>Evaluation steps per render: node renders, expression evaluations, loop iterations, and work
    /// proportional to the size of what builtins touch.</summary>
    public long MaxSteps { get; init; } = 10_000_000;
    /// <summary>Output characters allowed besides <see cref="OutputCharsPerInputChar"/> times the input's size;
    /// also the longest string value.</summary>
    public long BaseOutputChars { get; init; } = 1 << 20;
    /// <summary>Output characters allowed per character of input (the messages).</summary>
    public long OutputCharsPerInputChar { get; init; } = 4;
    /// <summary>Bytes of values (strings at 2 bytes a character, list and dict entries at 32 bytes) a render may
    /// create in total, besides 32 bytes per input character. Total, not live, so it also bounds peak memory.</summary>
    public long MaxAllocatedBytes { get; init; } = 256L << 20;
    /// <summary>Wall time per render.</summary>
    public TimeSpan MaxRenderTime { get; init; } = TimeSpan.FromSeconds(10);
}

/// <summary>The state of one render: output, step and allocation accounting, the deadline and the cancellation token.</summary>
internal sealed class RenderContext
{
    // Cancellation and the clock are looked at every this many steps: cheap, and far below a millisecond apart.
    private const long CheckInterval = 4096;

    private readonly JinjaLimits _limits;
    private readonly CancellationToken _cancellationToken;
    private readonly long _deadline;
    private readonly long _maxAllocated;
    private long _steps, _nextCheck = CheckInterval, _allocated;

    public RenderContext(JinjaLimits limits, long inputChars, CancellationToken cancellationToken)
    {
        _limits = limits;
        _cancellationToken = cancellationToken;
        inputChars = Math.Clamp(inputChars, 0, int.MaxValue);
        MaxChars = Math.Min(limits.BaseOutputChars + limits.OutputCharsPerInputChar * inputChars, Array.MaxLength / 2);
        _maxAllocated = limits.MaxAllocatedBytes + 32 * inputChars;
        _deadline = Stopwatch.GetTimestamp() + (long)(limits.MaxRenderTime.TotalSeconds * Stopwatch.Frequency);
        cancellationToken.ThrowIfCancellationRequested();
    }

    /// <summary>The rendered text so far.</summary>
    public StringBuilder Output { get; } = new();

    /// <summary>The longest output, and the longest string value.</summary>
    public long MaxChars { get; }

    public int MaxValueDepth => _limits.MaxValueDepth;

    /// <summary>Counts <paramref name="n"/> steps; throws past the step limit, the deadline or on cancellation.</summary>
    public void Step(long n = 1)
    {
        _steps += n;
        if (_steps < _nextCheck) return;
        _nextCheck = _steps + CheckInterval;
        _cancellationToken.ThrowIfCancellationRequested();
        if (_steps > _limits.MaxSteps)
            throw new JinjaException($"rendering took more than {_limits.MaxSteps:N0} steps", limitExceeded: true);
        if (Stopwatch.GetTimestamp() > _deadline)
            throw new JinjaException($"rendering took more than {_limits.MaxRenderTime.TotalSeconds:0.#} s", limitExceeded: true);
    }

    /// <summary>Accounts for a string of <paramref name="length"/> characters about to be created; call before creating it.</summary>
    public void AllocateString(long length)
    {
        if (length > MaxChars)
            throw new JinjaException($"a string of {length:N0} characters (limit {MaxChars:N0})", limitExceeded: true);
        Charge(2 * length);
        // String work is vectorised; a step per 64 characters keeps a loop over huge strings from running for free.
        Step(1 + length / 64);
    }

    /// <summary>Accounts for <paramref name="count"/> list or dict entries about to be created or visited.</summary>
    public void AllocateItems(long count)
    {
        if (count > MaxChars)
            throw new JinjaException($"a collection of {count:N0} items (limit {MaxChars:N0})", limitExceeded: true);
        Charge(32 * count);
        Step(1 + count);
    }

    /// <summary>Appends to the output, within the output limit.</summary>
    public void Write(string text)
    {
        if (Output.Length + (long)text.Length > MaxChars)
            throw new JinjaException($"the output would exceed {MaxChars:N0} characters", limitExceeded: true);
        Output.Append(text);
        Step(1 + text.Length / 64);
    }

    private void Charge(long bytes)
    {
        _allocated += bytes;
        if (_allocated > _maxAllocated)
            throw new JinjaException($"rendering allocated more than {_maxAllocated / (1 << 20):N0} MiB", limitExceeded: true);
    }
}

/// <summary>A chat template that cannot be parsed or that raised an error while rendering.</summary>
internal sealed class JinjaException(string message, bool raised = false, bool limitExceeded = false) : Exception(message)
{
    /// <summary>True when the template itself called raise_exception (the conversation is wrong, not the template).</summary>
    public bool Raised { get; } = raised;

    /// <summary>True when a bound of <see cref="JinjaLimits"/> stopped parsing or rendering.</summary>
    public bool LimitExceeded { get; } = limitExceeded;
}
