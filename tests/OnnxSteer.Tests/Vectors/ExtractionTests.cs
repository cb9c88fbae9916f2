using System.Runtime.InteropServices;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Vectors;

namespace OnnxSteer.Tests.Vectors;

/// <summary>The proof: extract equals a direct computation from the hidden_states outputs of single, unpadded
/// (batch-1) runs, for several batch sizes with prompts of different lengths.</summary>
public sealed class ExtractionTests
{
    /// <summary>Direct reference: run each prompt alone (batch 1, no padding, empty cache) and read its last position.</summary>
    internal static float[][] SingleRunLastToken(InferenceSession session, int[] ids, IReadOnlyList<int> layers)
    {
        var values = new Dictionary<string, OrtValue>();
        try
        {
            foreach (var (name, meta) in session.InputMetadata)
            {
                OrtValue v;
                if (name == "input_ids") v = OrtValue.CreateTensorValueFromMemory(ids.Select(i => (long)i).ToArray(), [1, ids.Length]);
                else if (name == "attention_mask") v = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, ids.Length).ToArray(), [1, ids.Length]);
                else if (name == "position_ids") v = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(0, ids.Length).Select(i => (long)i).ToArray(), [1, ids.Length]);
                else if (name.StartsWith("past", StringComparison.Ordinal))
                {
                    var dims = meta.Dimensions.Select(d => (long)d).ToArray();
                    var first = true;
                    for (var i = 0; i < dims.Length; i++) if (dims[i] < 0) { dims[i] = first ? 1 : 0; first = false; }
                    v = OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, meta.ElementDataType, dims);
                }
                else throw new InvalidOperationException($"unexpected input {name}");
                values[name] = v;
            }
            using var runOptions = new RunOptions();
            using var outputs = session.Run(runOptions, values, layers.Select(l => $"hidden_states.{l}").ToList());
            return outputs.Select(o =>
            {
                var info = o.GetTensorTypeAndShape();
                var hidden = (int)info.Shape[2];
                var offset = (ids.Length - 1) * hidden;
                return info.ElementDataType == TensorElementType.Float16
                    ? MemoryMarshal.Cast<Float16, Half>(o.GetTensorDataAsSpan<Float16>().Slice(offset, hidden)).ToArray().Select(h => (float)h).ToArray()
                    : o.GetTensorDataAsSpan<float>().Slice(offset, hidden).ToArray();
            }).ToArray();
        }
        finally
        {
            foreach (var v in values.Values) v.Dispose();
        }
    }

    /// <summary>The statistics computed the slow, obvious way from per-prompt states.</summary>
    internal static void AssertMatchesDirect(string modelPath, InstructionVector vector, IReadOnlyList<(int[] With, int[] Without)> pairs,
        IReadOnlyList<int> layers, double tolerance)
    {
        using var session = new InferenceSession(modelPath);
        var withStates = pairs.Select(p => SingleRunLastToken(session, p.With, layers)).ToList();
        var withoutStates = pairs.Select(p => SingleRunLastToken(session, p.Without, layers)).ToList();
        Assert.Equal(pairs.Count, vector.PairCount);
        Assert.Equal(layers, vector.Layers.Keys.Order());
        for (var k = 0; k < layers.Count; k++)
        {
            var hidden = withStates[0][k].Length;
            var u = new double[hidden];
            for (var p = 0; p < pairs.Count; p++)
                for (var i = 0; i < hidden; i++) u[i] += ((double)withStates[p][k][i] - withoutStates[p][k][i]) / pairs.Count;
            var norm = Math.Sqrt(u.Sum(x => x * x));
            var uHat = u.Select(x => x / norm).ToArray();
            double Dot(float[] a) => a.Select((x, i) => x * uHat[i]).Sum();
            var zBar = withStates.Average(s => Dot(s[k]));
            var without = withoutStates.Average(s => Dot(s[k]));
            var separability = Enumerable.Range(0, pairs.Count).Count(p => Dot(withStates[p][k]) > Dot(withoutStates[p][k])) / (double)pairs.Count;

            var got = vector.Layers[layers[k]];
            var scale = Math.Max(1, norm);
            Assert.Equal(norm, got.Norm, tolerance * scale);
            for (var i = 0; i < hidden; i++)
            {
                Assert.Equal(u[i], got.MeanDiff[i], tolerance * scale);
                Assert.Equal(uHat[i], got.Direction[i], tolerance);
            }
            Assert.Equal(zBar, got.ZBar!.Value, tolerance * Math.Max(1, Math.Abs(zBar)));
            Assert.Equal(without, got.MeanProjectionWithout!.Value, tolerance * Math.Max(1, Math.Abs(without)));
            Assert.Equal(separability, got.Separability!.Value);
        }
    }

    private static int[] ToyEncode(string text) => text.Select(c => c % ToyPatchedModel.Vocab).ToArray();

    private static readonly PromptPair[] ToyPairs =
    [
        new("Write about rivers. Use only lowercase letters.", "Write about rivers."),
        new("Hi. Use only lowercase letters.", "Hi."),
        new("Describe a long and winding mountain road at dusk. Use only lowercase letters.", "Describe a long and winding mountain road at dusk."),
        new("What is 2+2? Use only lowercase letters.", "What is 2+2?"),
        new("Name three birds. Use only lowercase letters.", "Name three birds."),
    ];

    [Theory]
    [InlineData(1)]
    [InlineData(3)]
    [InlineData(8)]
    public void ToyModelExtractionEqualsSingleRuns(int batchSize)
    {
        using var dir = TestPaths.NewTempDir();
        var model = ToyPatchedModel.Write(dir.Combine("toy"));
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        var reports = new List<int>();
        var file = extractor.Extract(ToyPairs, ToyEncode, new ExtractionOptions { Name = "lower", BatchSize = batchSize },
            new SyncProgress(reports.Add));
        var vector = file.Get("lower");
        Assert.Equal(ToyPatchedModel.Hidden, file.Model!.HiddenSize);
        Assert.Equal(ToyPairs.Length, reports[^1]);
        AssertMatchesDirect(model, vector, ToyPairs.Select(p => (ToyEncode(p.With), ToyEncode(p.Without))).ToList(), [0, 1], 1e-5);
    }

    [Fact]
    public void SpillFileIsRemovedAndPairsAreReadLazily()
    {
        using var dir = TestPaths.NewTempDir();
        ToyPatchedModel.Write(dir.Combine("toy"));
        var spill = dir.Combine("spill");
        Directory.CreateDirectory(spill);
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        var enumerated = 0;
        var seenWhileRunning = new List<int>();
        IEnumerable<PromptPair> Stream()
        {
            foreach (var p in ToyPairs) { enumerated++; seenWhileRunning.Add(Directory.GetFiles(spill).Length); yield return p; }
        }
        var file = extractor.Extract(Stream(), ToyEncode, new ExtractionOptions { BatchSize = 2, SpillDirectory = spill });
        Assert.Equal(ToyPairs.Length, enumerated);
        Assert.Equal(ToyPairs.Length, file.Get().PairCount);
        Assert.Empty(Directory.GetFiles(spill));
        // On Unix the spill file has no name while extraction runs (unlinked once open), so a killed process leaves none;
        // Windows deletes it on close itself, even when the process dies.
        if (!OperatingSystem.IsWindows()) Assert.All(seenWhileRunning, n => Assert.Equal(0, n));
    }

    [Fact]
    public void LayerSelectionAndErrors()
    {
        using var dir = TestPaths.NewTempDir();
        ToyPatchedModel.Write(dir.Combine("toy"));
        using var extractor = VectorExtractor.Load(dir.Combine("toy"));
        var file = extractor.Extract(ToyPairs, ToyEncode, new ExtractionOptions { Layers = [1] });
        Assert.Equal([1], file.Get().Layers.Keys);
        Assert.Equal(ErrorKind.UnsupportedModel, Assert.Throws<OnnxSteerException>(() => extractor.Extract(ToyPairs, ToyEncode, new ExtractionOptions { Layers = [2] })).Kind);
        Assert.Equal(ErrorKind.InvalidData, Assert.Throws<OnnxSteerException>(() => extractor.Extract([], ToyEncode, new ExtractionOptions())).Kind);
        Assert.Equal(ErrorKind.InvalidData, Assert.Throws<OnnxSteerException>(() => extractor.Extract(ToyPairs, _ => [], new ExtractionOptions())).Kind);
        // Identical with and without prompts give no direction.
        Assert.Equal(ErrorKind.InvalidVector, Assert.Throws<OnnxSteerException>(() => extractor.Extract([new PromptPair("a", "a")], ToyEncode, new ExtractionOptions())).Kind);
    }

    [Fact]
    public void UnpatchedFolderIsRefused()
    {
        var e = Assert.Throws<OnnxSteerException>(() => VectorExtractor.Load(TestPaths.GenAiTinyLlamaFp16));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("patch", e.Message);
    }

    [Fact]
    public void PairsFileFormsAndErrors()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("pairs.jsonl");
        File.WriteAllLines(path, ["""{"with": "a b", "without": "a"}""", "", """{"prompt": "Write.", "instruction": "Use lowercase."}"""]);
        var pairs = PairsFile.Read(path).ToList();
        Assert.Equal(new PromptPair("a b", "a", 1), pairs[0]);
        Assert.Equal(new PromptPair("Write. Use lowercase.", "Write.", 3), pairs[1]);
        Assert.Equal(2, PairsFile.Count(path));

        foreach (var (line, expected) in new[]
        {
            ("not json", "not valid JSON"),
            ("[1]", "expected an object"),
            ("""{"with": "a"}""", "no \"without\""),
            ("""{"with": 3, "without": "a"}""", "must be a string"),
            ("""{"with": "a", "without": "  "}""", "empty"),
            ("""{"prompt": "a"}""", "expected"),
            ("""{"with": "a", "without": "b", "prompt": "c"}""", "mixes"),
        })
        {
            File.WriteAllLines(path, ["""{"with": "a b", "without": "a"}""", line]);
            var e = Assert.Throws<OnnxSteerException>(() => PairsFile.Count(path));
            Assert.Equal(ErrorKind.InvalidData, e.Kind);
            Assert.Contains(":2:", e.Message);
            Assert.Contains(expected, e.Message);
        }
        File.WriteAllText(path, "\n\n");
        Assert.Equal(ErrorKind.InvalidData, Assert.Throws<OnnxSteerException>(() => PairsFile.Count(path)).Kind);
        Assert.Equal(ErrorKind.NotFound, Assert.Throws<OnnxSteerException>(() => PairsFile.Count(dir.Combine("none.jsonl"))).Kind);
    }

    /// <summary>Progress that reports synchronously (Progress&lt;T&gt; posts to the thread pool).</summary>
    private sealed class SyncProgress(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}
