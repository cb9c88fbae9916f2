using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;

namespace OnnxSteer.Onnx;

/// <summary>The one rule for every path a model folder names (steering.json's <c>model_file</c>, genai_config.json's
/// <c>decoder.filename</c>, external-data locations, template and tokenizer files) and for the well-known files it
/// holds: the path must be relative, contain no <c>..</c>, and resolve inside the folder, also after following
/// symlinks; otherwise it is refused with <see cref="ErrorKind.UnsafePath"/> before anything is opened. Files are read
/// only up to a size limit, and a file that reports no length (empty, a FIFO, a device) is never opened, so a hostile
/// folder can neither point outside itself nor block or exhaust a reader.</summary>
public sealed class ModelFolder
{
    /// <summary>Default read limit for a JSON or text file of a model folder (config files, templates; the largest
    /// tokenizer.json files on the Hugging Face hub are around 35 MB).</summary>
    public const long DefaultMaxBytes = 256L << 20;

    /// <summary>Files the tokenizer loader may read.</summary>
    public static readonly IReadOnlyList<string> TokenizerFileNames =
        ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model", "vocab.json", "merges.txt"];

    /// <summary>Files the chat template may come from.</summary>
    public static readonly IReadOnlyList<string> TemplateFileNames = ["tokenizer_config.json", "chat_template.jinja", "chat_template.json"];

    private readonly string _rootReal;

    /// <summary>A model folder; <paramref name="directory"/> itself may be a symlink (what it points to is the folder).</summary>
    public ModelFolder(string directory)
    {
        Root = Path.GetFullPath(directory.Length == 0 ? "." : directory);
        if (Root.Length > 1) Root = Root.TrimEnd(Path.DirectorySeparatorChar, Path.AltDirectorySeparatorChar);
        _rootReal = ResolveReal(Root, Root);
    }

    /// <summary>The folder's full path.</summary>
    public string Root { get; }

    /// <summary>Full path of <paramref name="name"/> inside the folder (it need not exist).</summary>
    /// <param name="name">The relative path as the folder's file names it.</param>
    /// <param name="subject">What names it, for the error: "steering.json model_file", "genai_config.json decoder.filename".</param>
    /// <exception cref="OnnxSteerException">UnsafePath: absolute, <c>..</c>, outside the folder or a symlink out of it.</exception>
    public string Resolve(string name, string subject) => CheckInside(Root, _rootReal, name, $"{subject} '{name}'");

    /// <summary>Full path of a file the folder holds under <paramref name="name"/>, or null when it has none.</summary>
    /// <exception cref="OnnxSteerException">UnsafePath when the name, or a symlink on the way, leads outside the folder.</exception>
    public string? Find(string name)
    {
        var full = Resolve(name, "model folder file");
        return File.Exists(full) ? full : null;
    }

    /// <summary>Checks every one of <paramref name="names"/> the folder holds (a symlink out of the folder is refused), so
    /// a loader that opens them by name afterwards reads only files of the folder.</summary>
    /// <exception cref="OnnxSteerException">UnsafePath.</exception>
    public void CheckFiles(IEnumerable<string> names)
    {
        foreach (var name in names) Find(name);
    }

    /// <summary>Opens a file of the folder for reading, or returns null when it has none.</summary>
    /// <exception cref="OnnxSteerException">UnsafePath; InvalidModel when it is larger than <paramref name="maxBytes"/>.</exception>
    public Stream? OpenFile(string name, long maxBytes = DefaultMaxBytes)
    {
        if (Find(name) is not { } full) return null;
        var length = CheckSize(full, name, maxBytes);
        // A FIFO or device reports length 0 and would block or never end: nothing of it is read.
        if (length == 0) return new MemoryStream([], writable: false);
        try { return new FileStream(full, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.NotFound, $"cannot read {Describe(name)}: {e.Message}", e); }
    }

