using System.Buffers.Binary;
using OnnxSteer.Vectors;
using static OnnxSteer.Tests.Vectors.VectorTestData;

namespace OnnxSteer.Tests.Vectors;

public sealed class GgufTests
{
    private static readonly float[] Dir1 = RandomVector(1, 8);
    private static readonly float[] Dir2 = RandomVector(2, 8);

    /// <summary>A control vector as llama.cpp's cvector-generator (int32 layer_count) or repeng (uint32) writes it,
    /// with extra keys of every GGUF value type to make sure the reader walks them.</summary>
    private static byte[] SpecFile(bool uint32LayerCount, uint alignment)
    {
        var b = new GgufBuilder { Alignment = alignment };
        b.String("general.architecture", "controlvector");
        if (alignment != 32) b.UInt32("general.alignment", alignment);
        b.String("controlvector.model_hint", "llama");
        if (uint32LayerCount) b.UInt32("controlvector.layer_count", 2); else b.Int32("controlvector.layer_count", 2);
        b.Key("x.u8", 0, [7]).Key("x.i8", 1, [0xff]).Key("x.u16", 2, [1, 0]).Key("x.i16", 3, [1, 0]).Key("x.f32", 6, F32Bytes(1.5f))
            .Key("x.bool", 7, [1]).Key("x.u64", 10, GgufBuilder.U64(5)).Key("x.i64", 11, GgufBuilder.U64(6)).Key("x.f64", 12, GgufBuilder.U64(0));
        // An array of three strings and an array of two arrays of uint8.
        b.Key("x.strings", 9, [.. GgufBuilder.U32(8), .. GgufBuilder.U64(3), .. GgufBuilder.StringBytes("a"), .. GgufBuilder.StringBytes(""), .. GgufBuilder.StringBytes("ccc")]);
        b.Key("x.nested", 9, [.. GgufBuilder.U32(9), .. GgufBuilder.U64(2),
            .. GgufBuilder.U32(0), .. GgufBuilder.U64(2), 1, 2, .. GgufBuilder.U32(0), .. GgufBuilder.U64(0)]);
        b.Tensor("direction.1", Dir1);
        b.Tensor("direction.2", Dir2);
        return b.Build();
    }

    [Theory]
    [InlineData(false, 32u)]
    [InlineData(true, 32u)]
    [InlineData(false, 64u)]
    [InlineData(true, 64u)]
    public void ReadsSpecBuiltControlVector(bool uint32LayerCount, uint alignment)
    {
        var g = Gguf.Parse(SpecFile(uint32LayerCount, alignment), "spec.gguf");
        Assert.Equal("controlvector", g.Architecture);
        Assert.Equal("llama", g.ModelHint);
        Assert.Equal(2, g.LayerCount);
        Assert.Equal([1, 2], g.Directions.Keys);
        Assert.Equal(Dir1, g.Directions[1]);
        Assert.Equal(Dir2, g.Directions[2]);
    }

