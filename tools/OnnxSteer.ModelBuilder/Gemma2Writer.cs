using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using DT = OnnxSteer.Onnx.Proto.TensorProto.Types.DataType;

namespace OnnxSteer.ModelBuilder;

/// <summary>Gemma 2 tensor names beyond the Llama ones (<see cref="LlamaNames"/> covers embed, q/k/v/o, gate/up/down,
/// input_layernorm, post_attention_layernorm, norm, lm_head).</summary>
internal static class Gemma2Names
{
    /// <summary><c>model.layers.{i}.pre_feedforward_layernorm.weight</c>.</summary>
    public static string PreFeedforwardNorm(int i) => $"model.layers.{i}.pre_feedforward_layernorm.weight";
    /// <summary><c>model.layers.{i}.post_feedforward_layernorm.weight</c>.</summary>
    public static string PostFeedforwardNorm(int i) => $"model.layers.{i}.post_feedforward_layernorm.weight";

    /// <summary>Final logit soft-capping of the fixtures (Gemma 2's <c>final_logit_softcapping</c>).</summary>
    public const float FinalLogitSoftcap = 30f;

    /// <summary>Attention-logit soft-capping (Gemma 2's <c>attn_logit_softcapping</c>); GroupQueryAttention variant only.</summary>
    public const float AttentionSoftcap = 50f;

    /// <summary>Sliding window of the local layers (even layers, as in Hugging Face's Gemma 2), tiny so short fixtures
    /// exercise it: a token sees itself and the <c>SlidingWindow - 1</c> tokens before it (GroupQueryAttention's
    /// <c>local_window_size</c> counts the token itself, as measured against the reference). GroupQueryAttention variant only.</summary>
    public const int SlidingWindow = 4;

    /// <summary>Whether block <paramref name="layer"/> uses the sliding window.</summary>
    public static bool IsSliding(int layer) => layer % 2 == 0;

    /// <summary>The embedding normaliser sqrt(hidden), in the model's float type as Gemma multiplies by it.</summary>
    public static float Normalizer(DecoderSpec s)
    {
        var v = (float)Math.Sqrt(s.Hidden);
        return s.DType == DecoderDType.Float16 ? (float)(Half)v : v;
    }
}

