using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Contract;
using OnnxSteer.Onnx;

namespace OnnxSteer.Decoder;

/// <summary>Progress of copying one external data file (reported only when it cannot be hard-linked).</summary>
/// <param name="File">The file's name relative to the model folder.</param>
/// <param name="BytesDone">Bytes copied so far.</param>
/// <param name="BytesTotal">The file's size.</param>
public readonly record struct CopyProgress(string File, long BytesDone, long BytesTotal);

/// <summary>What <see cref="ModelPatcher.Patch(string, string, PatchOptions?, bool, IProgress{CopyProgress}?)"/> wrote.</summary>
public sealed record PatchReport
{
    /// <summary>The output folder.</summary>
    public required string OutputDirectory { get; init; }
    /// <summary>The manifest written as steering.json.</summary>
    public required SteeringManifest Manifest { get; init; }
    /// <summary>What each pass changed.</summary>
    public required IReadOnlyList<PassResult> Passes { get; init; }
    /// <summary>External data files hard-linked into the output.</summary>
    public required IReadOnlyList<string> LinkedFiles { get; init; }
    /// <summary>External data files copied (different file system, or links refused).</summary>
    public required IReadOnlyList<string> CopiedFiles { get; init; }
    /// <summary>Other files carried over unchanged (configs, tokenizer files).</summary>
    public required IReadOnlyList<string> CarriedFiles { get; init; }

    /// <summary>A readable summary: the output, layout and layers, what each pass changed, and how the weights came over
    /// (a record's generated ToString would print the lists' type names).</summary>
    public override string ToString()
    {
        static string Names(IReadOnlyList<string> files) => files.Count == 0 ? "none" : string.Join(", ", files);
        return $"patched {Manifest.Layout} model into {OutputDirectory}: {Manifest.NumLayers} layers, hidden {Manifest.HiddenSize}, " +
            $"steered layers [{string.Join(",", Manifest.SteeredLayers)}], exposed [{string.Join(",", Manifest.ExposedLayers)}]; " +
            $"{string.Join("; ", Passes)}; linked {Names(LinkedFiles)}; copied {Names(CopiedFiles)}; carried {Names(CarriedFiles)}";
    }
}

/// <summary>Patches a model folder into a new folder: the graph is rewritten by <see cref="PatchPipeline"/>, the external
/// weights are hard-linked (or copied) without being read, small files are carried over, and steering.json is written.
/// The output appears only when complete (temporary folder and rename).</summary>
public static class ModelPatcher
{
    /// <summary>Largest non-model file carried over into the output (configs and tokenizers are far smaller).</summary>
    public const long CarryLimitBytes = 256L << 20;

    /// <summary>Patches <paramref name="source"/> (a folder or .onnx file) into <paramref name="outputDirectory"/>:
    /// with no <paramref name="options"/>, every layer steered and exposed, steering inputs optional (zero defaults).</summary>
    /// <exception cref="OnnxSteerException">Anything <see cref="OnnxModelFile.Load"/> refuses, an already patched model,
    /// not a decoder, layers the model lacks, an existing output without <paramref name="overwrite"/>.</exception>
    public static PatchReport Patch(string source, string outputDirectory, PatchOptions? options = null, bool overwrite = false,
        IProgress<CopyProgress>? progress = null) => Patch(source, outputDirectory, options, overwrite, progress, null);

    /// <summary>As the public overload, with a caller's pass pipeline (tests).</summary>
    internal static PatchReport Patch(string source, string outputDirectory, PatchOptions? options, bool overwrite,
        IProgress<CopyProgress>? progress, PatchPipeline? pipeline)
    {
        options ??= new PatchOptions();
        var model = OnnxModelFile.Load(source);
        var outFull = Path.GetFullPath(outputDirectory.TrimEnd('/', '\\'));
        if (string.Equals(outFull, Path.GetFullPath(model.Directory), StringComparison.Ordinal))
            throw new OnnxSteerException(ErrorKind.Output, $"output folder '{outputDirectory}' is the source folder; choose another.");
        if (Directory.Exists(outFull) && !overwrite)
            throw new OnnxSteerException(ErrorKind.Output, $"output folder '{outputDirectory}' already exists and replacing it was not asked for.");
        var sha = Sha256Hex(model.FilePath);
        var result = (pipeline ?? PatchPipeline.Default).Run(model.Proto, options);
        var modelFileName = Path.GetFileName(model.FilePath);
        var dataFiles = model.ExternalDataFiles;
        var linked = new List<string>();
        var copied = new List<string>();
        var carried = new List<string>();
        var manifest = BuildManifest(model, sha, result, options);
        manifest = manifest with { Source = manifest.Source with { WeightsFingerprint = WeightsFingerprint.Compute(model.Directory, dataFiles) } };

        AtomicFile.WriteDirectory(outFull, overwrite, tmp =>
        {
            OnnxModelFile.SaveAtomic(result.Model, Path.Combine(tmp, modelFileName));
            foreach (var location in dataFiles)
            {
                var from = Path.Combine(model.Directory, location);
                // link(2) would link the symlink itself, which dangles in the output; use the (validated, in-folder) file.
                from = new FileInfo(from).ResolveLinkTarget(returnFinalTarget: true)?.FullName ?? from;
                var to = Path.Combine(tmp, location);
                Directory.CreateDirectory(Path.GetDirectoryName(to)!);
                if (HardLink.TryCreate(from, to)) linked.Add(location);
                else { CopyWithProgress(from, to, location, progress); copied.Add(location); }
            }
            var skip = new HashSet<string>(dataFiles.Select(Path.GetFileName)!, StringComparer.Ordinal) { modelFileName, SteeringContract.ManifestFileName };
            foreach (var file in Directory.EnumerateFiles(model.Directory))
            {
                var name = Path.GetFileName(file);
                if (skip.Contains(name) || name.StartsWith('.') || IsModelOrData(name)) continue;
                var info = new FileInfo(file);
                if (info.LinkTarget is not null || info.Length > CarryLimitBytes) continue;
                File.Copy(file, Path.Combine(tmp, name));
                carried.Add(name);
            }
            File.WriteAllText(Path.Combine(tmp, SteeringContract.ManifestFileName), manifest.ToJson());
        });
        return new PatchReport
        {
            OutputDirectory = outFull, Manifest = manifest, Passes = result.Passes,
            LinkedFiles = linked, CopiedFiles = copied, CarriedFiles = carried,
        };
    }

