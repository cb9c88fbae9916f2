using Microsoft.ML.OnnxRuntime;
using OnnxSteer.Decoder;
using OnnxSteer.Modeling;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;
using DecoderLayout = OnnxSteer.ModelBuilder.DecoderLayout;

namespace OnnxSteer.Tests.Modeling;

/// <summary>One decoder signature for generation, extraction and verify: every input gets a role by one rule, the cache's
/// empty shape comes from it, and an input of no known role is refused by all three with the same message.</summary>
public sealed class DecoderSignatureTests
{
    public static TheoryData<string> Layouts() => ["genai-mha-fp32", "genai-gqa-fp32", "optimum-fp16", "optimum-noposition-fp32", "merged-fp32", "ortfused-gpt2-fp32"];

    [Theory]
    [MemberData(nameof(Layouts))]
    public void Every_input_has_a_role_and_the_empty_cache_runs(string layout)
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(Runtime.LayoutTests.Spec(layout), dir.Path);
        using var session = new InferenceSession(fixture.ModelPath);
        var signature = DecoderSignature.Discover(session, null, fixture.ModelPath);

        Assert.Equal(session.InputMetadata.Keys, signature.Inputs.Select(i => i.Name));
        Assert.Equal(signature.Cache.Count, signature.Inputs.Count(i => i.Role == DecoderInputRole.Cache));
        var combined = layout.StartsWith("ortfused", StringComparison.Ordinal);
        Assert.Equal(combined ? CacheLayout.Combined : CacheLayout.PerLayerKeyValue, signature.Layout);
        Assert.Equal(combined ? 2 : 4, signature.Cache.Count);
        if (layout.Contains("noposition")) Assert.Null(signature.PositionIds);
        Assert.Equal(layout.StartsWith("merged", StringComparison.Ordinal) ? "use_cache_branch" : null, signature.UseCacheBranch);
        Assert.Equal(128, signature.VocabularySize);
        foreach (var c in signature.Cache)
        {
            // The shape the signature gives agrees with every fixed dimension of the metadata, and puts the batch and the
            // (empty) sequence where the symbolic ones are.
            var dims = session.InputMetadata[c.Input].Dimensions;
            var shape = c.Shape(3, 0);
            Assert.Equal(dims.Length, shape.Length);
            for (var i = 0; i < dims.Length; i++)
                if (dims[i] > 0) Assert.Equal(dims[i], shape[i]);
            Assert.Equal(3, shape[c.BatchAxis]);
            Assert.Equal(0, shape[c.SequenceAxis]);
            Assert.True(dims[c.BatchAxis] <= 0 && dims[c.SequenceAxis] <= 0);
        }

        // verify's generated inputs run the source model: prefill and one decode step fed back through the signature's outputs.
        using var verification = VerificationSession.Open(fixture.ModelPath, optimize: false);
        var generator = new InputGenerator(verification, 1);
        var outputs = verification.Outputs.Keys.ToList();
        var prefill = verification.Run(generator.Inputs(2, 0, 3, null), outputs);
        var step = verification.Run(generator.Inputs(2, 3, 1, prefill), outputs);
        Assert.Equal(4, step[signature.Cache[0].Output].Shape[signature.Cache[0].SequenceAxis]);
    }

    [Fact]
    public void A_graph_without_logits_is_refused_for_generation_and_read_for_extraction()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(DecoderSpec.Tiny(DecoderLayout.GenAi), dir.Path);
        var model = OnnxModelFile.Parse(fixture.ModelPath);
        var logits = model.Graph.Output.Single(o => o.Name == "logits");
        model.Graph.Output.Remove(logits);
        // Keep one output the graph still computes, so ONNX Runtime loads it.
        var path = Path.Combine(dir.Path, "nologits.onnx");
        OnnxModelFile.SaveAtomic(model, path);
        using var session = new InferenceSession(path);
        var e = Assert.Throws<OnnxSteerException>(() => DecoderSignature.Discover(session, null, path));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("no logits output", e.Message);
        var read = DecoderSignature.Read(session.InputMetadata, session.OutputMetadata, null, null, path, requireOutputs: false);
        Assert.Null(read.Logits);
        Assert.Null(read.VocabularySize);
        Assert.Equal(4, read.Cache.Count);
    }

    [Fact]
    public void An_input_of_no_known_role_is_refused_alike_by_generate_extract_and_verify()
    {
        using var dir = TestPaths.NewTempDir();
        var source = dir.Combine("source");
        DecoderFixtures.Write(DecoderSpec.Tiny(DecoderLayout.GenAi), source);
        Runtime.ByteLevelFixture.Write(source);
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(source, patched, new PatchOptions());
        var modelFile = Path.Combine(patched, "model.onnx");
        var model = OnnxModelFile.Parse(modelFile);
        // An input nothing reads: ONNX Runtime still lists it (and demands it), and no part of OnnxSteer knows what to feed.
        model.Graph.Input.Add(new ValueInfoProto
        {
            Name = "cross_attention_states",
            Type = new TypeProto { TensorType = new TypeProto.Types.Tensor { ElemType = (int)TensorProto.Types.DataType.Float, Shape = new TensorShapeProto() } },
        });
        OnnxModelFile.SaveAtomic(model, modelFile);

        const string expected = "has an input 'cross_attention_states' that OnnxSteer cannot feed";
        void Refused(Action action)
        {
            var e = Assert.Throws<OnnxSteerException>(action);
            Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
            Assert.Contains(expected, e.Message);
        }
        Refused(() => SteeredModel.Load(patched).Dispose());
        Refused(() =>
        {
            using var extractor = VectorExtractor.Load(patched, new ExtractionOptions { PruneGraph = false });
            extractor.Extract([new PromptPair("a b", "a")], t => t.Select(c => (int)c % 100).ToArray(), new ExtractionOptions { PruneGraph = false });
        });
        using var verification = VerificationSession.Open(modelFile, optimize: false);
        Refused(() => new InputGenerator(verification, 1));
    }
}