/// <summary>Writes Gemma 2 as the onnxruntime-genai model builder does (see docs/exporters.md: Gemma 2 computes its norms
/// in float32, so in a float16 model the residual stream is float32): embedding Gather · sqrt(hidden), Cast to float32;
/// block 0's input norm a plain <c>SimplifiedLayerNormalization</c>; per block attention (RotaryEmbedding +
/// MultiHeadAttention in the model dtype) → Cast → <c>post_attention_layernorm</c> (plain SimplifiedLayerNormalization,
/// float32) → <c>pre_feedforward_layernorm</c> = SkipSimplifiedLayerNormalization(residual, that) whose output 3 is the
/// residual after attention → GeGLU MLP (FastGelu(gate) · up) → Cast → <c>post_feedforward_layernorm</c> →
/// next block's input norm (or the final norm, output 0 only) as SkipSimplifiedLayerNormalization. Every norm weight is
/// stored float32 with Gemma's (1 + weight) folded in, as the builder does. Logits are soft-capped (cap · tanh(x / cap)).
/// With <see cref="AttentionKind.GroupQuery"/> attention is GroupQueryAttention with fused rotary, <c>softcap</c>
/// (attention-logit soft-capping) and <c>local_window_size</c> on the sliding layers, as the builder writes it for CPU;
/// with <see cref="AttentionKind.MultiHead"/> it is RotaryEmbedding + MultiHeadAttention, which has neither (global
/// attention, no attention soft-capping). query_pre_attn_scalar = head_dim.</summary>
internal static class Gemma2Writer
{
    public static void Write(DecoderSpec s, IWeightSource w, string dir)
    {
        var gqa = s.Attention == AttentionKind.GroupQuery;
        if (!gqa && s.KvHeads != s.Heads)
            throw new OnnxSteerException(ErrorKind.Usage, "MultiHeadAttention needs kv_heads == heads; use GroupQueryAttention.");
        if (gqa && s.HeadDim % 16 != 0)
            throw new OnnxSteerException(ErrorKind.Usage, $"GroupQueryAttention on CPU needs head_dim a multiple of 16, got {s.HeadDim}.");
        var fp16 = s.DType == DecoderDType.Float16;
        var T = fp16 ? DT.Float16 : DT.Float;
        const DT R = DT.Float;
        using var store = s.UsesExternalData ? TensorStore.External(Path.Combine(dir, GenAiWriter.DataFile)) : TensorStore.Embedded();
        var g = new GraphBuilder("main_graph", store);

        g.Input("input_ids", DT.Int64, "batch_size", "sequence_length");
        g.Input("attention_mask", DT.Int64, "batch_size", "total_sequence_length");
        if (!gqa) g.Input("position_ids", DT.Int64, "batch_size", "sequence_length");
        for (var i = 0; i < s.Layers; i++)
        {
            g.Input($"past_key_values.{i}.key", T, "batch_size", s.KvHeads, "past_sequence_length", s.HeadDim);
            g.Input($"past_key_values.{i}.value", T, "batch_size", s.KvHeads, "past_sequence_length", s.HeadDim);
        }
        g.Output("logits", T, "batch_size", "sequence_length", s.Vocab);
        for (var i = 0; i < s.Layers; i++)
        {
            g.Output($"present.{i}.key", T, "batch_size", s.KvHeads, "total_sequence_length", s.HeadDim);
            g.Output($"present.{i}.value", T, "batch_size", s.KvHeads, "total_sequence_length", s.HeadDim);
        }

        // The builder's additive causal + padding mask (MultiHeadAttention), or seqlens_k and total length (GQA).
        var mask = MaskInputs(g, T, gqa);

        string Linear(string hfName, int outDim, int inDim, string onnxName) =>
            g.Initializer(onnxName, LlamaNames.Transpose(w.Get(hfName, [outDim, inDim]).Data, outDim, inDim), [inDim, outDim], T);
        // A Linear layer: MatMul, or (int4) MatMulNBits named as the builder's quantizer names it (node .../MatMul_Q4).
        string Proj(string nodeName, string input, string hfName, int outDim, int inDim, string onnxName) =>
            s.Quantization == WeightQuantization.None
                ? g.Op("MatMul", nodeName, input, Linear(hfName, outDim, inDim, onnxName))
                : Int4.MatMulNBits(g, nodeName + "_Q4", input, w.Get(hfName, [outDim, inDim]).Data, outDim, inDim, s.QuantBlockSize, onnxName, T);
        // Gemma's RMSNorm multiplies by (1 + weight); the builder folds the 1 into the stored weight.
        string Norm(string hfName, string onnxName) =>
            g.Initializer(onnxName, w.Get(hfName, [s.Hidden]).Data.Select(v => 1f + v).ToArray(), [s.Hidden], R);
        string ToR(string scope, string x) => fp16 ? g.OpA("Cast", $"{scope}/Cast", [x], ("to", (long)R)) : x;
        string ToT(string scope, string x) => fp16 ? g.OpA("Cast", $"{scope}/Cast_1", [x], ("to", (long)T)) : x;

        var embed = g.Initializer("model.embed_tokens.weight", w.Get(LlamaNames.Embed, [s.Vocab, s.Hidden]).Data, [s.Vocab, s.Hidden], T);
        var (cosData, sinData) = Rotary.HalfCaches(s.MaxPositions, s.HeadDim, s.RopeTheta);
        var cos = g.Initializer("cos_cache", cosData, [s.MaxPositions, s.HeadDim / 2], T);
        var sin = g.Initializer("sin_cache", sinData, [s.MaxPositions, s.HeadDim / 2], T);
        var gathered = g.Op("Gather", "/model/embed_tokens/Gather", embed, "input_ids");
        var scaled = g.Op("Mul", "/model/embed_tokens/Mul", gathered, g.Scalar(Gemma2Names.Normalizer(s), T));
        var residual = ToR("/model/embed_tokens", scaled);
        var eps = (float)s.RmsEps;
        var normed = ToT("/model/layers.0/input_layernorm", g.Node("SimplifiedLayerNormalization", "/model/layers.0/input_layernorm/LayerNorm",
            [residual, Norm(LlamaNames.InputNorm(0), "model.layers.0.input_layernorm.weight")], 1, "", ["/model/layers.0/input_layernorm/output_0"],
            ("epsilon", eps), ("axis", -1L), ("stash_type", 1L))[0]);
        var scale = (float)(1.0 / Math.Sqrt(s.HeadDim));

        for (var i = 0; i < s.Layers; i++)
        {
            var p = $"/model/layers.{i}";
            var q = Proj($"{p}/attn/q_proj/MatMul", normed, LlamaNames.Attn(i, 'q'), s.QWidth, s.Hidden, $"model.layers.{i}.attn.q_proj.MatMul.weight");
            var k = Proj($"{p}/attn/k_proj/MatMul", normed, LlamaNames.Attn(i, 'k'), s.KvWidth, s.Hidden, $"model.layers.{i}.attn.k_proj.MatMul.weight");
            var v = Proj($"{p}/attn/v_proj/MatMul", normed, LlamaNames.Attn(i, 'v'), s.KvWidth, s.Hidden, $"model.layers.{i}.attn.v_proj.MatMul.weight");
            var attn = Attention(g, s, i, q, k, v, cos, sin, mask, scale);
            var o = Proj($"{p}/attn/o_proj/MatMul", attn, LlamaNames.Attn(i, 'o'), s.Hidden, s.QWidth, $"model.layers.{i}.attn.o_proj.MatMul.weight");
            var postAttn = g.Node("SimplifiedLayerNormalization", $"{p}/post_attention_layernorm/LayerNorm",
                [ToR($"{p}/post_attention_layernorm", o), Norm(LlamaNames.PostAttentionNorm(i), $"model.layers.{i}.post_attention_layernorm.weight")], 1, "",
                [$"{p}/post_attention_layernorm/output_0"], ("epsilon", eps), ("axis", -1L), ("stash_type", 1L))[0];
            var preFf = g.Node("SkipSimplifiedLayerNormalization", $"{p}/pre_feedforward_layernorm/SkipLayerNorm",
                [residual, postAttn, Norm(Gemma2Names.PreFeedforwardNorm(i), $"model.layers.{i}.pre_feedforward_layernorm.weight")], 4, "com.microsoft",
                [$"{p}/pre_feedforward_layernorm/output_0", "", "", $"{p}/pre_feedforward_layernorm/output_3"], ("epsilon", eps));
            residual = preFf[3];
            var h2 = ToT($"{p}/pre_feedforward_layernorm", preFf[0]);
            var gate = Proj($"{p}/mlp/gate_proj/MatMul", h2, LlamaNames.Mlp(i, "gate"), s.Intermediate, s.Hidden, $"model.layers.{i}.mlp.gate_proj.MatMul.weight");
            var up = Proj($"{p}/mlp/up_proj/MatMul", h2, LlamaNames.Mlp(i, "up"), s.Intermediate, s.Hidden, $"model.layers.{i}.mlp.up_proj.MatMul.weight");
            var act = g.Node("FastGelu", $"{p}/mlp/act_fn/FastGelu", [gate], 1, "com.microsoft")[0];
            var down = Proj($"{p}/mlp/down_proj/MatMul", g.Op("Mul", $"{p}/mlp/Mul", act, up), LlamaNames.Mlp(i, "down"), s.Hidden, s.Intermediate, $"model.layers.{i}.mlp.down_proj.MatMul.weight");
            var postFf = g.Node("SimplifiedLayerNormalization", $"{p}/post_feedforward_layernorm/LayerNorm",
                [ToR($"{p}/post_feedforward_layernorm", down), Norm(Gemma2Names.PostFeedforwardNorm(i), $"model.layers.{i}.post_feedforward_layernorm.weight")], 1, "",
                [$"{p}/post_feedforward_layernorm/output_0"], ("epsilon", eps), ("axis", -1L), ("stash_type", 1L))[0];
            if (i < s.Layers - 1)
            {
                var n = $"/model/layers.{i + 1}/input_layernorm";
                var next = g.Node("SkipSimplifiedLayerNormalization", $"{n}/SkipLayerNorm",
                    [residual, postFf, Norm(LlamaNames.InputNorm(i + 1), $"model.layers.{i + 1}.input_layernorm.weight")], 4, "com.microsoft",
                    [$"{n}/output_0", "", "", $"{n}/output_3"], ("epsilon", eps));
                normed = ToT(n, next[0]);
                residual = next[3];
            }
            else
            {
                var n = $"/model/layers.{s.Layers}/final_norm_layernorm";
                normed = ToT(n, g.Node("SkipSimplifiedLayerNormalization", $"{n}/SkipLayerNorm",
                    [residual, postFf, Norm(LlamaNames.FinalNorm, $"model.layers.{s.Layers}.final_norm_layernorm.weight")], 1, "com.microsoft",
                    [$"{n}/output_0"], ("epsilon", eps))[0]);
            }
        }
        var raw = Proj("/lm_head/MatMul", normed, LlamaNames.LmHead, s.Vocab, s.Hidden, "lm_head.MatMul.weight");
        var cap = g.Scalar(Gemma2Names.FinalLogitSoftcap, T);
        var tanh = g.Op("Tanh", "/lm_head/softcap/Tanh", g.Op("Div", "/lm_head/softcap/Div", raw, cap));
        g.Node("Mul", "/lm_head/softcap/Mul", [tanh, cap], 1, "", ["logits"]);

        store.Dispose();
        Save(g, s, dir);
    }

