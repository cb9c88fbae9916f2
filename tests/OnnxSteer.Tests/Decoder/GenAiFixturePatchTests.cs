using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;

namespace OnnxSteer.Tests.Decoder;

/// <summary>The real fixture patched once (optional inputs, all layers) for the tests of this class.</summary>
public sealed class PatchedRealFixture : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-patched-real");

    public PatchedRealFixture()
    {
        Output = _dir.Combine("patched");
        Report = ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, Output, new PatchOptions());
    }

    public string Output { get; }
    public PatchReport Report { get; }
    public string SourceModel => Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx");
    public string PatchedModel => Path.Combine(Output, "model.onnx");

    public void Dispose() => _dir.Dispose();
}

public class GenAiFixturePatchTests(PatchedRealFixture fixture) : IClassFixture<PatchedRealFixture>
{
    private const int Hidden = 16;

    [Fact]
    public void DetectsGenAiLayoutOnRealFixture()
    {
        var model = OnnxModelFile.Load(TestPaths.GenAiTinyLlamaFp16);
        var graph = GraphView.Create(model.Proto.Graph);
        var layout = LayoutMatchers.Detect(graph);
        Assert.Equal("genai", layout.Name);
        Assert.Equal(2, layout.NumLayers);
        Assert.Equal(Hidden, layout.HiddenSize);
        Assert.Equal("float16", layout.ResidualDtype);
        Assert.Equal(2, layout.Points.Count);
        var p0 = Assert.IsType<FusedNormResidualPoint>(layout.Points[0]);
        Assert.Equal("/model/layers.1/input_layernorm/output_3", p0.ExistingValue!.Name);
        var p1 = Assert.IsType<FusedNormResidualPoint>(layout.Points[1]);
        Assert.Null(p1.ExistingValue); // the last block's residual is not materialised by the exporter
        Assert.Equal("SkipSimplifiedLayerNormalization", p1.Norm.OpType);
    }

    [Fact]
    public void StructureHasExactCounts()
    {
        var source = OnnxModelFile.Load(TestPaths.GenAiTinyLlamaFp16).Proto;
        var patched = OnnxModelFile.Load(fixture.Output).Proto;
        var (sg, pg) = (source.Graph, patched.Graph);
        Assert.Equal(7, sg.Input.Count);
        Assert.Equal(7 + 6, pg.Input.Count);
        Assert.Equal(5 + 2, pg.Output.Count);
        Assert.Equal(["hidden_states.0", "hidden_states.1"], pg.Output.Skip(5).Select(o => o.Name));
        // 14 steering nodes per layer (5 Casts to float32: input, skip, add, direction, target; Add for the sum, Mul,
        // ReduceSum, Sub, Mul, 3 Subs, Cast back) + 1 Identity.
        Assert.Equal(sg.Node.Count + 2 * 15, pg.Node.Count);
        // 6 zero defaults, one float16 zero, one axes constant; no other initializer added or changed.
        Assert.Equal(sg.Initializer.Count + 8, pg.Initializer.Count);
        foreach (var t in sg.Initializer)
            Assert.Equal(t, pg.Initializer.Single(p => p.Name == t.Name));
        Assert.Equal(source.IrVersion, patched.IrVersion);
        Assert.Equal(source.OpsetImport, patched.OpsetImport);
        Assert.Contains(patched.MetadataProps, p => p.Key == SteeringContract.PatchedMetadataKey);
        foreach (var input in pg.Input.Where(i => i.Name.StartsWith("steering.", StringComparison.Ordinal)))
        {
            Assert.Equal((int)OnnxSteer.Onnx.Proto.TensorProto.Types.DataType.Float16, input.Type.TensorType.ElemType);
            Assert.StartsWith("steer_batch_", input.Type.TensorType.Shape.Dim[0].DimParam);
        }
        // Fused norms: the skip input is replaced (never the bias slot), the final norm gains output 3.
        var norms = pg.Node.Where(n => n.OpType == "SkipSimplifiedLayerNormalization").ToList();
        Assert.Equal(4, norms.Count);
        var finalNorm = norms.Single(n => n.Name == "/model/layers.2/final_norm_layernorm/SkipLayerNorm");
        Assert.Equal(4, finalNorm.Output.Count);
        Assert.Equal("/onnxsteer/layers.1/steer/output_0", finalNorm.Input[1]);
        Assert.Equal(3, finalNorm.Input.Count);
        var layer1Input = norms.Single(n => n.Name == "/model/layers.1/input_layernorm/SkipLayerNorm");
        Assert.Equal("/onnxsteer/layers.0/steer/output_0", layer1Input.Input[1]);
        // Topological order.
        var known = new HashSet<string>(pg.Input.Select(i => i.Name).Concat(pg.Initializer.Select(i => i.Name))) { "" };
        foreach (var node in pg.Node)
        {
            Assert.All(node.Input, i => Assert.Contains(i, known));
            foreach (var o in node.Output) known.Add(o);
        }
        // Manifest.
        var m = fixture.Report.Manifest;
        Assert.Equal("genai", m.Layout);
        Assert.Equal("llama", m.ModelType);
        Assert.Equal(ModelPatcher.Sha256Hex(fixture.SourceModel), m.Source.GraphSha256);
        Assert.Equal("steering.1.target", m.Inputs["1"].Target);
        Assert.Equal("hidden_states.0", m.Outputs["0"]);
        var loaded = SteeringManifest.TryLoad(fixture.Output)!;
        Assert.Equal(m.Source, loaded.Source);
        Assert.Equal(m.SteeredLayers, loaded.SteeredLayers);
        Assert.Equal(m.Outputs, loaded.Outputs);
    }

