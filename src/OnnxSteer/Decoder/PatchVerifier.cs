using System.Text.Json;
using System.Text.Json.Serialization;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Contract;
using OnnxSteer.Modeling;
using OnnxSteer.Onnx;

namespace OnnxSteer.Decoder;

/// <summary>Options of <see cref="PatchVerifier.Verify"/>.</summary>
public sealed record VerifyOptions
{
    /// <summary>The original model folder; default: the source path recorded in steering.json.</summary>
    public string? SourceDirectory { get; init; }

    /// <summary>ONNX Runtime intra-op threads of the two sessions compared (default 1: both run the same single-threaded
    /// kernels, so the bit-identity checks do not depend on how a pool splits the work; 0 uses all cores).</summary>
    public int Threads { get; init; } = 1;

    /// <summary>Prompt length of the prefill run.</summary>
    public int PrefillLength { get; init; } = 5;

    /// <summary>Decode steps (one token each, with the KV cache) after the prefill.</summary>
    public int DecodeSteps { get; init; } = 3;

    /// <summary>At most this many steered layers get the steering checks (first, last and evenly between).</summary>
    public int MaxSteeringLayers { get; init; } = 4;

    /// <summary>Seed of the generated tokens and vectors.</summary>
    public int Seed { get; init; } = 1234;
}

/// <summary>One check and its outcome.</summary>
/// <param name="Name">What was checked.</param>
/// <param name="Passed">Whether it held.</param>
/// <param name="Detail">Measured numbers or the first mismatch.</param>
public sealed record VerificationCheck(
    [property: JsonPropertyName("name")] string Name,
    [property: JsonPropertyName("passed")] bool Passed,
    [property: JsonPropertyName("detail")] string Detail);

/// <summary>The outcome of verifying a patched folder against its source.</summary>
public sealed record VerificationReport
{
    /// <summary>The patched folder.</summary>
    [JsonPropertyName("patched")] public required string PatchedDirectory { get; init; }
    /// <summary>The source folder compared against.</summary>
    [JsonPropertyName("source")] public required string SourceDirectory { get; init; }
    /// <summary>Every check run.</summary>
    [JsonPropertyName("checks")] public required IReadOnlyList<VerificationCheck> Checks { get; init; }
    /// <summary>True when every check passed.</summary>
    [JsonPropertyName("passed")] public bool Passed => Checks.All(c => c.Passed);

    /// <summary>Indented JSON.</summary>
    public string ToJson() => JsonSerializer.Serialize(this, new JsonSerializerOptions { WriteIndented = true });
}

