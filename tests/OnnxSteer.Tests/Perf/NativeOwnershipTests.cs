using Google.Protobuf;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Modeling;
using OnnxSteer.ModelBuilder;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Generation;
using OnnxSteer.Tests.Runtime;

namespace OnnxSteer.Tests.Perf;

/// <summary>Who frees native memory when something fails: a <see cref="BoundDecoder"/> whose construction fails after it
/// allocated its cache buffers frees them (the decode loop then falls back to plain runs); and a cached model without an
/// attention_mask input decodes on both loops.</summary>
public sealed class NativeOwnershipTests
{
    /// <summary>Everything a BoundDecoder needs for a batch of one after a prefill of <paramref name="prompt"/> positions.</summary>
    private sealed class Setup : IDisposable
    {
        public required InferenceSession Session { get; init; }
        public required DecoderSignature Signature { get; init; }
        public required List<OrtValue> Presents { get; init; }
        public required OrtValue Ids { get; init; }
        public required OrtValue Positions { get; init; }

        public static Setup Create(string modelPath, int prompt)
        {
            var session = new InferenceSession(modelPath);
            var signature = DecoderSignature.Discover(session, null, modelPath);
            return new Setup
            {
                Session = session,
                Signature = signature,
                Presents = signature.Cache.Select(c => OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, c.Type, c.Shape(1, prompt))).ToList(),
                Ids = OrtValue.CreateTensorValueFromMemory(GC.AllocateArray<long>(1, pinned: true), [1, 1]),
                Positions = OrtValue.CreateTensorValueFromMemory(GC.AllocateArray<long>(1, pinned: true), [1, 1]),
            };
        }

        public BoundDecoder Bind(DecoderSignature signature, IEnumerable<(string, OrtValue)> steering) =>
            new(Session, signature, batch: 1, promptLength: 3, maxLength: 16, vocab: 128, logitsRank2: false, Presents, Ids, Positions, steering, headroom: 4);

