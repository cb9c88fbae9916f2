using System.Buffers.Binary;
using OnnxSteer.Vectors;
using static OnnxSteer.Tests.Vectors.VectorTestData;

namespace OnnxSteer.Tests.Vectors;

public sealed class SafetensorsTests
{
    private static OnnxSteerException Rejects(byte[] file)
    {
        var e = Assert.Throws<OnnxSteerException>(() => Safetensors.Parse(file, "t.safetensors"));
        Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        return e;
    }

    [Fact]
    public void ReadsHandBuiltFileWithAllFloatDtypes()
    {
        var f16 = new byte[4];
        BinaryPrimitives.WriteHalfLittleEndian(f16, (Half)1.5f);
        BinaryPrimitives.WriteHalfLittleEndian(f16.AsSpan(2), (Half)(-2f));
        var bf16 = new byte[4];
        BinaryPrimitives.WriteUInt16LittleEndian(bf16, (ushort)(BitConverter.SingleToInt32Bits(3.0f) >> 16));
        BinaryPrimitives.WriteUInt16LittleEndian(bf16.AsSpan(2), (ushort)(BitConverter.SingleToInt32Bits(-0.5f) >> 16));
        var f64 = new byte[16];
        BinaryPrimitives.WriteDoubleLittleEndian(f64, 0.25);
        BinaryPrimitives.WriteDoubleLittleEndian(f64.AsSpan(8), 7.0);
        var f32 = F32Bytes(1, 2);
        var data = f32.Concat(f16).Concat(bf16).Concat(f64).ToArray();
        var header = """{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},"c":{"dtype":"BF16","shape":[2],"data_offsets":[12,16]},"d":{"dtype":"F64","shape":[2],"data_offsets":[16,32]},"__metadata__":{"k":"v"}}""";
        var (tensors, metadata) = Safetensors.Parse(SafetensorsBytes(header, data), "t");
        Assert.Equal([1f, 2f], tensors.Single(t => t.Name == "a").Data);
        Assert.Equal([1.5f, -2f], tensors.Single(t => t.Name == "b").Data);
        Assert.Equal([3f, -0.5f], tensors.Single(t => t.Name == "c").Data);
        Assert.Equal([0.25f, 7f], tensors.Single(t => t.Name == "d").Data);
        Assert.Equal("v", metadata["k"]);
    }

    [Fact]
    public void WriterOutputIsAlignedAndReadsBack()
    {
        using var ms = new MemoryStream();
        Safetensors.Write(ms, [new FloatTensor("x", [3], [1, 2, 3])], new Dictionary<string, string> { ["m"] = "n" });
        var bytes = ms.ToArray();
        var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        Assert.Equal(0UL, headerLength % 8);
        var (tensors, metadata) = Safetensors.Parse(bytes, "t");
        Assert.Equal([1f, 2f, 3f], tensors[0].Data);
        Assert.Equal("n", metadata["m"]);
    }

    [Fact]
    public void EveryTruncationOfAVectorFileIsRejected()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("a", 8, 1, 2)], Model(8)).Save(path);
        var bytes = File.ReadAllBytes(path);
        for (var n = 0; n < bytes.Length; n++)
        {
            var e = Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Parse(bytes[..n], "cut.safetensors"));
            Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        }
    }

    private static readonly byte[] Flips = [(byte)'"', (byte)'1', (byte)'-', (byte)'}', 0xff];

    [Fact]
    public void EverySingleByteCorruptionOfTheHeaderFailsCleanlyOrLoads()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        InstructionVectorFile.Create([Vector("a", 4, 1, 2), Vector("b", 4, 2)], Model(4)).Save(path);
        var bytes = File.ReadAllBytes(path);
        var headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        for (var i = 0; i < headerEnd; i++)
        {
            // Two of five replacement bytes per position keep the test fast while still hitting every position.
            foreach (var value in new[] { Flips[i % Flips.Length], Flips[(i + 2) % Flips.Length] })
            {
                var copy = (byte[])bytes.Clone();
                copy[i] = value;
                try { InstructionVectorFile.Parse(copy, "flip.safetensors"); }
                catch (OnnxSteerException e) { Assert.Equal(ErrorKind.InvalidVector, e.Kind); }
            }
        }
    }

    [Fact]
    public void HeaderLengthThatLiesIsRejected()
    {
        var header = """{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""";
        Assert.Contains("exceeds", Rejects(SafetensorsBytes(header, F32Bytes(1), lyingLength: 1000)).Message);
        Assert.Contains("limit", Rejects(SafetensorsBytes(header, F32Bytes(1), lyingLength: 200_000_000)).Message);
        Assert.Contains("limit", Rejects(SafetensorsBytes(header, F32Bytes(1), lyingLength: ulong.MaxValue)).Message);
        // A length that is too short cuts the JSON.
        Rejects(SafetensorsBytes(header, F32Bytes(1), lyingLength: 10));
    }

    [Theory]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}""", 12, "overlaps")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}""", 12, "hole")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""", 4, "ends at byte")]
    [InlineData("""{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}""", 4, "span 4 bytes")]
    [InlineData("""{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,8]}}""", 8, "span 8 bytes")]
    [InlineData("""{"a":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}}""", 4, "overflows")]
    [InlineData("""{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}""", 4, "non-negative")]
    [InlineData("""{"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}""", 4, "dtype 'I32'")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}""", 8, "twice")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}""", 4, "data_offsets")]
    [InlineData("""{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}""", 8, "data section is 8 bytes")]
    [InlineData("""{"__metadata__":{"k":1}}""", 0, "not a string")]
    [InlineData("""[1,2]""", 0, "not a JSON object")]
    [InlineData("""{"a":""", 0, "not valid JSON")]
    public void MalformedHeadersAreRejected(string header, int dataBytes, string expected)
    {
        Assert.Contains(expected, Rejects(SafetensorsBytes(header, new byte[dataBytes])).Message);
    }

    [Theory]
    [InlineData(float.NaN)]
    [InlineData(float.PositiveInfinity)]
    [InlineData(float.NegativeInfinity)]
    public void NonFiniteValuesInAVectorFileAreRejected(float bad)
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        var header = """{"direction.1":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}""";
        File.WriteAllBytes(path, SafetensorsBytes(header, F32Bytes(1, bad)));
        var e = Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load(path));
        Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        Assert.Contains("direction.1", e.Message);
    }

    [Fact]
    public void F64ValueOutsideFloatRangeIsRejectedAsInfinite()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("v.safetensors");
        var data = new byte[16];
        BinaryPrimitives.WriteDoubleLittleEndian(data, 1e300);
        BinaryPrimitives.WriteDoubleLittleEndian(data.AsSpan(8), 1);
        File.WriteAllBytes(path, SafetensorsBytes("""{"direction.1":{"dtype":"F64","shape":[2],"data_offsets":[0,16]}}""", data));
        Assert.Equal(ErrorKind.InvalidVector, Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load(path)).Kind);
    }

    [Fact]
    public void MissingFileIsNotFound()
    {
        var e = Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load("/nonexistent/x.safetensors"));
        Assert.Equal(ErrorKind.NotFound, e.Kind);
    }
}
