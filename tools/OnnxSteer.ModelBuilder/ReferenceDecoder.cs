namespace OnnxSteer.ModelBuilder;

/// <summary>A plain C# Llama forward pass (straightforward loops, float32) over the same weights the builders write.
/// It is the ground truth for the layout tests and for checking exported trained weights.</summary>
internal sealed class ReferenceDecoder
{
    private readonly DecoderSpec _s;
    private readonly IWeightSource _w;
    private readonly bool _half;

    /// <summary>Creates a reference for <paramref name="spec"/>. For float16 specs the weights are rounded through
    /// float16 first (as the model stores them), for int4 specs the Linear weights are quantized and dequantized;
    /// the arithmetic stays float32.</summary>
    public ReferenceDecoder(DecoderSpec spec, IWeightSource weights)
    {
        _s = spec;
        _w = new CachedWeights(weights);
        _half = spec.DType == DecoderDType.Float16;
    }

    private float[] W(string name, params int[] shape)
    {
        var d = _w.Get(name, shape).Data;
        // int4 models compute with the dequantized Linear weights (embedding and norms stay float).
        if (_s.Quantization == WeightQuantization.Int4 && shape.Length == 2 && name != LlamaNames.Embed)
            return Int4.Dequantize(Int4.Quantize(d, shape[0], shape[1], _s.QuantBlockSize), shape[0], shape[1], _s.QuantBlockSize, _half);
        if (!_half) return d;
        var c = (float[])d.Clone();
        TensorBytes.RoundToHalf(c);
        return c;
    }

    /// <summary>Logits [position][vocab] for one row. <paramref name="mask"/> (same length, 1 = token, 0 = padding)
    /// defaults to all ones; positions are cumsum(mask) - 1 as Hugging Face computes them. Rows at padded
    /// positions are meaningless.</summary>
    public float[][] Forward(IReadOnlyList<long> ids, IReadOnlyList<long>? mask = null) => Run(ids, mask, null);

    /// <summary>Like <see cref="Forward"/>, also returning the residual stream after every block ([layer][position][hidden]).</summary>
    public (float[][] Logits, float[][][] Residuals) ForwardWithResiduals(IReadOnlyList<long> ids, IReadOnlyList<long>? mask = null)
    {
        var res = new float[_s.Layers][][];
        var logits = Run(ids, mask, res);
        return (logits, res);
    }

