using Google.Protobuf;
using OnnxSteer.Onnx.Proto;

namespace OnnxSteer.Onnx;

/// <summary>One external-data reference of an initializer, already checked to stay inside the model folder.</summary>
/// <param name="TensorName">The initializer's name.</param>
/// <param name="Location">The relative location as written in the model.</param>
/// <param name="FullPath">The resolved file path (inside the model folder).</param>
/// <param name="Offset">Byte offset in the file.</param>
/// <param name="Length">Byte length, or -1 when the model leaves it out (then it runs to the end of the file).</param>
public sealed record ExternalDataReference(string TensorName, string Location, string FullPath, long Offset, long Length);

/// <summary>An ONNX model file as read from disk: the graph protobuf only. External weights are never read,
/// only their locations and sizes are checked (a rewrite must not need them, and they can be many GB).</summary>
internal sealed class OnnxModelFile
{
    /// <summary>Largest message protobuf can encode; a bigger file cannot be a valid ONNX model.</summary>
    public const long ProtobufLimit = int.MaxValue;

    private OnnxModelFile(string path, ModelProto proto, IReadOnlyList<ExternalDataReference> externalData)
    {
        FilePath = path;
        Proto = proto;
        ExternalData = externalData;
    }

    /// <summary>Full path of the .onnx file.</summary>
    public string FilePath { get; }

    /// <summary>The folder that holds the model (external-data locations are relative to it).</summary>
    public string Directory => Path.GetDirectoryName(FilePath)!;

    /// <summary>The parsed model. Callers that edit it should go through the graph view.</summary>
    public ModelProto Proto { get; }

    /// <summary>Every external-data reference in the model, main graph and subgraphs.</summary>
    public IReadOnlyList<ExternalDataReference> ExternalData { get; }

    /// <summary>The distinct external data files the model uses, relative to <see cref="Directory"/>.</summary>
    public IReadOnlyList<string> ExternalDataFiles => ExternalData.Select(e => e.Location).Distinct(StringComparer.Ordinal).ToList();

    /// <summary>Reads a model from a folder or an .onnx file and validates its external-data references.</summary>
    /// <exception cref="OnnxSteerException">Missing file, not ONNX, corrupt, too large, or unsafe/missing external data.</exception>
    public static OnnxModelFile Load(string path)
    {
        var file = ModelLocator.ResolveModelFile(path);
        var proto = Parse(file);
        var refs = ExternalDataValidator.Validate(proto, Path.GetDirectoryName(file)!);
        return new OnnxModelFile(file, proto, refs);
    }

    /// <summary>Parses the protobuf of an .onnx file without looking at external data.</summary>
    public static ModelProto Parse(string file)
    {
        long length;
        try { length = new FileInfo(file).Length; }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        { throw new OnnxSteerException(ErrorKind.NotFound, $"cannot read '{file}': {e.Message}"); }
        if (length > ProtobufLimit)
            throw new OnnxSteerException(ErrorKind.InvalidModel,
                $"'{Path.GetFileName(file)}' is {length / (1L << 20)} MiB: a protobuf message cannot exceed 2 GiB, so weights this large must be stored as ONNX external data (e.g. onnx.save(..., save_as_external_data=True)).");
        if (length == 0)
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{Path.GetFileName(file)}' is empty: not an ONNX model.");
        return ParseBytes(File.ReadAllBytes(file), Path.GetFileName(file));
    }

    /// <summary>Parses model bytes; <paramref name="displayName"/> names the source in errors.</summary>
    public static ModelProto ParseBytes(ReadOnlySpan<byte> bytes, string displayName)
    {
        ModelProto proto;
        try
        {
            proto = new ModelProto();
            // Nested If/Loop subgraphs recurse through the parser; a hostile file could nest thousands deep.
            var input = new CodedInputStream(bytes.ToArray());
            proto.MergeFrom(input);
            if (!input.IsAtEnd)
                throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{displayName}' is not a valid ONNX model: trailing bytes after the message.");
        }
        catch (InvalidProtocolBufferException e)
        {
            throw new OnnxSteerException(ErrorKind.InvalidModel, $"'{displayName}' is not a valid ONNX model (truncated or corrupt protobuf: {e.Message}).");
        }
        if (!proto.HasIrVersion || proto.Graph is null || proto.OpsetImport.Count == 0)
            throw new OnnxSteerException(ErrorKind.InvalidModel,
                $"'{displayName}' is not an ONNX model: it has no {(proto.Graph is null ? "graph" : !proto.HasIrVersion ? "ir_version" : "opset_import")}.");
        return proto;
    }

    /// <summary>Writes <paramref name="proto"/> to <paramref name="path"/> through a temporary file and a rename,
    /// so a crash never leaves a half-written model.</summary>
    public static void SaveAtomic(ModelProto proto, string path)
    {
        var size = proto.CalculateSize();
        if (size < 0 || size > ProtobufLimit)
            throw new OnnxSteerException(ErrorKind.Output, "the rewritten graph would exceed the 2 GiB protobuf limit; move initializers to external data first.");
        AtomicFile.Write(path, stream => proto.WriteTo(stream));
    }
}