    /// <summary>The builder's additive causal + padding mask (MultiHeadAttention), or seqlens_k and total length (GQA).</summary>
    private static (string? Bias, string? SeqlensK, string? TotalLength) MaskInputs(GraphBuilder g, DT T, bool gqa)
    {
        const string m = "/model/attn_mask_reformat";
        string? seqlensK = null, totalLen = null;
        if (gqa)
        {
            var sum = g.OpA("ReduceSum", $"{m}/attn_mask_subgraph/ReduceSum", ["attention_mask", g.Int64(false, 1)], ("keepdims", 0L));
            seqlensK = g.OpA("Cast", $"{m}/attn_mask_subgraph/Cast_2", [g.Op("Sub", $"{m}/attn_mask_subgraph/Sub", sum, g.Int64(true, 1))], ("to", (long)DT.Int32));
            var totalG = g.OpA("Gather", $"{m}/attn_mask_subgraph/Gather_1", [g.Op("Shape", $"{m}/attn_mask_subgraph/Shape_1", "attention_mask"), g.Int64(true, 1)], ("axis", 0L));
            totalLen = g.OpA("Cast", $"{m}/attn_mask_subgraph/Cast_1", [totalG], ("to", (long)DT.Int32));
        }
        // The MultiHeadAttention bias is the genai builder's, node for node.
        var bias = gqa ? null : GenAiWriter.MaskInputs(g, T, gqa: false).Bias;
        return (bias, seqlensK, totalLen);
    }

