using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Vectors;
using static OnnxSteer.Tests.Vectors.VectorTestData;

namespace OnnxSteer.Tests.Reliability;

/// <summary>Every ModelBuilder layout plus the real export, each in its own scratch folder (the real export's files are
/// copied to the temp folder, never into the repo). Fuzz cases rewrite only the .onnx file of a folder.</summary>
public sealed class FuzzFixtures : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-fuzz");

    public FuzzFixtures()
    {
        foreach (var layout in new[] { DecoderLayout.GenAi, DecoderLayout.Optimum, DecoderLayout.OptimumMerged, DecoderLayout.OrtFused, DecoderLayout.Gemma2 })
        {
            var built = DecoderFixtures.Write(DecoderSpec.Tiny(layout) with { Layers = 2, Hidden = 16, Heads = 2, KvHeads = 2, HeadDim = 8, Intermediate = 32, Vocab = 64 },
                _dir.Combine(layout.ToString()));
            Models[layout.ToString()] = (built.ModelPath, File.ReadAllBytes(built.ModelPath));
        }
        var real = _dir.Combine("real");
        Directory.CreateDirectory(real);
        foreach (var f in new[] { "model.onnx", "model.onnx.data", "genai_config.json" })
            File.Copy(Path.Combine(TestPaths.GenAiTinyLlamaFp16, f), Path.Combine(real, f));
        Models["real-genai-fp16"] = (Path.Combine(real, "model.onnx"), File.ReadAllBytes(Path.Combine(real, "model.onnx")));
    }

    /// <summary>Fixture name → (model file to overwrite, original bytes).</summary>
    public Dictionary<string, (string Path, byte[] Bytes)> Models { get; } = [];

    public string Scratch(string name) => _dir.Combine("out-" + name);

    public void Dispose() => _dir.Dispose();
}

/// <summary>CI sample of the mutation fuzzer (a few hundred fixed-seed cases). Long run:
/// <c>ONNXSTEER_FUZZ_CASES=2000 dotnet test tests/OnnxSteer.Tests --filter FullyQualifiedName~Reliability.FuzzTests</c>.</summary>
public sealed class FuzzTests(FuzzFixtures fixtures) : IClassFixture<FuzzFixtures>
{
    public static TheoryData<string> Names() => ["GenAi", "Optimum", "OptimumMerged", "OrtFused", "Gemma2", "real-genai-fp16"];

    private void FuzzModel(string name, bool structural, int ciCases)
    {
        var (path, original) = fixtures.Models[name];
        var proto = OnnxModelFile.ParseBytes(original, name);
        var rng = new Random(HashCode.Combine(Fuzz.Seed, name.Length, name[0], structural));
        var failures = new List<string>();
        var outDir = fixtures.Scratch(name);
        var cases = Fuzz.Cases(ciCases);
        for (var i = 0; i < cases; i++)
        {
            var (kind, bytes) = structural ? Fuzz.MutateStructure(proto, rng) : Fuzz.MutateBytes(original, rng);
            File.WriteAllBytes(path, bytes);
            if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
            var failure = Fuzz.RunCase($"{name} case {i} ({kind})", () => Fuzz.InspectAndPatch(Path.GetDirectoryName(path)!, outDir));
            if (failure is not null) failures.Add(failure);
        }
        File.WriteAllBytes(path, original);
        Assert.True(failures.Count == 0, $"{failures.Count} of {cases} cases failed:\n" + string.Join("\n\n", failures.Take(5)));
    }

    [Theory]
    [MemberData(nameof(Names))]
    public void ByteMutationsOfEveryModelEndCleanly(string name) => FuzzModel(name, structural: false, ciCases: 25);

    [Theory]
    [MemberData(nameof(Names))]
    public void StructuralMutationsOfEveryModelEndCleanly(string name) => FuzzModel(name, structural: true, ciCases: 25);

    [Fact]
    public void VectorFileMutationsEndCleanly()
    {
        using var dir = TestPaths.NewTempDir();
        var st = dir.Combine("v.safetensors");
        var gguf = dir.Combine("v.gguf");
        var file = InstructionVectorFile.Create([Vector("a", 8, 1, 2), Vector("b", 8, 2)], Model(8));
        file.Save(st);
        file.SaveGguf(gguf, "a");
        var rng = new Random(Fuzz.Seed);
        var failures = new List<string>();
        var cases = Fuzz.Cases(60);
        foreach (var source in new[] { st, gguf })
        {
            var original = File.ReadAllBytes(source);
            for (var i = 0; i < cases; i++)
            {
                var (kind, bytes) = Fuzz.MutateBytes(original, rng);
                var failure = Fuzz.RunCase($"{Path.GetFileName(source)} case {i} ({kind})", () =>
                {
                    try { Safetensors.Parse(bytes, "f"); } catch (OnnxSteerException) { }
                    try { Gguf.Parse(bytes, "f"); } catch (OnnxSteerException) { }
                    InstructionVectorFile.Parse(bytes, "f");
                });
                if (failure is not null) failures.Add(failure);
            }
        }
        Assert.True(failures.Count == 0, $"{failures.Count} of {2 * cases} cases failed:\n" + string.Join("\n\n", failures.Take(5)));
    }
}