/// <summary>Runs a patched model and its source in ONNX Runtime (CPU) on inputs generated from the model's input
/// metadata, and checks the patch contract: with nothing fed, logits and presents are bit-identical (graph optimizations
/// off) and within tolerance (default optimizations) over a prefill and decode steps at batch 1 and 2; an added vector
/// moves hidden_states.{L} by exactly that vector and leaves earlier layers untouched; projection and ablation agree
/// with a direct computation from hidden_states; per-row steering in a batch of 2.</summary>
public static class PatchVerifier
{
    /// <summary>Verifies <paramref name="patchedDirectory"/>.</summary>
    /// <exception cref="OnnxSteerException">Not a patched folder, source missing, or a model that cannot be run.</exception>
    public static VerificationReport Verify(string patchedDirectory, VerifyOptions? options = null)
    {
        options ??= new VerifyOptions();
        var patchedFull = Path.GetFullPath(patchedDirectory);
        if (File.Exists(patchedFull)) patchedFull = Path.GetDirectoryName(patchedFull)!;
        if (!Directory.Exists(patchedFull)) throw new OnnxSteerException(ErrorKind.NotFound, $"'{patchedDirectory}' does not exist.");
        var manifest = SteeringManifest.TryLoad(patchedFull)
            ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{patchedDirectory}' is not a patched model (no {SteeringContract.ManifestFileName}).");
        var sourceDir = Path.GetFullPath(options.SourceDirectory ?? manifest.Source.Path);
        if (!Directory.Exists(sourceDir))
            throw new OnnxSteerException(ErrorKind.NotFound, $"source model folder '{sourceDir}' not found; name the original model folder as the source.");
        // Both file names come from steering.json: each must stay inside its folder (the folders' one path rule).
        var sourceFile = new ModelFolder(sourceDir).Resolve(manifest.Source.ModelFile, "steering.json source.model_file");
        if (!File.Exists(sourceFile))
            throw new OnnxSteerException(ErrorKind.NotFound, $"source model '{sourceFile}' not found; name the original model folder as the source.");
        var patchedFile = new ModelFolder(patchedFull).Resolve(manifest.ModelFile, "steering.json model_file");
        if (!File.Exists(patchedFile)) throw new OnnxSteerException(ErrorKind.NotFound, $"'{patchedFile}' is missing.");

        var checks = new List<VerificationCheck>();
        checks.Add(SourceFingerprint(sourceDir, sourceFile, manifest.Source));

        foreach (var optimize in new[] { false, true })
        {
            using var source = VerificationSession.Open(sourceFile, optimize, options.Threads);
            using var patched = VerificationSession.Open(patchedFile, optimize, options.Threads);
            if (!optimize) CheckSameSignature(source, patched, sourceDir, patchedDirectory);
            // Before anything is sized by steering.json's numbers: the graph must have its inputs and outputs at that width.
            if (!optimize) manifest.CheckAgainstGraph(patched.Feedable, patched.Outputs, patchedFile);
            foreach (var batch in new[] { 1, 2 })
                checks.Add(CompareZeroSteer(source, patched, manifest, batch, optimize, options));
            if (!optimize) checks.AddRange(SteeringChecks(patched, manifest, options));
        }
        return new VerificationReport { PatchedDirectory = patchedFull, SourceDirectory = sourceDir, Checks = checks };
    }

    /// <summary>The source is the model that was patched: its graph's SHA-256 and, when steering.json has one, its
    /// sampled weights fingerprint (which tells apart two fine-tunes with the same graph).</summary>
    private static VerificationCheck SourceFingerprint(string sourceDir, string sourceFile, ManifestSource recorded)
    {
        static string Short(string h) => h[..Math.Min(16, h.Length)] + "…";
        var sha = ModelPatcher.Sha256Hex(sourceFile);
        if (sha != recorded.GraphSha256)
            return new VerificationCheck("source fingerprint", false, $"graph sha256 {Short(sha)} differs from steering.json's {Short(recorded.GraphSha256)}");
        if (recorded.WeightsFingerprint is not { } weightsRecorded)
            return new VerificationCheck("source fingerprint", true, $"graph sha256 {Short(sha)} matches steering.json (no weights fingerprint recorded)");
        var weights = WeightsFingerprint.Compute(sourceDir, OnnxModelFile.Load(sourceFile).ExternalDataFiles);
        return weights == weightsRecorded
            ? new VerificationCheck("source fingerprint", true, $"graph sha256 {Short(sha)} and sampled weights match steering.json")
            : new VerificationCheck("source fingerprint", false,
                $"graph sha256 matches but the weights differ ({(weights is null ? "none external" : Short(weights))} vs {Short(weightsRecorded)}): another model with the same graph");
    }

    /// <summary>A source whose inputs or outputs are not the patched model's (minus the steering names) is another model:
    /// every numeric check would fail or crash on it, so this is said once, naming the first difference.</summary>
    /// <exception cref="OnnxSteerException">(VerificationFailed) the signatures differ.</exception>
    private static void CheckSameSignature(VerificationSession source, VerificationSession patched, string sourceDir, string patchedDirectory)
    {
        static string Describe(NodeMetadata m) => $"{m.ElementDataType} [{string.Join(",", m.Dimensions)}]";
        foreach (var (kind, mine, theirs) in new[]
        {
            ("input", source.Inputs, patched.Inputs.Where(kv => !SteeringContract.IsSteeringInput(kv.Key)).ToDictionary()),
            ("output", source.Outputs, patched.Outputs.Where(kv => !SteeringContract.IsHiddenStateOutput(kv.Key)).ToDictionary()),
        })
        {
            var missing = theirs.Keys.Except(mine.Keys).Concat(mine.Keys.Except(theirs.Keys)).Order(StringComparer.Ordinal).FirstOrDefault();
            var reason = missing is not null
                ? $"{kind} '{missing}' is in {(mine.ContainsKey(missing) ? "the source" : "the patched model")} only"
                : mine.Where(kv => Describe(kv.Value) != Describe(theirs[kv.Key])).Select(kv => $"{kind} '{kv.Key}' is {Describe(kv.Value)} in the source and {Describe(theirs[kv.Key])} in the patched model").FirstOrDefault();
            if (reason is not null)
                throw new OnnxSteerException(ErrorKind.VerificationFailed,
                    $"the source '{sourceDir}' is not the model '{patchedDirectory}' was patched from: {reason}.");
        }
    }