    /// <summary>Layer <paramref name="i"/>'s attention: GroupQueryAttention with Gemma 2's sliding window on alternate
    /// layers and its softcap, or rotary embeddings then MultiHeadAttention.</summary>
    private static string Attention(GraphBuilder g, DecoderSpec s, int i, string q, string k, string v, string cos, string sin,
        (string? Bias, string? SeqlensK, string? TotalLength) mask, float scale)
    {
        var p = $"/model/layers.{i}";
        string attn;
        if (s.Attention == AttentionKind.GroupQuery)
        {
            attn = g.Node("GroupQueryAttention", $"{p}/attn/GroupQueryAttention",
                [q, k, v, $"past_key_values.{i}.key", $"past_key_values.{i}.value", mask.SeqlensK!, mask.TotalLength!, cos, sin], 3, "com.microsoft",
                [$"{p}/attn/GroupQueryAttention/output_0", $"present.{i}.key", $"present.{i}.value"],
                ("num_heads", (long)s.Heads), ("kv_num_heads", (long)s.KvHeads), ("scale", scale),
                ("local_window_size", Gemma2Names.IsSliding(i) ? (long)Gemma2Names.SlidingWindow : -1L),
                ("softcap", Gemma2Names.AttentionSoftcap), ("do_rotary", 1L), ("rotary_interleaved", 0L))[0];
        }
        else
        {
            var qr = g.Node("RotaryEmbedding", $"{p}/attn/q_rotary/RotaryEmbedding", [q, "position_ids", cos, sin], 1, "com.microsoft", null,
                ("interleaved", 0L), ("num_heads", 0L), ("rotary_embedding_dim", 0L))[0];
            var kr = g.Node("RotaryEmbedding", $"{p}/attn/k_rotary/RotaryEmbedding", [k, "position_ids", cos, sin], 1, "com.microsoft", null,
                ("interleaved", 0L), ("num_heads", 0L), ("rotary_embedding_dim", 0L))[0];
            attn = g.Node("MultiHeadAttention", $"{p}/attn/MultiHeadAttention",
                [qr, kr, v, "", "", mask.Bias!, $"past_key_values.{i}.key", $"past_key_values.{i}.value"], 3, "com.microsoft",
                [$"{p}/attn/MultiHeadAttention/output_0", $"present.{i}.key", $"present.{i}.value"],
                ("num_heads", (long)s.Heads), ("scale", scale))[0];
        }
        return attn;
    }

