using Google.Protobuf;
using OnnxSteer.Cli;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Tests.Reliability;

/// <summary>The deterministic mutation fuzzer shared by the CI sample and the long run. A case passes when its action
/// returns or throws <see cref="OnnxSteerException"/>; any other exception, or running past the per-case timeout
/// (a hang), is a failure. The number of cases scales with <c>ONNXSTEER_FUZZ_CASES</c> (per fixture and mutator family)
/// and the seed with <c>ONNXSTEER_FUZZ_SEED</c>, so the long run is the same test with bigger numbers.</summary>
internal static class Fuzz
{
    /// <summary>Cases per fixture and family: the CI default, or ONNXSTEER_FUZZ_CASES.</summary>
    public static int Cases(int ciDefault) =>
        int.TryParse(Environment.GetEnvironmentVariable("ONNXSTEER_FUZZ_CASES"), out var n) && n > 0 ? n : ciDefault;

    /// <summary>The base seed (ONNXSTEER_FUZZ_SEED, default 7).</summary>
    public static int Seed => int.TryParse(Environment.GetEnvironmentVariable("ONNXSTEER_FUZZ_SEED"), out var s) ? s : 7;

    /// <summary>Per-case limit; generous because CI machines are shared and slow.</summary>
    public static readonly TimeSpan CaseTimeout = TimeSpan.FromSeconds(60);

