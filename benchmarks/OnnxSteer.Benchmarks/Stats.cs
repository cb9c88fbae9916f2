using System.Globalization;

namespace OnnxSteer.Benchmarks;

/// <summary>Median and spread of repeated measurements (the machine is shared, so the median is what we report and
/// min-max shows how noisy the run was).</summary>
internal readonly record struct Summary(double Median, double Min, double Max, int Count)
{
    public static Summary Of(IEnumerable<double> values)
    {
        var v = values.Order().ToArray();
        if (v.Length == 0) return new Summary(double.NaN, double.NaN, double.NaN, 0);
        double median = v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        return new Summary(median, v[0], v[^1], v.Length);
    }

    /// <summary>"12.3 (11.9-13.0)".</summary>
    public string Format(string format = "F2") =>
        Count == 0 ? "-" : $"{Median.ToString(format, CultureInfo.InvariantCulture)} ({Min.ToString(format, CultureInfo.InvariantCulture)}-{Max.ToString(format, CultureInfo.InvariantCulture)})";
}

/// <summary>What the numbers were measured on.</summary>
internal static class Machine
{
    /// <summary>1-minute load average from /proc/loadavg ("n/a" elsewhere).</summary>
    public static string Load()
    {
        try { return File.ReadAllText("/proc/loadavg").Split(' ')[0]; }
        catch (IOException) { return "n/a"; }
        catch (UnauthorizedAccessException) { return "n/a"; }
    }

    /// <summary>Resident and peak resident memory of this process in MiB (/proc/self/status VmRSS, VmHWM; NaN elsewhere).</summary>
    public static (double Rss, double Peak) Memory()
    {
        double Read(string[] lines, string key) => lines.FirstOrDefault(l => l.StartsWith(key, StringComparison.Ordinal)) is { } l
            ? long.Parse(l[key.Length..].Trim().Split(' ')[0], CultureInfo.InvariantCulture) / 1024.0 : double.NaN;
        try
        {
            var lines = File.ReadAllLines("/proc/self/status");
            return (Read(lines, "VmRSS:"), Read(lines, "VmHWM:"));
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return (double.NaN, double.NaN); }
    }

    /// <summary>Resets the peak (VmHWM) to the current resident size (Linux: 5 to /proc/self/clear_refs), so the next
    /// <see cref="Memory"/> reads the peak since now; false where that is not possible.</summary>
    public static bool ResetPeak()
    {
        try { File.WriteAllText("/proc/self/clear_refs", "5"); return true; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return false; }
    }

    public static double LoadValue() => double.TryParse(Load(), NumberStyles.Float, CultureInfo.InvariantCulture, out var v) ? v : double.NaN;

    public static string Describe()
    {
        string cpu = "unknown CPU";
        try
        {
            cpu = File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? cpu;
        }
        catch (IOException) { }
        string mem = "";
        try
        {
            var line = File.ReadLines("/proc/meminfo").First(l => l.StartsWith("MemTotal", StringComparison.Ordinal));
            var kb = long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture);
            mem = $", {kb / 1024 / 1024.0:F1} GiB RAM";
        }
        catch (Exception e) when (e is IOException or InvalidOperationException or FormatException) { }
        var ort = typeof(Microsoft.ML.OnnxRuntime.InferenceSession).Assembly.GetName().Version;
        return $"{cpu}, {Environment.ProcessorCount} logical cores{mem}; {System.Runtime.InteropServices.RuntimeInformation.OSDescription}; " +
               $".NET {Environment.Version}; ONNX Runtime (managed) {ort}";
    }

    /// <summary>Bytes this process read (rchar: every read syscall, page cache or not) and from storage (read_bytes).</summary>
    public static (long RChar, long ReadBytes) IoCounters()
    {
        long rchar = -1, readBytes = -1;
        try
        {
            foreach (var line in File.ReadLines("/proc/self/io"))
            {
                var parts = line.Split(':', 2);
                if (parts.Length != 2) continue;
                var value = long.Parse(parts[1].Trim(), CultureInfo.InvariantCulture);
                if (parts[0] == "rchar") rchar = value;
                else if (parts[0] == "read_bytes") readBytes = value;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { }
        return (rchar, readBytes);
    }

    /// <summary>Resident set size in bytes (VmRSS), or the working set where /proc is missing.</summary>
    public static long Rss()
    {
        try
        {
            foreach (var line in File.ReadLines("/proc/self/status"))
                if (line.StartsWith("VmRSS:", StringComparison.Ordinal))
                    return long.Parse(line.Split(' ', StringSplitOptions.RemoveEmptyEntries)[1], CultureInfo.InvariantCulture) * 1024;
        }
        catch (Exception e) when (e is IOException or FormatException) { }
        return Environment.WorkingSet;
    }
}

/// <summary>Samples RSS on a background thread and keeps the peak (VmHWM cannot be reset between runs).</summary>
internal sealed class PeakRss : IDisposable
{
    private readonly Thread _thread;
    private volatile bool _stop;
    private long _peak;

    public PeakRss()
    {
        _peak = Machine.Rss();
        _thread = new Thread(() =>
        {
            while (!_stop)
            {
                var r = Machine.Rss();
                if (r > Interlocked.Read(ref _peak)) Interlocked.Exchange(ref _peak, r);
                Thread.Sleep(5);
            }
        }) { IsBackground = true, Name = "peak-rss" };
        _thread.Start();
    }

    public long Peak => Interlocked.Read(ref _peak);

    public void Dispose()
    {
        _stop = true;
        _thread.Join();
    }
}