    private static VerificationCheck CompareZeroSteer(VerificationSession source, VerificationSession patched, SteeringManifest manifest,
        int batch, bool optimize, VerifyOptions options)
    {
        var name = $"nothing fed = source (batch {batch}, prefill {options.PrefillLength} + {options.DecodeSteps} decode steps, {(optimize ? "default optimizations, within tolerance" : "optimizations off, bit-identical")})";
        var generator = new InputGenerator(source, options.Seed + batch);
        var outputs = source.Outputs.Keys.ToList();
        Dictionary<string, HostTensor>? previous = null;
        var pastLength = 0;
        var worst = 0.0;
        var compared = 0;
        var identical = true;
        for (var step = 0; step <= options.DecodeSteps; step++)
        {
            var length = step == 0 ? options.PrefillLength : 1;
            var inputs = generator.Inputs(batch, pastLength, length, previous);
            var expected = source.Run(inputs, outputs);
            var actual = patched.Run(WithZeroSteering(inputs, patched, manifest), outputs);
            foreach (var output in outputs)
            {
                var (a, e) = (actual[output], expected[output]);
                if (!a.Shape.SequenceEqual(e.Shape))
                    return new VerificationCheck(name, false, $"step {step}: '{output}' has shape [{string.Join(",", a.Shape)}], source [{string.Join(",", e.Shape)}]");
                if (!optimize)
                {
                    if (!a.Data.AsSpan().SequenceEqual(e.Data))
                        return new VerificationCheck(name, false, $"step {step}: '{output}' differs from the source (max |diff| {MaxDiff(a, e):G4})");
                }
                else if (!a.Data.AsSpan().SequenceEqual(e.Data))
                {
                    identical = false;
                    if (HostTensor.IsFloat(e.ElementType))
                    {
                        var diff = MaxDiff(a, e);
                        var scale = Math.Max(1.0, e.ToDoubles().Select(Math.Abs).DefaultIfEmpty(0).Max());
                        var tolerance = (e.ElementType == TensorElementType.Float ? 1e-3 : 2e-2) * scale;
                        worst = Math.Max(worst, diff / scale);
                        if (diff > tolerance)
                            return new VerificationCheck(name, false, $"step {step}: '{output}' max |diff| {diff:G4} exceeds {tolerance:G4}");
                    }
                }
                compared++;
            }
            previous = expected;
            pastLength += length;
        }
        // With default optimizations the contract is a tolerance (ONNX Runtime may fuse the source and the patched graph
        // differently); the patch aims at bit-identity there too, so say whether it held.
        return new VerificationCheck(name, true, !optimize ? $"{compared} outputs compared byte for byte"
            : identical ? $"{compared} outputs compared; bit-identical" : $"{compared} outputs compared; not bit-identical, max relative diff {worst:G3}");
    }