        public void Dispose()
        {
            foreach (var p in Presents) p.Dispose();
            Ids.Dispose();
            Positions.Dispose();
            Session.Dispose();
        }
    }

    [Fact]
    public void A_bound_decoder_that_fails_after_allocating_frees_its_buffers()
    {
        using var dir = TestPaths.NewTempDir();
        var fixture = DecoderFixtures.Write(LayoutTests.Spec("genai-mha-fp32"), dir.Path);
        using var setup = Setup.Create(fixture.ModelPath, prompt: 3);
        var before = NativeBuffer.LiveOnThisThread;

        // Built and disposed: two buffers per cache tensor while alive, none after.
        using (setup.Bind(setup.Signature, []))
            Assert.Equal(before + 2 * setup.Signature.Cache.Count, NativeBuffer.LiveOnThisThread);
        Assert.Equal(before, NativeBuffer.LiveOnThisThread);

        // Fails after the cache buffers and the binding exist: logits of a type the bound path cannot read.
        Assert.Throws<InvalidOperationException>(() => setup.Bind(setup.Signature with { LogitsType = TensorElementType.Int32 }, []));
        Assert.Equal(before, NativeBuffer.LiveOnThisThread);

        // Fails in ONNX Runtime's BindInput: a steering input this model does not have.
        using var bogus = OrtValue.CreateTensorValueFromMemory(new float[32], [1, 1, 32]);
        Assert.Throws<OnnxRuntimeException>(() => setup.Bind(setup.Signature, [("steering.9.add", bogus)]));
        Assert.Equal(before, NativeBuffer.LiveOnThisThread);
    }

    /// <summary>Replaces the attention_mask input by nodes computing it (ones over past + new positions), so the graph is
    /// the same function for unpadded rows and has a KV cache but no attention_mask input.</summary>
    private static void RemoveAttentionMask(string modelPath, string firstPast)
    {
        var model = OnnxModelFile.Parse(modelPath);
        var graph = model.Graph;
        var mask = graph.Input.Single(i => i.Name == "attention_mask");
        Assert.Equal((int)TensorProto.Types.DataType.Int64, mask.Type.TensorType.ElemType);
        graph.Input.Remove(mask);
        TensorProto Int64s(string name, params long[] values)
        {
            var t = new TensorProto { Name = name, DataType = (int)TensorProto.Types.DataType.Int64 };
            t.Dims.Add(values.Length);
            t.Int64Data.Add(values);
            return t;
        }
        graph.Initializer.Add(Int64s("mask.i0", 0));
        graph.Initializer.Add(Int64s("mask.i1", 1));
        graph.Initializer.Add(Int64s("mask.i2", 2));
        NodeProto Node(string op, string[] inputs, string output, params AttributeProto[] attributes)
        {
            var n = new NodeProto { OpType = op, Name = "mask." + output };
            n.Input.Add(inputs);
            n.Output.Add(output);
            n.Attribute.Add(attributes);
            return n;
        }
        var one = Int64s("value", 1);
        var nodes = new[]
        {
            Node("Shape", ["input_ids"], "mask.ids_shape"),
            Node("Shape", [firstPast], "mask.past_shape"),
            Node("Gather", ["mask.ids_shape", "mask.i0"], "mask.batch", new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 }),
            Node("Gather", ["mask.ids_shape", "mask.i1"], "mask.new", new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 }),
            Node("Gather", ["mask.past_shape", "mask.i2"], "mask.past", new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 }),
            Node("Add", ["mask.past", "mask.new"], "mask.total"),
            Node("Concat", ["mask.batch", "mask.total"], "mask.shape", new AttributeProto { Name = "axis", Type = AttributeProto.Types.AttributeType.Int, I = 0 }),
            Node("ConstantOfShape", ["mask.shape"], "attention_mask", new AttributeProto { Name = "value", Type = AttributeProto.Types.AttributeType.Tensor, T = one }),
        };
        // Before every node: the producers must precede the consumers of attention_mask in the (sorted) node list.
        for (var i = nodes.Length - 1; i >= 0; i--) graph.Node.Insert(0, nodes[i]);
        OnnxModelFile.SaveAtomic(model, modelPath);
    }

    [Theory]
    [InlineData("optimum-fp32", "past_key_values.0.key")]
    [InlineData("genai-mha-fp32", "past_key_values.0.key")]
    public void A_cached_model_without_attention_mask_decodes_on_both_loops(string layout, string firstPast)
    {
        using var dir = TestPaths.NewTempDir();
        var withMask = dir.Combine("with");
        var without = dir.Combine("without");
        DecoderFixtures.Write(LayoutTests.Spec(layout) with { EosTokenId = 127 }, withMask);
        DecoderFixtures.Write(LayoutTests.Spec(layout) with { EosTokenId = 127 }, without);
        ByteLevelFixture.Write(withMask);
        ByteLevelFixture.Write(without);
        RemoveAttentionMask(Path.Combine(without, "model.onnx"), firstPast);

        var options = new GeneratorOptions { MaxNewTokens = 8, UseChatTemplate = false };
        var request = new GenerationRequest { PromptTokenIds = [5, 17, 42, 9] };
        using var reference = SteeredModel.Load(withMask, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        using var plain = SteeredModel.Load(without, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        using var bound = SteeredModel.Load(without, new RuntimeOptions { IntraOpThreads = 1 });
        Assert.Null(plain.Signature.AttentionMask);
        Assert.NotEqual(CacheLayout.None, plain.Signature.Layout);

        var expected = reference.Generate([request], options)[0];
        Assert.True(expected.DecodeSteps >= 2, "the plain loop's second decode step is the one that reused the mask slot");
        var a = plain.Generate([request], options)[0];
        var b = bound.Generate([request], options)[0];
        Assert.Equal(expected.TokenIds, a.TokenIds);
        Assert.Equal(expected.TokenIds, b.TokenIds);
        Assert.False(a.BoundDecode);
        Assert.True(b.BoundDecode);
    }
}
