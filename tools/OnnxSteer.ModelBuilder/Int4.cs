namespace OnnxSteer.ModelBuilder;

/// <summary>4-bit block quantization in com.microsoft::MatMulNBits' layout: for weight W [N, K] (a PyTorch Linear
/// [out, in]), each row n is cut into blocks of <c>blockSize</c> along K (the last block zero-padded); a block stores
/// blockSize/2 bytes, element 2j in the low nibble and 2j+1 in the high nibble, value = (q - 8) * scale.</summary>
internal static class Int4
{
    /// <summary>Packed weights [N, blocks, blockSize/2] as bytes, scales [N * blocks].</summary>
    public sealed record Quantized(byte[] Packed, float[] Scales, int BlocksPerRow);

    /// <summary>Symmetric round-to-nearest quantization: scale = max|w| / 7 per block, q = clamp(round(w / scale) + 8, 0, 15).</summary>
    public static Quantized Quantize(float[] w, int n, int k, int blockSize)
    {
        var blocks = (k + blockSize - 1) / blockSize;
        var packed = new byte[(long)n * blocks * blockSize / 2];
        var scales = new float[n * blocks];
        for (var r = 0; r < n; r++)
            for (var b = 0; b < blocks; b++)
            {
                var start = b * blockSize;
                var end = Math.Min(k, start + blockSize);
                var max = 0f;
                for (var i = start; i < end; i++) max = Math.Max(max, Math.Abs(w[(long)r * k + i]));
                var scale = max / 7f;
                scales[r * blocks + b] = scale;
                var inv = scale == 0 ? 0 : 1f / scale;
                var baseOffset = ((long)r * blocks + b) * (blockSize / 2);
                for (var i = 0; i < blockSize; i++)
                {
                    var v = start + i < end ? w[(long)r * k + start + i] : 0f;
                    var q = (int)Math.Clamp(MathF.Round(v * inv) + 8, 0, 15);
                    packed[baseOffset + i / 2] |= (byte)(i % 2 == 0 ? q : q << 4);
                }
            }
        return new Quantized(packed, scales, blocks);
    }

    /// <summary>What MatMulNBits computes with: the dequantized [N, K] weights (with <paramref name="roundScalesToHalf"/>,
    /// scales rounded through float16 as a float16 model stores them).</summary>
    public static float[] Dequantize(Quantized q, int n, int k, int blockSize, bool roundScalesToHalf)
    {
        var w = new float[(long)n * k];
        for (var r = 0; r < n; r++)
            for (var i = 0; i < k; i++)
            {
                var b = i / blockSize;
                var scale = q.Scales[r * q.BlocksPerRow + b];
                if (roundScalesToHalf) scale = (float)(Half)scale;
                var within = i % blockSize;
                var bt = q.Packed[((long)r * q.BlocksPerRow + b) * (blockSize / 2) + within / 2];
                var nibble = within % 2 == 0 ? bt & 0xF : bt >> 4;
                w[(long)r * k + i] = (nibble - 8) * scale;
            }
        return w;
    }

    /// <summary>Adds a <c>com.microsoft::MatMulNBits</c> node computing <paramref name="input"/> · Wᵀ for W [n, k] (a
    /// PyTorch Linear [out, in]): packed weights <c>{initializer}_Q4</c> [n, blocks, blockSize/2] and scales
    /// <c>{initializer}_scales</c> [n * blocks] in <paramref name="scalesType"/>, as ONNX Runtime's 4-bit quantizers name them.
    /// Returns the output name.</summary>
    public static string MatMulNBits(GraphBuilder g, string nodeName, string input, float[] w, int n, int k, int blockSize,
        string initializer, OnnxSteer.Onnx.Proto.TensorProto.Types.DataType scalesType, string? output = null)
    {
        var q = Quantize(w, n, k, blockSize);
        var b = g.InitializerBytes(initializer + "_Q4", q.Packed, [n, q.BlocksPerRow, blockSize / 2], OnnxSteer.Onnx.Proto.TensorProto.Types.DataType.Uint8);
        var sc = g.Initializer(initializer + "_scales", q.Scales, [(long)n * q.BlocksPerRow], scalesType);
        return g.Node("MatMulNBits", nodeName, [input, b, sc], 1, "com.microsoft", output is null ? null : [output],
            ("K", (long)k), ("N", (long)n), ("bits", 4L), ("block_size", (long)blockSize), ("accuracy_level", 0L))[0];
    }
}