    /// <summary>Runs <paramref name="action"/> with a timeout; returns null on a clean outcome, else a failure description.</summary>
    public static string? RunCase(string name, Action action)
    {
        var task = Task.Factory.StartNew(action, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        try
        {
            if (!task.Wait(CaseTimeout)) return $"{name}: no result after {CaseTimeout.TotalSeconds} s (hang)";
            return null;
        }
        catch (AggregateException e) when (e.InnerException is OnnxSteerException)
        {
            return null;
        }
        catch (AggregateException e)
        {
            var inner = e.InnerException!;
            return $"{name}: {inner.GetType().FullName}: {inner.Message}\n{inner.StackTrace}";
        }
    }

    /// <summary>Byte-level mutations: bit flips, truncation, 0xFF runs (huge varints and lengths), inserted and
    /// duplicated ranges, zeroed ranges.</summary>
    public static (string Kind, byte[] Bytes) MutateBytes(byte[] source, Random rng)
    {
        var b = (byte[])source.Clone();
        switch (rng.Next(6))
        {
            case 0:
                var flips = 1 + rng.Next(8);
                for (var i = 0; i < flips; i++) b[rng.Next(b.Length)] ^= (byte)(1 << rng.Next(8));
                return ($"flip{flips}", b);
            case 1:
                return ("truncate", b[..rng.Next(b.Length)]);
            case 2:
                var at = rng.Next(b.Length);
                var run = Math.Min(1 + rng.Next(10), b.Length - at);
                for (var i = 0; i < run; i++) b[at + i] = 0xFF;
                return ("ff-run", b);
            case 3:
                var pos = rng.Next(b.Length);
                var junk = new byte[1 + rng.Next(16)];
                rng.NextBytes(junk);
                return ("insert", [.. b[..pos], .. junk, .. b[pos..]]);
            case 4:
                var start = rng.Next(b.Length);
                var len = Math.Min(1 + rng.Next(64), b.Length - start);
                var dest = rng.Next(b.Length);
                return ("duplicate-range", [.. b[..dest], .. b.AsSpan(start, len), .. b[dest..]]);
            default:
                var z = rng.Next(b.Length);
                var zl = Math.Min(1 + rng.Next(32), b.Length - z);
                Array.Clear(b, z, zl);
                return ("zero-range", b);
        }
    }

    private static readonly string[] HostileNumbers =
        ["-1", "-9223372036854775808", "9223372036854775807", "18446744073709551615", "99999999999999999999", "1e9", " 1", "0x10", ""];

    /// <summary>Structural (protobuf-level) mutations: huge or negative dims, lying external-data offsets/lengths and
    /// locations, cycles, duplicate names, missing inputs, removed nodes and initializers, wrong raw_data sizes.</summary>
    public static (string Kind, byte[] Bytes) MutateStructure(ModelProto source, Random rng)
    {
        var m = source.Clone();
        var g = m.Graph;
        string kind;
        switch (rng.Next(12))
        {
            case 0 when g.Initializer.Count > 0:
            {
                var t = g.Initializer[rng.Next(g.Initializer.Count)];
                if (t.Dims.Count == 0) t.Dims.Add(1);
                t.Dims[rng.Next(t.Dims.Count)] = rng.Next(3) switch { 0 => long.MaxValue, 1 => -1, _ => int.MaxValue + 7L };
                kind = "huge-dim-initializer";
                break;
            }
            case 1:
            {
                var infos = g.Input.Concat(g.Output).Where(v => v.Type?.TensorType?.Shape is not null && v.Type.TensorType.Shape.Dim.Count > 0).ToList();
                if (infos.Count == 0) goto default;
                var shape = infos[rng.Next(infos.Count)].Type.TensorType.Shape;
                shape.Dim[rng.Next(shape.Dim.Count)] = new TensorShapeProto.Types.Dimension { DimValue = rng.Next(2) == 0 ? long.MaxValue : -5 };
                kind = "huge-dim-io";
                break;
            }
            case 2:
            {
                var ext = GraphWalker.AllInitializers(g).Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).ToList();
                if (ext.Count == 0) goto default;
                var t = ext[rng.Next(ext.Count)];
                var key = rng.Next(2) == 0 ? "offset" : "length";
                var entry = t.ExternalData.FirstOrDefault(e => e.Key == key);
                if (entry is null) t.ExternalData.Add(entry = new StringStringEntryProto { Key = key });
                entry.Value = HostileNumbers[rng.Next(HostileNumbers.Length)];
                kind = $"external-{key}";
                break;
            }
            case 3:
            {
                var ext = GraphWalker.AllInitializers(g).Where(t => t.DataLocation == TensorProto.Types.DataLocation.External).ToList();
                if (ext.Count == 0) goto default;
                var loc = ext[rng.Next(ext.Count)].ExternalData.First(e => e.Key == "location");
                loc.Value = new[] { "/etc/passwd", "../model.onnx.data", "a/../../x", "C:\\x", "\\\\server\\x", "sub/../model.onnx.data", "missing.bin", "", "x\0y", "." }[rng.Next(10)];
                kind = "external-location";
                break;
            }
            case 4 when g.Node.Count > 2:
            {
                // A cycle: an early node consumes a later node's output (and, half of the time, the later node the earlier's).
                var i = rng.Next(g.Node.Count - 1);
                var j = i + 1 + rng.Next(g.Node.Count - i - 1);
                if (g.Node[i].Input.Count == 0 || g.Node[j].Output.Count == 0) goto default;
                g.Node[i].Input[rng.Next(g.Node[i].Input.Count)] = g.Node[j].Output[0];
                if (rng.Next(2) == 0 && g.Node[j].Input.Count > 0) g.Node[j].Input[0] = g.Node[i].Output[0];
                kind = "cycle";
                break;
            }
            case 5 when g.Node.Count > 1:
            {
                // Duplicate producer: a second node writes a value another node already writes.
                var a = g.Node[rng.Next(g.Node.Count)];
                var b = g.Node[rng.Next(g.Node.Count)];
                if (a == b || a.Output.Count == 0 || b.Output.Count == 0) goto default;
                b.Output[0] = a.Output[0];
                kind = "duplicate-output";
                break;
            }
            case 6 when g.Initializer.Count > 1:
            {
                g.Initializer[rng.Next(g.Initializer.Count)].Name = g.Initializer[rng.Next(g.Initializer.Count)].Name;
                kind = "duplicate-initializer";
                break;
            }
            case 7 when g.Input.Count > 0:
            {
                if (rng.Next(2) == 0) g.Input.RemoveAt(rng.Next(g.Input.Count));
                else g.Input.Add(g.Input[rng.Next(g.Input.Count)].Clone());
                kind = "input-missing-or-duplicated";
                break;
            }
            case 8 when g.Node.Count > 0:
            {
                var n = g.Node[rng.Next(g.Node.Count)];
                if (rng.Next(2) == 0 || n.Input.Count == 0) g.Node.Remove(n);
                else n.Input[rng.Next(n.Input.Count)] = "does_not_exist";
                kind = "node-removed-or-dangling-input";
                break;
            }
            case 9 when g.Initializer.Count > 0:
            {
                g.Initializer.RemoveAt(rng.Next(g.Initializer.Count));
                kind = "initializer-removed";
                break;
            }
            case 10:
            {
                var inline = g.Initializer.Where(t => t.DataLocation != TensorProto.Types.DataLocation.External).ToList();
                if (inline.Count == 0) goto default;
                var t = inline[rng.Next(inline.Count)];
                t.RawData = ByteString.CopyFrom(new byte[rng.Next(3)]);
                kind = "raw-data-size";
                break;
            }
            case 11 when g.Output.Count > 0:
            {
                var o = g.Output[rng.Next(g.Output.Count)];
                o.Name = rng.Next(2) == 0 ? "hidden_states.0" : g.Output[rng.Next(g.Output.Count)].Name;
                kind = "output-renamed";
                break;
            }
            default:
            {
                var n = g.Node.Count > 0 ? g.Node[rng.Next(g.Node.Count)] : null;
                if (n is null) { kind = "noop"; break; }
                n.OpType = new[] { "Add", "MatMul", "If", "Loop", "", "SkipSimplifiedLayerNormalization", "GroupQueryAttention" }[rng.Next(7)];
                kind = "op-type";
                break;
            }
        }
        return (kind, m.ToByteArray());
    }

    /// <summary>Runs inspect and, when it succeeds, patch through the CLI on <paramref name="modelDir"/>; a patched output
    /// must load again. Exit codes must be 0 or an <see cref="ErrorKind"/>; errors one stderr line.</summary>
    public static void InspectAndPatch(string modelDir, string outDir)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(["inspect", modelDir, "--json"], o, e);
        CheckExit(code, e.ToString(), "inspect");
        if (code != 0) return;
        (o, e) = (new StringWriter(), new StringWriter());
        code = CliApp.Run(["patch", modelDir, "-o", outDir, "--json", "--overwrite"], o, e);
        CheckExit(code, e.ToString(), "patch");
        if (code == 0) OnnxModelFile.Load(outDir);
        else if (Directory.Exists(outDir)) throw new InvalidOperationException("patch failed but left its output folder");
    }

    private static void CheckExit(int code, string stderr, string verb)
    {
        if (code == 0) return;
        if (!Enum.IsDefined((ErrorKind)code)) throw new InvalidOperationException($"{verb} exited {code}: {stderr}");
        var lines = stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        if (lines.Length != 1 || !lines[0].StartsWith("onnxsteer: error: ", StringComparison.Ordinal))
            throw new InvalidOperationException($"{verb} exited {code} without the one-line error: {stderr}");
    }
}
