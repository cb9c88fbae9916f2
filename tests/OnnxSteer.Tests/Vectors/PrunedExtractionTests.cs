using OnnxSteer.Decoder;
using OnnxSteer.Onnx;
using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Vectors;

/// <summary>Extraction on a graph pruned to the hidden-state outputs, and with prompts sorted by length before batching:
/// neither may change a number.</summary>
public sealed class PrunedExtractionTests(PatchedGenAiFixture fixture) : IClassFixture<PatchedGenAiFixture>
{
    private static int[] ToyEncode(string text) => text.Select(c => c % ToyPatchedModel.Vocab).ToArray();

    internal static void AssertSameVector(InstructionVector expected, InstructionVector actual, double tolerance)
    {
        Assert.Equal(expected.PairCount, actual.PairCount);
        Assert.Equal(expected.Layers.Keys.Order(), actual.Layers.Keys.Order());
        foreach (var (layer, e) in expected.Layers)
        {
            var a = actual.Layers[layer];
            Assert.Equal(e.Norm, a.Norm, tolerance * Math.Max(1, e.Norm));
            for (var i = 0; i < e.MeanDiff.Length; i++)
            {
                Assert.Equal(e.MeanDiff[i], a.MeanDiff[i], tolerance * Math.Max(1, e.Norm));
                Assert.Equal(e.Direction[i], a.Direction[i], tolerance);
            }
            Assert.Equal(e.ZBar!.Value, a.ZBar!.Value, tolerance * Math.Max(1, Math.Abs(e.ZBar.Value)));
            Assert.Equal(e.MeanProjectionWithout!.Value, a.MeanProjectionWithout!.Value, tolerance * Math.Max(1, Math.Abs(e.MeanProjectionWithout.Value)));
            Assert.Equal(e.Separability, a.Separability);
        }
    }

