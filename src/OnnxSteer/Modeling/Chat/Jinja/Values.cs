using System.Globalization;
using System.Runtime.CompilerServices;
using System.Text;

namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>Jinja's undefined: prints as nothing, is falsy, and any attribute or item of it is undefined again.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Value = new();
    public override string ToString() => "";
}

/// <summary>Python-like semantics of template values. Everything that creates a string or a collection accounts for it
/// in the <see cref="RenderContext"/> before creating it, and everything that walks nested values counts the depth,
/// so no value, however built, makes a render run out of memory or stack.</summary>
internal static class Values
{
    /// <summary>Model text quoted in an error message, cut to a readable length.</summary>
    public static string Clip(string s, int max = 80) => s.Length <= max ? s : string.Concat(s.AsSpan(0, max), "...");

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

    /// <summary>The printed form of a value (Python's str()), within the string limit.</summary>
    public static string ToText(object? v, RenderContext context)
    {
        switch (v)
        {
            case string s: return s;
            case List<object?> or Dictionary<string, object?>:
                var sb = new StringBuilder();
                Write(sb, v, quote: false, 0, context);
                return sb.ToString();
            default: return Scalar(v);
        }
    }

    private static string Scalar(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        bool b => b ? "True" : "False",
        string s => s,
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => double.IsNaN(d) ? "nan" : double.IsPositiveInfinity(d) ? "inf" : double.IsNegativeInfinity(d) ? "-inf" : d.ToString("R", CultureInfo.InvariantCulture),
        _ => v.ToString() ?? "",
    };

