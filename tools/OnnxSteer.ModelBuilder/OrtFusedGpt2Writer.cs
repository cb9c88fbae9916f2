using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using DT = OnnxSteer.Onnx.Proto.TensorProto.Types.DataType;

namespace OnnxSteer.ModelBuilder;

/// <summary>Tensor names of the GPT-2 fixtures (Hugging Face GPT-2 names; Conv1D weights are [in, out] as in GPT-2).
/// The LayerNorm gains end in <c>layernorm.weight</c> so that <see cref="RandomWeights"/> draws them around 1.</summary>
internal static class Gpt2Names
{
    /// <summary>Token embedding [vocab, hidden].</summary>
    public const string Wte = "transformer.wte.weight";
    /// <summary>Learned position embedding [max_positions, hidden].</summary>
    public const string Wpe = "transformer.wpe.weight";
    /// <summary>Output projection [vocab, hidden] (untied here, so the fixture tests the lm_head separately).</summary>
    public const string LmHead = "lm_head.weight";
    /// <summary>Final LayerNorm gain/bias prefix.</summary>
    public const string LnF = "transformer.ln_f_layernorm";

    /// <summary>Block i's pre-attention LayerNorm prefix (gain <c>.weight</c>, bias <c>.bias</c>).</summary>
    public static string Ln1(int i) => $"transformer.h.{i}.ln_1_layernorm";
    /// <summary>Block i's pre-MLP LayerNorm prefix.</summary>
    public static string Ln2(int i) => $"transformer.h.{i}.ln_2_layernorm";
    /// <summary>Block i's module prefix, e.g. <c>attn.c_attn</c>, <c>attn.c_proj</c>, <c>mlp.c_fc</c>, <c>mlp.c_proj</c>.</summary>
    public static string Module(int i, string name) => $"transformer.h.{i}.{name}";
}

/// <summary>Writes the layout of ONNX Runtime's transformer optimizer for GPT-2 (onnxruntime.transformers
/// <c>optimizer.py --model_type gpt2</c> over the gpt2_helper export): <c>com.microsoft::EmbedLayerNormalization</c>
/// (word + position embeddings + block 0's ln_1; output 2 <c>embedding_sum</c> is the first residual),
/// <c>com.microsoft::Attention</c> with fused QKV weights and bias, one cache tensor per layer <c>past_{i}</c>
/// [2, batch, heads, past, head] → <c>present_{i}</c>, unidirectional, raw 2-D int32 mask;
/// <c>SkipLayerNormalization</c> with the projection bias fused (inputs [input, skip, gamma, beta, bias], output 3 the
/// residual), <c>FastGelu</c> with bias, final norm a SkipLayerNormalization with output 0 only, lm_head MatMul.
/// Graph inputs stay int64 (the optimizer inserts Casts to int32 for the contrib ops). float16 writes what
/// <c>optimizer.py --float16</c> writes: weights, activations, cache and logits in float16 (the LayerNorm epsilon stays
/// an attribute). ONNX Runtime's CPU provider has no float16 kernel for EmbedLayerNormalization, Attention or FastGelu
/// and runs them in float32 behind Casts it inserts itself (InsertCastTransformer), keeping values float32 between such
/// nodes: the mixed precision the steering rewrite has to leave untouched. With <see cref="WeightQuantization.Int4"/> the
/// projection and lm_head MatMuls become <c>MatMulNBits</c>, as ONNX Runtime's <c>matmul_4bits_quantizer</c> leaves
/// them (the fused QKV weight inside Attention stays float).</summary>
internal static class OrtFusedGpt2Writer
{
    /// <summary>LayerNorm epsilon of GPT-2.</summary>
    public const float Eps = 1e-5f;

