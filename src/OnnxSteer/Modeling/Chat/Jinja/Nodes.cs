using System.Runtime.CompilerServices;

namespace OnnxSteer.Modeling.Chat.Jinja;

/// <summary>A statement or piece of text; rendering writes to the scope's <see cref="RenderContext"/>.</summary>
internal abstract class Node
{
    public abstract void Render(Scope scope);
}

internal sealed class TextNode(string text) : Node
{
    public override void Render(Scope scope) => scope.Context.Write(text);
}

internal sealed class OutputNode(Expr expr) : Node
{
    public override void Render(Scope scope) => scope.Context.Write(Values.ToText(expr.Eval(scope), scope.Context));
}

internal sealed class IfNode(List<(Expr? Condition, List<Node> Body)> branches) : Node
{
    public override void Render(Scope scope)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        scope.Context.Step();
        foreach (var (condition, body) in branches)
            if (condition is null || Values.Truthy(condition.Eval(scope)))
            {
                foreach (var n in body) n.Render(scope);
                return;
            }
    }
}

internal sealed class ForNode(string[] targets, Expr iterable, Expr? filter, List<Node> body, List<Node> elseBody) : Node
{
    public override void Render(Scope scope)
    {
        RuntimeHelpers.EnsureSufficientExecutionStack();
        var context = scope.Context;
        var items = Values.Iterate(iterable.Eval(scope), context);
        if (filter is not null)
        {
            var kept = new List<object?>();
            foreach (var item in items)
            {
                context.Step();
                var s = new Scope(scope);
                Bind(s, item, context);
                if (Values.Truthy(filter.Eval(s))) kept.Add(item);
            }
            items = kept;
        }
        if (items.Count == 0) { foreach (var n in elseBody) n.Render(scope); return; }
        for (int i = 0; i < items.Count; i++)
        {
            // An iteration allocates a scope and the loop mapping: it counts as several steps.
            context.Step(8);
            // Jinja scoping: assignments inside a loop do not leak out (hence namespace() in templates).
            var inner = new Scope(scope);
            Bind(inner, items[i], context);
            inner.Set("loop", new Dictionary<string, object?>
            {
                ["index0"] = (long)i, ["index"] = (long)i + 1, ["first"] = i == 0, ["last"] = i == items.Count - 1,
                ["length"] = (long)items.Count, ["revindex"] = (long)(items.Count - i), ["revindex0"] = (long)(items.Count - i - 1),
                ["previtem"] = i > 0 ? items[i - 1] : null, ["nextitem"] = i + 1 < items.Count ? items[i + 1] : null,
            });
            foreach (var n in body) n.Render(inner);
        }
    }

    private void Bind(Scope s, object? item, RenderContext context)
    {
        if (targets.Length == 1) { s.Set(targets[0], item); return; }
        var parts = Values.Iterate(item, context);
        for (int t = 0; t < targets.Length; t++) s.Set(targets[t], t < parts.Count ? parts[t] : null);
    }
}

internal sealed class SetNode(string name, string? attribute, Expr value) : Node
{
    public override void Render(Scope scope)
    {
        scope.Context.Step();
        var v = value.Eval(scope);
        if (attribute is null) { scope.Set(name, v); return; }
        if (scope.Get(name) is Dictionary<string, object?> ns) ns[attribute] = v;
        else throw new JinjaException($"cannot set attribute {Values.Clip(attribute)} of {Values.Clip(name)}: not a namespace");
    }
}

/// <summary>Variables of one block level; a loop body gets a child scope. Every scope of a render shares its context.</summary>
internal sealed class Scope
{
    private readonly Dictionary<string, object?> _vars = new();
    private readonly Scope? _parent;

    public Scope(Scope? parent, RenderContext? context = null)
    {
        _parent = parent;
        Context = context ?? parent?.Context ?? throw new ArgumentNullException(nameof(context));
    }

    public RenderContext Context { get; }
    public void Set(string name, object? value) => _vars[name] = value;
    public object? Get(string name) => _vars.TryGetValue(name, out var v) ? v : _parent is null ? Undefined.Value : _parent.Get(name);
}