    /// <summary>The model file, and genai_config.json with the model type gemma2.</summary>
    private static void Save(GraphBuilder g, DecoderSpec s, string dir)
    {
        var model = new ModelProto { IrVersion = 10, ProducerName = "onnxruntime-genai", ProducerVersion = "0.0.0", Graph = g.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = 21 });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        OnnxModelFile.SaveAtomic(model, Path.Combine(dir, GenAiWriter.ModelFile));
        GenAiWriter.WriteConfig(s, dir);
        var configPath = Path.Combine(dir, "genai_config.json");
        var config = JsonNode.Parse(File.ReadAllText(configPath))!;
        config["model"]!["type"] = "gemma2";
        File.WriteAllText(configPath, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}

/// <summary>A plain C# Gemma 2 forward over the weights <see cref="Gemma2Writer"/> writes (float16 models: weights rounded
/// through float16, arithmetic float32/double; the residual is float32 as in the export).</summary>
internal sealed class Gemma2Reference
{
    private readonly DecoderSpec _s;
    private readonly IWeightSource _w;
    private readonly bool _half;

    /// <summary>Creates a reference for <paramref name="spec"/>.</summary>
    public Gemma2Reference(DecoderSpec spec, IWeightSource weights)
    {
        _s = spec;
        _w = new CachedWeights(weights);
        _half = spec.DType == DecoderDType.Float16;
    }

    private float[] W(string name, params int[] shape)
    {
        var d = (float[])_w.Get(name, shape).Data.Clone();
        if (_half) TensorBytes.RoundToHalf(d);
        return d;
    }

    private float[] NormWeight(string name) => _w.Get(name, [_s.Hidden]).Data.Select(v => 1f + v).ToArray();