    /// <summary>Other graphs and weight files of the folder (Optimum keeps several decoders side by side): not carried.</summary>
    private static bool IsModelOrData(string name) =>
        name.EndsWith(".onnx", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".onnx.data", StringComparison.OrdinalIgnoreCase)
        || name.EndsWith(".onnx_data", StringComparison.OrdinalIgnoreCase) || name.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)
        || name.EndsWith(".bin", StringComparison.OrdinalIgnoreCase);

    private static SteeringManifest BuildManifest(OnnxModelFile model, string sha, PatchResult result, PatchOptions options) => new()
    {
        ModelFile = Path.GetFileName(model.FilePath),
        Source = new ManifestSource { Path = model.Directory, ModelFile = Path.GetFileName(model.FilePath), GraphSha256 = sha },
        Layout = result.Layout.Name,
        ModelType = ReadModelType(model.Directory),
        NumLayers = result.Layout.NumLayers,
        HiddenSize = result.Layout.HiddenSize,
        ResidualDtype = result.Layout.ResidualDtype,
        SteerInput = options.SteerInput,
        AdditiveOnly = options.AdditiveOnly,
        SteeredLayers = result.SteeredLayers,
        ExposedLayers = result.ExposedLayers,
        Inputs = result.SteeredLayers.ToDictionary(l => l.ToString(System.Globalization.CultureInfo.InvariantCulture), l => new LayerSteeringInputs
        {
            Add = SteeringContract.AddInput(l),
            Direction = options.AdditiveOnly ? null : SteeringContract.DirectionInput(l),
            Target = options.AdditiveOnly ? null : SteeringContract.TargetInput(l),
        }),
        Outputs = result.ExposedLayers.ToDictionary(l => l.ToString(System.Globalization.CultureInfo.InvariantCulture), SteeringContract.HiddenStateOutput),
    };

    /// <summary>The model family from genai_config.json (model.type) or config.json (model_type), when present and readable.
    /// Read under the folder's path rule: a config file that is a symlink out of the folder is refused (UnsafePath).</summary>
    public static string? ReadModelType(string directory)
    {
        var folder = new ModelFolder(directory);
        foreach (var (file, path) in new[] { ("genai_config.json", new[] { "model", "type" }), ("config.json", new[] { "model_type" }) })
        {
            JsonObject? root;
            try { root = folder.ReadJsonObject(file, 16L << 20); }
            catch (OnnxSteerException e) when (e.Kind == ErrorKind.InvalidModel) { continue; } // patch carries it over; the runtime judges it
            JsonNode? node = root;
            foreach (var key in path) node = node is JsonObject o ? o[key] : null;
            if (node is JsonValue v && v.TryGetValue<string>(out var type)) return type;
        }
        return null;
    }

    /// <summary>SHA-256 of a file, lower-case hex.</summary>
    public static string Sha256Hex(string file)
    {
        using var stream = File.OpenRead(file);
        // Convert.ToHexStringLower is .NET 9+; the library also targets .NET 8.
        return Convert.ToHexString(SHA256.HashData(stream)).ToLowerInvariant();
    }

    private static void CopyWithProgress(string from, string to, string name, IProgress<CopyProgress>? progress)
    {
        using var input = new FileStream(from, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 20);
        using var output = new FileStream(to, FileMode.CreateNew, FileAccess.Write, FileShare.None, 1 << 20);
        var total = input.Length;
        var buffer = new byte[1 << 20];
        long done = 0;
        int read;
        while ((read = input.Read(buffer)) > 0)
        {
            output.Write(buffer, 0, read);
            done += read;
            progress?.Report(new CopyProgress(name, done, total));
        }
    }
}

/// <summary>Creates hard links (no .NET API exists for them).</summary>
internal static partial class HardLink
{
    /// <summary>Links <paramref name="to"/> to <paramref name="from"/>; false when the file system refuses (another device, no permission).</summary>
    public static bool TryCreate(string from, string to)
    {
        try
        {
            return OperatingSystem.IsWindows() ? CreateHardLinkW(to, from, IntPtr.Zero) : link(from, to) == 0;
        }
        catch (DllNotFoundException) { return false; }
        catch (EntryPointNotFoundException) { return false; }
    }

    [LibraryImport("libc", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int link(string oldpath, string newpath);

    [LibraryImport("kernel32.dll", StringMarshalling = StringMarshalling.Utf16, SetLastError = true)]
    [return: MarshalAs(UnmanagedType.Bool)]
    private static partial bool CreateHardLinkW(string fileName, string existingFileName, IntPtr securityAttributes);
}
