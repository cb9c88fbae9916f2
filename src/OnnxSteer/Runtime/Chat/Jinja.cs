using System.Globalization;
using System.Text;
using System.Text.Json;

namespace OnnxSteer.Runtime.Chat;

/// <summary>The subset of Jinja2 that Hugging Face chat templates use, rendered the way transformers renders them
/// (trim_blocks and lstrip_blocks on). Statements: for (with loop.*, tuple unpacking, else), if/elif/else, set
/// (including namespace attributes), macro-free. Expressions: literals, lists, dicts, attribute and item access,
/// slices, calls, filters, tests, arithmetic, comparison, <c>in</c>, <c>~</c>, boolean logic and inline if.
/// Values are C# strings, longs, doubles, bools, null, lists and string-keyed dictionaries.</summary>
internal sealed class JinjaTemplate
{
    private readonly List<Node> _body;

    private JinjaTemplate(List<Node> body) => _body = body;

    /// <summary>Parses a template.</summary>
    /// <exception cref="JinjaException">The template uses syntax outside the supported subset.</exception>
    public static JinjaTemplate Parse(string source) => new(new Parser(Lexer.Tokenize(source)).ParseAll());

    /// <summary>Renders with the given variables.</summary>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var scope = new Scope(null);
        foreach (var (k, v) in variables) scope.Set(k, v);
        var sb = new StringBuilder();
        foreach (var node in _body) node.Render(scope, sb);
        return sb.ToString();
    }

    // ---------------------------------------------------------------- lexing

    private enum SegmentKind { Text, Output, Statement }

    private sealed record Segment(SegmentKind Kind, string Content);

    private static class Lexer
    {
        private sealed record Tag(SegmentKind Kind, string Content, bool Comment, bool TrimLeft, bool TrimRight, bool KeepLeft);

        public static List<Segment> Tokenize(string s)
        {
            // texts[k] is the text before tags[k]; the last text follows the last tag.
            var texts = new List<string>();
            var tags = new List<Tag>();
            int i = 0, textStart = 0;
            while (i < s.Length)
            {
                if (s[i] == '{' && i + 1 < s.Length && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#'))
                {
                    char open = s[i + 1];
                    string close = open == '{' ? "}}" : open == '%' ? "%}" : "#}";
                    texts.Add(s[textStart..i]);
                    int start = i + 2;
                    bool trimLeft = start < s.Length && s[start] == '-';
                    bool keepLeft = start < s.Length && s[start] == '+';
                    if (trimLeft || keepLeft) start++;
                    int end = open == '#' ? s.IndexOf("#}", start, StringComparison.Ordinal) : FindClose(s, start, close);
                    if (end < 0) throw new JinjaException($"unclosed {{{open} at offset {i}");
                    int contentEnd = end;
                    bool trimRight = contentEnd > start && s[contentEnd - 1] == '-';
                    if (trimRight || (contentEnd > start && s[contentEnd - 1] == '+')) contentEnd--;
                    tags.Add(new Tag(open == '{' ? SegmentKind.Output : SegmentKind.Statement, s[start..contentEnd].Trim(), open == '#', trimLeft, trimRight, keepLeft));
                    i = end + 2;
                    textStart = i;
                }
                else i++;
            }
            texts.Add(s[textStart..]);

            // Whitespace control, decided on the source text as Jinja does: "-" trims all whitespace beside a tag;
            // trim_blocks drops the first newline after a block tag; lstrip_blocks drops spaces and tabs between a
            // line start and a block tag.
            var result = new List<Segment>();
            for (int k = 0; k < texts.Count; k++)
            {
                var t = texts[k];
                int from = 0, to = t.Length;
                if (k > 0)
                {
                    var before = tags[k - 1];
                    if (before.TrimRight) while (from < to && char.IsWhiteSpace(t[from])) from++;
                    else if (before.Kind == SegmentKind.Statement)
                    {
                        if (t.StartsWith("\r\n", StringComparison.Ordinal)) from = 2;
                        else if (t.StartsWith('\n')) from = 1;
                    }
                }
                if (k < tags.Count)
                {
                    var after = tags[k];
                    if (after.TrimLeft) while (to > from && char.IsWhiteSpace(t[to - 1])) to--;
                    else if (after.Kind == SegmentKind.Statement && !after.KeepLeft)
                    {
                        int j = t.Length;
                        while (j > 0 && (t[j - 1] == ' ' || t[j - 1] == '\t')) j--;
                        if ((j > 0 && t[j - 1] == '\n') || (j == 0 && k == 0)) to = Math.Max(from, j);
                    }
                }
                if (to > from) result.Add(new Segment(SegmentKind.Text, t[from..to]));
                if (k < tags.Count && !tags[k].Comment) result.Add(new Segment(tags[k].Kind, tags[k].Content));
            }
            return result;
        }

        private static int FindClose(string s, int from, string close)
        {
            char quote = '\0';
            for (int i = from; i < s.Length - 1; i++)
            {
                char c = s[i];
                if (quote != '\0')
                {
                    if (c == '\\') { i++; continue; }
                    if (c == quote) quote = '\0';
                    continue;
                }
                if (c == '\'' || c == '"') { quote = c; continue; }
                if (c == close[0] && s[i + 1] == close[1]) return i;
            }
            return -1;
        }
    }

    // ---------------------------------------------------------------- nodes

    private abstract class Node
    {
        public abstract void Render(Scope scope, StringBuilder sb);
    }

    private sealed class TextNode(string text) : Node
    {
        public override void Render(Scope scope, StringBuilder sb) => sb.Append(text);
    }

    private sealed class OutputNode(Expr expr) : Node
    {
        public override void Render(Scope scope, StringBuilder sb) => sb.Append(Values.ToText(expr.Eval(scope)));
    }

    private sealed class IfNode(List<(Expr? Condition, List<Node> Body)> branches) : Node
    {
        public override void Render(Scope scope, StringBuilder sb)
        {
            foreach (var (condition, body) in branches)
                if (condition is null || Values.Truthy(condition.Eval(scope)))
                {
                    foreach (var n in body) n.Render(scope, sb);
                    return;
                }
        }
    }

    private sealed class ForNode(string[] targets, Expr iterable, Expr? filter, List<Node> body, List<Node> elseBody) : Node
    {
        public override void Render(Scope scope, StringBuilder sb)
        {
            var items = Values.Iterate(iterable.Eval(scope)).ToList();
            if (filter is not null)
                items = items.Where(item => { var s = new Scope(scope); Bind(s, item); return Values.Truthy(filter.Eval(s)); }).ToList();
            if (items.Count == 0) { foreach (var n in elseBody) n.Render(scope, sb); return; }
            for (int i = 0; i < items.Count; i++)
            {
                // Jinja scoping: assignments inside a loop do not leak out (hence namespace() in templates).
                var inner = new Scope(scope);
                Bind(inner, items[i]);
                inner.Set("loop", new Dictionary<string, object?>
                {
                    ["index0"] = (long)i, ["index"] = (long)i + 1, ["first"] = i == 0, ["last"] = i == items.Count - 1,
                    ["length"] = (long)items.Count, ["revindex"] = (long)(items.Count - i), ["revindex0"] = (long)(items.Count - i - 1),
                    ["previtem"] = i > 0 ? items[i - 1] : null, ["nextitem"] = i + 1 < items.Count ? items[i + 1] : null,
                });
                foreach (var n in body) n.Render(inner, sb);
            }
        }

        private void Bind(Scope s, object? item)
        {
            if (targets.Length == 1) { s.Set(targets[0], item); return; }
            var parts = Values.Iterate(item).ToList();
            for (int t = 0; t < targets.Length; t++) s.Set(targets[t], t < parts.Count ? parts[t] : null);
        }
    }

    private sealed class SetNode(string name, string? attribute, Expr value) : Node
    {
        public override void Render(Scope scope, StringBuilder sb)
        {
            var v = value.Eval(scope);
            if (attribute is null) { scope.Set(name, v); return; }
            if (scope.Get(name) is Dictionary<string, object?> ns) ns[attribute] = v;
            else throw new JinjaException($"cannot set attribute {attribute} of {name}: not a namespace");
        }
    }

    private sealed class Scope(Scope? parent)
    {
        private readonly Dictionary<string, object?> _vars = new();
        public void Set(string name, object? value) => _vars[name] = value;
        public object? Get(string name) => _vars.TryGetValue(name, out var v) ? v : parent is null ? Undefined.Value : parent.Get(name);
    }

    // ---------------------------------------------------------------- statements

    private sealed class Parser(List<Segment> segments)
    {
        private int _pos;

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
                    case SegmentKind.Output: nodes.Add(new OutputNode(ExprParser.Parse(seg.Content))); break;
                    default:
                    {
                        var word = FirstWord(seg.Content);
                        switch (word)
                        {
                            case "if": nodes.Add(ParseIf(seg.Content[2..])); break;
                            case "for": nodes.Add(ParseFor(seg.Content[3..])); break;
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

        private IfNode ParseIf(string condition)
        {
            var branches = new List<(Expr?, List<Node>)>();
            Expr? current = ExprParser.Parse(condition);
            while (true)
            {
                var body = ParseBody(out var end);
                branches.Add((current, body));
                if (end is null) throw new JinjaException("missing {% endif %}");
                var word = FirstWord(end);
                if (word == "endif") return new IfNode(branches);
                if (word == "elif") { current = ExprParser.Parse(end[4..]); continue; }
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
            if (ifAt >= 0) { filter = ExprParser.Parse(rest[(ifAt + 2)..]); rest = rest[..ifAt]; }
            var iterable = ExprParser.Parse(rest);
            var body = ParseBody(out var end);
            var elseBody = new List<Node>();
            if (end is not null && FirstWord(end) == "else") elseBody = ParseBody(out end);
            if (end is null || FirstWord(end) != "endfor") throw new JinjaException("missing {% endfor %}");
            return new ForNode(targets.Select(t => t.Trim('(', ')', ' ')).ToArray(), iterable, filter, body, elseBody);
        }

        private static SetNode ParseSet(string text)
        {
            int eq = text.IndexOf('=');
            if (eq < 0) throw new JinjaException("block {% set %} is not supported");
            var target = text[..eq].Trim();
            var value = ExprParser.Parse(text[(eq + 1)..]);
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

    // ---------------------------------------------------------------- expressions

    private abstract class Expr
    {
        public abstract object? Eval(Scope scope);
    }

    private sealed class Literal(object? value) : Expr { public override object? Eval(Scope scope) => value; }
    private sealed class Name(string name) : Expr { public override object? Eval(Scope scope) => scope.Get(name); public string Id => name; }
    private sealed class ListExpr(List<Expr> items) : Expr { public override object? Eval(Scope scope) => items.Select(i => i.Eval(scope)).ToList(); }
    private sealed class DictExpr(List<(Expr Key, Expr Value)> items) : Expr
    {
        public override object? Eval(Scope scope) => items.ToDictionary(kv => Values.ToText(kv.Key.Eval(scope)), kv => kv.Value.Eval(scope));
    }
    private sealed class Attr(Expr target, string name) : Expr
    {
        public Expr Target => target; public string Member => name;
        public override object? Eval(Scope scope) => Values.GetItem(target.Eval(scope), name);
    }
    private sealed class Index(Expr target, Expr index) : Expr
    {
        public override object? Eval(Scope scope) => Values.GetItem(target.Eval(scope), index.Eval(scope));
    }
    private sealed class Slice(Expr target, Expr? start, Expr? stop, Expr? step) : Expr
    {
        public override object? Eval(Scope scope) => Values.Slice(target.Eval(scope), start?.Eval(scope), stop?.Eval(scope), step?.Eval(scope));
    }
    private sealed class Unary(string op, Expr operand) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var v = operand.Eval(scope);
            if (op == "not") return !Values.Truthy(v);
            return v is long l ? (object)(-l) : -Values.ToDouble(v);
        }
    }
    private sealed class Conditional(Expr then, Expr condition, Expr? otherwise) : Expr
    {
        public override object? Eval(Scope scope) => Values.Truthy(condition.Eval(scope)) ? then.Eval(scope) : otherwise?.Eval(scope) ?? Undefined.Value;
    }
    private sealed class Binary(string op, Expr left, Expr right) : Expr
    {
        public override object? Eval(Scope scope)
        {
            if (op == "and") { var l = left.Eval(scope); return Values.Truthy(l) ? right.Eval(scope) : l; }
            if (op == "or") { var l = left.Eval(scope); return Values.Truthy(l) ? l : right.Eval(scope); }
            return Values.BinaryOp(op, left.Eval(scope), right.Eval(scope));
        }
    }
    private sealed class Test(Expr operand, string test, List<Expr> args, bool negate) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var v = operand.Eval(scope);
            bool r = test switch
            {
                "defined" => v is not Undefined,
                "undefined" => v is Undefined,
                "none" => v is null,
                "string" => v is string,
                "number" => v is long or double,
                "integer" => v is long,
                "float" => v is double,
                "boolean" => v is bool,
                "true" => v is true,
                "false" => v is false,
                "mapping" => v is Dictionary<string, object?>,
                "sequence" or "iterable" => v is string or List<object?> or Dictionary<string, object?>,
                "equalto" or "eq" or "sameas" => Values.AreEqual(v, args[0].Eval(scope)),
                "odd" => Values.ToLong(v) % 2 != 0,
                "even" => Values.ToLong(v) % 2 == 0,
                _ => throw new JinjaException($"unsupported test '{test}'"),
            };
            return r != negate;
        }
    }
    private sealed class Call(Expr callee, List<Expr> args, List<(string Name, Expr Value)> kwargs) : Expr
    {
        public override object? Eval(Scope scope)
        {
            var argv = args.Select(a => a.Eval(scope)).ToList();
            if (callee is Attr attr) return Values.CallMethod(attr.Target.Eval(scope), attr.Member, argv);
            if (callee is Name name)
                switch (name.Id)
                {
                    case "raise_exception": throw new JinjaException(Values.ToText(argv.FirstOrDefault()), raised: true);
                    case "namespace":
                    {
                        var ns = new Dictionary<string, object?>();
                        foreach (var (k, v) in kwargs) ns[k] = v.Eval(scope);
                        return ns;
                    }
                    case "range":
                    {
                        long start = argv.Count > 1 ? Values.ToLong(argv[0]) : 0, stop = Values.ToLong(argv[argv.Count > 1 ? 1 : 0]), step = argv.Count > 2 ? Values.ToLong(argv[2]) : 1;
                        var list = new List<object?>();
                        for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
                        return list;
                    }
                    case "strftime_now": return DateTime.Now.ToString(Values.StrftimeToNet(Values.ToText(argv[0])), CultureInfo.InvariantCulture);
                    case "dict":
                    {
                        var d = new Dictionary<string, object?>();
                        foreach (var (k, v) in kwargs) d[k] = v.Eval(scope);
                        return d;
                    }
                }
            throw new JinjaException("unsupported call");
        }
    }
    private sealed class Filter(Expr operand, string name, List<Expr> args) : Expr
    {
        public override object? Eval(Scope scope) => Values.ApplyFilter(name, operand.Eval(scope), args.Select(a => a.Eval(scope)).ToList());
    }

    private sealed class ExprParser
    {
        private readonly List<string> _t;
        private int _p;

        private ExprParser(List<string> tokens) => _t = tokens;

        public static Expr Parse(string text)
        {
            var parser = new ExprParser(Tokenize(text));
            var e = parser.ParseConditional();
            if (parser._p != parser._t.Count) throw new JinjaException($"unexpected '{parser._t[parser._p]}' in expression: {text}");
            return e;
        }

        private string? Peek => _p < _t.Count ? _t[_p] : null;
        private bool Accept(string s) { if (Peek == s) { _p++; return true; } return false; }
        private void ExpectToken(string s) { if (!Accept(s)) throw new JinjaException($"expected '{s}' but found '{Peek ?? "end"}'"); }

        private Expr ParseConditional()
        {
            var e = ParseOr();
            if (Peek == "if")
            {
                _p++;
                var cond = ParseOr();
                Expr? other = Accept("else") ? ParseConditional() : null;
                return new Conditional(e, cond, other);
            }
            return e;
        }

        private Expr ParseOr() { var e = ParseAnd(); while (Accept("or")) e = new Binary("or", e, ParseAnd()); return e; }
        private Expr ParseAnd() { var e = ParseNot(); while (Accept("and")) e = new Binary("and", e, ParseNot()); return e; }
        private Expr ParseNot() => Accept("not") ? new Unary("not", ParseNot()) : ParseCompare();

        private Expr ParseCompare()
        {
            var e = ParseConcat();
            while (true)
            {
                var op = Peek;
                if (op is "==" or "!=" or "<" or ">" or "<=" or ">=") { _p++; e = new Binary(op, e, ParseConcat()); }
                else if (op == "in") { _p++; e = new Binary("in", e, ParseConcat()); }
                else if (op == "not" && _p + 1 < _t.Count && _t[_p + 1] == "in") { _p += 2; e = new Unary("not", new Binary("in", e, ParseConcat())); }
                else if (op == "is")
                {
                    _p++;
                    bool negate = Accept("not");
                    var test = _t[_p++];
                    var args = new List<Expr>();
                    if (Accept("(")) { if (!Accept(")")) { do args.Add(ParseConditional()); while (Accept(",")); ExpectToken(")"); } }
                    else if (test is "equalto" or "eq" or "sameas" && Peek is not null && Peek is not ("and" or "or" or ")" or "else" or "if")) args.Add(ParseConcat());
                    e = new Test(e, test, args, negate);
                }
                else return e;
            }
        }

        private Expr ParseConcat() { var e = ParseAdd(); while (Accept("~")) e = new Binary("~", e, ParseAdd()); return e; }

        private Expr ParseAdd()
        {
            var e = ParseMul();
            while (Peek is "+" or "-") { var op = _t[_p++]; e = new Binary(op, e, ParseMul()); }
            return e;
        }

        private Expr ParseMul()
        {
            var e = ParseUnary();
            while (Peek is "*" or "/" or "//" or "%") { var op = _t[_p++]; e = new Binary(op, e, ParseUnary()); }
            return e;
        }

        private Expr ParseUnary() => Accept("-") ? new Unary("-", ParseUnary()) : Accept("+") ? ParseUnary() : ParseFiltered();

        private Expr ParseFiltered()
        {
            var e = ParsePostfix(ParsePrimary());
            while (Accept("|"))
            {
                var name = _t[_p++];
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
                e = ParsePostfix(new Filter(e, name, args));
            }
            return e;
        }

        private Expr ParsePostfix(Expr e)
        {
            while (true)
            {
                if (Accept(".")) e = new Attr(e, _t[_p++]);
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
                    e = slice ? new Slice(e, a, b, c) : new Index(e, a!);
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
                    e = new Call(e, args, kwargs);
                }
                else return e;
            }
        }

        private Expr ParsePrimary()
        {
            var t = Peek ?? throw new JinjaException("unexpected end of expression");
            _p++;
            if (t == "(")
            {
                var e = ParseConditional();
                if (Accept(","))
                {
                    var items = new List<Expr> { e };
                    if (Peek != ")") do items.Add(ParseConditional()); while (Accept(",") && Peek != ")");
                    ExpectToken(")");
                    return new ListExpr(items);
                }
                ExpectToken(")");
                return e;
            }
            if (t == "[")
            {
                var items = new List<Expr>();
                if (!Accept("]")) { do { if (Peek == "]") break; items.Add(ParseConditional()); } while (Accept(",")); ExpectToken("]"); }
                return new ListExpr(items);
            }
            if (t == "{")
            {
                var items = new List<(Expr, Expr)>();
                if (!Accept("}")) { do { if (Peek == "}") break; var k = ParseConditional(); ExpectToken(":"); items.Add((k, ParseConditional())); } while (Accept(",")); ExpectToken("}"); }
                return new DictExpr(items);
            }
            if (t[0] is '\'' or '"') return new Literal(t[1..]);
            if (char.IsDigit(t[0]))
                return t.Contains('.') ? new Literal(double.Parse(t, CultureInfo.InvariantCulture)) : new Literal(long.Parse(t, CultureInfo.InvariantCulture));
            return t switch
            {
                "true" or "True" => new Literal(true),
                "false" or "False" => new Literal(false),
                "none" or "None" => new Literal(null),
                _ when IsName(t) => new Name(t),
                _ => throw new JinjaException($"unexpected '{t}'"),
            };
        }

        private static bool IsName(string t) => t.Length > 0 && (char.IsLetter(t[0]) || t[0] == '_');

        /// <summary>Splits an expression into tokens; string literals become their quote char followed by the unescaped value.</summary>
        private static List<string> Tokenize(string s)
        {
            var tokens = new List<string>();
            int i = 0;
            while (i < s.Length)
            {
                char c = s[i];
                if (char.IsWhiteSpace(c)) { i++; continue; }
                if (c is '\'' or '"')
                {
                    var sb = new StringBuilder().Append(c);
                    i++;
                    while (i < s.Length && s[i] != c)
                    {
                        if (s[i] == '\\' && i + 1 < s.Length)
                        {
                            i++;
                            sb.Append(s[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '0' => '\0', _ => s[i] });
                        }
                        else sb.Append(s[i]);
                        i++;
                    }
                    if (i >= s.Length) throw new JinjaException("unterminated string");
                    i++;
                    tokens.Add(sb.ToString());
                    continue;
                }
                if (char.IsDigit(c))
                {
                    int st = i;
                    while (i < s.Length && (char.IsDigit(s[i]) || (s[i] == '.' && i + 1 < s.Length && char.IsDigit(s[i + 1])))) i++;
                    tokens.Add(s[st..i]);
                    continue;
                }
                if (char.IsLetter(c) || c == '_')
                {
                    int st = i;
                    while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                    tokens.Add(s[st..i]);
                    continue;
                }
                var two = i + 1 < s.Length ? s.Substring(i, 2) : "";
                if (two is "==" or "!=" or "<=" or ">=" or "//") { tokens.Add(two); i += 2; continue; }
                tokens.Add(c.ToString());
                i++;
            }
            return tokens;
        }
    }

    // ---------------------------------------------------------------- values

    private sealed class Undefined
    {
        public static readonly Undefined Value = new();
        public override string ToString() => "";
    }

    private static class Values
    {
        public static bool Truthy(object? v) => v switch
        {
            null or Undefined => false,
            bool b => b,
            long l => l != 0,
            double d => d != 0,
            string s => s.Length > 0,
            List<object?> l => l.Count > 0,
            Dictionary<string, object?> d => d.Count > 0,
            _ => true,
        };

        public static string ToText(object? v) => v switch
        {
            null => "None",
            Undefined => "",
            bool b => b ? "True" : "False",
            string s => s,
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => d.ToString("R", CultureInfo.InvariantCulture),
            List<object?> l => "[" + string.Join(", ", l.Select(Repr)) + "]",
            Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(kv => $"'{kv.Key}': {Repr(kv.Value)}")) + "}",
            _ => v.ToString() ?? "",
        };

        private static string Repr(object? v) => v is string s ? $"'{s}'" : ToText(v);

        public static double ToDouble(object? v) => v switch { long l => l, double d => d, bool b => b ? 1 : 0, _ => throw new JinjaException($"not a number: {ToText(v)}") };
        public static long ToLong(object? v) => v switch { long l => l, double d => (long)d, bool b => b ? 1 : 0, _ => throw new JinjaException($"not an integer: {ToText(v)}") };

        public static IEnumerable<object?> Iterate(object? v) => v switch
        {
            null or Undefined => [],
            List<object?> l => l,
            Dictionary<string, object?> d => d.Keys.Cast<object?>(),
            string s => s.Select(c => (object?)c.ToString()),
            _ => throw new JinjaException($"cannot iterate over {ToText(v)}"),
        };

        public static bool AreEqual(object? a, object? b)
        {
            if (a is Undefined) a = null;
            if (b is Undefined) b = null;
            if (a is long or double && b is long or double) return ToDouble(a) == ToDouble(b);
            if (a is List<object?> la && b is List<object?> lb) return la.Count == lb.Count && la.Zip(lb).All(p => AreEqual(p.First, p.Second));
            return Equals(a, b);
        }

        public static object? GetItem(object? target, object? key)
        {
            switch (target)
            {
                case Dictionary<string, object?> d:
                    return key is string k && d.TryGetValue(k, out var v) ? v : Undefined.Value;
                case List<object?> l when key is long i:
                    if (i < 0) i += l.Count;
                    return i >= 0 && i < l.Count ? l[(int)i] : Undefined.Value;
                case string s when key is long i:
                    if (i < 0) i += s.Length;
                    return i >= 0 && i < s.Length ? s[(int)i].ToString() : Undefined.Value;
                default:
                    return Undefined.Value;
            }
        }

        public static object? Slice(object? target, object? start, object? stop, object? step)
        {
            var items = target is string s ? s.Select(c => (object?)c.ToString()).ToList() : target as List<object?> ?? throw new JinjaException($"cannot slice {ToText(target)}");
            int n = items.Count;
            long st = step is null ? 1 : ToLong(step);
            if (st == 0) throw new JinjaException("slice step cannot be zero");
            long Norm(object? v, long def) { if (v is null) return def; long x = ToLong(v); if (x < 0) x += n; return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1); }
            long a = Norm(start, st > 0 ? 0 : n - 1), b = Norm(stop, st > 0 ? n : -1);
            var result = new List<object?>();
            for (long i = a; st > 0 ? i < b : i > b; i += st) result.Add(items[(int)i]);
            return target is string ? string.Concat(result.Select(ToText)) : result;
        }

        public static object? BinaryOp(string op, object? a, object? b)
        {
            switch (op)
            {
                case "==": return AreEqual(a, b);
                case "!=": return !AreEqual(a, b);
                case "~": return ToText(a) + ToText(b);
                case "in":
                    return b switch
                    {
                        string s => s.Contains(ToText(a), StringComparison.Ordinal),
                        List<object?> l => l.Any(x => AreEqual(x, a)),
                        Dictionary<string, object?> d => a is string k && d.ContainsKey(k),
                        _ => false,
                    };
                case "+":
                    if (a is string || b is string)
                    {
                        if (a is string sa && b is string sb) return sa + sb;
                        throw new JinjaException($"cannot add {ToText(a)} and {ToText(b)}");
                    }
                    if (a is List<object?> la && b is List<object?> lb) return la.Concat(lb).ToList();
                    break;
            }
            if (op is "<" or ">" or "<=" or ">=")
            {
                int c = a is string x && b is string y ? string.CompareOrdinal(x, y) : ToDouble(a).CompareTo(ToDouble(b));
                return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
            }
            if (a is long l1 && b is long l2)
                return op switch
                {
                    "+" => (object)(l1 + l2), "-" => l1 - l2, "*" => l1 * l2, "/" => (double)l1 / l2,
                    "//" => (long)Math.Floor((double)l1 / l2), "%" => ((l1 % l2) + l2) % l2,
                    _ => throw new JinjaException($"unsupported operator {op}"),
                };
            if (op == "*" && a is string rs && b is long times) return string.Concat(Enumerable.Repeat(rs, (int)Math.Max(0, times)));
            double d1 = ToDouble(a), d2 = ToDouble(b);
            return op switch
            {
                "+" => d1 + d2, "-" => d1 - d2, "*" => d1 * d2, "/" => d1 / d2, "//" => Math.Floor(d1 / d2), "%" => d1 - d2 * Math.Floor(d1 / d2),
                _ => throw new JinjaException($"unsupported operator {op}"),
            };
        }

        public static object? CallMethod(object? target, string method, List<object?> args)
        {
            if (target is string s)
                return method switch
                {
                    "strip" => args.Count > 0 ? s.Trim(ToText(args[0]).ToCharArray()) : s.Trim(),
                    "lstrip" => args.Count > 0 ? s.TrimStart(ToText(args[0]).ToCharArray()) : s.TrimStart(),
                    "rstrip" => args.Count > 0 ? s.TrimEnd(ToText(args[0]).ToCharArray()) : s.TrimEnd(),
                    "upper" => s.ToUpperInvariant(),
                    "lower" => s.ToLowerInvariant(),
                    "title" => CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s.ToLowerInvariant()),
                    "capitalize" => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant(),
                    "startswith" => s.StartsWith(ToText(args[0]), StringComparison.Ordinal),
                    "endswith" => s.EndsWith(ToText(args[0]), StringComparison.Ordinal),
                    "split" => (args.Count > 0 && args[0] is string sep ? s.Split(sep) : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)).Select(x => (object?)x).ToList(),
                    "replace" => s.Replace(ToText(args[0]), ToText(args[1]), StringComparison.Ordinal),
                    "format" => s,
                    _ => throw new JinjaException($"unsupported string method {method}"),
                };
            if (target is Dictionary<string, object?> d)
                return method switch
                {
                    "items" => d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                    "keys" => d.Keys.Select(k => (object?)k).ToList(),
                    "values" => d.Values.ToList(),
                    "get" => args.Count > 0 && args[0] is string k && d.TryGetValue(k, out var v) ? v : args.Count > 1 ? args[1] : null,
                    _ => throw new JinjaException($"unsupported mapping method {method}"),
                };
            if (target is List<object?> l && method == "append") { l.Add(args[0]); return Undefined.Value; }
            throw new JinjaException($"unsupported method {method} on {ToText(target)}");
        }

        public static object? ApplyFilter(string name, object? v, List<object?> args) => name switch
        {
            "trim" => ToText(v).Trim(),
            "upper" => ToText(v).ToUpperInvariant(),
            "lower" => ToText(v).ToLowerInvariant(),
            "capitalize" => CallMethod(ToText(v), "capitalize", args),
            "title" => CallMethod(ToText(v), "title", args),
            "string" => ToText(v),
            "safe" or "e" or "escape" => v,
            "length" or "count" => (long)(v switch { string s => s.Length, List<object?> l => l.Count, Dictionary<string, object?> d => d.Count, _ => 0 }),
            "first" => Iterate(v).FirstOrDefault(),
            "last" => Iterate(v).LastOrDefault(),
            "list" => Iterate(v).ToList(),
            "items" => CallMethod(v, "items", args),
            "reverse" => v is string s ? new string(s.Reverse().ToArray()) : Iterate(v).Reverse().ToList(),
            "join" => string.Join(args.Count > 0 ? ToText(args[0]) : "", Iterate(v).Select(ToText)),
            "default" or "d" => v is Undefined || (args.Count > 1 && Truthy(args[1]) && !Truthy(v)) ? (args.Count > 0 ? args[0] : "") : v,
            "int" => v is string s ? (long.TryParse(s, out var n) ? n : 0L) : ToLong(v),
            "float" => ToDouble(v),
            "tojson" => JsonSerializer.Serialize(ToJsonable(v), new JsonSerializerOptions { WriteIndented = args.Count > 0 }),
            "replace" => ToText(v).Replace(ToText(args[0]), ToText(args[1]), StringComparison.Ordinal),
            "indent" => ToText(v).Replace("\n", "\n" + new string(' ', args.Count > 0 ? (int)ToLong(args[0]) : 4), StringComparison.Ordinal),
            "map" when args.Count > 0 => Iterate(v).Select(x => GetItem(x, args[0])).ToList(),
            _ => throw new JinjaException($"unsupported filter '{name}'"),
        };

        private static object? ToJsonable(object? v) => v switch
        {
            Undefined => null,
            List<object?> l => l.Select(ToJsonable).ToList(),
            Dictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => ToJsonable(kv.Value)),
            _ => v,
        };

        public static string StrftimeToNet(string f) => f.Replace("%d", "dd").Replace("%b", "MMM").Replace("%B", "MMMM").Replace("%Y", "yyyy").Replace("%m", "MM");
    }
}

/// <summary>A chat template that cannot be parsed or that raised an error while rendering.</summary>
internal sealed class JinjaException(string message, bool raised = false) : Exception(message)
{
    /// <summary>True when the template itself called raise_exception (the conversation is wrong, not the template).</summary>
    public bool Raised { get; } = raised;
}