    [Fact]
    public void LoadsSpecBuiltFileAsRawVector()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("happy.gguf");
        File.WriteAllBytes(path, SpecFile(true, 64));
        var file = InstructionVectorFile.Load(path);
        var v = file.Get();
        Assert.Equal("happy", v.Name);
        Assert.Equal(Dir1, v.Layers[1].MeanDiff);
        Assert.Equal((float)VectorMath.Norm(Dir1), v.Layers[1].Norm);
        Assert.InRange(VectorMath.Norm(v.Layers[1].Direction), 1 - 1e-6, 1 + 1e-6);
        Assert.Null(v.Layers[1].ZBar);
    }

    [Fact]
    public void ReadsF16Directions()
    {
        var values = new[] { 0.5f, -1.25f, 2f, 0f };
        var bytes = new GgufBuilder().String("general.architecture", "controlvector").TensorF16("direction.3", values).Build();
        Assert.Equal(values, Gguf.Parse(bytes, "f16").Directions[3]);
    }

    [Fact]
    public void ReadsVersion2()
    {
        var bytes = new GgufBuilder { Version = 2 }.String("general.architecture", "controlvector").Tensor("direction.1", Dir1).Build();
        Assert.Equal(Dir1, Gguf.Parse(bytes, "v2").Directions[1]);
    }

    [Fact]
    public void EveryTruncationIsRejected()
    {
        var bytes = SpecFile(false, 64);
        for (var n = 0; n < bytes.Length; n++)
        {
            var e = Assert.Throws<OnnxSteerException>(() => Gguf.Parse(bytes[..n], "cut.gguf"));
            Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        }
    }

    [Fact]
    public void EverySingleByteCorruptionOfTheHeaderFailsCleanlyOrParses()
    {
        // Flipping any byte of the metadata must never produce another exception type (or a huge allocation).
        var bytes = SpecFile(false, 32);
        for (var i = 0; i < bytes.Length - 64; i++)
        {
            foreach (var value in new byte[] { 0xff, 0x00, 0x7f })
            {
                var copy = (byte[])bytes.Clone();
                copy[i] = value;
                try { Gguf.Parse(copy, "flip.gguf"); }
                catch (OnnxSteerException e) { Assert.Equal(ErrorKind.InvalidVector, e.Kind); }
            }
        }
    }

    private static string Rejects(byte[] bytes)
    {
        var e = Assert.Throws<OnnxSteerException>(() => Gguf.Parse(bytes, "bad.gguf"));
        Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        return e.Message;
    }

    private static byte[] Header(uint version, ulong tensors, ulong kvs, params byte[] rest) =>
        [(byte)'G', (byte)'G', (byte)'U', (byte)'F', .. GgufBuilder.U32(version), .. GgufBuilder.U64(tensors), .. GgufBuilder.U64(kvs), .. rest];

    [Fact]
    public void HostileHeadersAreRejected()
    {
        Assert.Contains("magic", Rejects("GGUX\u0003\0\0\0"u8.ToArray()));
        Assert.Contains("version 1", Rejects(Header(1, 0, 0)));
        Assert.Contains("big-endian", Rejects(Header(0x03000000, 0, 0)));
        Assert.Contains("unknown GGUF version", Rejects(Header(99, 0, 0)));
        Assert.Contains("kv_count", Rejects(Header(3, 0, ulong.MaxValue)));
        Assert.Contains("tensor_count", Rejects(Header(3, 1UL << 60, 0)));
        // A key whose length claims far more bytes than exist.
        Assert.Contains("claims", Rejects(Header(3, 0, 1, [.. GgufBuilder.U64(ulong.MaxValue - 3), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
        // An array claiming 2^62 elements.
        Assert.Contains("claims", Rejects(Header(3, 0, 1, [.. GgufBuilder.StringBytes("k"), .. GgufBuilder.U32(9), .. GgufBuilder.U32(0), .. GgufBuilder.U64(1UL << 62), 0, 0, 0, 0, 0, 0])));
        // Unknown value type.
        Assert.Contains("unknown value type", Rejects(Header(3, 0, 1, [.. GgufBuilder.StringBytes("k"), .. GgufBuilder.U32(13), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])));
        // Arrays nested deeper than the limit.
        var nested = new List<byte>([.. GgufBuilder.StringBytes("k"), .. GgufBuilder.U32(9)]);
        for (var i = 0; i < 6; i++) nested.AddRange([.. GgufBuilder.U32(9), .. GgufBuilder.U64(1)]);
        nested.AddRange(new byte[32]);
        Assert.Contains("nests", Rejects(Header(3, 0, 1, [.. nested])));
    }

    [Fact]
    public void WrongTypesAndValuesAreRejected()
    {
        GgufBuilder Cv() => new GgufBuilder().String("general.architecture", "controlvector");
        Assert.Contains("layer_count", Rejects(Cv().String("controlvector.layer_count", "2").Tensor("direction.1", Dir1).Build()));
        Assert.Contains("layer_count", Rejects(Cv().Int32("controlvector.layer_count", -1).Tensor("direction.1", Dir1).Build()));
        Assert.Contains("model_hint", Rejects(Cv().Int32("controlvector.model_hint", 3).Tensor("direction.1", Dir1).Build()));
        Assert.Contains("alignment", Rejects(Cv().UInt32("general.alignment", 48).Tensor("direction.1", Dir1).Build()));
        Assert.Contains("alignment", Rejects(Cv().Int32("general.alignment", 32).Tensor("direction.1", Dir1).Build()));
        Assert.Contains("direction.0", Rejects(Cv().Tensor("direction.0", Dir1).Build()));
        Assert.Contains("not named direction.N", Rejects(Cv().Tensor("blk.1.weight", Dir1).Build()));
        Assert.Contains("ggml type 8", Rejects(Cv().Tensor("direction.1", [8], 8, new byte[34]).Build()));
        Assert.Contains("1-D", Rejects(Cv().Tensor("direction.1", [4, 2], 0, F32Bytes(Dir1)).Build()));
        Assert.Contains("different lengths", Rejects(Cv().Tensor("direction.1", Dir1).Tensor("direction.2", [1f, 2f]).Build()));
        Assert.Contains("twice", Rejects(Cv().String("general.architecture", "controlvector").Build()));
        Assert.Contains("appears twice", Rejects(Cv().Tensor("direction.1", Dir1).Tensor("direction.1", Dir1).Build()));
        // A tensor whose dimension claims more data than the file holds.
        Assert.Contains("data section", Rejects(Cv().Tensor("direction.1", [1UL << 20], 0, F32Bytes(Dir1)).Build()));
        Assert.Contains("empty or too large", Rejects(Cv().Tensor("direction.1", [ulong.MaxValue], 0, F32Bytes(Dir1)).Build()));
    }

    [Fact]
    public void MisalignedTensorOffsetIsRejected()
    {
        var bytes = new GgufBuilder().String("general.architecture", "controlvector").Tensor("direction.1", Dir1).Build();
        BinaryPrimitives.WriteUInt64LittleEndian(bytes.AsSpan(FindOffsetField(bytes)), 4);
        Assert.Contains("not a multiple", Rejects(bytes));
    }

    private static int FindOffsetField(byte[] bytes)
    {
        var name = "direction.1"u8.ToArray();
        for (var i = 0; i < bytes.Length - name.Length; i++)
            if (bytes.AsSpan(i, name.Length).SequenceEqual(name)) return i + name.Length + 4 + 8 + 4;
        throw new InvalidOperationException("tensor name not found");
    }

    [Fact]
    public void NonFiniteDirectionIsRejectedOnLoad()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("nan.gguf");
        File.WriteAllBytes(path, new GgufBuilder().String("general.architecture", "controlvector").Tensor("direction.1", [1f, float.NaN]).Build());
        var e = Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load(path));
        Assert.Equal(ErrorKind.InvalidVector, e.Kind);
        Assert.Contains("NaN", e.Message);
    }

    [Fact]
    public void WrongArchitectureIsRejectedOnLoad()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.Combine("llama.gguf");
        File.WriteAllBytes(path, new GgufBuilder().String("general.architecture", "llama").Tensor("direction.1", Dir1).Build());
        Assert.Contains("'llama'", Assert.Throws<OnnxSteerException>(() => InstructionVectorFile.Load(path)).Message);
    }

    [Fact]
    public void OurWriterProducesWhatTheSpecReaderExpects()
    {
        using var ms = new MemoryStream();
        Gguf.Write(ms, "llama", new Dictionary<int, float[]> { [2] = Dir2, [1] = Dir1 }, new Dictionary<string, string> { ["k"] = "v" });
        var bytes = ms.ToArray();
        Assert.Equal("GGUF"u8.ToArray(), bytes[..4]);
        Assert.Equal(3u, BinaryPrimitives.ReadUInt32LittleEndian(bytes.AsSpan(4)));
        Assert.Equal(2UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(8)));
        Assert.Equal(4UL, BinaryPrimitives.ReadUInt64LittleEndian(bytes.AsSpan(16)));
        Assert.Equal(0, bytes.Length % 32);
        var g = Gguf.Parse(bytes, "ours");
        Assert.Equal(2, g.LayerCount);
        Assert.IsType<int>(g.Metadata["controlvector.layer_count"]);
        Assert.Equal(Dir1, g.Directions[1]);
        Assert.Equal(Dir2, g.Directions[2]);
    }
}