    private static IEnumerable<VerificationCheck> SteeringChecks(VerificationSession patched, SteeringManifest manifest, VerifyOptions options)
    {
        var exposed = manifest.ExposedLayers.ToHashSet();
        var layers = manifest.SteeredLayers.Where(exposed.Contains).ToList();
        if (layers.Count == 0)
        {
            yield return new VerificationCheck("steering", true, "skipped: no layer is both steered and exposed");
            yield break;
        }
        layers = Sample(layers, options.MaxSteeringLayers);
        var dtype = ElementTypeOf(manifest.ResidualDtype);
        var eps = HostTensor.Epsilon(dtype);
        var h = manifest.HiddenSize;
        var random = new Random(options.Seed);
        const int batch = 2;
        var generator = new InputGenerator(patched, options.Seed + 7);
        var inputs = generator.Inputs(batch, 0, options.PrefillLength, null);
        var hiddenNames = manifest.ExposedLayers.Select(SteeringContract.HiddenStateOutput).ToList();
        var baseline = patched.Run(WithZeroSteering(inputs, patched, manifest), hiddenNames);
        var baseValues = baseline.ToDictionary(kv => kv.Key, kv => kv.Value.ToDoubles());

        foreach (var layer in layers)
        {
            var h0 = baseValues[SteeringContract.HiddenStateOutput(layer)];
            var rms = Math.Sqrt(h0.Select(x => x * x).Average());
            var scale = Math.Max(1.0, rms);

            // Additive, one vector for all rows (steer_batch 1) and one per row (steer_batch 2).
            foreach (var rows in new[] { 1, 2 })
            {
                var vectors = Enumerable.Range(0, rows).Select(_ => RandomVector(random, h, scale * 0.5)).ToList();
                var add = HostTensor.FromDoubles(dtype, [rows, 1, h], vectors.SelectMany(v => v).ToList());
                var addValues = add.ToDoubles();
                var result = RunSteered(patched, manifest, inputs, hiddenNames, (SteeringContract.AddInput(layer), add));
                var name = $"add at layer {layer} (steer_batch {rows}): hidden_states.{layer} moves by the vector, earlier layers untouched";
                yield return CheckEarlierUntouched(name, layer, manifest, baseline, result)
                    ?? CheckExpected(name, result[SteeringContract.HiddenStateOutput(layer)].ToDoubles(), h0, h, options.PrefillLength,
                        (row, _, i, x) => x + addValues[(rows == 1 ? 0 : row) * h + i], eps);
            }

            // Projection to a target, and ablation (target 0), per row; a model patched for additive steering only has no
            // direction or target inputs.
            if (manifest.AdditiveOnly)
                yield return new VerificationCheck($"projection at layer {layer}", true, "skipped: patched for additive steering only (no direction or target inputs)");
            foreach (var target in manifest.AdditiveOnly ? [] : new[] { 2.5 * scale, 0.0 })
            {
                var units = Enumerable.Range(0, batch).Select(_ => Normalise(RandomVector(random, h, 1.0))).ToList();
                var direction = HostTensor.FromDoubles(dtype, [batch, 1, h], units.SelectMany(u => u).ToList());
                var dirValues = direction.ToDoubles();
                var targetTensor = HostTensor.FromDoubles(dtype, [batch, 1, 1], [target, target]);
                var t = targetTensor.ToDoubles()[0];
                var result = RunSteered(patched, manifest, inputs, hiddenNames,
                    (SteeringContract.DirectionInput(layer), direction), (SteeringContract.TargetInput(layer), targetTensor));
                var kind = target == 0 ? "ablation" : "projection";
                var name = $"{kind} at layer {layer} (per-row directions): matches x + (target - x·u)·u computed from hidden_states";
                var dots = new double[batch * options.PrefillLength];
                for (var r = 0; r < batch; r++)
                    for (var s = 0; s < options.PrefillLength; s++)
                    {
                        var dot = 0.0;
                        for (var i = 0; i < h; i++) dot += h0[(r * options.PrefillLength + s) * h + i] * dirValues[r * h + i];
                        dots[r * options.PrefillLength + s] = dot;
                    }
                yield return CheckEarlierUntouched(name, layer, manifest, baseline, result)
                    ?? CheckExpected(name, result[SteeringContract.HiddenStateOutput(layer)].ToDoubles(), h0, h, options.PrefillLength,
                        (row, pos, i, x) => x + (t - dots[row * options.PrefillLength + pos]) * dirValues[row * h + i], eps);
            }
        }
    }

