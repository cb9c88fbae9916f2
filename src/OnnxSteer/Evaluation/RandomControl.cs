using OnnxSteer.Vectors;

namespace OnnxSteer.Evaluation;

/// <summary>The random-direction control: for every vector and layer that the steering uses, a direction drawn at
/// random (Gaussian, normalised; fixed seed) with the same norm |u_L| and the same z̄, stored under
/// <c>random.&lt;name&gt;</c>. Steering along it with the same layer, mode and weight shows what an intervention of the
/// same size does when it carries no instruction: a gain that the random direction also gives is not the instruction's.
/// For projection, keeping z̄ moves the random component to the value the real direction's component is moved to.</summary>
internal static class RandomControl
{
    /// <summary>The seed the evaluation uses unless told otherwise.</summary>
    public const int DefaultSeed = 20251205;

    /// <summary>Prefix of the control vectors' names.</summary>
    public const string Prefix = "random.";

    /// <summary>The control op of <paramref name="op"/>: the same layer, mode and weight on the random vector.</summary>
    public static SteerOp Map(SteerOp op) => op with { Vector = Prefix + op.Vector };

    /// <summary>Builds the random counterpart of every (vector, layer) of <paramref name="ops"/> from <paramref name="source"/>.
    /// The direction of one (name, layer) depends only on the seed, the name and the layer, so that adding instructions to
    /// a run does not change the others' controls.</summary>
    /// <exception cref="OnnxSteerException">A vector or layer that <paramref name="source"/> lacks (InvalidVector, UnsupportedModel).</exception>
    public static IReadOnlyList<InstructionVector> Build(IEnumerable<SteerOp> ops, Func<string, InstructionVector> source, int seed = DefaultSeed)
    {
        var vectors = new List<InstructionVector>();
        foreach (var group in ops.Select(o => (o.Vector, o.Layer)).Distinct().GroupBy(o => o.Vector).OrderBy(g => g.Key, StringComparer.Ordinal))
        {
            var original = source(group.Key);
            var layers = new SortedDictionary<int, VectorLayer>();
            foreach (var layer in group.Select(g => g.Layer).Distinct().Order())
            {
                var real = original.Layer(layer);
                var direction = RandomUnit(real.Direction.Length, Seed(seed, group.Key, layer));
                layers[layer] = new VectorLayer
                {
                    Layer = layer,
                    Direction = direction,
                    MeanDiff = [.. direction.Select(x => (float)(x * real.Norm))],
                    Norm = real.Norm,
                    ZBar = real.ZBar,
                };
            }
            var v = new InstructionVector { Name = Prefix + group.Key, Method = $"random direction, seed {seed}, norm of '{group.Key}'", Layers = layers };
            v.Validate();
            vectors.Add(v);
        }
        return vectors;
    }

    /// <summary>A folder holding copies of the vector file or folder <paramref name="vectorsPath"/> and
    /// <c>random-control.safetensors</c> with the control vectors of <paramref name="ops"/>; what an evaluation with the
    /// control opens instead of <paramref name="vectorsPath"/>. The caller deletes <paramref name="folder"/>.</summary>
    public static void PrepareFolder(string vectorsPath, IReadOnlyList<SteerOp> ops, string folder, int seed = DefaultSeed)
    {
        Directory.CreateDirectory(folder);
        var files = Directory.Exists(vectorsPath)
            ? Directory.GetFiles(vectorsPath, "*.safetensors").Concat(Directory.GetFiles(vectorsPath, "*.gguf")).ToList()
            : [vectorsPath];
        var loaded = new Dictionary<string, InstructionVector>(StringComparer.Ordinal);
        ModelFingerprint? model = null;
        foreach (var f in files)
        {
            File.Copy(f, Path.Combine(folder, Path.GetFileName(f)), overwrite: true);
            var file = InstructionVectorFile.Load(f);
            model ??= file.Model;
            foreach (var v in file.Vectors) loaded.TryAdd(v.Name, v);
        }
        if (ops.Count == 0) return;
        // A header op steers with the vector's header-position vectors too: each gets its own random counterpart, named so
        // that the control op (random.NAME) finds them as its header positions (random.NAME.header-K).
        var expanded = ops.Concat(ops.Where(o => o.Mode == SteerMode.Header).SelectMany(o =>
            Enumerable.Range(2, OnnxSteer.Contract.HeaderVectors.MaxPositions - 1)
                .Select(k => OnnxSteer.Contract.HeaderVectors.Name(o.Vector, k))
                .TakeWhile(loaded.ContainsKey)
                .Select(name => o with { Vector = name }))).ToList();
        var random = Build(expanded, name => loaded.TryGetValue(name, out var v) ? v
            : throw new OnnxSteerException(ErrorKind.InvalidVector, $"no vector named '{name}' for the random-direction control."), seed);
        InstructionVectorFile.Create(random, model).Save(Path.Combine(folder, "random-control.safetensors"));
    }

    private static int Seed(int seed, string name, int layer)
    {
        // FNV-1a: string.GetHashCode differs between processes, which would make the control irreproducible.
        var h = 2166136261u;
        foreach (var ch in $"{seed}\u0001{name}\u0001{layer}") h = (h ^ ch) * 16777619u;
        return (int)h;
    }

    private static float[] RandomUnit(int width, int seed)
    {
        var rng = new Random(seed);
        var v = new double[width];
        for (var i = 0; i < width; i++)
        {
            // Box-Muller: a Gaussian vector's direction is uniform on the sphere.
            var u1 = 1.0 - rng.NextDouble();
            v[i] = Math.Sqrt(-2 * Math.Log(u1)) * Math.Cos(2 * Math.PI * rng.NextDouble());
        }
        var norm = Math.Sqrt(v.Sum(x => x * x));
        return [.. v.Select(x => (float)(x / norm))];
    }
}
