using System.Text.Json;
using OnnxSteer.Cli;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.GenAI;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;
using MbLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Decoder;

/// <summary><c>patch --additive-only</c> (<see cref="PatchOptions.AdditiveOnly"/>): steered layers take only
/// <c>steering.{L}.add</c> and the tap has no projection subgraph. An added vector must steer exactly as on the full
/// patch (x - (0 - add) there and x - ((0 - add) - (+0)) in the full graph are the same bits), projection and ablation
/// are refused on both engines, and verify passes. The no-op promise is in <see cref="NoOpExactnessTests"/>.</summary>
public sealed class AdditiveOnlyPatchTests
{
    private static string Bundled => Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct");

    private static SteeringVector Vector(int hidden, int seed)
    {
        var random = new Random(seed);
        return SteeringVector.FromRaw([.. Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() * 2 - 1))], zBar: 2f);
    }

    [Fact]
    public void Only_the_add_input_and_two_nodes_per_tap_are_added()
    {
        using var dir = TestPaths.NewTempDir();
        var full = ModelPatcher.Patch(Bundled, dir.Combine("full"), new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None });
        var additive = ModelPatcher.Patch(Bundled, dir.Combine("additive"),
            new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None, AdditiveOnly = true });

        int NodesAdded(PatchReport r) => r.Passes.Single(p => p.Pass == "insert-steering").Counts["nodes added"];
        // float32 genai: one tap per layer; the full tap is the residual sum, x·d (Mul, ReduceSum), target - dot, the
        // projection Mul, 0 - add, n and the steering Sub; the additive tap keeps the last two Subs.
        Assert.Equal(8, NodesAdded(full));
        Assert.Equal(2, NodesAdded(additive));

        Assert.True(additive.Manifest.AdditiveOnly);
        Assert.False(full.Manifest.AdditiveOnly);
        var names = additive.Manifest.Inputs["1"];
        Assert.Equal("steering.1.add", names.Add);
        Assert.Null(names.Direction);
        Assert.Null(names.Target);
        var graph = OnnxModelFile.Load(Path.Combine(additive.OutputDirectory, additive.Manifest.ModelFile)).Proto.Graph;
        Assert.Equal(["steering.1.add"], graph.Input.Select(i => i.Name).Where(SteeringContract.IsSteeringInput));

        // steering.json says so (and reads back); the full patch's manifest does not carry the key at all.
        var json = File.ReadAllText(Path.Combine(additive.OutputDirectory, SteeringContract.ManifestFileName));
        Assert.Contains("\"additive_only\": true", json);
        Assert.DoesNotContain("\"direction\"", json);
        Assert.DoesNotContain("additive_only", File.ReadAllText(Path.Combine(full.OutputDirectory, SteeringContract.ManifestFileName)));
        Assert.True(SteeringManifest.TryLoad(additive.OutputDirectory)!.AdditiveOnly);
    }

    /// <summary>Every layout and dtype the ModelBuilder writes (value points in optimum, fused norms elsewhere, If branches
    /// in optimum-merged): one add input per layer, and verify's additive checks pass (the steered hidden state moves by
    /// exactly the vector, earlier layers untouched, one vector and one per row).</summary>
    [Theory]
    [MemberData(nameof(BuiltLayoutPatchTests.Layouts), MemberType = typeof(BuiltLayoutPatchTests))]
    public void Every_layout_patches_additive_only_and_verifies(MbLayout layout, DecoderDType dtype, AttentionKind attention, string expectedLayout)
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny(layout, dtype, attention) with { Layers = 3 }, dir.Combine("source"));
        var report = ModelPatcher.Patch(fixture.Directory, dir.Combine("patched"), new PatchOptions { AdditiveOnly = true });
        Assert.Equal(expectedLayout, report.Manifest.Layout);
        var source = OnnxModelFile.Load(fixture.Directory).Proto.Graph;
        var patched = OnnxModelFile.Load(report.OutputDirectory).Proto.Graph;
        Assert.Equal(source.Input.Count + 3, patched.Input.Count);
        Assert.Equal(["steering.0.add", "steering.1.add", "steering.2.add"], patched.Input.Select(i => i.Name).Where(SteeringContract.IsSteeringInput));

        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
        Assert.Equal(6, verification.Checks.Count(c => c.Name.StartsWith("add at layer", StringComparison.Ordinal)));
        Assert.Equal(3, verification.Checks.Count(c => c.Detail.Contains("additive steering only", StringComparison.Ordinal)));
    }

    [Fact]
    public void A_manifest_that_contradicts_itself_is_refused()
    {
        using var dir = TestPaths.NewTempDir();
        var report = ModelPatcher.Patch(Bundled, dir.Combine("additive"),
            new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None, AdditiveOnly = true });
        var path = Path.Combine(report.OutputDirectory, SteeringContract.ManifestFileName);
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"additive_only\": true,", "", StringComparison.Ordinal));
        var e = Assert.Throws<OnnxSteerException>(() => SteeringManifest.TryLoad(report.OutputDirectory));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
        Assert.Contains("direction and target", e.Message);
    }

    [Fact]
    public void Adding_steers_exactly_as_the_full_patch_and_projection_is_refused()
    {
        using var dir = TestPaths.NewTempDir();
        var full = ModelPatcher.Patch(Bundled, dir.Combine("full"), new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None });
        var additive = ModelPatcher.Patch(Bundled, dir.Combine("additive"),
            new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None, AdditiveOnly = true });
        using var fullModel = SteeredModel.Load(full.OutputDirectory, new RuntimeOptions { IntraOpThreads = 1 });
        using var model = SteeredModel.Load(additive.OutputDirectory, new RuntimeOptions { IntraOpThreads = 1 });
        var options = new GeneratorOptions { MaxNewTokens = 12, ComputeLogProbs = true };
        var prompt = model.EncodePrompt([new OnnxSteer.Modeling.ChatTurn("user", "Write about rivers.")]);
        var steering = Steering.None.Add(Vector(128, 1), 1, 200f);

        var expected = fullModel.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }], options)[0];
        var actual = model.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }], options)[0];
        Assert.Equal(expected.TokenIds, actual.TokenIds);
        Assert.Equal(expected.MeanLogProb, actual.MeanLogProb);
        var plain = model.Generate([new GenerationRequest { PromptTokenIds = prompt }], options)[0];
        Assert.NotEqual(plain.TokenIds, actual.TokenIds);

        foreach (var refused in new[] { Steering.None.Project(Vector(128, 2), 1, target: 3f), Steering.None.Ablate(Vector(128, 3), 1) })
        {
            var e = Assert.Throws<OnnxSteerException>(() => model.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = refused }], options));
            Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
            Assert.Contains("additive steering only", e.Message);
        }
    }

    [Fact]
    public void The_genai_engine_feeds_the_add_input_alone_and_refuses_projection()
    {
        using var dir = TestPaths.NewTempDir();
        var report = ModelPatcher.Patch(Bundled, dir.Combine("additive"),
            new PatchOptions { Layers = LayerSelection.Of(1), Expose = LayerSelection.None, AdditiveOnly = true, SteerInput = SteerInputMode.Required });
        using var ort = SteeredModel.Load(report.OutputDirectory, new RuntimeOptions { IntraOpThreads = 1 });
        using var genai = GenAiSteeredModel.Load(report.OutputDirectory, new RuntimeOptions { IntraOpThreads = 1 });
        var options = new GeneratorOptions { MaxNewTokens = 12 };
        var request = new GenerationRequest { PromptTokenIds = ort.EncodePrompt([new OnnxSteer.Modeling.ChatTurn("user", "Write about rivers.")]), Steering = Steering.None.Add(Vector(128, 1), 1, 200f) };
        Assert.Equal(ort.Generate([request], options)[0].TokenIds, genai.Generate([request], options)[0].TokenIds);
        Assert.NotEqual(genai.Generate([request with { Steering = null }], options)[0].TokenIds, genai.Generate([request], options)[0].TokenIds);
        var e = Assert.Throws<OnnxSteerException>(() => genai.Generate([request with { Steering = Steering.None.Project(Vector(128, 2), 1) }], options));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("additive steering only", e.Message);
    }

    [Fact]
    public void Cli_patch_additive_only_verifies_and_says_so()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("patched");
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(["patch", TestPaths.GenAiTinyLlamaFp16, "-o", output, "--layers", "1", "--expose", "1", "--additive-only", "--verify", "--json"], o, e);
        Assert.True(code == 0, e.ToString() + o);
        using var doc = JsonDocument.Parse(o.ToString());
        var root = doc.RootElement;
        Assert.True(root.GetProperty("manifest").GetProperty("additive_only").GetBoolean());
        var checks = root.GetProperty("verification").GetProperty("checks").EnumerateArray().ToList();
        Assert.All(checks, c => Assert.True(c.GetProperty("passed").GetBoolean(), c.GetProperty("name").GetString()));
        Assert.Contains(checks, c => c.GetProperty("name").GetString()!.StartsWith("add at layer 1", StringComparison.Ordinal));
        Assert.Contains(checks, c => c.GetProperty("detail").GetString()!.Contains("additive steering only", StringComparison.Ordinal));
        Assert.DoesNotContain(checks, c => c.GetProperty("name").GetString()!.StartsWith("projection at layer 1 (", StringComparison.Ordinal));
    }
}
