using System.Runtime.InteropServices;
using OnnxSteer.Onnx;

namespace OnnxSteer.Cli;

/// <summary>SIGINT and SIGTERM for the CLI process. System.CommandLine's own handler is switched off
/// (<c>ProcessTerminationTimeout = null</c>): it cancelled a token source that a second signal could find disposed
/// (exit 134, "InvalidOperationException ... ProcessTerminationHandler.Cancel"), and it cannot stop work that does not
/// look at the token (a model load, a template render, a blocking read). Here the first signal cancels the token the
/// verbs receive (ONNX Runtime runs are terminated through it) and starts a grace period; if the verb has not returned
/// when it ends, or at a second signal, the process removes the temporary files of writes in progress and exits at
/// once. Either way the exit code is 130 for SIGINT and 143 for SIGTERM (128 + the signal number), and no output is
/// left half-written: outputs are renamed into place only when complete (<see cref="AtomicFile"/>).</summary>
internal sealed class TerminationSignals : IDisposable
{
    /// <summary>How long a verb has to notice the cancellation and unwind before the process exits without it.</summary>
    public static readonly TimeSpan Grace = TimeSpan.FromMilliseconds(600);

    private readonly CancellationTokenSource _cts = new();
    private readonly List<PosixSignalRegistration> _registrations = [];
    private readonly ManualResetEventSlim _finished = new();
    private readonly ManualResetEventSlim _now = new();
    private readonly TextWriter _stderr;
    private int _exitCode;
    private int _exiting;
    private readonly Lock _report = new();
    private bool _reported;

    /// <summary>How long the forced exit waits for a "cancelled" line another thread is writing (a stderr pipe nobody
    /// reads must not keep the process alive).</summary>
    internal static readonly TimeSpan ReportWait = TimeSpan.FromSeconds(1);

    internal TerminationSignals(TextWriter stderr) => _stderr = stderr;

    /// <summary>Registers the handlers; dispose to remove them.</summary>
    public static TerminationSignals Register(TextWriter stderr)
    {
        var signals = new TerminationSignals(stderr);
        foreach (var signal in new[] { PosixSignal.SIGINT, PosixSignal.SIGTERM })
        {
            try { signals._registrations.Add(PosixSignalRegistration.Create(signal, signals.Handle)); }
            catch (PlatformNotSupportedException) { }
        }
        return signals;
    }

    /// <summary>Cancelled at the first signal.</summary>
    public CancellationToken Token => _cts.Token;

    /// <summary>130 (SIGINT) or 143 (SIGTERM) once a signal has arrived; null before.</summary>
    public int? ExitCode => Volatile.Read(ref _exitCode) is var c and > 0 ? c : null;

    /// <summary>Prints the one "cancelled" line (once, whoever gets there first: the verb unwinding or the forced exit).
    /// The line is claimed and written under one lock: a second signal's forced exit that finds the verb's thread
    /// writing it waits (up to <see cref="ReportWait"/>) instead of ending the process between the claim and the write,
    /// which left stderr empty.</summary>
    public void ReportCancelled(TextWriter stderr)
    {
        if (!_report.TryEnter(ReportWait)) return;
        try
        {
            if (_reported) return;
            _reported = true;
            stderr.WriteLine("onnxsteer: cancelled");
            stderr.Flush();
        }
        catch (IOException) { } // stderr closed: nothing to tell
        catch (ObjectDisposedException) { }
        finally { _report.Exit(); }
    }

    /// <summary>The verb has returned: the grace period need not end in a forced exit.</summary>
    public void MarkFinished() => _finished.Set();

    // Runs on the runtime's signal thread: it must never throw, and it only records and hands off.
    private void Handle(PosixSignalContext context)
    {
        context.Cancel = true; // the runtime's default would end the process without our cleanup
        var code = context.Signal == PosixSignal.SIGTERM ? 143 : 130;
        if (Interlocked.CompareExchange(ref _exitCode, code, 0) == 0)
            new Thread(Watch) { IsBackground = true, Name = "onnxsteer signal" }.Start();
        else
            _now.Set(); // a second signal: stop waiting
    }

    private void Watch()
    {
        try { _cts.Cancel(); }
        catch (AggregateException) { } // a cancellation callback failed; the forced exit below still comes
        catch (ObjectDisposedException) { }
        WaitHandle.WaitAny([_finished.WaitHandle, _now.WaitHandle], Grace);
        if (_finished.IsSet && !_now.IsSet) return;
        ExitNow();
    }

    /// <summary>Removes in-progress temporaries, prints the line and ends the process without unwinding the threads that
    /// are still busy (their native code may be mid-run; the C runtime's exit handlers are not run either).</summary>
    private void ExitNow()
    {
        if (Interlocked.Exchange(ref _exiting, 1) != 0) return;
        AtomicFile.AbandonInFlight();
        ReportCancelled(_stderr);
        var code = ExitCode ?? 130;
        if (OperatingSystem.IsWindows()) Environment.Exit(code);
        try { Console.Out.Flush(); } catch (IOException) { }
        ImmediateExit(code);
    }

    [DllImport("libc", EntryPoint = "_exit")]
    private static extern void ImmediateExit(int status);

    /// <summary>Removes the handlers.</summary>
    public void Dispose()
    {
        foreach (var r in _registrations) r.Dispose();
        // The token source is left alone: a signal thread may still be cancelling it, and it holds no native resources.
    }
}