    /// <summary>Logits [position][vocab] and residuals after each block [layer][position][hidden] for one row.</summary>
    public (float[][] Logits, float[][][] Residuals) Forward(IReadOnlyList<long> ids, IReadOnlyList<long>? mask = null)
    {
        var s = _s;
        var n = ids.Count;
        mask ??= Enumerable.Repeat(1L, n).ToArray();
        var pos = new int[n];
        var c = 0;
        for (var t = 0; t < n; t++) { c += (int)mask[t]; pos[t] = mask[t] == 0 ? 1 : c - 1; }
        var (cos, sin) = Rotary.HalfCaches(Math.Max(s.MaxPositions, n), s.HeadDim, s.RopeTheta);
        var embed = W(LlamaNames.Embed, s.Vocab, s.Hidden);
        var normalizer = Gemma2Names.Normalizer(s);
        var x = new float[n][];
        for (var t = 0; t < n; t++) x[t] = embed.AsSpan((int)ids[t] * s.Hidden, s.Hidden).ToArray().Select(v => v * normalizer).ToArray();
        var half = s.HeadDim / 2;
        var residuals = new float[s.Layers][][];
        for (var l = 0; l < s.Layers; l++)
        {
            var h = x.Select(r => RmsNorm(r, NormWeight(LlamaNames.InputNorm(l)))).ToArray();
            var q = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'q'), s.QWidth, s.Hidden), s.QWidth)).ToArray();
            var k = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'k'), s.KvWidth, s.Hidden), s.KvWidth)).ToArray();
            var v = h.Select(r => Linear(r, W(LlamaNames.Attn(l, 'v'), s.KvWidth, s.Hidden), s.KvWidth)).ToArray();
            for (var t = 0; t < n; t++) { Rope(q[t], s.Heads, pos[t]); Rope(k[t], s.KvHeads, pos[t]); }
            var gqa = s.Attention == AttentionKind.GroupQuery;
            var window = gqa && Gemma2Names.IsSliding(l) ? Gemma2Names.SlidingWindow : int.MaxValue;
            var group = s.Heads / s.KvHeads;
            var scale = 1.0 / Math.Sqrt(s.HeadDim);
            var wo = W(LlamaNames.Attn(l, 'o'), s.Hidden, s.QWidth);
            var postAttn = NormWeight(LlamaNames.PostAttentionNorm(l));
            for (var t = 0; t < n; t++)
            {
                var attn = new float[s.QWidth];
                for (var hd = 0; hd < s.Heads; hd++)
                {
                    var scores = new double[t + 1];
                    var max = double.NegativeInfinity;
                    for (var j = 0; j <= t; j++)
                    {
                        if (mask[j] == 0 || t - j >= window) { scores[j] = double.NegativeInfinity; continue; }
                        double dot = 0;
                        for (var d = 0; d < s.HeadDim; d++) dot += (double)q[t][hd * s.HeadDim + d] * k[j][hd / group * s.HeadDim + d];
                        scores[j] = dot * scale;
                        if (gqa) scores[j] = Gemma2Names.AttentionSoftcap * Math.Tanh(scores[j] / Gemma2Names.AttentionSoftcap);
                        max = Math.Max(max, scores[j]);
                    }
                    if (double.IsNegativeInfinity(max)) continue;
                    double sum = 0;
                    for (var j = 0; j <= t; j++) { scores[j] = Math.Exp(scores[j] - max); sum += scores[j]; }
                    for (var j = 0; j <= t; j++)
                        if (scores[j] != 0)
                            for (var d = 0; d < s.HeadDim; d++) attn[hd * s.HeadDim + d] += (float)(scores[j] / sum * v[j][hd / group * s.HeadDim + d]);
                }
                var o = RmsNorm(Linear(attn, wo, s.Hidden), postAttn);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += o[d];
            }
            var pre = NormWeight(Gemma2Names.PreFeedforwardNorm(l));
            var post = NormWeight(Gemma2Names.PostFeedforwardNorm(l));
            var gate = W(LlamaNames.Mlp(l, "gate"), s.Intermediate, s.Hidden);
            var up = W(LlamaNames.Mlp(l, "up"), s.Intermediate, s.Hidden);
            var down = W(LlamaNames.Mlp(l, "down"), s.Hidden, s.Intermediate);
            for (var t = 0; t < n; t++)
            {
                var hn = RmsNorm(x[t], pre);
                var gg = Linear(hn, gate, s.Intermediate);
                var u = Linear(hn, up, s.Intermediate);
                for (var d = 0; d < s.Intermediate; d++) gg[d] = Gpt2Reference.FastGelu(gg[d]) * u[d];
                var dn = RmsNorm(Linear(gg, down, s.Hidden), post);
                for (var d = 0; d < s.Hidden; d++) x[t][d] += dn[d];
            }
            residuals[l] = x.Select(r => (float[])r.Clone()).ToArray();
        }
        var fn = NormWeight(LlamaNames.FinalNorm);
        var lm = W(LlamaNames.LmHead, s.Vocab, s.Hidden);
        var cap = Gemma2Names.FinalLogitSoftcap;
        var logits = x.Select(r => Linear(RmsNorm(r, fn), lm, s.Vocab).Select(z => cap * MathF.Tanh(z / cap)).ToArray()).ToArray();
        return (logits, residuals);

        void Rope(float[] vec, int heads, int p) => ReferenceMath.Rope(vec, heads, s.HeadDim, half, cos, sin, p);
    }

    private float[] RmsNorm(float[] x, float[] gain) => ReferenceMath.RmsNorm(x, gain, _s.RmsEps);

    private static float[] Linear(float[] x, float[] w, int outDim) => ReferenceMath.Linear(x, w, outDim);
}
