using System.Globalization;
using System.Runtime.CompilerServices;

namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>Builds the node tree from segments. Block statements nest by recursion, so their depth is bounded
/// (<see cref="JinjaLimits.MaxBlockDepth"/>): a template of 100,000 nested ifs is refused, not a stack overflow.</summary>
internal sealed class Parser(List<Segment> segments, JinjaLimits limits)
{
    private int _pos, _depth;

    public List<Node> ParseAll()
    {
        var body = ParseBody(out var end);
        if (end is not null) throw new JinjaException($"unexpected {{% {end} %}}");
        return body;
    }

    /// <summary>Parses nodes until an end/else/elif tag, which is returned in <paramref name="terminator"/>.</summary>
    private List<Node> ParseBody(out string? terminator)
    {
        var nodes = new List<Node>();
        while (_pos < segments.Count)
        {
            var seg = segments[_pos++];
            switch (seg.Kind)
            {
                case SegmentKind.Text: nodes.Add(new TextNode(seg.Content)); break;
                case SegmentKind.Output: nodes.Add(new OutputNode(Expression(seg.Content))); break;
                default:
                {
                    var word = FirstWord(seg.Content);
                    switch (word)
                    {
                        case "if": nodes.Add(Nested(() => ParseIf(seg.Content[2..]))); break;
                        case "for": nodes.Add(Nested(() => ParseFor(seg.Content[3..]))); break;
                        case "set": nodes.Add(ParseSet(seg.Content[3..])); break;
                        case "generation": case "endgeneration": break; // transformers' assistant-mask marker
                        case "endif": case "endfor": case "else": case "elif":
                            terminator = seg.Content; return nodes;
                        default: throw new JinjaException($"unsupported statement {{% {seg.Content} %}}");
                    }
                    break;
                }
            }
        }
        terminator = null;
        return nodes;
    }

    private Node Nested(Func<Node> parse)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        if (++_depth > limits.MaxBlockDepth)
            throw new JinjaException($"blocks nested deeper than {limits.MaxBlockDepth} levels", limitExceeded: true);
        try { return parse(); }
        finally { _depth--; }
    }

    private Expr Expression(string text) => ExprParser.Parse(text, limits);

    private IfNode ParseIf(string condition)
    {
        var branches = new List<(Expr?, List<Node>)>();
        Expr? current = Expression(condition);
        while (true)
        {
            var body = ParseBody(out var end);
            branches.Add((current, body));
            if (end is null) throw new JinjaException("missing {% endif %}");
            var word = FirstWord(end);
            if (word == "endif") return new IfNode(branches);
            if (word == "elif") { current = Expression(end[4..]); continue; }
            if (word == "else") { current = null; continue; }
            throw new JinjaException($"unexpected {{% {end} %}} in if");
        }
    }

    private ForNode ParseFor(string header)
    {
        int inAt = IndexOfWord(header, "in");
        if (inAt < 0) throw new JinjaException($"bad for: {header}");
        var targets = header[..inAt].Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries);
        var rest = header[(inAt + 2)..];
        Expr? filter = null;
        int ifAt = IndexOfWord(rest, "if");
        if (ifAt >= 0) { filter = Expression(rest[(ifAt + 2)..]); rest = rest[..ifAt]; }
        var iterable = Expression(rest);
        var body = ParseBody(out var end);
        var elseBody = new List<Node>();
        if (end is not null && FirstWord(end) == "else") elseBody = ParseBody(out end);
        if (end is null || FirstWord(end) != "endfor") throw new JinjaException("missing {% endfor %}");
        return new ForNode(targets.Select(t => t.Trim('(', ')', ' ')).ToArray(), iterable, filter, body, elseBody);
    }

    private SetNode ParseSet(string text)
    {
        int eq = text.IndexOf('=');
        if (eq < 0) throw new JinjaException("block {% set %} is not supported");
        var target = text[..eq].Trim();
        var value = Expression(text[(eq + 1)..]);
        int dot = target.IndexOf('.');
        return dot < 0 ? new SetNode(target, null, value) : new SetNode(target[..dot], target[(dot + 1)..], value);
    }

    private static string FirstWord(string s)
    {
        int i = 0;
        while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
        return s[..i];
    }

    private static int IndexOfWord(string s, string word)
    {
        char quote = '\0';
        for (int i = 0; i + word.Length <= s.Length; i++)
        {
            char c = s[i];
            if (quote != '\0') { if (c == '\\') i++; else if (c == quote) quote = '\0'; continue; }
            if (c == '\'' || c == '"') { quote = c; continue; }
            if (string.CompareOrdinal(s, i, word, 0, word.Length) == 0
                && (i == 0 || !IsIdent(s[i - 1])) && (i + word.Length == s.Length || !IsIdent(s[i + word.Length])))
                return i;
        }
        return -1;
    }

    private static bool IsIdent(char c) => char.IsLetterOrDigit(c) || c == '_';
}

