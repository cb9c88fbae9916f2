namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>An expression. <see cref="Depth"/> is the height of its tree, which the parser bounds because evaluation
/// recurses through it.</summary>
internal abstract class Expr(int depth)
{
    public int Depth { get; } = depth;
    public abstract object? Eval(Scope scope);

    protected static int Height(Expr? a) => a?.Depth ?? 0;
    protected static int Height(IEnumerable<Expr> items) => items.Select(e => e.Depth).DefaultIfEmpty(0).Max();
}

internal sealed class LiteralExpr(object? value) : Expr(1)
{
    public override object? Eval(Scope scope) => value;
}

internal sealed class NameExpr(string name) : Expr(1)
{
    public string Id => name;
    public override object? Eval(Scope scope) => scope.Get(name);
}

internal sealed class ListExpr(List<Expr> items) : Expr(1 + Height(items))
{
    public override object? Eval(Scope scope)
    {
        scope.Context.AllocateItems(items.Count);
        var list = new List<object?>(items.Count);
        foreach (var item in items) list.Add(item.Eval(scope));
        return list;
    }
}

internal sealed class DictExpr(List<(Expr Key, Expr Value)> items) : Expr(1 + Math.Max(Height(items.Select(i => i.Key)), Height(items.Select(i => i.Value))))
{
    public override object? Eval(Scope scope)
    {
        scope.Context.AllocateItems(items.Count);
        // A repeated key keeps the last value, as a Python dict literal does.
        var d = new Dictionary<string, object?>(items.Count);
        foreach (var (key, value) in items) d[Values.ToText(key.Eval(scope), scope.Context)] = value.Eval(scope);
        return d;
    }
}

internal sealed class AttrExpr(Expr target, string name) : Expr(1 + target.Depth)
{
    public Expr Target => target;
    public string Member => name;
    public override object? Eval(Scope scope) { scope.Context.Step(); return Values.GetItem(target.Eval(scope), name); }
}

internal sealed class IndexExpr(Expr target, Expr index) : Expr(1 + Math.Max(target.Depth, index.Depth))
{
    public override object? Eval(Scope scope) { scope.Context.Step(); return Values.GetItem(target.Eval(scope), index.Eval(scope)); }
}

internal sealed class SliceExpr(Expr target, Expr? start, Expr? stop, Expr? step)
    : Expr(1 + Math.Max(Math.Max(target.Depth, Height(start)), Math.Max(Height(stop), Height(step))))
{
    public override object? Eval(Scope scope) =>
        Values.Slice(target.Eval(scope), start?.Eval(scope), stop?.Eval(scope), step?.Eval(scope), scope.Context);
}

internal sealed class UnaryExpr(string op, Expr operand) : Expr(1 + operand.Depth)
{
    public override object? Eval(Scope scope)
    {
        scope.Context.Step();
        var v = operand.Eval(scope);
        if (op == "not") return !Values.Truthy(v);
        return Values.Negate(v);
    }
}

internal sealed class ConditionalExpr(Expr then, Expr condition, Expr? otherwise) : Expr(1 + Math.Max(Math.Max(then.Depth, condition.Depth), Height(otherwise)))
{
    public override object? Eval(Scope scope) =>
        Values.Truthy(condition.Eval(scope)) ? then.Eval(scope) : otherwise?.Eval(scope) ?? Undefined.Value;
}

internal sealed class BinaryExpr(string op, Expr left, Expr right) : Expr(1 + Math.Max(left.Depth, right.Depth))
{
    public override object? Eval(Scope scope)
    {
        scope.Context.Step();
        if (op == "and") { var l = left.Eval(scope); return Values.Truthy(l) ? right.Eval(scope) : l; }
        if (op == "or") { var l = left.Eval(scope); return Values.Truthy(l) ? l : right.Eval(scope); }
        return Values.BinaryOp(op, left.Eval(scope), right.Eval(scope), scope.Context);
    }
}

internal sealed class TestExpr(Expr operand, string test, List<Expr> args, bool negate) : Expr(1 + Math.Max(operand.Depth, Height(args)))
{
    public override object? Eval(Scope scope)
    {
        scope.Context.Step();
        var v = operand.Eval(scope);
        var argv = args.Select(a => a.Eval(scope)).ToList();
        return Builtins.Test(test, v, argv, scope.Context) != negate;
    }
}

internal sealed class CallExpr(Expr callee, List<Expr> args, List<(string Name, Expr Value)> kwargs)
    : Expr(1 + Math.Max(Math.Max(callee.Depth, Height(args)), Height(kwargs.Select(k => k.Value))))
{
    public override object? Eval(Scope scope)
    {
        var context = scope.Context;
        context.Step();
        var argv = args.Select(a => a.Eval(scope)).ToList();
        if (callee is AttrExpr attr) return Builtins.CallMethod(attr.Target.Eval(scope), attr.Member, argv, context);
        if (callee is NameExpr name)
        {
            var named = new Dictionary<string, object?>();
            foreach (var (k, v) in kwargs) named[k] = v.Eval(scope);
            return Builtins.CallGlobal(name.Id, argv, named, context);
        }
        throw new JinjaException("unsupported call");
    }
}

internal sealed class FilterExpr(Expr operand, string name, List<Expr> args) : Expr(1 + Math.Max(operand.Depth, Height(args)))
{
    public override object? Eval(Scope scope)
    {
        scope.Context.Step();
        var v = operand.Eval(scope);
        return Builtins.ApplyFilter(name, v, args.Select(a => a.Eval(scope)).ToList(), scope.Context);
    }
}
