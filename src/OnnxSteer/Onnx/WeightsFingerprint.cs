using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace OnnxSteer.Onnx;

/// <summary>A fingerprint of a model's external weight files that tells two models with the same graph apart (two
/// fine-tunes of one base) without reading gigabytes: SHA-256 over each file's name and size and <see cref="Samples"/>
/// chunks of <see cref="ChunkBytes"/> bytes at evenly spaced offsets (first and last included); files of at most
/// Samples × ChunkBytes bytes are hashed whole. It reads at most 64 KiB per file whatever its size, so patching still
/// reads next to nothing of a 10 GB model.</summary>
/// <remarks>A sampled hash can miss a change confined to bytes between samples (a fine-tune that touched one small
/// tensor only); any change of size, of a whole tensor that spans a sample, or of the bulk of the weights is seen.
/// Weights stored inside the .onnx are covered by the graph's own SHA-256.</remarks>
public static class WeightsFingerprint
{
    /// <summary>Chunks hashed per file.</summary>
    public const int Samples = 16;

    /// <summary>Bytes per chunk.</summary>
    public const int ChunkBytes = 4096;

    /// <summary>The fingerprint of the weight files <paramref name="relativeFiles"/> of <paramref name="directory"/>
    /// ("sampled-sha256:" and 64 hex digits); null when the model has no external weights.</summary>
    /// <exception cref="OnnxSteerException">A weight file that cannot be read (NotFound).</exception>
    public static string? Compute(string directory, IEnumerable<string> relativeFiles)
    {
        var files = relativeFiles.Distinct(StringComparer.Ordinal).Order(StringComparer.Ordinal).ToList();
        if (files.Count == 0) return null;
        using var hash = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        var buffer = new byte[ChunkBytes];
        Span<byte> size = stackalloc byte[8];
        foreach (var name in files)
        {
            var path = Path.Combine(directory, name);
            FileStream stream;
            try { stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1, FileOptions.RandomAccess); }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            { throw new OnnxSteerException(ErrorKind.NotFound, $"weight file '{path}' cannot be read: {e.Message}", e); }
            using (stream)
            {
                hash.AppendData(Encoding.UTF8.GetBytes(name.Replace('\\', '/') + "\0"));
                BinaryPrimitives.WriteInt64LittleEndian(size, stream.Length);
                hash.AppendData(size);
                var whole = stream.Length <= (long)Samples * ChunkBytes;
                var count = whole ? (int)((stream.Length + ChunkBytes - 1) / ChunkBytes) : Samples;
                for (var i = 0; i < count; i++)
                {
                    stream.Position = whole ? (long)i * ChunkBytes : i * ((stream.Length - ChunkBytes) / (Samples - 1));
                    var read = stream.ReadAtLeast(buffer, (int)Math.Min(ChunkBytes, stream.Length - stream.Position), throwOnEndOfStream: false);
                    hash.AppendData(buffer, 0, read);
                }
            }
        }
        // Convert.ToHexStringLower is .NET 9+; the library also targets .NET 8.
        return "sampled-sha256:" + Convert.ToHexString(hash.GetHashAndReset()).ToLowerInvariant();
    }
}