/// <summary>A recursive-descent parser for one expression. Two bounds keep hostile input off the stack: the
/// recursion depth of the parser itself (parentheses, lists, <c>not not ...</c>, <c>- - ...</c>) and the depth of the
/// tree it builds (left-leaning chains such as <c>a + a + a ...</c> or <c>x|trim|trim...</c> are built by loops but
/// evaluated by recursion), both <see cref="JinjaLimits.MaxExpressionDepth"/>.</summary>
internal sealed class ExprParser
{
    private readonly List<string> _t;
    private readonly int _maxDepth;
    private int _p, _depth;

    private ExprParser(List<string> tokens, int maxDepth) { _t = tokens; _maxDepth = maxDepth; }

    public static Expr Parse(string text, JinjaLimits limits)
    {
        var parser = new ExprParser(Lexer.TokenizeExpression(text), limits.MaxExpressionDepth);
        var e = parser.ParseConditional();
        if (parser._p != parser._t.Count) throw new JinjaException($"unexpected '{parser._t[parser._p]}' in expression: {text}");
        return e;
    }

    private string? Peek => _p < _t.Count ? _t[_p] : null;
    private bool Accept(string s) { if (Peek == s) { _p++; return true; } return false; }
    private void ExpectToken(string s) { if (!Accept(s)) throw new JinjaException($"expected '{s}' but found '{Peek ?? "end"}'"); }
    private string Next() => _p < _t.Count ? _t[_p++] : throw new JinjaException("unexpected end of expression");

    private string NextName()
    {
        var t = Next();
        return IsName(t) ? t : throw new JinjaException($"expected a name but found '{t}'");
    }

    /// <summary>Every node the parser makes passes here, so no tree deeper than the limit is ever evaluated.</summary>
    private T N<T>(T e) where T : Expr =>
        e.Depth <= _maxDepth ? e : throw new JinjaException($"an expression nested deeper than {_maxDepth} levels", limitExceeded: true);

