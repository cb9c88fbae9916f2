using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using DT = OnnxSteer.Onnx.Proto.TensorProto.Types.DataType;

namespace OnnxSteer.ModelBuilder;

/// <summary>Writes the onnxruntime-genai model builder's layout (see docs/exporters.md): first norm
/// SimplifiedLayerNormalization, every later norm com.microsoft::SkipSimplifiedLayerNormalization whose output 3 is the
/// residual, final norm with output 0 only, RotaryEmbedding + MultiHeadAttention (or GroupQueryAttention with fused
/// rotary), lm_head MatMul into <c>logits</c>.</summary>
internal static class GenAiWriter
{
    public const string ModelFile = "model.onnx";
    public const string DataFile = "model.onnx.data";

    public static void Write(DecoderSpec s, IWeightSource w, string dir)
    {
        var T = s.DType == DecoderDType.Float16 ? DT.Float16 : DT.Float;
        var modelPath = Path.Combine(dir, ModelFile);
        using var store = s.UsesExternalData ? TensorStore.External(Path.Combine(dir, DataFile)) : TensorStore.Embedded();
        var g = new GraphBuilder("main_graph", store);
        var gqa = s.Attention == AttentionKind.GroupQuery;

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

        // Attention-mask preprocessing shared by all layers.
        var mask = MaskInputs(g, T, gqa);

        string Linear(string hfName, int outDim, int inDim, string onnxName)
        {
            var t = w.Get(hfName, [outDim, inDim]);
            return g.Initializer(onnxName, LlamaNames.Transpose(t.Data, outDim, inDim), [inDim, outDim], T);
        }
        // A Linear layer: MatMul with a transposed weight, or (int4) com.microsoft::MatMulNBits named like the builder's
        // quantizer names it (node .../MatMul_Q4, initializers ...weight_Q4 and ...weight_scales).
        string Proj(string nodeName, string input, string hfName, int outDim, int inDim, string onnxName, string? output = null)
        {
            if (s.Quantization == WeightQuantization.None)
                return g.Node("MatMul", nodeName, [input, Linear(hfName, outDim, inDim, onnxName)], 1, "", output is null ? null : [output])[0];
            return Int4.MatMulNBits(g, nodeName + "_Q4", input, w.Get(hfName, [outDim, inDim]).Data, outDim, inDim, s.QuantBlockSize, onnxName, T, output);
        }
        string Vector(string hfName, string onnxName) => g.Initializer(onnxName, w.Get(hfName, [s.Hidden]).Data, [s.Hidden], T);

        var embed = g.Initializer("model.embed_tokens.weight", w.Get(LlamaNames.Embed, [s.Vocab, s.Hidden]).Data, [s.Vocab, s.Hidden], T);
        var (cosData, sinData) = Rotary.HalfCaches(s.MaxPositions, s.HeadDim, s.RopeTheta);
        var cos = g.Initializer("cos_cache", cosData, [s.MaxPositions, s.HeadDim / 2], T);
        var sin = g.Initializer("sin_cache", sinData, [s.MaxPositions, s.HeadDim / 2], T);

        var x = g.Op("Gather", "/model/embed_tokens/Gather", embed, "input_ids");
        var eps = (float)s.RmsEps;
        var normed = g.Node("SimplifiedLayerNormalization", "/model/layers.0/input_layernorm/LayerNorm",
            [x, Vector(LlamaNames.InputNorm(0), "model.layers.0.input_layernorm.weight")], 1, "",
            ["/model/layers.0/input_layernorm/output_0"], ("epsilon", eps), ("axis", -1L), ("stash_type", 1L))[0];
        var residual = x;
        var scale = (float)(1.0 / Math.Sqrt(s.HeadDim));

        for (var i = 0; i < s.Layers; i++)
        {
            var p = $"/model/layers.{i}";
            var q = Proj($"{p}/attn/q_proj/MatMul", normed, LlamaNames.Attn(i, 'q'), s.QWidth, s.Hidden, $"model.layers.{i}.attn.q_proj.MatMul.weight");
            var k = Proj($"{p}/attn/k_proj/MatMul", normed, LlamaNames.Attn(i, 'k'), s.KvWidth, s.Hidden, $"model.layers.{i}.attn.k_proj.MatMul.weight");
            var v = Proj($"{p}/attn/v_proj/MatMul", normed, LlamaNames.Attn(i, 'v'), s.KvWidth, s.Hidden, $"model.layers.{i}.attn.v_proj.MatMul.weight");
            var attn = Attention(g, s, i, q, k, v, cos, sin, mask, scale);
            var o = Proj($"{p}/attn/o_proj/MatMul", attn, LlamaNames.Attn(i, 'o'), s.Hidden, s.QWidth, $"model.layers.{i}.attn.o_proj.MatMul.weight");
            var post = g.Node("SkipSimplifiedLayerNormalization", $"{p}/post_attention_layernorm/SkipLayerNorm",
                [residual, o, Vector(LlamaNames.PostAttentionNorm(i), $"model.layers.{i}.post_attention_layernorm.weight")], 4, "com.microsoft",
                [$"{p}/post_attention_layernorm/output_0", "", "", $"{p}/post_attention_layernorm/output_3"], ("epsilon", eps));
            residual = post[3];
            var gate = Proj($"{p}/mlp/gate_proj/MatMul", post[0], LlamaNames.Mlp(i, "gate"), s.Intermediate, s.Hidden, $"model.layers.{i}.mlp.gate_proj.MatMul.weight");
            var up = Proj($"{p}/mlp/up_proj/MatMul", post[0], LlamaNames.Mlp(i, "up"), s.Intermediate, s.Hidden, $"model.layers.{i}.mlp.up_proj.MatMul.weight");
            var act = g.Op("Mul", $"{p}/mlp/act_fn/Mul", gate, g.Op("Sigmoid", $"{p}/mlp/act_fn/Sigmoid", gate));
            var down = Proj($"{p}/mlp/down_proj/MatMul", g.Op("Mul", $"{p}/mlp/Mul", act, up),
                LlamaNames.Mlp(i, "down"), s.Hidden, s.Intermediate, $"model.layers.{i}.mlp.down_proj.MatMul.weight");
            if (i < s.Layers - 1)
            {
                var n = $"/model/layers.{i + 1}/input_layernorm";
                var next = g.Node("SkipSimplifiedLayerNormalization", $"{n}/SkipLayerNorm",
                    [residual, down, Vector(LlamaNames.InputNorm(i + 1), $"model.layers.{i + 1}.input_layernorm.weight")], 4, "com.microsoft",
                    [$"{n}/output_0", "", "", $"{n}/output_3"], ("epsilon", eps));
                normed = next[0];
                residual = next[3];
            }
            else
            {
                // The builder never materialises the residual after the last block: output 0 only.
                var n = $"/model/layers.{s.Layers}/final_norm_layernorm";
                normed = g.Node("SkipSimplifiedLayerNormalization", $"{n}/SkipLayerNorm",
                    [residual, down, Vector(LlamaNames.FinalNorm, $"model.layers.{s.Layers}.final_norm_layernorm.weight")], 1, "com.microsoft",
                    [$"{n}/output_0"], ("epsilon", eps))[0];
            }
        }
        Proj("/lm_head/MatMul", normed, LlamaNames.LmHead, s.Vocab, s.Hidden, "lm_head.MatMul.weight", "logits");

        var model = new ModelProto
        {
            IrVersion = s.IrVersion,
            ProducerName = "onnxruntime-genai",
            ProducerVersion = "0.0.0",
            Graph = g.Graph,
        };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = s.EffectiveOpset });
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "com.microsoft", Version = 1 });
        store.Dispose();
        OnnxModelFile.SaveAtomic(model, modelPath);
        WriteConfig(s, dir);
    }

    /// <summary>The attention-mask preprocessing the builder shares between layers: an additive causal and padding bias
    /// for MultiHeadAttention, or GroupQueryAttention's seqlens_k and total length.</summary>
    internal static (string? Bias, string? SeqlensK, string? TotalLength) MaskInputs(GraphBuilder g, DT T, bool gqa)
    {
        string? bias = null, seqlensK = null, totalLen = null;
        const string m = "/model/attn_mask_reformat";
        if (!gqa)
        {
            var seq = g.OpA("Gather", $"{m}/input_ids_subgraph/Gather", [g.Op("Shape", $"{m}/input_ids_subgraph/Shape", "input_ids"), g.Int64(true, 1)], ("axis", 0L));
            var total = g.OpA("Gather", $"{m}/attn_mask_subgraph/Gather", [g.Op("Shape", $"{m}/attn_mask_subgraph/Shape", "attention_mask"), g.Int64(true, 1)], ("axis", 0L));
            var past = g.Op("Sub", $"{m}/past_key_subgraph/Sub", total, seq);
            var rows = g.Op("Unsqueeze", $"{m}/input_ids_subgraph/Unsqueeze", g.Op("Range", $"{m}/input_ids_subgraph/Range", past, total, g.Int64(true, 1)), g.Int64(false, 1));
            var cols = g.Op("Unsqueeze", $"{m}/attn_mask_subgraph/Unsqueeze", g.Op("Range", $"{m}/attn_mask_subgraph/Range", g.Int64(true, 0), total, g.Int64(true, 1)), g.Int64(false, 0));
            var causal = g.Op("LessOrEqual", $"{m}/input_ids_subgraph/LessOrEqual", cols, rows);
            var padding = g.Op("Unsqueeze", $"{m}/attn_mask_subgraph/Unsqueeze_2",
                g.OpA("Cast", $"{m}/attn_mask_subgraph/Cast", ["attention_mask"], ("to", (long)DT.Bool)), g.Int64(false, 1, 2));
            var allowed = g.Op("And", $"{m}/And", causal, padding);
            var min = T == DT.Float16 ? -65504f : float.MinValue;
            bias = g.Op("Where", $"{m}/Where", allowed, g.Scalar(0f, T), g.Scalar(min, T));
        }
        else
        {
            var sum = g.OpA("ReduceSum", $"{m}/attn_mask_subgraph/ReduceSum", ["attention_mask", g.Int64(false, 1)], ("keepdims", 0L));
            seqlensK = g.OpA("Cast", $"{m}/attn_mask_subgraph/Cast", [g.Op("Sub", $"{m}/attn_mask_subgraph/Sub", sum, g.Int64(true, 1))], ("to", (long)DT.Int32));
            var total = g.OpA("Gather", $"{m}/attn_mask_subgraph/Gather", [g.Op("Shape", $"{m}/attn_mask_subgraph/Shape", "attention_mask"), g.Int64(true, 1)], ("axis", 0L));
            totalLen = g.OpA("Cast", $"{m}/attn_mask_subgraph/Cast_1", [total], ("to", (long)DT.Int32));
        }
        return (bias, seqlensK, totalLen);
    }

    /// <summary>Layer <paramref name="i"/>'s attention as the builder writes it: rotary embeddings then MultiHeadAttention
    /// (with the KV heads repeated outside the op when there are fewer), or GroupQueryAttention with rotary inside.</summary>
    private static string Attention(GraphBuilder g, DecoderSpec s, int i, string q, string k, string v, string cos, string sin,
        (string? Bias, string? SeqlensK, string? TotalLength) mask, float scale)
    {
        var p = $"/model/layers.{i}";
        string attn;
        if (s.Attention != AttentionKind.GroupQuery)
        {
            var qr = g.Node("RotaryEmbedding", $"{p}/attn/q_rotary/RotaryEmbedding", [q, "position_ids", cos, sin], 1, "com.microsoft", null,
                ("interleaved", 0L), ("num_heads", 0L), ("rotary_embedding_dim", 0L))[0];
            var kr = g.Node("RotaryEmbedding", $"{p}/attn/k_rotary/RotaryEmbedding", [k, "position_ids", cos, sin], 1, "com.microsoft", null,
                ("interleaved", 0L), ("num_heads", 0L), ("rotary_embedding_dim", 0L))[0];
            if (s.KvHeads == s.Heads)
            {
                attn = g.Node("MultiHeadAttention", $"{p}/attn/MultiHeadAttention",
                    [qr, kr, v, "", "", mask.Bias!, $"past_key_values.{i}.key", $"past_key_values.{i}.value"], 3, "com.microsoft",
                    [$"{p}/attn/MultiHeadAttention/output_0", $"present.{i}.key", $"present.{i}.value"],
                    ("num_heads", (long)s.Heads), ("scale", scale))[0];
            }
            else
            {
                // What the builder's make_repeat_kv does for MultiHeadAttention with fewer KV heads: concatenate the
                // cache outside the op (present = Concat(past, new) in BNSH), repeat each KV head, and feed the full
                // 4-D BNSH key/value to MultiHeadAttention without past inputs.
                var group = s.Heads / s.KvHeads;
                string CacheAndRepeat(string x, string kind)
                {
                    var r = $"{p}/attn/{kind}_repeat_kv";
                    var bnsh = g.OpA("Transpose", $"{r}/Transpose", [g.Op("Reshape", $"{r}/Reshape", x, g.Int64(false, 0, 0, s.KvHeads, s.HeadDim))],
                        ("perm", new long[] { 0, 2, 1, 3 }));
                    var present = g.Node("Concat", $"{r}/Concat", [$"past_key_values.{i}.{kind}", bnsh], 1, "", [$"present.{i}.{kind}"], ("axis", 2L))[0];
                    var expanded = g.Op("Expand", $"{r}/Expand", g.Op("Unsqueeze", $"{r}/Unsqueeze", present, g.Int64(false, 2)),
                        g.Int64(false, 1, 1, group, 1, 1));
                    return g.Op("Reshape", $"{r}/Reshape_1", expanded, g.Int64(false, 0, s.Heads, -1, s.HeadDim));
                }
                var kFull = CacheAndRepeat(kr, "key");
                var vFull = CacheAndRepeat(v, "value");
                attn = g.Node("MultiHeadAttention", $"{p}/attn/MultiHeadAttention", [qr, kFull, vFull, "", "", mask.Bias!], 1, "com.microsoft", null,
                    ("num_heads", (long)s.Heads), ("scale", scale))[0];
            }
        }
        else
        {
            attn = g.Node("GroupQueryAttention", $"{p}/attn/GroupQueryAttention",
                [q, k, v, $"past_key_values.{i}.key", $"past_key_values.{i}.value", mask.SeqlensK!, mask.TotalLength!, cos, sin], 3, "com.microsoft",
                [$"{p}/attn/GroupQueryAttention/output_0", $"present.{i}.key", $"present.{i}.value"],
                ("num_heads", (long)s.Heads), ("kv_num_heads", (long)s.KvHeads), ("scale", scale), ("local_window_size", -1L),
                ("do_rotary", 1L), ("rotary_interleaved", 0L))[0];
        }
        return attn;
    }

    /// <summary>genai_config.json with exactly the keys the real builder writes for this model (GenAI rejects unknown keys).</summary>
    public static void WriteConfig(DecoderSpec s, string dir)
    {
        var inputs = new JsonObject
        {
            ["input_ids"] = "input_ids",
            ["attention_mask"] = "attention_mask",
        };
        if (s.Attention == AttentionKind.MultiHead) inputs["position_ids"] = "position_ids";
        inputs["past_key_names"] = "past_key_values.%d.key";
        inputs["past_value_names"] = "past_key_values.%d.value";
        var config = new JsonObject
        {
            ["model"] = new JsonObject
            {
                ["bos_token_id"] = s.BosTokenId,
                ["context_length"] = s.MaxPositions,
                ["decoder"] = new JsonObject
                {
                    ["session_options"] = new JsonObject { ["log_id"] = "onnxruntime-genai", ["provider_options"] = new JsonArray() },
                    ["filename"] = ModelFile,
                    ["head_size"] = s.HeadDim,
                    ["hidden_size"] = s.Hidden,
                    ["inputs"] = inputs,
                    ["outputs"] = new JsonObject
                    {
                        ["logits"] = "logits",
                        ["present_key_names"] = "present.%d.key",
                        ["present_value_names"] = "present.%d.value",
                    },
                    ["num_attention_heads"] = s.Heads,
                    ["num_hidden_layers"] = s.Layers,
                    ["num_key_value_heads"] = s.KvHeads,
                },
                ["eos_token_id"] = s.EosTokenId,
                ["pad_token_id"] = s.PadTokenId,
                ["type"] = "llama",
                ["vocab_size"] = s.Vocab,
            },
        };
        File.WriteAllText(Path.Combine(dir, "genai_config.json"), config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
