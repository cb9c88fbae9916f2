using System.Reflection;
using System.Reflection.Emit;

namespace OnnxSteer.Tests.Architecture;

/// <summary>The library's folders form layers (docs/architecture.md); a folder may use only the folders below it. The
/// check reads every type's signatures and the IL of every method body (lambdas and async state machines included,
/// as nested types of their declaring type), so a fully qualified name or a <c>var</c> cannot hide a back-edge.</summary>
public class LayeringTests
{
    /// <summary>Bottom to top. Each namespace (and its sub-namespaces) may use the root namespace and those before it.</summary>
    public static readonly string[] Layers =
    [
        "OnnxSteer.Onnx",
        "OnnxSteer.Contract",
        "OnnxSteer.Modeling",
        "OnnxSteer.Decoder",
        "OnnxSteer.Runtime",
        "OnnxSteer.Vectors",
        "OnnxSteer.Evaluation",
    ];

    [Fact]
    public void NoFolderUsesAFolderAboveIt()
    {
        var library = typeof(OnnxSteerException).Assembly;
        var violations = new SortedSet<string>(StringComparer.Ordinal);
        foreach (var type in library.GetTypes())
        {
            var from = LayerOf(type);
            if (from < 0) continue;
            foreach (var used in Dependencies(type))
            {
                if (used.Assembly != library) continue;
                var to = LayerOf(used);
                if (to > from) violations.Add($"{Layers[from]} -> {Layers[to]}: {type.FullName} uses {used.FullName}");
            }
        }
        Assert.True(violations.Count == 0, "dependency back-edges:\n" + string.Join("\n", violations));
    }

    [Fact]
    public void ExtractionNeedsNoRuntime()
    {
        // Extraction encodes prompts and reads the decoder signature through the Modeling layer; only the extension over a
        // loaded SteeredModel (SteeredModelExtraction) belongs to the runtime's world.
        var library = typeof(OnnxSteerException).Assembly;
        foreach (var name in new[] { "OnnxSteer.Vectors.VectorExtractor", "OnnxSteer.Vectors.VectorExtraction", "OnnxSteer.Vectors.PromptEncoding" })
        {
            var type = library.GetType(name, throwOnError: true)!;
            var uses = type.GetNestedTypes(Everything).Prepend(type).SelectMany(Dependencies)
                .Where(t => t.Namespace?.StartsWith("OnnxSteer.Runtime", StringComparison.Ordinal) == true).Select(t => t.FullName).Distinct().ToList();
            Assert.True(uses.Count == 0, $"{name} uses {string.Join(", ", uses)}");
        }
    }

    [Fact]
    public void TheLibraryKnowsNothingOfTheCommandLine()
    {
        var references = typeof(OnnxSteerException).Assembly.GetReferencedAssemblies().Select(a => a.Name).ToList();
        Assert.DoesNotContain("System.CommandLine", references);
        Assert.DoesNotContain("Spectre.Console", references);
        Assert.DoesNotContain("OnnxSteer.Cli", references);
    }

    [Fact]
    public void TheCheckSeesBackEdgesInMethodBodies()
    {
        // The scanner must find a use that appears only inside a method body (this test's own body uses the CLI).
        var found = Dependencies(typeof(Probe)).Select(t => t.FullName).ToList();
        Assert.Contains(typeof(OnnxSteer.Cli.CliApp).FullName, found);
        Assert.Equal(0, LayerOf(typeof(OnnxSteer.Onnx.AtomicFile)));
        Assert.Equal(Layers.Length - 1, LayerOf(typeof(OnnxSteer.Evaluation.EvalWorkflow)));
        Assert.Equal(-1, LayerOf(typeof(OnnxSteerException)));
    }

    private static class Probe
    {
        public static int Run() => OnnxSteer.Cli.CliApp.Run([]);
    }

    /// <summary>Index in <see cref="Layers"/> of a type's namespace (nested types count as their outermost type); -1 for the root namespace.</summary>
    private static int LayerOf(Type type)
    {
        while (type.DeclaringType is { } outer) type = outer;
        var ns = type.Namespace ?? "";
        for (var i = Layers.Length - 1; i >= 0; i--)
            if (ns == Layers[i] || ns.StartsWith(Layers[i] + ".", StringComparison.Ordinal)) return i;
        return -1;
    }

    private const BindingFlags Everything = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    private static IEnumerable<Type> Dependencies(Type type)
    {
        var found = new HashSet<Type>();
        void Add(Type? t)
        {
            if (t is null) return;
            if (t.HasElementType) { Add(t.GetElementType()); return; }
            if (t.IsGenericParameter) return;
            if (!found.Add(t)) return;
            if (t.IsGenericType) foreach (var a in t.GetGenericArguments()) Add(a);
        }
        Add(type.BaseType);
        foreach (var i in type.GetInterfaces()) Add(i);
        foreach (var f in type.GetFields(Everything)) Add(f.FieldType);
        foreach (var p in type.GetProperties(Everything)) Add(p.PropertyType);
        foreach (var e in type.GetEvents(Everything)) Add(e.EventHandlerType);
        foreach (var m in type.GetMethods(Everything).Cast<MethodBase>().Concat(type.GetConstructors(Everything)))
        {
            if (m is MethodInfo mi) Add(mi.ReturnType);
            foreach (var p in m.GetParameters()) Add(p.ParameterType);
            var body = m.GetMethodBody();
            if (body is null) continue;
            foreach (var l in body.LocalVariables) Add(l.LocalType);
            foreach (var used in TokensIn(m, body.GetILAsByteArray() ?? [])) Add(used);
        }
        return found;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes).GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!).ToDictionary(o => o.Value);

    /// <summary>Types named by the metadata tokens of a method body (calls, field accesses, newobj, castclass, ldtoken...).</summary>
    private static IEnumerable<Type> TokensIn(MethodBase method, byte[] il)
    {
        var module = method.Module;
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        for (var pc = 0; pc < il.Length;)
        {
            short value = il[pc] == 0xFE && pc + 1 < il.Length ? (short)(0xFE00 | il[pc + 1]) : il[pc];
            var op = OpCodesByValue[value];
            pc += op.Size;
            int size = op.OperandType switch
            {
                OperandType.InlineNone => 0,
                OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar => 1,
                OperandType.InlineVar => 2,
                OperandType.InlineI8 or OperandType.InlineR => 8,
                OperandType.InlineSwitch => 4 + 4 * BitConverter.ToInt32(il, pc),
                _ => 4,
            };
            if (op.OperandType is OperandType.InlineMethod or OperandType.InlineField or OperandType.InlineType or OperandType.InlineTok)
            {
                MemberInfo? member = null;
                try { member = module.ResolveMember(BitConverter.ToInt32(il, pc), typeArgs, methodArgs); }
                catch (ArgumentException) { }
                switch (member)
                {
                    case Type t: yield return t; break;
                    case MethodBase mb:
                        if (mb.DeclaringType is { } dt) yield return dt;
                        if (mb is MethodInfo mi) yield return mi.ReturnType;
                        foreach (var p in mb.GetParameters()) yield return p.ParameterType;
                        break;
                    case FieldInfo fi:
                        if (fi.DeclaringType is { } ft) yield return ft;
                        yield return fi.FieldType;
                        break;
                }
            }
            pc += size;
        }
    }
}