    private void Enter()
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        if (++_depth > _maxDepth) throw new JinjaException($"an expression nested deeper than {_maxDepth} levels", limitExceeded: true);
    }

    private Expr ParseConditional()
    {
        Enter();
        try
        {
            var e = ParseOr();
            if (Peek == "if")
            {
                _p++;
                var cond = ParseOr();
                Expr? other = Accept("else") ? ParseConditional() : null;
                return N(new ConditionalExpr(e, cond, other));
            }
            return e;
        }
        finally { _depth--; }
    }

    private Expr ParseOr() { var e = ParseAnd(); while (Accept("or")) e = N(new BinaryExpr("or", e, ParseAnd())); return e; }
    private Expr ParseAnd() { var e = ParseNot(); while (Accept("and")) e = N(new BinaryExpr("and", e, ParseNot())); return e; }

    private Expr ParseNot()
    {
        if (!Accept("not")) return ParseCompare();
        Enter();
        try { return N(new UnaryExpr("not", ParseNot())); }
        finally { _depth--; }
    }

    private Expr ParseCompare()
    {
        var e = ParseConcat();
        while (true)
        {
            var op = Peek;
            if (op is "==" or "!=" or "<" or ">" or "<=" or ">=") { _p++; e = N(new BinaryExpr(op, e, ParseConcat())); }
            else if (op == "in") { _p++; e = N(new BinaryExpr("in", e, ParseConcat())); }
            else if (op == "not" && _p + 1 < _t.Count && _t[_p + 1] == "in") { _p += 2; e = N(new UnaryExpr("not", N(new BinaryExpr("in", e, ParseConcat())))); }
            else if (op == "is")
            {
                _p++;
                bool negate = Accept("not");
                var test = NextName();
                var args = new List<Expr>();
                if (Accept("(")) { if (!Accept(")")) { do args.Add(ParseConditional()); while (Accept(",")); ExpectToken(")"); } }
                else if (test is "equalto" or "eq" or "sameas" && Peek is not null && Peek is not ("and" or "or" or ")" or "else" or "if")) args.Add(ParseConcat());
                e = N(new TestExpr(e, test, args, negate));
            }
            else return e;
        }
    }

    private Expr ParseConcat() { var e = ParseAdd(); while (Accept("~")) e = N(new BinaryExpr("~", e, ParseAdd())); return e; }

    private Expr ParseAdd()
    {
        var e = ParseMul();
        while (Peek is "+" or "-") { var op = _t[_p++]; e = N(new BinaryExpr(op, e, ParseMul())); }
        return e;
    }

    private Expr ParseMul()
    {
        var e = ParseUnary();
        while (Peek is "*" or "/" or "//" or "%") { var op = _t[_p++]; e = N(new BinaryExpr(op, e, ParseUnary())); }
        return e;
    }

    private Expr ParseUnary()
    {
        bool minus = Peek == "-";
        if (!minus && Peek != "+") return ParseFiltered();
        _p++;
        Enter();
        try
        {
            var operand = ParseUnary();
            return minus ? N(new UnaryExpr("-", operand)) : operand;
        }
        finally { _depth--; }
    }

    private Expr ParseFiltered()
    {
        var e = ParsePostfix(ParsePrimary());
        while (Accept("|"))
        {
            var name = NextName();
            var args = new List<Expr>();
            if (Accept("("))
                if (!Accept(")"))
                {
                    do
                    {
                        // Keyword arguments to filters (e.g. tojson(indent=4)) are accepted and their names dropped.
                        if (_p + 1 < _t.Count && _t[_p + 1] == "=" && IsName(_t[_p])) _p += 2;
                        args.Add(ParseConditional());
                    } while (Accept(","));
                    ExpectToken(")");
                }
            e = ParsePostfix(N(new FilterExpr(e, name, args)));
        }
        return e;
    }

    private Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            if (Accept(".")) e = N(new AttrExpr(e, Next()));
            else if (Accept("["))
            {
                Expr? a = null, b = null, c = null;
                bool slice = false;
                if (Peek != ":") a = ParseConditional();
                if (Accept(":"))
                {
                    slice = true;
                    if (Peek is not ("]" or ":")) b = ParseConditional();
                    if (Accept(":") && Peek != "]") c = ParseConditional();
                }
                ExpectToken("]");
                e = slice ? N(new SliceExpr(e, a, b, c)) : N(new IndexExpr(e, a!));
            }
            else if (Accept("("))
            {
                var args = new List<Expr>();
                var kwargs = new List<(string, Expr)>();
                if (!Accept(")"))
                {
                    do
                    {
                        if (_p + 1 < _t.Count && _t[_p + 1] == "=" && IsName(_t[_p])) { var k = _t[_p]; _p += 2; kwargs.Add((k, ParseConditional())); }
                        else args.Add(ParseConditional());
                    } while (Accept(","));
                    ExpectToken(")");
                }
                e = N(new CallExpr(e, args, kwargs));
            }
            else return e;
        }
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        if (t == "(")
        {
            var e = ParseConditional();
            if (Accept(","))
            {
                var items = new List<Expr> { e };
                if (Peek != ")") do items.Add(ParseConditional()); while (Accept(",") && Peek != ")");
                ExpectToken(")");
                return N(new ListExpr(items));
            }
            ExpectToken(")");
            return e;
        }
        if (t == "[")
        {
            var items = new List<Expr>();
            if (!Accept("]")) { do { if (Peek == "]") break; items.Add(ParseConditional()); } while (Accept(",")); ExpectToken("]"); }
            return N(new ListExpr(items));
        }
        if (t == "{")
        {
            var items = new List<(Expr, Expr)>();
            if (!Accept("}")) { do { if (Peek == "}") break; var k = ParseConditional(); ExpectToken(":"); items.Add((k, ParseConditional())); } while (Accept(",")); ExpectToken("}"); }
            return N(new DictExpr(items));
        }
        if (t[0] is '\'' or '"') return new LiteralExpr(t[1..]);
        if (char.IsAsciiDigit(t[0]))
        {
            if (t.Contains('.')) return new LiteralExpr(double.Parse(t, CultureInfo.InvariantCulture));
            // Python integers are unbounded; ours are 64-bit, and a longer literal is an error rather than a wrap.
            return long.TryParse(t, NumberStyles.None, CultureInfo.InvariantCulture, out var n)
                ? new LiteralExpr(n) : throw new JinjaException($"integer literal {Values.Clip(t)} is out of the 64-bit range");
        }
        return t switch
        {
            "true" or "True" => new LiteralExpr(true),
            "false" or "False" => new LiteralExpr(false),
            "none" or "None" => new LiteralExpr(null),
            _ when IsName(t) => new NameExpr(t),
            _ => throw new JinjaException($"unexpected '{t}'"),
        };
    }

    private static bool IsName(string t) => t.Length > 0 && (char.IsLetter(t[0]) || t[0] == '_');
}
