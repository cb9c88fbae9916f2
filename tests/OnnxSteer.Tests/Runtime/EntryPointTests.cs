using OnnxSteer.Decoder;
using OnnxSteer.Runtime;
using OnnxSteer.Tests.Vectors;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The bundled model (6 layers) patched with <c>ModelPatcher.Patch(src, dst)</c>, defaults only.</summary>
public sealed class PatchedBundledModel : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-entry");

    public PatchedBundledModel()
    {
        Directory = _dir.Combine("tiny-steer");
        Report = ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), Directory);
    }

    public string Directory { get; }
    public PatchReport Report { get; }
    public static string LowercasePairs => Path.Combine(TestPaths.RepoRoot, "models", "data", "pairs", "change_case.english_lowercase.jsonl");

    public void Dispose() => _dir.Dispose();
}

/// <summary>The entry points an app developer reaches for first: patch without options, extract on the loaded model,
/// the result straight into <see cref="Steering.From"/>, and the small API mistakes the issue listed.</summary>
public sealed class EntryPointTests(PatchedBundledModel fixture) : IClassFixture<PatchedBundledModel>
{
    [Fact]
    public void Patch_without_options_steers_and_exposes_every_layer_and_reports_readably()
    {
        var manifest = fixture.Report.Manifest;
        Assert.Equal([0, 1, 2, 3, 4, 5], manifest.SteeredLayers);
        Assert.Equal([0, 1, 2, 3, 4, 5], manifest.ExposedLayers);
        var text = fixture.Report.ToString();
        Assert.DoesNotContain("`1", text);
        Assert.Contains("genai", text);
        Assert.Contains("steered layers [0,1,2,3,4,5]", text);
        Assert.Contains("model.onnx.data", text);
    }

    [Fact]
    public void ExtractVector_on_the_loaded_model_equals_extraction_on_the_folder_and_loads_nothing_more()
    {
        using var dir = TestPaths.NewTempDir();
        // A copy of the patched folder whose graph and weights are deleted once loaded: a second load would fail.
        var copy = dir.Combine("copy");
        System.IO.Directory.CreateDirectory(copy);
        foreach (var file in System.IO.Directory.GetFiles(fixture.Directory)) File.Copy(file, Path.Combine(copy, Path.GetFileName(file)));
        var pairs = PairsFile.Read(PatchedBundledModel.LowercasePairs).Take(16).ToList();

        InstructionVectorFile extracted;
        using (var model = SteeredModel.Load(copy, new RuntimeOptions { IntraOpThreads = 1 }))
        {
            File.Delete(Path.Combine(copy, "model.onnx"));
            File.Delete(Path.Combine(copy, "model.onnx.data"));
            extracted = model.ExtractVector(pairs, "format.lowercase", new ExtractionOptions { BatchSize = 4 });
            // The result is a vector source: it goes straight into Steering.From and steers this model.
            var steering = Steering.From(extracted).Project("format.lowercase", layer: 1);
            var options = new GeneratorOptions { MaxNewTokens = 12 };
            Assert.NotEqual(model.Generate("Write about the sea.", null, options).TokenIds, model.Generate("Write about the sea.", steering, options).TokenIds);
        }

        var pairsFile = dir.Combine("pairs.jsonl");
        File.WriteAllLines(pairsFile, File.ReadLines(PatchedBundledModel.LowercasePairs).Where(l => l.Trim().Length > 0).Take(16));
        var reference = VectorExtraction.Run(new ExtractionRequest(fixture.Directory, pairsFile, new ExtractionOptions { Name = "format.lowercase" })).File;
        Assert.Equal(reference.Model, extracted.Model);
        // The loaded session runs the whole graph, the folder's extractor a pruned copy: same numbers up to float order.
        PrunedExtractionTests.AssertSameVector(reference.Get(), extracted.Get(), 1e-5);
        Assert.Equal(16, extracted.Get().PairCount);
    }

    [Fact]
    public void ExtractVector_needs_a_patched_model()
    {
        using var model = SteeredModel.Load(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), new RuntimeOptions { IntraOpThreads = 1 });
        var e = Assert.Throws<OnnxSteerException>(() => model.ExtractVector([new PromptPair("a b", "a")], "v"));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("not patched", e.Message);
    }

    [Fact]
    public void A_layer_the_model_lacks_is_named_against_the_model_and_the_vector()
    {
        using var model = SteeredModel.Load(fixture.Directory, new RuntimeOptions { IntraOpThreads = 1 });
        var vector = SteeringVector.FromRaw(Enumerable.Range(1, 128).Select(i => (float)i).ToArray(), zBar: 1f);
        var e = Assert.Throws<OnnxSteerException>(() => model.Generate("Hi", Steering.None.Add(vector, 40, 1f)));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("layer 40; the model has 6 layers (0-5)", e.Message);

        var file = InstructionVectorFile.Create([InstructionVector.FromMeanDiffs("v", "test",
            Enumerable.Range(0, 6).ToDictionary(l => l, _ => vector.Direction))], null);
        var lookup = Assert.Throws<OnnxSteerException>(() => Steering.From(file).Project("v", layer: 40, target: 0));
        Assert.Contains("vector 'v' has no layer 40; it has layers 0-5", lookup.Message);
        // The weight of an add is a float and so is the stored norm: no cast needed.
        var layer = file.Get().Layer(3);
        Assert.Equal(-4 * layer.Norm, Steering.From(file).Add("v", layer: 3, weight: -4 * layer.Norm).Terms[0].Weight);
    }

    [Fact]
    public void Zero_new_tokens_is_refused()
    {
        using var model = SteeredModel.Load(fixture.Directory, new RuntimeOptions { IntraOpThreads = 1 });
        var e = Assert.Throws<OnnxSteerException>(() => model.Generate("Hi", null, new GeneratorOptions { MaxNewTokens = 0 }));
        Assert.Equal(ErrorKind.Usage, e.Kind);
        Assert.Contains("at least 1", e.Message);
    }
}
