using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Runtime;

namespace OnnxSteer.Tests.Perf;

/// <summary>What the benchmarks rely on: a model patched with the default <c>--steer-input optional</c> loads in the
/// runtime with its steered layers found (ONNX Runtime lists optional steering inputs as overridable initializers, not
/// inputs), generates exactly the original's tokens when nothing is fed, and is changed by steering.</summary>
public sealed class PatchedRuntimeTests
{
    [Fact]
    public void Optional_steering_inputs_are_discovered_and_nothing_fed_equals_the_original()
    {
        using var dir = TestPaths.NewTempDir("onnxsteer-perf");
        var spec = DecoderSpec.Tiny() with { EosTokenId = -1 };
        var original = dir.Combine("original");
        DecoderFixtures.Write(spec, original);
        File.Copy(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "tokenizer.json"), Path.Combine(original, "tokenizer.json"));
        var patchedDir = dir.Combine("patched");
        ModelPatcher.Patch(original, patchedDir, new PatchOptions { Expose = LayerSelection.None });

        using var plain = SteeredModel.Load(original, new RuntimeOptions { IntraOpThreads = 1 });
        using var patched = SteeredModel.Load(patchedDir, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Equal([0, 1], patched.SteeredLayers);
        Assert.False(patched.Signature.SteeringRequired);

        var options = new GeneratorOptions { MaxNewTokens = 10, UseChatTemplate = false };
        int[] prompt = [5, 17, 33, 9, 71, 4];
        var a = plain.Generate([new GenerationRequest { PromptTokenIds = prompt }], options)[0];
        var b = patched.Generate([new GenerationRequest { PromptTokenIds = prompt }], options)[0];
        Assert.Equal(a.TokenIds, b.TokenIds);

        var direction = Enumerable.Range(0, spec.Hidden).Select(i => i % 3 == 0 ? 1f : -0.5f).ToArray();
        var steering = Steering.None.Add(SteeringVector.FromRaw(direction), layer: 1, weight: 50f);
        var c = patched.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }], options)[0];
        Assert.NotEqual(a.TokenIds, c.TokenIds);
    }
}