    private static void Write(StringBuilder sb, object? v, bool quote, int depth, RenderContext context)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        if (depth > context.MaxValueDepth)
            throw new JinjaException($"a value nested deeper than {context.MaxValueDepth} levels (a list or dict that contains itself?)", limitExceeded: true);
        switch (v)
        {
            case List<object?> l:
                Append(sb, "[", context);
                for (int i = 0; i < l.Count; i++)
                {
                    context.Step();
                    if (i > 0) Append(sb, ", ", context);
                    Write(sb, l[i], quote: true, depth + 1, context);
                }
                Append(sb, "]", context);
                break;
            case Dictionary<string, object?> d:
                Append(sb, "{", context);
                bool first = true;
                foreach (var (key, value) in d)
                {
                    context.Step();
                    if (!first) Append(sb, ", ", context);
                    first = false;
                    Write(sb, key, quote: true, depth + 1, context);
                    Append(sb, ": ", context);
                    Write(sb, value, quote: true, depth + 1, context);
                }
                Append(sb, "}", context);
                break;
            case string s when quote:
                Append(sb, "'", context); Append(sb, s, context); Append(sb, "'", context);
                break;
            default:
                Append(sb, Scalar(v), context);
                break;
        }
    }

    private static void Append(StringBuilder sb, string s, RenderContext context)
    {
        context.AllocateString(sb.Length + (long)s.Length);
        sb.Append(s);
    }

    public static double ToDouble(object? v) => v switch
    {
        long l => l, double d => d, bool b => b ? 1 : 0,
        _ => throw new JinjaException($"not a number: {Describe(v)}"),
    };

    public static long ToLong(object? v) => v switch
    {
        long l => l,
        // Truncation as Python's int(); a float beyond the 64-bit range (or NaN) has no integer value here.
        double d when d > -9.2233720368547758e18 && d < 9.2233720368547758e18 => (long)d,
        double d => throw new JinjaException($"cannot convert {Scalar(d)} to an integer"),
        bool b => b ? 1 : 0,
        _ => throw new JinjaException($"not an integer: {Describe(v)}"),
    };

    /// <summary>A short description of a value for error messages (never the whole of a big value).</summary>
    public static string Describe(object? v) => v switch
    {
        string s => $"'{Clip(s)}'",
        List<object?> l => $"a list of {l.Count} items",
        Dictionary<string, object?> d => $"a mapping of {d.Count} items",
        Undefined => "undefined",
        _ => Scalar(v),
    };

    /// <summary>The items a for loop or a filter walks: a fresh list (so the loop may change the original).</summary>
    public static List<object?> Iterate(object? v, RenderContext context)
    {
        switch (v)
        {
            case null or Undefined: return [];
            case List<object?> l: context.AllocateItems(l.Count); return [.. l];
            case Dictionary<string, object?> d: context.AllocateItems(d.Count); return [.. d.Keys];
            case string s:
                context.AllocateItems(s.Length);
                var chars = new List<object?>(s.Length);
                foreach (var c in s) chars.Add(c.ToString());
                return chars;
            default: throw new JinjaException($"cannot iterate over {Describe(v)}");
        }
    }

    public static bool AreEqual(object? a, object? b, RenderContext context, int depth = 0)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        if (depth > context.MaxValueDepth)
            throw new JinjaException($"a value nested deeper than {context.MaxValueDepth} levels (a list that contains itself?)", limitExceeded: true);
        if (a is Undefined) a = null;
        if (b is Undefined) b = null;
        if (a is long or double && b is long or double) return a is long x && b is long y ? x == y : ToDouble(a) == ToDouble(b);
        if (a is List<object?> la && b is List<object?> lb)
        {
            if (ReferenceEquals(la, lb)) return true;
            if (la.Count != lb.Count) return false;
            for (int i = 0; i < la.Count; i++)
            {
                context.Step();
                if (!AreEqual(la[i], lb[i], context, depth + 1)) return false;
            }
            return true;
        }
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

    public static object? Slice(object? target, object? start, object? stop, object? step, RenderContext context)
    {
        int n = target switch
        {
            string s => s.Length,
            List<object?> l => l.Count,
            _ => throw new JinjaException($"cannot slice {Describe(target)}"),
        };
        long st = step is null ? 1 : ToLong(step);
        if (st == 0) throw new JinjaException("slice step cannot be zero");
        long Norm(object? v, long def)
        {
            if (v is null or Undefined) return def;
            long x = ToLong(v);
            if (x < 0) x = Math.Max(x + n, -1);
            return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
        }
        long a = Norm(start, st > 0 ? 0 : n - 1), b = Norm(stop, st > 0 ? n : -1);
        // a and b lie in [-1, n], so these never overflow, even for a step of -2**63 (which cannot be negated).
        long count = st > 0 ? (b > a ? (b - a - 1) / st + 1 : 0) : (a > b ? 1 - (a - b - 1) / st : 0);
        if (target is string str)
        {
            context.AllocateString(count);
            if (st == 1) return str.Substring((int)a, (int)count);
            var sb = new StringBuilder((int)count);
            for (long i = 0, at = a; i < count; i++, at += st) sb.Append(str[(int)at]);
            return sb.ToString();
        }
        var list = (List<object?>)target!;
        context.AllocateItems(count);
        var result = new List<object?>((int)count);
        for (long i = 0, at = a; i < count; i++, at += st) result.Add(list[(int)at]);
        return result;
    }

    public static object? Negate(object? v)
    {
        if (v is long l) return l == long.MinValue ? throw Overflow() : -l;
        return -ToDouble(v);
    }

    public static object? BinaryOp(string op, object? a, object? b, RenderContext context)
    {
        switch (op)
        {
            case "==": return AreEqual(a, b, context);
            case "!=": return !AreEqual(a, b, context);
            case "~": return Concat(ToText(a, context), ToText(b, context), context);
            case "in":
                switch (b)
                {
                    case string s:
                        var needle = ToText(a, context);
                        context.Step(1 + s.Length / 64);
                        return s.Contains(needle, StringComparison.Ordinal);
                    case List<object?> l:
                        foreach (var x in l) { context.Step(); if (AreEqual(x, a, context)) return true; }
                        return false;
                    case Dictionary<string, object?> d: return a is string k && d.ContainsKey(k);
                    default: return false;
                }
            case "+":
                if (a is string || b is string)
                {
                    if (a is string sa && b is string sb) return Concat(sa, sb, context);
                    throw new JinjaException($"cannot add {Describe(a)} and {Describe(b)}");
                }
                if (a is List<object?> la && b is List<object?> lb)
                {
                    context.AllocateItems((long)la.Count + lb.Count);
                    return (List<object?>)[.. la, .. lb];
                }
                break;
            case "*":
                if (a is string rs && b is long times) return Repeat(rs, times, context);
                if (a is long times2 && b is string rs2) return Repeat(rs2, times2, context);
                if (a is List<object?> rl && b is long n) return RepeatList(rl, n, context);
                if (a is long n2 && b is List<object?> rl2) return RepeatList(rl2, n2, context);
                break;
        }
        if (op is "<" or ">" or "<=" or ">=")
        {
            int c = a is string x && b is string y ? string.CompareOrdinal(x, y) : ToDouble(a).CompareTo(ToDouble(b));
            return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
        }
        if (a is long or bool && b is long or bool && op != "/")
        {
            long l1 = ToLong(a), l2 = ToLong(b);
            try
            {
                return op switch
                {
                    "+" => checked(l1 + l2),
                    "-" => checked(l1 - l2),
                    "*" => checked(l1 * l2),
                    "//" => FloorDivide(l1, l2),
                    "%" => Modulo(l1, l2),
                    _ => throw new JinjaException($"unsupported operator {op}"),
                };
            }
            catch (OverflowException) { throw Overflow(); }
        }
        double d1 = ToDouble(a), d2 = ToDouble(b);
        if (op is "/" or "//" or "%" && d2 == 0) throw new JinjaException($"division by zero ({Scalar(a)} {op} {Scalar(b)})");
        return op switch
        {
            "+" => d1 + d2, "-" => d1 - d2, "*" => d1 * d2, "/" => d1 / d2, "//" => Math.Floor(d1 / d2), "%" => d1 - d2 * Math.Floor(d1 / d2),
            _ => throw new JinjaException($"unsupported operator {op}"),
        };
    }

    private static long FloorDivide(long a, long b)
    {
        if (b == 0) throw new JinjaException($"division by zero ({a} // 0)");
        if (b == -1) return checked(-a);
        long q = a / b;
        return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
    }

    private static long Modulo(long a, long b)
    {
        if (b == 0) throw new JinjaException($"division by zero ({a} % 0)");
        if (b == -1) return 0; // long.MinValue % -1 overflows in .NET; the answer is 0.
        long r = a % b;
        return r != 0 && (r < 0) != (b < 0) ? r + b : r;
    }

    private static JinjaException Overflow() => new("integer overflow (template integers are 64-bit)");

    public static string Concat(string a, string b, RenderContext context)
    {
        context.AllocateString((long)a.Length + b.Length);
        return a + b;
    }

    private static string Repeat(string s, long times, RenderContext context)
    {
        if (times <= 0 || s.Length == 0) return "";
        // Measured in 128 bits before anything is allocated, so 'a' * 10**18 neither overflows nor allocates.
        TooBig((Int128)s.Length * times, "string of", "characters", context);
        context.AllocateString(s.Length * times);
        return string.Create((int)(s.Length * times), s, static (span, unit) =>
        {
            // Doubling copies: a handful of memcpy calls instead of one append per repetition.
            unit.CopyTo(span);
            for (int done = unit.Length; done < span.Length; done *= 2)
                span[..Math.Min(done, span.Length - done)].CopyTo(span[done..]);
        });
    }

    private static void TooBig(Int128 size, string what, string unit, RenderContext context)
    {
        if (size > context.MaxChars)
            throw new JinjaException($"a {what} {size:N0} {unit} (limit {context.MaxChars:N0})", limitExceeded: true);
    }

    private static List<object?> RepeatList(List<object?> l, long times, RenderContext context)
    {
        if (times <= 0 || l.Count == 0) return [];
        TooBig((Int128)l.Count * times, "list of", "items", context);
        context.AllocateItems(l.Count * times);
        var result = new List<object?>((int)(l.Count * times));
        for (long i = 0; i < times; i++) result.AddRange(l);
        return result;
    }
}
