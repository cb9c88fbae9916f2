namespace OnnxSteer.Onnx;

/// <summary>Writes files and folders so that readers see either nothing or the complete result:
/// content goes to a temporary sibling and is renamed into place at the end.</summary>
public static class AtomicFile
{
    /// <summary>Writes a file atomically, creating its folder if needed; on any failure the temporary file is removed and
    /// the target is untouched. Error messages name <paramref name="path"/>, never the temporary file.</summary>
    public static void Write(string path, Action<Stream> write)
    {
        var full = Path.GetFullPath(path);
        var dir = Path.GetDirectoryName(full)!;
        if (Directory.Exists(full)) throw new OnnxSteerException(ErrorKind.Output, $"output '{path}' is a folder.");
        try { Directory.CreateDirectory(dir); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.Output, $"cannot create the folder of '{path}': {e.Message}", e); }
        var tmp = Path.Combine(dir, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
        RemoveStaleSiblings(dir, Path.GetFileName(full));
        try
        {
            using (var stream = new FileStream(tmp, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 16))
            {
                write(stream);
                stream.Flush(flushToDisk: true);
            }
            File.Move(tmp, full, overwrite: true);
        }
        catch (Exception e)
        {
            TryDelete(tmp);
            if (e is IOException or UnauthorizedAccessException)
                throw new OnnxSteerException(ErrorKind.Output, $"cannot write '{path}': {e.Message.Replace(tmp, full, StringComparison.Ordinal)}", e);
            throw;
        }
    }

    /// <summary>Creates a temporary folder next to <paramref name="finalDirectory"/>, lets <paramref name="fill"/> write into it,
    /// then renames it to <paramref name="finalDirectory"/>. With <paramref name="overwrite"/> an existing folder is replaced
    /// only after the new one is complete.</summary>
    public static void WriteDirectory(string finalDirectory, bool overwrite, Action<string> fill)
    {
        var full = Path.GetFullPath(finalDirectory.TrimEnd('/', '\\'));
        if (File.Exists(full))
            throw new OnnxSteerException(ErrorKind.Output, $"output '{finalDirectory}' exists and is a file.");
        if (Directory.Exists(full) && !overwrite)
            throw new OnnxSteerException(ErrorKind.Output, $"output folder '{finalDirectory}' already exists and replacing it was not asked for.");
        var parent = Path.GetDirectoryName(full)!;
        try { Directory.CreateDirectory(parent); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.Output, $"cannot create '{parent}': {e.Message}", e); }
        var tmp = Path.Combine(parent, $".{Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.partial");
        RemoveStaleSiblings(parent, Path.GetFileName(full));
        try
        {
            Directory.CreateDirectory(tmp);
            fill(tmp);
            if (Directory.Exists(full))
            {
                var old = tmp + ".old";
                Directory.Move(full, old);
                Directory.Move(tmp, full);
                Directory.Delete(old, recursive: true);
            }
            else
            {
                Directory.Move(tmp, full);
            }
        }
        catch (Exception e)
        {
            TryDeleteDirectory(tmp);
            if (e is IOException or UnauthorizedAccessException)
                throw new OnnxSteerException(ErrorKind.Output, $"cannot write '{finalDirectory}': {e.Message.Replace(tmp, full, StringComparison.Ordinal)}", e);
            throw;
        }
    }

    /// <summary>A process killed mid-write (SIGKILL, power loss) cannot clean up after itself, so the next write of the
    /// same target removes the temporary siblings (<c>.{name}.{pid}.{guid}.tmp|.partial|.partial.old</c>) left by
    /// processes that are no longer running. Siblings of live processes (a concurrent writer) are left alone.</summary>
    private static void RemoveStaleSiblings(string directory, string name)
    {
        string[] entries;
        try { entries = Directory.GetFileSystemEntries(directory, $".{name}.*"); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return; }
        foreach (var entry in entries)
        {
            var rest = Path.GetFileName(entry)[(name.Length + 2)..].Split('.');
            if (rest.Length < 3 || !int.TryParse(rest[0], System.Globalization.NumberStyles.None, System.Globalization.CultureInfo.InvariantCulture, out var pid)
                || rest[1].Length != 32 || rest[2] is not ("tmp" or "partial") || IsRunning(pid))
                continue;
            if (Directory.Exists(entry)) TryDeleteDirectory(entry); else TryDelete(entry);
        }
    }

    private static bool IsRunning(int pid)
    {
        if (pid == Environment.ProcessId) return true;
        try
        {
            using var process = System.Diagnostics.Process.GetProcessById(pid);
            return !process.HasExited;
        }
        catch (ArgumentException) { return false; }
        catch (InvalidOperationException) { return false; }
    }

    private static void TryDelete(string path)
    {
        try { if (File.Exists(path)) File.Delete(path); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }

    private static void TryDeleteDirectory(string path)
    {
        try { if (Directory.Exists(path)) Directory.Delete(path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}