    private static Dictionary<string, HostTensor> RunSteered(VerificationSession session, SteeringManifest manifest,
        IReadOnlyDictionary<string, HostTensor> inputs, IReadOnlyCollection<string> outputs, params (string Name, HostTensor Value)[] steering)
    {
        var feed = WithZeroSteering(inputs, session, manifest);
        foreach (var (name, value) in steering) feed[name] = value;
        // The three inputs of a layer share one symbolic batch (steer_batch_L), so feed the other two at the same batch.
        var dtype = ElementTypeOf(manifest.ResidualDtype);
        foreach (var layer in manifest.SteeredLayers)
        {
            var layerInputs = manifest.InputsOf(layer);
            var names = new[] { layerInputs.Add, layerInputs.Direction, layerInputs.Target };
            var fed = steering.FirstOrDefault(s => names.Contains(s.Name));
            if (fed.Name is null) continue;
            var rows = fed.Value.Shape[0];
            foreach (var name in names.OfType<string>())
                if (!steering.Any(s => s.Name == name))
                    feed[name] = HostTensor.Zeros(dtype, [rows, 1, name == layerInputs.Target ? 1 : manifest.HiddenSize]);
        }
        return session.Run(feed, outputs);
    }

    private static VerificationCheck? CheckEarlierUntouched(string name, int layer, SteeringManifest manifest,
        Dictionary<string, HostTensor> baseline, Dictionary<string, HostTensor> result)
    {
        foreach (var earlier in manifest.ExposedLayers.Where(l => l < layer))
        {
            var key = SteeringContract.HiddenStateOutput(earlier);
            if (!baseline[key].Data.AsSpan().SequenceEqual(result[key].Data))
                return new VerificationCheck(name, false, $"hidden_states.{earlier} changed although steering is at layer {layer}");
        }
        return null;
    }

    /// <summary>Compares the steered hidden state with expected(row, position, i, x) computed in double from the unsteered
    /// state; the tolerance allows the dtype's rounding of the operands and of the float32 projection.</summary>
    private static VerificationCheck CheckExpected(string name, double[] actual, double[] before, int h, int sequence,
        Func<int, int, int, double, double> expected, double eps)
    {
        var worst = 0.0;
        for (var k = 0; k < actual.Length; k++)
        {
            var row = k / (sequence * h);
            var pos = k / h % sequence;
            var i = k % h;
            var rowMax = 0.0;
            for (var j = 0; j < h; j++) rowMax = Math.Max(rowMax, Math.Abs(before[k - i + j]));
            var e = expected(row, pos, i, before[k]);
            var tolerance = 4 * eps * (Math.Abs(e) + Math.Abs(before[k]) + rowMax) + 1e-6;
            var diff = Math.Abs(actual[k] - e);
            worst = Math.Max(worst, diff / tolerance);
            if (diff > tolerance || double.IsNaN(actual[k]))
                return new VerificationCheck(name, false, $"row {row}, position {pos}, element {i}: got {actual[k]:G6}, expected {e:G6} (tolerance {tolerance:G3})");
        }
        return new VerificationCheck(name, true, $"{actual.Length} values within rounding (worst {worst:P0} of tolerance)");
    }

    internal static Dictionary<string, HostTensor> WithZeroSteering(IReadOnlyDictionary<string, HostTensor> inputs, VerificationSession session, SteeringManifest manifest)
    {
        var feed = new Dictionary<string, HostTensor>(inputs);
        if (manifest.SteerInput != SteerInputMode.Required) return feed;
        var dtype = ElementTypeOf(manifest.ResidualDtype);
        foreach (var layer in manifest.SteeredLayers)
        {
            var names = manifest.InputsOf(layer);
            feed.TryAdd(names.Add, HostTensor.Zeros(dtype, [1, 1, manifest.HiddenSize]));
            if (names.Direction is { } direction) feed.TryAdd(direction, HostTensor.Zeros(dtype, [1, 1, manifest.HiddenSize]));
            if (names.Target is { } target) feed.TryAdd(target, HostTensor.Zeros(dtype, [1, 1, 1]));
        }
        return feed;
    }