    [Fact]
    public void PrunerKeepsOnlyWhatTheOutputsNeed()
    {
        using var dir = TestPaths.NewTempDir();
        var path = ToyPatchedModel.Write(dir.Combine("toy"));
        var model = OnnxModelFile.Parse(path);
        var before = model.Graph.Node.Count;
        var result = GraphPruner.KeepOutputs(model, ["hidden_states.0"]);
        Assert.Equal(before, result.NodesBefore);
        // hidden_states.0 needs the embedding, position, mask and first CumSum nodes only: Tanh, CumSum, Add, MatMul go.
        Assert.Equal(before - 4, result.NodesAfter);
        Assert.DoesNotContain(model.Graph.Node, n => n.OpType == "MatMul");
        Assert.DoesNotContain(model.Graph.Initializer, t => t.Name == "W");
        Assert.Equal(["hidden_states.0"], model.Graph.Output.Select(o => o.Name));
        Assert.Equal(ErrorKind.UnsupportedModel, Assert.Throws<OnnxSteerException>(() => GraphPruner.KeepOutputs(model, ["logits"])).Kind);
        // The source file is untouched.
        Assert.Equal(before, OnnxModelFile.Parse(path).Graph.Node.Count);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void ToyModelPrunedSortedEqualsFullUnsorted(int batchSize)
    {
        using var dir = TestPaths.NewTempDir();
        ToyPatchedModel.Write(dir.Combine("toy"));
        var rng = new Random(9);
        // Wildly different lengths (1 to 120 tokens) in one window, so sorted batches and unsorted ones pad very differently.
        var pairs = Enumerable.Range(0, 11).Select(i =>
        {
            var baseLength = i % 3 == 0 ? 1 : i % 3 == 1 ? 60 + i : 110;
            var without = new string(Enumerable.Range(0, baseLength).Select(_ => (char)('a' + rng.Next(26))).ToArray());
            var with = without + new string(Enumerable.Range(0, 1 + i % 9).Select(_ => (char)('A' + rng.Next(26))).ToArray());
            return new PromptPair(with, without);
        }).ToList();
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        Assert.NotNull(extractor.Pruning);
        var reference = extractor.Extract(pairs, ToyEncode, new ExtractionOptions { BatchSize = 1, PruneGraph = false, SortWindow = 0 }).Get();
        Assert.Null(extractor.Pruning);
        ExtractionTests.AssertMatchesDirect(dir.Combine("toy/model.onnx"), reference, pairs.Select(p => (ToyEncode(p.With), ToyEncode(p.Without))).ToList(), [0, 1], 1e-5);
        foreach (var (prune, window) in new[] { (true, 64), (true, 0), (false, 64), (true, 5) })
        {
            var reports = new List<int>();
            var got = extractor.Extract(pairs, ToyEncode, new ExtractionOptions { BatchSize = batchSize, PruneGraph = prune, SortWindow = window },
                new ListProgress(reports)).Get();
            Assert.Equal(prune, extractor.Pruning is not null);
            AssertSameVector(reference, got, 1e-6);
            // Progress moves every batch, never back, and ends at the pair count.
            Assert.Equal(pairs.Count, reports[^1]);
            Assert.Equal(reports.Order(), reports);
            // All 22 prompts fit one window of 64: still one report per batch.
            if (window == 64) Assert.True(reports.Count >= (22 + batchSize - 1) / batchSize, $"{reports.Count} reports");
        }
        // Pruned to layer 0 only: the second layer's nodes are gone too, and layer 0 is unchanged.
        var layer0 = extractor.Extract(pairs, ToyEncode, new ExtractionOptions { BatchSize = batchSize, Layers = [0] }).Get();
        Assert.True(extractor.Pruning!.NodesAfter < extractor.Pruning.NodesBefore - 1);
        Assert.Equal(reference.Layers[0].MeanDiff, layer0.Layers[0].MeanDiff);
    }

    [Fact]
    public void NegativeSortWindowIsAUsageError()
    {
        using var dir = TestPaths.NewTempDir();
        ToyPatchedModel.Write(dir.Combine("toy"));
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() =>
            extractor.Extract([new PromptPair("ab", "a")], ToyEncode, new ExtractionOptions { SortWindow = -1 })).Kind);
    }

    // The first five of the real-fixture pairs (lowercase instructions over prompts of different lengths).
    private static readonly PromptPair[] Pairs = PatchedFixtureExtractionTests.Pairs[..5];

    /// <summary>The real fp16 export with external data: the pruned graph is loaded from bytes and must still find its
    /// weights in the patched folder.</summary>
    [Fact]
    public void RealFp16FixturePrunedEqualsFull()
    {
        IReadOnlyList<int> Encode(string s) => fixture.Tokenizer.Encode(s, addSpecialTokens: true);
        var filesBefore = Directory.GetFiles(fixture.Directory).Order().ToList();
        using var extractor = VectorExtractor.Load(fixture.Directory);
        var pruned = extractor.Extract(Pairs, Encode, new ExtractionOptions { BatchSize = 4 }).Get();
        var pruning = extractor.Pruning!;
        Assert.True(pruning.NodesAfter < pruning.NodesBefore, $"{pruning.NodesAfter} of {pruning.NodesBefore} nodes");
        Assert.True(pruning.InitializersRemoved > 0, "the LM head's weight must be gone");
        var full = extractor.Extract(Pairs, Encode, new ExtractionOptions { BatchSize = 4, PruneGraph = false }).Get();
        AssertSameVector(full, pruned, 1e-6);
        Assert.Equal(filesBefore, Directory.GetFiles(fixture.Directory).Order().ToList());
    }

    /// <summary>The bundled trained model (GroupQueryAttention, external data), patched into a temp folder.</summary>
    [Fact]
    public void BundledModelPrunedEqualsFull()
    {
        var source = Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct");
        using var dir = TestPaths.NewTempDir();
        var patched = dir.Combine("patched");
        ModelPatcher.Patch(source, patched, new PatchOptions());
        var tokenizer = TextTokenizer.Load(patched);
        IReadOnlyList<int> Encode(string s) => tokenizer.Encode(s, addSpecialTokens: true);
        using var extractor = VectorExtractor.Load(patched);
        var pruned = extractor.Extract(Pairs, Encode, new ExtractionOptions { BatchSize = 8 }).Get();
        Assert.True(extractor.Pruning!.NodesAfter < extractor.Pruning.NodesBefore);
        var full = extractor.Extract(Pairs, Encode, new ExtractionOptions { BatchSize = 1, PruneGraph = false, SortWindow = 0 }).Get();
        AssertSameVector(full, pruned, 1e-6);

        // Two extractors sharing one SessionOptions: each pruned session must read its own model's weights (both folders
        // hold a model.onnx.data), also when one reopens after the other was loaded.
        IReadOnlyList<int> FixtureEncode(string s) => fixture.Tokenizer.Encode(s, addSpecialTokens: true);
        InstructionVector expected;
        using (var alone = VectorExtractor.Load(fixture.Directory))
            expected = alone.Extract(Pairs, FixtureEncode, new ExtractionOptions { Layers = [1] }).Get();
        using var shared = new Microsoft.ML.OnnxRuntime.SessionOptions();
        using var first = VectorExtractor.Load(fixture.Directory, 0, shared);
        using var second = VectorExtractor.Load(patched, 0, shared);
        AssertSameVector(pruned, second.Extract(Pairs, Encode, new ExtractionOptions { BatchSize = 8 }).Get(), 1e-6);
        AssertSameVector(expected, first.Extract(Pairs, FixtureEncode, new ExtractionOptions { Layers = [1] }).Get(), 1e-6);
    }

    private sealed class ListProgress(List<int> reports) : IProgress<int>
    {
        public void Report(int value) => reports.Add(value);
    }
}