    /// <summary>Reads a UTF-8 text file of the folder, or returns null when it has none.</summary>
    /// <exception cref="OnnxSteerException">UnsafePath; InvalidModel when it is larger than <paramref name="maxBytes"/>.</exception>
    public string? ReadText(string name, long maxBytes = DefaultMaxBytes)
    {
        using var stream = OpenFile(name, maxBytes);
        if (stream is null) return null;
        try
        {
            // Read at most the size measured, so a file growing while it is read cannot exceed the limit.
            var buffer = new byte[stream.Length];
            stream.ReadExactly(buffer);
            return new UTF8Encoding(false, false).GetString(buffer);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.InvalidModel, $"cannot read {Describe(name)}: {e.Message}", e); }
    }

    /// <summary>Reads a JSON file of the folder whose root must be an object, or returns null when the folder has none.</summary>
    /// <exception cref="OnnxSteerException">UnsafePath; InvalidModel for a file that is too large, not JSON (including
    /// nesting deeper than 64 and duplicate keys) or not an object.</exception>
    public JsonObject? ReadJsonObject(string name, long maxBytes = DefaultMaxBytes)
    {
        if (ReadText(name, maxBytes) is not { } text) return null;
        try
        {
            var node = JsonNode.Parse(text, documentOptions: new JsonDocumentOptions { AllowDuplicateProperties = false });
            return node as JsonObject ?? throw new OnnxSteerException(ErrorKind.InvalidModel, $"{Describe(name)} is not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{Describe(name)} is not valid JSON: {FirstLine(e.Message)}", e);
        }
    }

    /// <summary>"'name' in 'folder'", for messages.</summary>
    public string Describe(string name) => $"'{Path.Combine(Root, name)}'";

    private long CheckSize(string full, string name, long maxBytes)
    {
        long length;
        try { length = new FileInfo(full).Length; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.NotFound, $"cannot read {Describe(name)}: {e.Message}", e); }
        if (length > maxBytes)
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"{Describe(name)} is {length:N0} bytes; files of this kind are read up to {maxBytes:N0} bytes.");
        return length;
    }

    private static string FirstLine(string message) => message.Split('\n')[0].Trim();

    /// <summary>The rule itself: <paramref name="name"/> relative to <paramref name="root"/> (whose symlinks resolve to
    /// <paramref name="rootReal"/>) must stay inside it. Returns the full path, or throws UnsafePath "refusing {subject}: why".</summary>
    internal static string CheckInside(string root, string rootReal, string name, string subject)
    {
        if (name.Length == 0)
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing {subject}: an empty path names no file.");
        if (name.Contains('\0') || Path.IsPathRooted(name) || name.StartsWith('/') || name.StartsWith('\\')
            || (name.Length >= 2 && name[1] == ':'))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing {subject}: absolute paths are not allowed.");
        var parts = name.Split('/', '\\');
        if (parts.Any(p => p == ".."))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing {subject}: '..' escapes the model folder.");
        var full = Path.GetFullPath(Path.Combine(root, name));
        if (!IsInside(full, root))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing {subject}: it resolves outside the model folder.");
        var real = ResolveReal(full, root);
        if (!IsInside(real, rootReal))
            throw new OnnxSteerException(ErrorKind.UnsafePath, $"refusing {subject}: a symlink leads outside the model folder.");
        return full;
    }

    private static bool IsInside(string path, string root)
    {
        var r = root.EndsWith(Path.DirectorySeparatorChar) ? root : root + Path.DirectorySeparatorChar;
        return path.StartsWith(r, StringComparison.Ordinal);
    }

    /// <summary>Follows symlinks component by component (bounded, so a symlink loop ends in an error, not a stack overflow).</summary>
    internal static string ResolveReal(string path, string root)
    {
        var current = Path.GetFullPath(path);
        for (var hops = 0; hops < 40; hops++)
        {
            var changed = false;
            var probe = current;
            var suffix = "";
            while (!string.IsNullOrEmpty(probe))
            {
                FileSystemInfo info = Directory.Exists(probe) ? new DirectoryInfo(probe) : new FileInfo(probe);
                string? target;
                try { target = info.LinkTarget; }
                catch (Exception e) when (e is IOException or UnauthorizedAccessException) { target = null; }
                if (target is not null)
                {
                    var parent = Path.GetDirectoryName(probe) ?? "/";
                    current = Path.GetFullPath(Path.Combine(Path.IsPathRooted(target) ? target : Path.Combine(parent, target))) + suffix;
                    changed = true;
                    break;
                }
                var name = Path.GetFileName(probe);
                var up = Path.GetDirectoryName(probe);
                if (up is null) break;
                suffix = Path.DirectorySeparatorChar + name + suffix;
                probe = up;
            }
            if (!changed) return current;
        }
        throw new OnnxSteerException(ErrorKind.UnsafePath, $"too many symlinks (or a symlink loop) under '{root}'.");
    }
}
