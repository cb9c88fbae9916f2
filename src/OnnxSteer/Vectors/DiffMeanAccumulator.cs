namespace OnnxSteer.Vectors;

/// <summary>Streaming diff-mean statistics over pairs, for several layers at once. Memory is flat in the number of pairs:
/// per layer it keeps the running sums of h+ and h− in double precision. Separability needs every pair's difference
/// projected on the final direction, which is known only at the end, so each pair's h+ − h− is appended (float32) to a
/// temporary spill file, nameless while open on Unix and deleted on close on Windows, read back once by <see cref="Finish"/>.</summary>
internal sealed class DiffMeanAccumulator : IDisposable
{
    private readonly IReadOnlyList<int> _layers;
    private readonly int _hidden;
    private readonly double[][] _sumWith;
    private readonly double[][] _sumWithout;
    private readonly FileStream _spill;
    private readonly byte[] _row;

    public DiffMeanAccumulator(IReadOnlyList<int> layers, int hidden, string? spillDirectory = null)
    {
        _layers = layers;
        _hidden = hidden;
        _sumWith = layers.Select(_ => new double[hidden]).ToArray();
        _sumWithout = layers.Select(_ => new double[hidden]).ToArray();
        _row = new byte[hidden * sizeof(float)];
        var path = Path.Combine(spillDirectory ?? Path.GetTempPath(), $"onnxsteer-extract-{Environment.ProcessId}-{Guid.NewGuid():N}.tmp");
        _spill = new FileStream(path, FileMode.CreateNew, FileAccess.ReadWrite, FileShare.None, 1 << 16, FileOptions.DeleteOnClose);
        // Unix only emulates DeleteOnClose (the name goes at Dispose), so a process killed or force-exited mid-extraction
        // (a second Ctrl+C ends with _exit) would leave the file behind: drop the name now, the open handle keeps the
        // data. Windows deletes on close itself, even when the process dies.
        if (!OperatingSystem.IsWindows()) File.Delete(path);
    }

    /// <summary>Number of pairs added so far.</summary>
    public int Count { get; private set; }

    /// <summary>Adds one pair: the last-token states of the with- and without-prompt, one span per layer (in the order of
    /// the layers given to the constructor), each <c>hidden</c> long.</summary>
    public void Add(IReadOnlyList<float[]> with, IReadOnlyList<float[]> without)
    {
        for (var k = 0; k < _layers.Count; k++)
        {
            var a = with[k];
            var b = without[k];
            VectorMath.CheckFinite(a, $"hidden_states.{_layers[k]} (with-prompt of pair {Count + 1})");
            VectorMath.CheckFinite(b, $"hidden_states.{_layers[k]} (without-prompt of pair {Count + 1})");
            var sw = _sumWith[k];
            var so = _sumWithout[k];
            for (var i = 0; i < _hidden; i++)
            {
                sw[i] += a[i];
                so[i] += b[i];
                BitConverter.TryWriteBytes(_row.AsSpan(i * sizeof(float)), a[i] - b[i]);
            }
            _spill.Write(_row);
        }
        Count++;
    }

    /// <summary>Computes u, u_hat, |u|, z_bar, the mean projection of the without-prompts and separability per layer.</summary>
    public IReadOnlyDictionary<int, VectorLayer> Finish()
    {
        if (Count == 0) throw new OnnxSteerException(ErrorKind.InvalidData, "no pairs were given.");
        var result = new SortedDictionary<int, VectorLayer>();
        var directions = new float[_layers.Count][];
        var partial = new VectorLayer[_layers.Count];
        for (var k = 0; k < _layers.Count; k++)
        {
            var u = new float[_hidden];
            for (var i = 0; i < _hidden; i++) u[i] = (float)((_sumWith[k][i] - _sumWithout[k][i]) / Count);
            var (direction, norm) = VectorMath.Normalize(u, $"the mean difference at layer {_layers[k]} (with and without prompts give identical states?)");
            double zw = 0, zo = 0;
            for (var i = 0; i < _hidden; i++)
            {
                zw += _sumWith[k][i] * direction[i];
                zo += _sumWithout[k][i] * direction[i];
            }
            directions[k] = direction;
            partial[k] = new VectorLayer
            {
                Layer = _layers[k], Direction = direction, MeanDiff = u, Norm = (float)norm, ZBar = zw / Count, MeanProjectionWithout = zo / Count,
            };
        }

        var separated = new int[_layers.Count];
        _spill.Flush();
        _spill.Position = 0;
        for (var p = 0; p < Count; p++)
        {
            for (var k = 0; k < _layers.Count; k++)
            {
                _spill.ReadExactly(_row);
                double dot = 0;
                var d = directions[k];
                for (var i = 0; i < _hidden; i++) dot += (double)BitConverter.ToSingle(_row, i * sizeof(float)) * d[i];
                if (dot > 0) separated[k]++;
            }
        }
        for (var k = 0; k < _layers.Count; k++)
            result[_layers[k]] = partial[k] with { Separability = (double)separated[k] / Count };
        return result;
    }

    public void Dispose() => _spill.Dispose();
}
