using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;
using System.Text.Json;

namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>The globals (raise_exception, namespace, range, dict, strftime_now), string/dict/list methods, filters and
/// tests that chat templates use. Arguments are checked (a missing one is a template error, never an index
/// exception) and results are accounted for in the <see cref="RenderContext"/> before they are built. Nothing here
/// reaches .NET reflection: attributes are dictionary lookups, so <c>''.__class__</c> or <c>x.GetType()</c> are
/// undefined or unsupported.</summary>
internal static class Builtins
{
    public static object? CallGlobal(string name, List<object?> args, Dictionary<string, object?> kwargs, RenderContext context)
    {
        switch (name)
        {
            case "raise_exception":
                throw new JinjaException(args.Count > 0 ? Values.ToText(args[0], context) : "raise_exception called", raised: true);
            case "namespace":
            case "dict":
                context.AllocateItems(kwargs.Count);
                return new Dictionary<string, object?>(kwargs);
            case "range":
                return Range(args, context);
            case "strftime_now":
                return Strftime(Values.ToText(Arg(args, 0, "strftime_now"), context), DateTime.Now, context);
            default:
                throw new JinjaException($"unsupported function {Values.Clip(name)}()");
        }
    }

    private static List<object?> Range(List<object?> args, RenderContext context)
    {
        if (args.Count is 0 or > 3) throw new JinjaException($"range() takes 1 to 3 arguments, got {args.Count}");
        long start = args.Count > 1 ? Values.ToLong(args[0]) : 0, stop = Values.ToLong(args[args.Count > 1 ? 1 : 0]), step = args.Count > 2 ? Values.ToLong(args[2]) : 1;
        if (step == 0) throw new JinjaException("range() step must not be zero");
        // The length in 128 bits, so range(-2**63, 2**63-1) is measured (and refused), not overflowed.
        Int128 span = step > 0 ? (Int128)stop - start : (Int128)start - stop;
        Int128 count = span <= 0 ? 0 : (span + Int128.Abs(step) - 1) / Int128.Abs(step);
        context.AllocateItems(count > long.MaxValue ? long.MaxValue : (long)count);
        var list = new List<object?>((int)count);
        for (long i = 0, v = start; i < (long)count; i++, v += step) list.Add(v);
        return list;
    }