    /// <summary>Writes <c>model.onnx</c> (+ <c>config.json</c>) for <paramref name="s"/> into <paramref name="dir"/>.</summary>
    public static void Write(DecoderSpec s, IWeightSource w, string dir)
    {
        if (s.KvHeads != s.Heads)
            throw new OnnxSteerException(ErrorKind.Usage, $"GPT-2 attention needs kv_heads == heads (got {s.KvHeads} vs {s.Heads}).");
        var T = s.DType == DecoderDType.Float16 ? DT.Float16 : DT.Float;
        using var store = s.UsesExternalData ? TensorStore.External(Path.Combine(dir, "model.onnx_data")) : TensorStore.Embedded();
        var g = new GraphBuilder("torch-jit-export", store);

        g.Input("input_ids", DT.Int64, "batch_size", "seq_len");
        g.Input("position_ids", DT.Int64, "batch_size", "seq_len");
        g.Input("attention_mask", DT.Int64, "batch_size", "total_seq_len");
        for (var i = 0; i < s.Layers; i++) g.Input($"past_{i}", T, 2, "batch_size", s.Heads, "past_seq_len", s.HeadDim);
        g.Output("logits", T, "batch_size", "seq_len", s.Vocab);
        for (var i = 0; i < s.Layers; i++) g.Output($"present_{i}", T, 2, "batch_size", s.Heads, "total_seq_len", s.HeadDim);

        string Get(string name, params int[] shape) => g.Initializer(name, w.Get(name, shape).Data, shape.Select(d => (long)d).ToArray(), T);
        // A Conv1D projection x · W (W [in, out]): MatMul, or (int4) MatMulNBits as ONNX Runtime's
        // matmul_4bits_quantizer rewrites the optimizer's MatMuls (node {name}_Q4, weight transposed to [out, in]).
        string Proj(string name, string input, string weight, int inDim, int outDim)
        {
            if (s.Quantization == WeightQuantization.None) return g.Op("MatMul", name, input, Get(weight, inDim, outDim));
            var wt = LlamaNames.Transpose(w.Get(weight, [inDim, outDim]).Data, inDim, outDim);
            return Int4.MatMulNBits(g, name + "_Q4", input, wt, outDim, inDim, s.QuantBlockSize, weight, T);
        }
        string Gain(string prefix) => Get(prefix + ".weight", s.Hidden);
        string Beta(string prefix) => Get(prefix + ".bias", s.Hidden);

        var ids = g.OpA("Cast", "Cast_input_ids", ["input_ids"], ("to", (long)DT.Int32));
        var pos = g.OpA("Cast", "Cast_position_ids", ["position_ids"], ("to", (long)DT.Int32));
        var mask = g.OpA("Cast", "Cast_attention_mask", ["attention_mask"], ("to", (long)DT.Int32));
        var wte = Get(Gpt2Names.Wte, s.Vocab, s.Hidden);
        var wpe = Get(Gpt2Names.Wpe, s.MaxPositions, s.Hidden);
        var embed = g.Node("EmbedLayerNormalization", "EmbedLayerNormalization_0",
            [ids, "", wte, wpe, "", Gain(Gpt2Names.Ln1(0)), Beta(Gpt2Names.Ln1(0)), "", pos], 3, "com.microsoft",
            ["EmbedLayerNormalization_0_output", "", "embedding_sum"], ("epsilon", Eps));
        var normed = embed[0];
        var residual = embed[2];
        var skipNorms = 0;
        for (var i = 0; i < s.Layers; i++)
        {
            var attn = g.Node("Attention", $"Attention_{i}",
                [normed, Get(Gpt2Names.Module(i, "attn.c_attn.weight"), s.Hidden, 3 * s.QWidth), Get(Gpt2Names.Module(i, "attn.c_attn.bias"), 3 * s.QWidth), mask, $"past_{i}"],
                2, "com.microsoft", [$"Attention_{i}_output", $"present_{i}"], ("num_heads", (long)s.Heads), ("unidirectional", 1L))[0];
            var proj = Proj($"MatMul_attn_proj_{i}", attn, Gpt2Names.Module(i, "attn.c_proj.weight"), s.QWidth, s.Hidden);
            // HF GPT-2 adds attn_output + residual (so the residual is the skip operand here) and residual + mlp below.
            var post = g.Node("SkipLayerNormalization", $"SkipLayerNorm_{skipNorms}",
                [proj, residual, Gain(Gpt2Names.Ln2(i)), Beta(Gpt2Names.Ln2(i)), Get(Gpt2Names.Module(i, "attn.c_proj.bias"), s.Hidden)], 4, "com.microsoft",
                [$"SkipLayerNorm_{skipNorms}_output", "", "", $"SkipLayerNorm_{skipNorms}_input_skip_bias_sum"], ("epsilon", Eps));
            skipNorms++;
            residual = post[3];
            var fc = Proj($"MatMul_fc_{i}", post[0], Gpt2Names.Module(i, "mlp.c_fc.weight"), s.Hidden, s.Intermediate);
            var act = g.Node("FastGelu", $"FastGelu_{i}", [fc, Get(Gpt2Names.Module(i, "mlp.c_fc.bias"), s.Intermediate)], 1, "com.microsoft")[0];
            var down = Proj($"MatMul_mlp_proj_{i}", act, Gpt2Names.Module(i, "mlp.c_proj.weight"), s.Intermediate, s.Hidden);
            var bias = Get(Gpt2Names.Module(i, "mlp.c_proj.bias"), s.Hidden);
            var last = i == s.Layers - 1;
            var ln = last ? Gpt2Names.LnF : Gpt2Names.Ln1(i + 1);
            var next = g.Node("SkipLayerNormalization", $"SkipLayerNorm_{skipNorms}", [residual, down, Gain(ln), Beta(ln), bias],
                last ? 1 : 4, "com.microsoft",
                last ? [$"SkipLayerNorm_{skipNorms}_output"] : [$"SkipLayerNorm_{skipNorms}_output", "", "", $"SkipLayerNorm_{skipNorms}_input_skip_bias_sum"],
                ("epsilon", Eps));
            skipNorms++;
            normed = next[0];
            if (!last) residual = next[3];
        }
        if (s.Quantization == WeightQuantization.None)
        {
            var lm = g.Initializer("lm_head_weight_t", LlamaNames.Transpose(w.Get(Gpt2Names.LmHead, [s.Vocab, s.Hidden]).Data, s.Vocab, s.Hidden), [s.Hidden, s.Vocab], T);
            g.Node("MatMul", "MatMul_lm_head", [normed, lm], 1, "", ["logits"]);
        }
        else Int4.MatMulNBits(g, "MatMul_lm_head_Q4", normed, w.Get(Gpt2Names.LmHead, [s.Vocab, s.Hidden]).Data, s.Vocab, s.Hidden, s.QuantBlockSize, "lm_head_weight", T, "logits");

        var model = new ModelProto { IrVersion = 7, ProducerName = "onnxruntime.transformers", ProducerVersion = "1.31.1", Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 14 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        store.Dispose();
        OnnxModelFile.SaveAtomic(model, Path.Combine(dir, "model.onnx"));
        WriteConfig(s, dir);
    }

    /// <summary>The Hugging Face config.json of the GPT-2 the graph is (what the runtime reads: sizes, EOS, pad).</summary>
    private static void WriteConfig(DecoderSpec s, string dir)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("GPT2LMHeadModel"),
            ["model_type"] = "gpt2",
            ["n_embd"] = s.Hidden,
            ["n_head"] = s.Heads,
            ["n_layer"] = s.Layers,
            ["n_inner"] = s.Intermediate,
            ["n_positions"] = s.MaxPositions,
            ["vocab_size"] = s.Vocab,
            ["layer_norm_epsilon"] = Eps,
            ["activation_function"] = "gelu_new",
            ["bos_token_id"] = s.BosTokenId,
            ["eos_token_id"] = s.EosTokenId,
            ["pad_token_id"] = s.PadTokenId,
        };
        File.WriteAllText(Path.Combine(dir, "config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>A plain C# GPT-2 forward (float32 weights, double accumulation) over the weights
/// <see cref="OrtFusedGpt2Writer"/> writes: the ground truth for the ort-fused fixtures.</summary>
internal sealed class Gpt2Reference
{
    private readonly DecoderSpec _s;
    private readonly IWeightSource _w;

    /// <summary>Creates a reference for <paramref name="spec"/>.</summary>
    public Gpt2Reference(DecoderSpec spec, IWeightSource weights) { _s = spec; _w = new CachedWeights(weights); }

    private float[] W(string name, params int[] shape) => _w.Get(name, shape).Data;

    /// <summary>Logits [position][vocab] and the residual after every block [layer][position][hidden] for one row;
    /// positions are cumsum(mask) - 1 (1 on padding), as the runners feed them.</summary>
    public (float[][] Logits, float[][][] Residuals) Forward(IReadOnlyList<long> ids, IReadOnlyList<long>? mask = null)
    {
        var s = _s;
        var n = ids.Count;
        mask ??= Enumerable.Repeat(1L, n).ToArray();
        var wte = W(Gpt2Names.Wte, s.Vocab, s.Hidden);
        var wpe = W(Gpt2Names.Wpe, s.MaxPositions, s.Hidden);
        var x = new float[n][];
        var c = 0;
        for (var t = 0; t < n; t++)
        {
            c += (int)mask[t];
            var p = mask[t] == 0 ? 1 : c - 1;
            x[t] = new float[s.Hidden];
            for (var d = 0; d < s.Hidden; d++) x[t][d] = wte[ids[t] * s.Hidden + d] + wpe[p * s.Hidden + d];
        }
        var residuals = new float[s.Layers][][];
        for (var l = 0; l < s.Layers; l++)
        {
            var qkvW = W(Gpt2Names.Module(l, "attn.c_attn.weight"), s.Hidden, 3 * s.QWidth);
            var qkvB = W(Gpt2Names.Module(l, "attn.c_attn.bias"), 3 * s.QWidth);
            var qkv = x.Select(r => Conv1D(LayerNorm(r, Gpt2Names.Ln1(l)), qkvW, qkvB)).ToArray();
            var attn = new float[n][];
            var scale = 1.0 / Math.Sqrt(s.HeadDim);
            for (var t = 0; t < n; t++)
            {
                attn[t] = new float[s.QWidth];
                for (var h = 0; h < s.Heads; h++)
                {
                    var scores = new double[t + 1];
                    var max = double.NegativeInfinity;
                    for (var j = 0; j <= t; j++)
                    {
                        if (mask[j] == 0) { scores[j] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (var d = 0; d < s.HeadDim; d++) dot += (double)qkv[t][h * s.HeadDim + d] * qkv[j][s.QWidth + h * s.HeadDim + d];
                        scores[j] = dot * scale;
                        max = Math.Max(max, scores[j]);
                    }
                    if (double.IsNegativeInfinity(max)) continue;
                    double sum = 0;
                    for (var j = 0; j <= t; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                    for (var j = 0; j <= t; j++)
                        for (var d = 0; d < s.HeadDim; d++) attn[t][h * s.HeadDim + d] += (float)(scores[j] / sum * qkv[j][2 * s.QWidth + h * s.HeadDim + d]);
                }
            }
            var projW = W(Gpt2Names.Module(l, "attn.c_proj.weight"), s.QWidth, s.Hidden);
            var projB = W(Gpt2Names.Module(l, "attn.c_proj.bias"), s.Hidden);
            var fcW = W(Gpt2Names.Module(l, "mlp.c_fc.weight"), s.Hidden, s.Intermediate);
            var fcB = W(Gpt2Names.Module(l, "mlp.c_fc.bias"), s.Intermediate);
            var downW = W(Gpt2Names.Module(l, "mlp.c_proj.weight"), s.Intermediate, s.Hidden);
            var downB = W(Gpt2Names.Module(l, "mlp.c_proj.bias"), s.Hidden);
            for (var t = 0; t < n; t++)
            {
                var o = Conv1D(attn[t], projW, projB);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += o[d];
                var f = Conv1D(LayerNorm(x[t], Gpt2Names.Ln2(l)), fcW, fcB);
                for (var d = 0; d < f.Length; d++) f[d] = FastGelu(f[d]);
                var m = Conv1D(f, downW, downB);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += m[d];
            }
            residuals[l] = x.Select(r => (float[])r.Clone()).ToArray();
        }
        var lm = W(Gpt2Names.LmHead, s.Vocab, s.Hidden);
        var logits = x.Select(r =>
        {
            var h = LayerNorm(r, Gpt2Names.LnF);
            var o = new float[s.Vocab];
            for (var v = 0; v < s.Vocab; v++)
            {
                double acc = 0;
                for (var d = 0; d < s.Hidden; d++) acc += (double)h[d] * lm[v * s.Hidden + d];
                o[v] = (float)acc;
            }
            return o;
        }).ToArray();
        return (logits, residuals);
    }

    /// <summary>GPT-2's gelu_new, the function com.microsoft::FastGelu computes.</summary>
    public static float FastGelu(float v) => (float)(0.5 * v * (1 + Math.Tanh(0.7978845608028654 * (v + 0.044715 * v * v * v))));

    private float[] LayerNorm(float[] x, string prefix)
    {
        var gain = W(prefix + ".weight", _s.Hidden);
        var beta = W(prefix + ".bias", _s.Hidden);
        var mean = x.Average(v => (double)v);
        var variance = x.Average(v => (v - mean) * (v - mean));
        var inv = 1.0 / Math.Sqrt(variance + OrtFusedGpt2Writer.Eps);
        return x.Select((v, i) => (float)((v - mean) * inv * gain[i] + beta[i])).ToArray();
    }

    /// <summary>GPT-2 Conv1D: x [in] · w [in, out] + b.</summary>
    private static float[] Conv1D(float[] x, float[] w, float[] b)
    {
        var outDim = b.Length;
        var r = new float[outDim];
        for (var o = 0; o < outDim; o++)
        {
            double acc = b[o];
            for (var i = 0; i < x.Length; i++) acc += (double)x[i] * w[i * outDim + o];
            r[o] = (float)acc;
        }
        return r;
    }
}