    [Fact]
    public void CarriesFilesAndLinksWeights()
    {
        Assert.Equal(["model.onnx.data"], fixture.Report.LinkedFiles.Concat(fixture.Report.CopiedFiles));
        foreach (var name in new[] { "genai_config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json" })
            Assert.Equal(File.ReadAllBytes(Path.Combine(TestPaths.GenAiTinyLlamaFp16, name)), File.ReadAllBytes(Path.Combine(fixture.Output, name)));
        Assert.Equal(new FileInfo(Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx.data")).Length, new FileInfo(Path.Combine(fixture.Output, "model.onnx.data")).Length);
        Assert.Equal(["model.onnx.data"], OnnxModelFile.Load(fixture.Output).ExternalDataFiles);
        Assert.DoesNotContain(Directory.GetDirectories(Path.GetDirectoryName(fixture.Output)!), d => Path.GetFileName(d).StartsWith('.')); // no temporary folder left
    }

    [Fact]
    public void NothingFedIsBitIdenticalOverPrefillAndDecode()
    {
        using var source = VerificationSession.Open(fixture.SourceModel, optimize: false);
        using var patched = VerificationSession.Open(fixture.PatchedModel, optimize: false);
        foreach (var batch in new[] { 1, 2 })
        {
            var generator = new InputGenerator(source, 42 + batch);
            var outputs = source.Outputs.Keys.ToList();
            Assert.Equal(5, outputs.Count);
            Dictionary<string, HostTensor>? previous = null;
            var past = 0;
            for (var step = 0; step < 4; step++)
            {
                var length = step == 0 ? 6 : 1;
                var inputs = generator.Inputs(batch, past, length, previous);
                var expected = source.Run(inputs, outputs);
                var actual = patched.Run(inputs, outputs);
                foreach (var name in outputs)
                {
                    Assert.Equal(expected[name].Shape, actual[name].Shape);
                    Assert.True(expected[name].Data.AsSpan().SequenceEqual(actual[name].Data), $"{name} differs at step {step}, batch {batch}");
                }
                previous = expected;
                past += length;
            }
        }
    }

    [Fact]
    public void AddMovesHiddenStateByTheVectorAndLeavesEarlierLayersAlone()
    {
        using var patched = VerificationSession.Open(fixture.PatchedModel, optimize: false);
        var inputs = new InputGenerator(patched, 3).Inputs(1, 0, 4, null);
        var outputs = new[] { "hidden_states.0", "hidden_states.1", "logits" };
        var baseline = patched.Run(inputs, outputs);
        var v = Enumerable.Range(0, Hidden).Select(i => (i % 5 - 2) * 0.25).ToArray(); // exact in fp16
        var feed = new Dictionary<string, HostTensor>(inputs) { ["steering.1.add"] = HostTensor.FromDoubles(TensorElementType.Float16, [1, 1, Hidden], v) };
        var steered = patched.Run(feed, outputs);
        Assert.True(baseline["hidden_states.0"].Data.AsSpan().SequenceEqual(steered["hidden_states.0"].Data));
        var (before, after) = (baseline["hidden_states.1"].ToDoubles(), steered["hidden_states.1"].ToDoubles());
        for (var k = 0; k < before.Length; k++)
        {
            var expected = (double)(Half)(before[k] + v[k % Hidden]);
            // x' = input + (skip + v) rounded twice in fp16: within one ulp of the exactly rounded sum.
            Assert.True(Math.Abs(after[k] - expected) <= Math.Max(Math.Abs(expected), 1) * Math.Pow(2, -10), $"element {k}: {after[k]} vs {expected}");
        }
        Assert.False(baseline["logits"].Data.AsSpan().SequenceEqual(steered["logits"].Data)); // the last block's residual feeds the final norm
    }

    [Fact]
    public void ProjectionAndAblationMatchDirectComputationPerRow()
    {
        using var patched = VerificationSession.Open(fixture.PatchedModel, optimize: false);
        var inputs = new InputGenerator(patched, 5).Inputs(2, 0, 3, null);
        var baseline = patched.Run(inputs, ["hidden_states.0"])["hidden_states.0"].ToDoubles();
        var random = new Random(9);
        var u = Enumerable.Range(0, 2).Select(_ =>
        {
            var raw = Enumerable.Range(0, Hidden).Select(_ => random.NextDouble() - 0.5).ToArray();
            var norm = Math.Sqrt(raw.Sum(x => x * x));
            return raw.Select(x => x / norm).ToArray();
        }).ToArray();
        var direction = HostTensor.FromDoubles(TensorElementType.Float16, [2, 1, Hidden], u.SelectMany(x => x).ToList());
        var dir = direction.ToDoubles();
        foreach (var target in new[] { 3.0, 0.0 })
        {
            var feed = new Dictionary<string, HostTensor>(inputs)
            {
                ["steering.0.direction"] = direction,
                ["steering.0.target"] = HostTensor.FromDoubles(TensorElementType.Float16, [2, 1, 1], [target, target]),
                ["steering.0.add"] = HostTensor.Zeros(TensorElementType.Float16, [2, 1, Hidden]),
            };
            var steered = patched.Run(feed, ["hidden_states.0"])["hidden_states.0"].ToDoubles();
            for (var row = 0; row < 2; row++)
                for (var pos = 0; pos < 3; pos++)
                {
                    var offset = (row * 3 + pos) * Hidden;
                    var dot = Enumerable.Range(0, Hidden).Sum(i => baseline[offset + i] * dir[row * Hidden + i]);
                    var newDot = Enumerable.Range(0, Hidden).Sum(i => steered[offset + i] * dir[row * Hidden + i]);
                    Assert.True(Math.Abs(newDot - target) < 0.02 + 0.01 * Math.Abs(target), $"row {row} pos {pos}: x'·u = {newDot}, target {target}");
                    for (var i = 0; i < Hidden; i++)
                    {
                        var expected = baseline[offset + i] + (target - dot) * dir[row * Hidden + i];
                        Assert.True(Math.Abs(steered[offset + i] - expected) <= 4 * Math.Pow(2, -11) * (Math.Abs(expected) + 4) , $"row {row} pos {pos} i {i}: {steered[offset + i]} vs {expected}");
                    }
                }
        }
    }

    [Fact]
    public void PerRowAddInABatchOfTwoEqualsEachRowAlone()
    {
        using var patched = VerificationSession.Open(fixture.PatchedModel, optimize: false);
        var batchInputs = new InputGenerator(patched, 11).Inputs(2, 0, 4, null);
        var v = new[] { 0.5, -0.75 };
        var add = HostTensor.FromDoubles(TensorElementType.Float16, [2, 1, Hidden], Enumerable.Range(0, 2 * Hidden).Select(k => v[k / Hidden] * ((k % 3) - 1)).ToList());
        var zerosDir = HostTensor.Zeros(TensorElementType.Float16, [2, 1, Hidden]);
        var zerosTarget = HostTensor.Zeros(TensorElementType.Float16, [2, 1, 1]);
        var batched = patched.Run(new Dictionary<string, HostTensor>(batchInputs)
            { ["steering.1.add"] = add, ["steering.1.direction"] = zerosDir, ["steering.1.target"] = zerosTarget }, ["logits", "hidden_states.1"]);
        for (var row = 0; row < 2; row++)
        {
            var single = batchInputs.ToDictionary(kv => kv.Key, kv => SliceRow(kv.Value, row));
            single["steering.1.add"] = SliceRow(add, row);
            var alone = patched.Run(single, ["logits", "hidden_states.1"]);
            foreach (var name in new[] { "logits", "hidden_states.1" })
            {
                var expected = alone[name].ToDoubles();
                var actual = SliceRow(batched[name], row).ToDoubles();
                for (var k = 0; k < expected.Length; k++)
                    Assert.True(Math.Abs(expected[k] - actual[k]) <= 1e-2 * Math.Max(1, Math.Abs(expected[k])), $"{name} row {row}: {actual[k]} vs {expected[k]}");
            }
        }
    }

    private static HostTensor SliceRow(HostTensor t, int row)
    {
        if (t.Shape.Length < 2 || t.Shape[0] != 2) return t;
        var rowBytes = t.Data.Length / 2;
        return new HostTensor(t.ElementType, [1, .. t.Shape[1..]], t.Data.AsSpan(row * rowBytes, rowBytes).ToArray());
    }

    [Fact]
    public void VerifyPassesOnPatchedFixture()
    {
        var verification = PatchVerifier.Verify(fixture.Output);
        Assert.True(verification.Passed, verification.ToJson());
        Assert.Equal(13, verification.Checks.Count);
    }

    [Fact]
    public void RequiredInputsMustBeFed()
    {
        using var dir = TestPaths.NewTempDir();
        var report = ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, dir.Combine("required"), new PatchOptions { SteerInput = SteerInputMode.Required });
        var g = OnnxModelFile.Load(report.OutputDirectory).Proto.Graph;
        Assert.DoesNotContain(g.Initializer, t => t.Name.StartsWith("steering.", StringComparison.Ordinal));
        using var session = VerificationSession.Open(Path.Combine(report.OutputDirectory, "model.onnx"), optimize: false);
        var inputs = new InputGenerator(session, 1).Inputs(1, 0, 2, null);
        Assert.Throws<OnnxSteerException>(() => session.Run(inputs, ["logits"]));
        var verification = PatchVerifier.Verify(report.OutputDirectory);
        Assert.True(verification.Passed, verification.ToJson());
    }
}
