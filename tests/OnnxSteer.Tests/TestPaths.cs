namespace OnnxSteer.Tests;

/// <summary>Locations of the repository, the shared fixtures and scratch folders for tests.</summary>
public static class TestPaths
{
    /// <summary>The repository root (the folder holding OnnxSteer.sln).</summary>
    public static string RepoRoot { get; } = FindRepoRoot();

    /// <summary>The real onnxruntime-genai export in ../shared (never copied into the repo).</summary>
    public static string GenAiTinyLlamaFp16 => Path.Combine(RepoRoot, "..", "shared", "fixtures", "genai-tiny-llama-fp16");

    /// <summary>A fresh empty folder under the system temp folder; deleted by the caller's <see cref="TempDir"/>.</summary>
    public static TempDir NewTempDir(string prefix = "onnxsteer-test") => new(prefix);

    private static string FindRepoRoot()
    {
        var dir = new DirectoryInfo(AppContext.BaseDirectory);
        while (dir is not null && !File.Exists(Path.Combine(dir.FullName, "OnnxSteer.sln"))) dir = dir.Parent;
        return dir?.FullName ?? throw new InvalidOperationException("OnnxSteer.sln not found above the test binaries");
    }
}

/// <summary>A temporary folder removed on dispose.</summary>
public sealed class TempDir : IDisposable
{
    public TempDir(string prefix)
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), $"{prefix}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Combine(params string[] parts) => System.IO.Path.Combine([Path, .. parts]);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