    private float[][] Run(IReadOnlyList<long> ids, IReadOnlyList<long>? mask, float[][][]? residuals)
    {
        var s = _s;
        var n = ids.Count;
        mask ??= Enumerable.Repeat(1L, n).ToArray();
        var pos = new int[n];
        var c = 0;
        for (var t = 0; t < n; t++) { c += (int)mask[t]; pos[t] = mask[t] == 0 ? 1 : c - 1; }
        var (cos, sin) = Rotary.HalfCaches(Math.Max(s.MaxPositions, n), s.HeadDim, s.RopeTheta);
        var embed = W(LlamaNames.Embed, s.Vocab, s.Hidden);
        var x = new float[n][];
        for (var t = 0; t < n; t++) x[t] = embed.AsSpan((int)ids[t] * s.Hidden, s.Hidden).ToArray();
        var half = s.HeadDim / 2;
        var group = s.Heads / s.KvHeads;
        for (var l = 0; l < s.Layers; l++)
        {
            var h = x.Select(r => RmsNorm(r, W(LlamaNames.InputNorm(l), s.Hidden))).ToArray();
            var q = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'q'), s.QWidth, s.Hidden), s.QWidth)).ToArray();
            var k = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'k'), s.KvWidth, s.Hidden), s.KvWidth)).ToArray();
            var v = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'v'), s.KvWidth, s.Hidden), s.KvWidth)).ToArray();
            for (var t = 0; t < n; t++)
            {
                Rope(q[t], s.Heads, pos[t]);
                Rope(k[t], s.KvHeads, pos[t]);
            }
            var attn = new float[n][];
            var scale = 1.0 / Math.Sqrt(s.HeadDim);
            for (var t = 0; t < n; t++)
            {
                attn[t] = new float[s.QWidth];
                for (var hd = 0; hd < s.Heads; hd++)
                {
                    var kvh = hd / group;
                    var scores = new double[t + 1];
                    var max = double.NegativeInfinity;
                    for (var j = 0; j <= t; j++)
                    {
                        if (mask[j] == 0) { scores[j] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (var d = 0; d < s.HeadDim; d++) dot += q[t][hd * s.HeadDim + d] * k[j][kvh * s.HeadDim + d];
                        scores[j] = dot * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    if (double.IsNegativeInfinity(max)) continue;
                    double sum = 0;
                    for (var j = 0; j <= t; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                    for (var j = 0; j <= t; j++)
                    {
                        var p = scores[j] / sum;
                        if (p == 0) continue;
                        for (var d = 0; d < s.HeadDim; d++) attn[t][hd * s.HeadDim + d] += (float)(p * v[j][kvh * s.HeadDim + d]);
                    }
                }
            }
            var wo = W(LlamaNames.Attn(l, 'o'), s.Hidden, s.QWidth);
            for (var t = 0; t < n; t++)
            {
                var o = Linear(attn[t], wo, s.Hidden);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += o[d];
            }
            var post = W(LlamaNames.PostAttentionNorm(l), s.Hidden);
            var gate = W(LlamaNames.Mlp(l, "gate"), s.Intermediate, s.Hidden);
            var up = W(LlamaNames.Mlp(l, "up"), s.Intermediate, s.Hidden);
            var down = W(LlamaNames.Mlp(l, "down"), s.Hidden, s.Intermediate);
            for (var t = 0; t < n; t++)
            {
                var hn = RmsNorm(x[t], post);
                var g = Linear(hn, gate, s.Intermediate);
                var u = Linear(hn, up, s.Intermediate);
                for (var d = 0; d < s.Intermediate; d++) g[d] = g[d] / (1f + MathF.Exp(-g[d])) * u[d];
                var dn = Linear(g, down, s.Hidden);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += dn[d];
            }
            if (residuals is not null) residuals[l] = x.Select(r => (float[])r.Clone()).ToArray();
        }
        var fn = W(LlamaNames.FinalNorm, s.Hidden);
        var lm = W(LlamaNames.LmHead, s.Vocab, s.Hidden);
        return x.Select(r => Linear(RmsNorm(r, fn), lm, s.Vocab)).ToArray();

        void Rope(float[] vec, int heads, int p) => ReferenceMath.Rope(vec, heads, s.HeadDim, half, cos, sin, p);
    }

    private float[] RmsNorm(float[] x, float[] gain) => ReferenceMath.RmsNorm(x, gain, _s.RmsEps);

    private static float[] Linear(float[] x, float[] w, int outDim) => ReferenceMath.Linear(x, w, outDim);
}

/// <summary>The float64-accumulating building blocks of the C# reference forwards (<see cref="ReferenceDecoder"/>,
/// <see cref="Gemma2Reference"/>), kept in one place so both references compute them the same way.</summary>
internal static class ReferenceMath
{
    /// <summary>RMSNorm: x / sqrt(mean(x²) + eps) · gain, the sum of squares in double.</summary>
    public static float[] RmsNorm(float[] x, float[] gain, double eps)
    {
        double ss = 0;
        foreach (var v in x) ss += (double)v * v;
        var inv = 1.0 / Math.Sqrt(ss / x.Length + eps);
        var r = new float[x.Length];
        for (var i = 0; i < x.Length; i++) r[i] = (float)(x[i] * inv) * gain[i];
        return r;
    }

    /// <summary>y = W x with W in PyTorch Linear layout [out, in], accumulated in double.</summary>
    public static float[] Linear(float[] x, float[] w, int outDim)
    {
        var inDim = x.Length;
        var r = new float[outDim];
        for (var o = 0; o < outDim; o++)
        {
            double acc = 0;
            var off = o * inDim;
            for (var i = 0; i < inDim; i++) acc += (double)x[i] * w[off + i];
            r[o] = (float)acc;
        }
        return r;
    }

    /// <summary>Rotary embedding in place (rotate-half layout) for position <paramref name="p"/> of each head, from
    /// cos/sin tables of <paramref name="half"/> values per position.</summary>
    public static void Rope(float[] vec, int heads, int headDim, int half, float[] cos, float[] sin, int p)
    {
        for (var hd = 0; hd < heads; hd++)
        {
            var b = hd * headDim;
            for (var i = 0; i < half; i++)
            {
                float c0 = cos[p * half + i], s0 = sin[p * half + i];
                float a = vec[b + i], bb = vec[b + i + half];
                vec[b + i] = a * c0 - bb * s0;
                vec[b + i + half] = bb * c0 + a * s0;
            }
        }
    }
}
