using System.Text.RegularExpressions;
using Microsoft.CodeAnalysis;
using Microsoft.CodeAnalysis.CSharp;

namespace OnnxSteer.Tests.Docs;

/// <summary>Every ```csharp block in README.md, the package readme and docs/*.md is a whole program that compiles against the library, as a
/// fresh console app (implicit usings on) would compile it, so the documentation's C# cannot rot.</summary>
public sealed partial class DocSnippetTests
{
    [GeneratedRegex(@"^```csharp[ \t]*\r?\n(.*?)^```", RegexOptions.Singleline | RegexOptions.Multiline)]
    private static partial Regex CSharpBlock();

    // The framework and everything the test references (the library, Microsoft.Extensions.AI, ONNX Runtime), read once.
    private static readonly Lazy<List<PortableExecutableReference>> References = new(() =>
        ((string)AppContext.GetData("TRUSTED_PLATFORM_ASSEMBLIES")!).Split(Path.PathSeparator)
            .Where(p => p.EndsWith(".dll", StringComparison.OrdinalIgnoreCase))
            .Select(p => MetadataReference.CreateFromFile(p)).ToList());

    public static TheoryData<string, int> Snippets()
    {
        var data = new TheoryData<string, int>();
        foreach (var (file, blocks) in Files())
            for (var i = 0; i < blocks.Count; i++) data.Add(file, i);
        return data;
    }

    private static IEnumerable<(string File, List<string> Blocks)> Files()
    {
        // The package's own readme (src/OnnxSteer/README.md) is what NuGet users read first.
        var files = new[] { "README.md", "src/OnnxSteer/README.md" }.Concat(Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, "docs"), "*.md")
            .Select(f => Path.GetRelativePath(TestPaths.RepoRoot, f)).Order(StringComparer.Ordinal));
        foreach (var file in files)
        {
            var blocks = CSharpBlock().Matches(File.ReadAllText(Path.Combine(TestPaths.RepoRoot, file))).Select(m => m.Groups[1].Value).ToList();
            if (blocks.Count > 0) yield return (file.Replace('\\', '/'), blocks);
        }
    }

    [Fact]
    public void The_readme_and_the_runtime_doc_show_compiled_csharp()
    {
        var files = Files().Select(f => f.File).ToList();
        Assert.Contains("README.md", files);
        Assert.Contains("docs/runtime.md", files);
    }

    [Theory]
    [MemberData(nameof(Snippets))]
    public void Snippet_compiles(string file, int index)
    {
        var code = Files().Single(f => f.File == file).Blocks[index];
        // What `dotnet new console` turns on (ImplicitUsings); everything else the snippet must say itself.
        const string implicitUsings = "global using System; global using System.Collections.Generic; global using System.IO; global using System.Linq; " +
            "global using System.Net.Http; global using System.Threading; global using System.Threading.Tasks;";
        var parse = new CSharpParseOptions(LanguageVersion.Latest);
        var compilation = CSharpCompilation.Create($"snippet_{index}",
            [CSharpSyntaxTree.ParseText(implicitUsings, parse), CSharpSyntaxTree.ParseText(code, parse, path: $"{file}#{index}")],
            References.Value,
            new CSharpCompilationOptions(OutputKind.ConsoleApplication, nullableContextOptions: NullableContextOptions.Enable));
        using var pe = new MemoryStream();
        var result = compilation.Emit(pe);
        var errors = result.Diagnostics.Where(d => d.Severity == DiagnosticSeverity.Error || d.Id.StartsWith("CS86", StringComparison.Ordinal))
            .Select(d => d.ToString()).ToList();
        Assert.True(errors.Count == 0, $"{file} C# block {index + 1} does not compile:\n{string.Join("\n", errors)}\n---\n{code}");
    }
}