    internal static TensorElementType ElementTypeOf(string dtype) => dtype switch
    {
        "float32" => TensorElementType.Float,
        "float16" => TensorElementType.Float16,
        "bfloat16" => TensorElementType.BFloat16,
        "float64" => TensorElementType.Double,
        _ => throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"residual dtype '{dtype}' is not supported."),
    };

    private static List<int> Sample(List<int> layers, int max)
    {
        if (layers.Count <= max || max < 2) return layers.Take(Math.Max(1, max)).ToList();
        return Enumerable.Range(0, max).Select(i => layers[(int)Math.Round(i * (layers.Count - 1) / (double)(max - 1))]).Distinct().ToList();
    }

    private static double[] RandomVector(Random random, int n, double scale) =>
        Enumerable.Range(0, n).Select(_ => (random.NextDouble() * 2 - 1) * scale).ToArray();

    private static double[] Normalise(double[] v)
    {
        var norm = Math.Sqrt(v.Sum(x => x * x));
        return v.Select(x => x / norm).ToArray();
    }

    private static double MaxDiff(HostTensor a, HostTensor b)
    {
        if (!HostTensor.IsFloat(a.ElementType) && a.ElementType is not (TensorElementType.Int64 or TensorElementType.Int32)) return double.NaN;
        var (x, y) = (a.ToDoubles(), b.ToDoubles());
        var worst = 0.0;
        for (var i = 0; i < Math.Min(x.Length, y.Length); i++)
        {
            var d = Math.Abs(x[i] - y[i]);
            if (double.IsNaN(d)) return double.NaN;
            worst = Math.Max(worst, d);
        }
        return worst;
    }
}

/// <summary>Makes decoder inputs for a session from its <see cref="DecoderSignature"/>: token ids, attention mask, position
/// ids, token_type_ids, use_cache_branch, the KV cache (empty at prefill, the previous step's presents after). Steering
/// inputs are left out.</summary>
internal sealed class InputGenerator
{
    private readonly DecoderSignature _signature;
    private readonly Random _random;
    private readonly int _vocab;

    public InputGenerator(VerificationSession session, int seed)
    {
        _signature = DecoderSignature.Read(session.Inputs, session.Outputs, overridable: null, manifest: null, session.ModelFile, requireOutputs: true);
        _random = new Random(seed);
        // Random ids below the vocabulary (at most 1,000, so an embedding row past a small model's table is never asked for).
        _vocab = _signature.VocabularySize is int v ? Math.Min(v, 1000) : 100;
    }

    /// <summary>Inputs for a run over <paramref name="length"/> new tokens after <paramref name="pastLength"/> cached ones.</summary>
    public Dictionary<string, HostTensor> Inputs(int batch, int pastLength, int length, IReadOnlyDictionary<string, HostTensor>? previous)
    {
        var result = new Dictionary<string, HostTensor>();
        foreach (var input in _signature.Inputs)
        {
            var (name, type) = (input.Name, input.Type);
            switch (input.Role)
            {
                case DecoderInputRole.InputIds:
                    result[name] = HostTensor.Integer(type, [batch, length], _ => _random.Next(_vocab));
                    break;
                case DecoderInputRole.AttentionMask:
                    result[name] = HostTensor.Integer(type, [batch, pastLength + length], _ => 1);
                    break;
                case DecoderInputRole.PositionIds:
                    result[name] = HostTensor.Integer(type, [batch, length], i => pastLength + i % length);
                    break;
                case DecoderInputRole.TokenTypeIds:
                    result[name] = HostTensor.Integer(type, [batch, length], _ => 0);
                    break;
                case DecoderInputRole.UseCacheBranch:
                    result[name] = HostTensor.Integer(type, [1], _ => pastLength > 0 ? 1 : 0);
                    break;
                case DecoderInputRole.Cache:
                    var cache = input.Cache!;
                    result[name] = pastLength > 0 && previous is not null && previous.TryGetValue(cache.Output, out var cached)
                        ? cached
                        : HostTensor.Zeros(type, cache.Shape(batch, 0));
                    break;
                case DecoderInputRole.Steering:
                    break;
            }
        }
        return result;
    }
}
