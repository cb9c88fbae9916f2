namespace OnnxSteer.ModelBuilder;

/// <summary>Rotary tables in the Hugging Face Llama convention (non-interleaved, rotate_half), computed in float32
/// like <c>LlamaRotaryEmbedding</c>: inv_freq[i] = 1 / theta^(2i/d), angle = pos * inv_freq[i].</summary>
internal static class Rotary
{
    /// <summary>cos and sin caches [maxPositions, headDim/2], row-major (the layout ORT's RotaryEmbedding and
    /// GroupQueryAttention take).</summary>
    public static (float[] Cos, float[] Sin) HalfCaches(int maxPositions, int headDim, double theta)
    {
        var half = headDim / 2;
        var cos = new float[maxPositions * half];
        var sin = new float[maxPositions * half];
        for (var i = 0; i < half; i++)
        {
            var invFreq = 1.0f / MathF.Pow((float)theta, 2f * i / headDim);
            for (var p = 0; p < maxPositions; p++)
            {
                var angle = p * invFreq;
                cos[p * half + i] = MathF.Cos(angle);
                sin[p * half + i] = MathF.Sin(angle);
            }
        }
        return (cos, sin);
    }

    /// <summary>cos and sin tables [maxPositions, headDim] with the half tables repeated twice along the last axis
    /// (HF's <c>emb = cat(freqs, freqs)</c>), as the decomposed Optimum graph gathers them.</summary>
    public static (float[] Cos, float[] Sin) FullCaches(int maxPositions, int headDim, double theta)
    {
        var (c, s) = HalfCaches(maxPositions, headDim, theta);
        var half = headDim / 2;
        var cos = new float[maxPositions * headDim];
        var sin = new float[maxPositions * headDim];
        for (var p = 0; p < maxPositions; p++)
            for (var i = 0; i < headDim; i++)
            {
                cos[p * headDim + i] = c[p * half + i % half];
                sin[p * headDim + i] = s[p * half + i % half];
            }
        return (cos, sin);
    }
}