    public static object? CallMethod(object? target, string method, List<object?> args, RenderContext context)
    {
        if (target is string s)
        {
            switch (method)
            {
                case "strip": case "lstrip": case "rstrip":
                {
                    context.Step(1 + s.Length / 64);
                    var chars = args.Count > 0 && args[0] is not (null or Undefined) ? Values.ToText(args[0], context).ToCharArray() : null;
                    return method switch
                    {
                        "strip" => chars is null ? s.Trim() : s.Trim(chars),
                        "lstrip" => chars is null ? s.TrimStart() : s.TrimStart(chars),
                        _ => chars is null ? s.TrimEnd() : s.TrimEnd(chars),
                    };
                }
                case "upper": context.AllocateString(s.Length); return s.ToUpperInvariant();
                case "lower": context.AllocateString(s.Length); return s.ToLowerInvariant();
                case "title": context.AllocateString(s.Length); return CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s.ToLowerInvariant());
                case "capitalize": context.AllocateString(s.Length); return s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();
                case "startswith": case "endswith":
                {
                    var prefixes = Arg(args, 0, method) is List<object?> options ? options : [args[0]];
                    context.Step(1 + prefixes.Count);
                    foreach (var p in prefixes)
                    {
                        var text = Values.ToText(p, context);
                        if (method == "startswith" ? s.StartsWith(text, StringComparison.Ordinal) : s.EndsWith(text, StringComparison.Ordinal)) return true;
                    }
                    return false;
                }
                case "split": return Split(s, args, context);
                case "replace": return Replace(s, Values.ToText(Arg(args, 0, "replace"), context), Values.ToText(Arg(args, 1, "replace"), context), context);
                case "format": return s;
                default: throw new JinjaException($"unsupported string method {Values.Clip(method)}");
            }
        }
        if (target is Dictionary<string, object?> d)
        {
            switch (method)
            {
                case "items":
                    context.AllocateItems(3L * d.Count);
                    return d.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList();
                case "keys": context.AllocateItems(d.Count); return d.Keys.Select(k => (object?)k).ToList();
                case "values": context.AllocateItems(d.Count); return d.Values.ToList();
                case "get": return args.Count > 0 && args[0] is string k && d.TryGetValue(k, out var v) ? v : args.Count > 1 ? args[1] : null;
                default: throw new JinjaException($"unsupported mapping method {Values.Clip(method)}");
            }
        }
        if (target is List<object?> l && method == "append")
        {
            context.AllocateItems(1);
            l.Add(Arg(args, 0, "append"));
            return Undefined.Value;
        }
        throw new JinjaException($"unsupported method {Values.Clip(method)} on {Values.Describe(target)}");
    }

    private static List<object?> Split(string s, List<object?> args, RenderContext context)
    {
        var sep = args.Count > 0 && args[0] is not (null or Undefined) ? Values.ToText(args[0], context) : null;
        if (sep is { Length: 0 }) throw new JinjaException("split(): empty separator");
        long max = args.Count > 1 ? Values.ToLong(args[1]) : -1;
        int count = max < 0 || max >= int.MaxValue ? int.MaxValue : (int)max + 1;
        // At most one piece per character (plus one): accounted before splitting.
        context.AllocateItems(s.Length + 1L);
        context.AllocateString(s.Length);
        var parts = sep is null ? s.Split((char[]?)null, count, StringSplitOptions.RemoveEmptyEntries) : s.Split(sep, count);
        return parts.Select(x => (object?)x).ToList();
    }

    private static string Replace(string s, string old, string replacement, RenderContext context)
    {
        if (old.Length == 0)
        {
            // Python inserts the replacement before every character and at the end; .NET refuses an empty old value.
            context.AllocateString(s.Length + (s.Length + 1L) * replacement.Length);
            var sb = new StringBuilder();
            foreach (var c in s) sb.Append(replacement).Append(c);
            return sb.Append(replacement).ToString();
        }
        long hits = 0;
        for (int at = s.IndexOf(old, StringComparison.Ordinal); at >= 0; at = s.IndexOf(old, at + old.Length, StringComparison.Ordinal)) hits++;
        context.Step(1 + s.Length / 64);
        if (hits == 0) return s;
        context.AllocateString(s.Length + hits * (replacement.Length - (long)old.Length));
        return s.Replace(old, replacement, StringComparison.Ordinal);
    }

    public static object? ApplyFilter(string name, object? v, List<object?> args, RenderContext context)
    {
        switch (name)
        {
            case "trim": return CallMethod(Values.ToText(v, context), "strip", args, context);
            case "upper" or "lower" or "capitalize" or "title": return CallMethod(Values.ToText(v, context), name, [], context);
            case "string": return Values.ToText(v, context);
            case "safe" or "e" or "escape": return v;
            case "length" or "count": return (long)(v switch { string s => s.Length, List<object?> l => l.Count, Dictionary<string, object?> d => d.Count, _ => 0 });
            case "first": return v is List<object?> fl ? (fl.Count > 0 ? fl[0] : null) : Values.Iterate(v, context).FirstOrDefault();
            case "last": return v is List<object?> ll ? (ll.Count > 0 ? ll[^1] : null) : Values.Iterate(v, context).LastOrDefault();
            case "list": return Values.Iterate(v, context);
            case "items": return CallMethod(v, "items", args, context);
            case "reverse":
                if (v is string rs) { context.AllocateString(rs.Length); var a = rs.ToCharArray(); Array.Reverse(a); return new string(a); }
                var items = Values.Iterate(v, context);
                items.Reverse();
                return items;
            case "join": return Join(v, args.Count > 0 ? Values.ToText(args[0], context) : "", context);
            case "default" or "d": return v is Undefined || (args.Count > 1 && Values.Truthy(args[1]) && !Values.Truthy(v)) ? (args.Count > 0 ? args[0] : "") : v;
            case "int": return v is string si ? (long.TryParse(si.Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out var n) ? n : 0L) : Values.ToLong(v);
            case "float": return v is string sf ? (double.TryParse(sf, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f : 0.0) : Values.ToDouble(v);
            case "tojson": return ToJson(v, indented: args.Count > 0, context);
            case "replace": return Replace(Values.ToText(v, context), Values.ToText(Arg(args, 0, "replace"), context), Values.ToText(Arg(args, 1, "replace"), context), context);
            case "indent": return Indent(Values.ToText(v, context), args.Count > 0 ? args[0] : 4L, context);
            case "map":
            {
                var key = Arg(args, 0, "map");
                var list = Values.Iterate(v, context);
                for (int i = 0; i < list.Count; i++) list[i] = Values.GetItem(list[i], key);
                return list;
            }
            default: throw new JinjaException($"unsupported filter '{Values.Clip(name)}'");
        }
    }

    private static string Join(object? v, string separator, RenderContext context)
    {
        var texts = Values.Iterate(v, context).Select(x => Values.ToText(x, context)).ToList();
        long total = texts.Sum(t => (long)t.Length) + Math.Max(0, texts.Count - 1) * (long)separator.Length;
        context.AllocateString(total);
        return string.Join(separator, texts);
    }

    private static string Indent(string s, object? width, RenderContext context)
    {
        // Jinja takes a count of spaces or the indent text itself; a negative count indents by nothing, as in Python.
        var pad = width is string w ? w : new string(' ', (int)Math.Clamp(Values.ToLong(width), 0, Math.Min(context.MaxChars + 1, int.MaxValue / 2)));
        long lines = s.Count(c => c == '\n');
        context.Step(1 + s.Length / 64);
        context.AllocateString(s.Length + lines * pad.Length);
        return lines == 0 ? s : s.Replace("\n", "\n" + pad, StringComparison.Ordinal);
    }

    public static bool Test(string test, object? v, List<object?> args, RenderContext context) => test switch
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
        "equalto" or "eq" or "sameas" => Values.AreEqual(v, Arg(args, 0, test), context),
        "odd" => Values.ToLong(v) % 2 != 0,
        "even" => Values.ToLong(v) % 2 == 0,
        _ => throw new JinjaException($"unsupported test '{Values.Clip(test)}'"),
    };

    private static object? Arg(List<object?> args, int index, string what) =>
        index < args.Count ? args[index] : throw new JinjaException($"{Values.Clip(what)}() needs {index + 1} argument{(index == 0 ? "" : "s")}");

    /// <summary>Serialises after measuring: the JSON text of a value is at most about six characters per character
    /// of its strings (escapes) plus punctuation, so that bound is accounted before anything is written.</summary>
    private static string ToJson(object? v, bool indented, RenderContext context)
    {
        context.AllocateString(JsonBound(v, 0, indented, context));
        try
        {
            return JsonSerializer.Serialize(ToJsonable(v), new JsonSerializerOptions { WriteIndented = indented, MaxDepth = context.MaxValueDepth + 8 });
        }
        catch (Exception e) when (e is JsonException or ArgumentException or InvalidOperationException or NotSupportedException)
        {
            throw new JinjaException($"tojson: {e.Message}");
        }
    }

    private static long JsonBound(object? v, int depth, bool indented, RenderContext context)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        if (depth > context.MaxValueDepth)
            throw new JinjaException($"tojson: a value nested deeper than {context.MaxValueDepth} levels (a list or dict that contains itself?)", limitExceeded: true);
        context.Step();
        long perItem = 2 + (indented ? 2L * (depth + 1) + 1 : 0);
        long total;
        switch (v)
        {
            case string s: return 2 + 6L * s.Length;
            case double d when !double.IsFinite(d): throw new JinjaException($"tojson: {Values.Describe(d)} is not valid JSON");
            case List<object?> l:
                total = 2 + perItem;
                foreach (var x in l) { total += perItem + JsonBound(x, depth + 1, indented, context); if (total > context.MaxChars) return total; }
                return total;
            case Dictionary<string, object?> d:
                total = 2 + perItem;
                foreach (var (k, x) in d) { total += perItem + 4 + 6L * k.Length + JsonBound(x, depth + 1, indented, context); if (total > context.MaxChars) return total; }
                return total;
            default: return 32;
        }
    }

    private static object? ToJsonable(object? v) => v switch
    {
        Undefined => null,
        List<object?> l => l.Select(ToJsonable).ToList(),
        Dictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => ToJsonable(kv.Value)),
        _ => v,
    };

    /// <summary>Python's strftime for the directives templates use (date of today in system prompts). An unknown
    /// directive, or a lone % at the end, is copied as it is, as glibc does.</summary>
    public static string Strftime(string format, DateTime now, RenderContext context)
    {
        context.AllocateString(16L * format.Length);
        var inv = CultureInfo.InvariantCulture;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
            char d = format[++i];
            sb.Append(d switch
            {
                'd' => now.Day.ToString("00", inv),
                '-' when i + 1 < format.Length && format[i + 1] == 'd' => now.Day.ToString(inv),
                'e' => now.Day.ToString(inv).PadLeft(2),
                'm' => now.Month.ToString("00", inv),
                'Y' => now.Year.ToString(inv),
                'y' => (now.Year % 100).ToString("00", inv),
                'H' => now.Hour.ToString("00", inv),
                'I' => ((now.Hour + 11) % 12 + 1).ToString("00", inv),
                'M' => now.Minute.ToString("00", inv),
                'S' => now.Second.ToString("00", inv),
                'p' => now.Hour < 12 ? "AM" : "PM",
                'b' => now.ToString("MMM", inv),
                'B' => now.ToString("MMMM", inv),
                'a' => now.ToString("ddd", inv),
                'A' => now.ToString("dddd", inv),
                'j' => now.DayOfYear.ToString("000", inv),
                '%' => "%",
                _ => "%" + d,
            });
            if (d == '-' && i + 1 < format.Length && format[i + 1] == 'd') i++;
        }
        return sb.ToString();
    }
}
