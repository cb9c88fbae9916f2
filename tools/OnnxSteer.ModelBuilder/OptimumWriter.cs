using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Onnx;
using OnnxSteer.Onnx.Proto;
using DT = OnnxSteer.Onnx.Proto.TensorProto.Types.DataType;

namespace OnnxSteer.ModelBuilder;

/// <summary>Writes Hugging Face Optimum's torch.onnx (TorchScript) layout: RMSNorm decomposed into
/// Pow/ReduceMean/Add/Sqrt/Div/Mul/Mul(weight) (Casts in float16), residual Adds <c>/model/layers.{i}/Add</c> (attention)
/// and <c>/model/layers.{i}/Add_1</c> (MLP), attention from MatMul/Reshape/Transpose/Concat(past)/Softmax with an additive
/// causal+padding mask, rotary from standard ops (rotate_half), SwiGLU as Sigmoid*x*up, <c>/model/norm/...</c> into
/// <c>/lm_head/MatMul</c>. The merged variant wraps two such decoders in one <c>If</c> on <c>use_cache_branch</c>.</summary>
internal static class OptimumWriter
{
    private const string Batch = "batch_size", Seq = "sequence_length", Past = "past_sequence_length", Total = "past_sequence_length + sequence_length";

    private sealed record Weights(string Embed, string[] InputNorm, string[] PostNorm, string[] Q, string[] K, string[] V, string[] O,
        string[] Gate, string[] Up, string[] Down, string FinalNorm, string LmHead, string InvFreq);

    public static void Write(DecoderSpec s, IWeightSource w, string dir)
    {
        var merged = s.Layout == DecoderLayout.OptimumMerged;
        var T = s.DType == DecoderDType.Float16 ? DT.Float16 : DT.Float;
        var file = DecoderFixtures.ModelFileName(s.Layout);
        using var store = s.UsesExternalData ? TensorStore.External(Path.Combine(dir, file + "_data")) : TensorStore.Embedded();
        var main = new GraphBuilder("main_graph", store);
        var weights = WriteWeights(main, s, w, T);

        DeclareInputs(main, s, T);
        if (merged) main.Input("use_cache_branch", DT.Bool, 1);
        DeclareOutputs(main, s, T);
        if (!merged)
        {
            BuildDecoder(main, s, weights, T, usePast: true);
        }
        else
        {
            // Optimum's merged decoder: the no-cache branch ignores past_key_values (they are empty then); both
            // branches produce the same outputs, named like the If's outputs.
            var withPast = new GraphBuilder("optimum::decoder_with_past", store);
            DeclareOutputs(withPast, s, T);
            BuildDecoder(withPast, s, weights, T, usePast: true);
            var noPast = new GraphBuilder("optimum::decoder", store);
            DeclareOutputs(noPast, s, T);
            BuildDecoder(noPast, s, weights, T, usePast: false);
            main.Node("If", "optimum::if", ["use_cache_branch"], 0, "", main.Graph.Output.Select(o => o.Name).ToArray(),
                ("then_branch", withPast.Graph), ("else_branch", noPast.Graph));
        }

        var model = new ModelProto { IrVersion = s.IrVersion, ProducerName = "pytorch", ProducerVersion = "2.5.1", Graph = main.Graph };
        model.OpsetImport.Add(new OperatorSetIdProto { Domain = "", Version = s.EffectiveOpset });
        store.Dispose();
        OnnxModelFile.SaveAtomic(model, Path.Combine(dir, file));
        WriteHfConfig(s, Path.Combine(dir, "config.json"));
    }

    private static void DeclareInputs(GraphBuilder g, DecoderSpec s, DT T)
    {
        g.Input("input_ids", DT.Int64, Batch, Seq);
        g.Input("attention_mask", DT.Int64, Batch, Total);
        if (s.PositionIds) g.Input("position_ids", DT.Int64, Batch, Seq);
        for (var i = 0; i < s.Layers; i++)
        {
            g.Input($"past_key_values.{i}.key", T, Batch, s.KvHeads, Past, s.HeadDim);
            g.Input($"past_key_values.{i}.value", T, Batch, s.KvHeads, Past, s.HeadDim);
        }
    }

    private static void DeclareOutputs(GraphBuilder g, DecoderSpec s, DT T)
    {
        g.Output("logits", T, Batch, Seq, s.Vocab);
        for (var i = 0; i < s.Layers; i++)
        {
            g.Output($"present.{i}.key", T, Batch, s.KvHeads, Total, s.HeadDim);
            g.Output($"present.{i}.value", T, Batch, s.KvHeads, Total, s.HeadDim);
        }
    }

    private static Weights WriteWeights(GraphBuilder g, DecoderSpec s, IWeightSource w, DT T)
    {
        // TorchScript keeps parameter names for tensors used as-is and names transposed Linear weights onnx::MatMul_N.
        var counter = 1000;
        string Linear(string hf, int outDim, int inDim) =>
            g.Initializer($"onnx::MatMul_{counter++}", LlamaNames.Transpose(w.Get(hf, [outDim, inDim]).Data, outDim, inDim), [inDim, outDim], T);
        string Vec(string hf) => g.Initializer(hf, w.Get(hf, [s.Hidden]).Data, [s.Hidden], T);
        var embed = g.Initializer(LlamaNames.Embed, w.Get(LlamaNames.Embed, [s.Vocab, s.Hidden]).Data, [s.Vocab, s.Hidden], T);
        var n = s.Layers;
        string[] inNorm = new string[n], postNorm = new string[n], q = new string[n], k = new string[n], v = new string[n], o = new string[n],
            gate = new string[n], up = new string[n], down = new string[n];
        for (var i = 0; i < n; i++)
        {
            inNorm[i] = Vec(LlamaNames.InputNorm(i));
            q[i] = Linear(LlamaNames.Attn(i, 'q'), s.QWidth, s.Hidden);
            k[i] = Linear(LlamaNames.Attn(i, 'k'), s.KvWidth, s.Hidden);
            v[i] = Linear(LlamaNames.Attn(i, 'v'), s.KvWidth, s.Hidden);
            o[i] = Linear(LlamaNames.Attn(i, 'o'), s.Hidden, s.QWidth);
            postNorm[i] = Vec(LlamaNames.PostAttentionNorm(i));
            gate[i] = Linear(LlamaNames.Mlp(i, "gate"), s.Intermediate, s.Hidden);
            up[i] = Linear(LlamaNames.Mlp(i, "up"), s.Intermediate, s.Hidden);
            down[i] = Linear(LlamaNames.Mlp(i, "down"), s.Hidden, s.Intermediate);
        }
        var final = Vec(LlamaNames.FinalNorm);
        var lm = Linear(LlamaNames.LmHead, s.Vocab, s.Hidden);
        var invFreq = new float[s.HeadDim / 2];
        for (var i = 0; i < invFreq.Length; i++) invFreq[i] = 1.0f / MathF.Pow((float)s.RopeTheta, 2f * i / s.HeadDim);
        var inv = g.Initializer("model.rotary_emb.inv_freq", invFreq, [1, invFreq.Length], DT.Float);
        return new Weights(embed, inNorm, postNorm, q, k, v, o, gate, up, down, final, lm, inv);
    }

    private static void BuildDecoder(GraphBuilder g, DecoderSpec s, Weights w, DT T, bool usePast)
    {
        var fp16 = T == DT.Float16;
        string CastT(string scope, string x) => fp16 ? g.InA(scope, "Cast", [x], ("to", (long)T)) : x;
        var (mask, cos, sin) = MaskAndRotary(g, s, w, T);

        var x = g.Op("Gather", "/model/embed_tokens/Gather", w.Embed, "input_ids");
        var scale = (float)(1.0 / Math.Sqrt(s.HeadDim));
        var half = s.HeadDim / 2;
        var group = s.Heads / s.KvHeads;

        for (var i = 0; i < s.Layers; i++)
        {
            var p = $"/model/layers.{i}";
            var a = $"{p}/self_attn";
            var h = RmsNorm(g, $"{p}/input_layernorm", x, w.InputNorm[i], s, fp16);

            string Heads(string name, string weight, int count) =>
                g.InA(a, "Transpose", [g.In(a, "Reshape", g.Op("MatMul", $"{a}/{name}/MatMul", h, weight), g.Int64(false, 0, 0, count, s.HeadDim))],
                    ("perm", new long[] { 0, 2, 1, 3 }));
            string Rope(string t)
            {
                var x1 = g.In(a, "Slice", t, g.Int64(false, 0), g.Int64(false, half), g.Int64(false, 3));
                var x2 = g.In(a, "Slice", t, g.Int64(false, half), g.Int64(false, long.MaxValue), g.Int64(false, 3));
                var rotated = g.InA(a, "Concat", [g.In(a, "Neg", x2), x1], ("axis", -1L));
                return g.In(a, "Add", g.In(a, "Mul", t, cos), g.In(a, "Mul", rotated, sin));
            }

            var q = Rope(Heads("q_proj", w.Q[i], s.Heads));
            var kNew = Rope(Heads("k_proj", w.K[i], s.KvHeads));
            var vNew = Heads("v_proj", w.V[i], s.KvHeads);
            string k, v;
            if (usePast)
            {
                k = g.Node("Concat", g.AutoName(a, "Concat"), [$"past_key_values.{i}.key", kNew], 1, "", [$"present.{i}.key"], ("axis", 2L))[0];
                v = g.Node("Concat", g.AutoName(a, "Concat"), [$"past_key_values.{i}.value", vNew], 1, "", [$"present.{i}.value"], ("axis", 2L))[0];
            }
            else
            {
                k = g.Node("Identity", g.AutoName(a, "Identity"), [kNew], 1, "", [$"present.{i}.key"])[0];
                v = g.Node("Identity", g.AutoName(a, "Identity"), [vNew], 1, "", [$"present.{i}.value"])[0];
            }
            if (group > 1)
            {
                // HF repeat_kv: [b, kv, t, d] -> [b, kv, group, t, d] -> [b, heads, t, d].
                string Repeat(string t)
                {
                    var shape = g.In(a, "Shape", t);
                    var b0 = g.In(a, "Slice", shape, g.Int64(false, 0), g.Int64(false, 1), g.Int64(false, 0));
                    var tail = g.In(a, "Slice", shape, g.Int64(false, 2), g.Int64(false, 4), g.Int64(false, 0));
                    var expandShape = g.InA(a, "Concat", [b0, g.Int64(false, s.KvHeads, group), tail], ("axis", 0L));
                    var outShape = g.InA(a, "Concat", [b0, g.Int64(false, s.Heads), tail], ("axis", 0L));
                    return g.In(a, "Reshape", g.In(a, "Expand", g.In(a, "Unsqueeze", t, g.Int64(false, 2)), expandShape), outShape);
                }
                k = Repeat(k);
                v = Repeat(v);
            }
            var scores = g.In(a, "Mul", g.In(a, "MatMul", q, g.InA(a, "Transpose", [k], ("perm", new long[] { 0, 1, 3, 2 }))), g.Scalar(scale, T));
            // HF eager attention: softmax in float32, then back to the query dtype.
            var probs = g.InA(a, "Softmax", [g.In(a, "Add", fp16 ? g.InA(a, "Cast", [scores], ("to", (long)DT.Float)) : scores, mask)], ("axis", -1L));
            var ctx = g.In(a, "MatMul", CastT(a, probs), v);
            var merged = g.In(a, "Reshape", g.InA(a, "Transpose", [ctx], ("perm", new long[] { 0, 2, 1, 3 })), g.Int64(false, 0, 0, s.QWidth));
            var o = g.Op("MatMul", $"{a}/o_proj/MatMul", merged, w.O[i]);
            x = g.Op("Add", $"{p}/Add", x, o);

            var h2 = RmsNorm(g, $"{p}/post_attention_layernorm", x, w.PostNorm[i], s, fp16);
            var m = $"{p}/mlp";
            var gate = g.Op("MatMul", $"{m}/gate_proj/MatMul", h2, w.Gate[i]);
            var act = g.Op("Mul", $"{m}/act_fn/Mul", gate, g.Op("Sigmoid", $"{m}/act_fn/Sigmoid", gate));
            var up = g.Op("MatMul", $"{m}/up_proj/MatMul", h2, w.Up[i]);
            var down = g.Op("MatMul", $"{m}/down_proj/MatMul", g.Op("Mul", $"{m}/Mul", act, up), w.Down[i]);
            x = g.Op("Add", $"{p}/Add_1", x, down);
        }
        var normed = RmsNorm(g, "/model/norm", x, w.FinalNorm, s, fp16);
        g.Node("MatMul", "/lm_head/MatMul", [normed, w.LmHead], 1, "", ["logits"]);
    }

    /// <summary>What every layer shares: the additive causal + padding mask, the positions (input or derived from the
    /// mask) and the rotary cos/sin computed from them.</summary>
    private static (string Mask, string Cos, string Sin) MaskAndRotary(GraphBuilder g, DecoderSpec s, Weights w, DT T)
    {
        var fp16 = T == DT.Float16;
        // Sequence sizes.
        var seq1 = g.InA("/model", "Slice", [g.In("/model", "Shape", "input_ids"), g.Int64(false, 1), g.Int64(false, 2), g.Int64(false, 0)]);
        var total = g.InA("/model", "Gather", [g.In("/model", "Shape", "attention_mask"), g.Int64(true, 1)], ("axis", 0L));
        var seq = g.InA("/model", "Gather", [g.In("/model", "Shape", "input_ids"), g.Int64(true, 1)], ("axis", 0L));
        var past = g.In("/model", "Sub", total, seq);

        // Additive causal + padding mask [batch, 1, seq, total], float32 (so masked rows stay finite in float16 models).
        var rows = g.In("/model", "Unsqueeze", g.In("/model", "Range", past, total, g.Int64(true, 1)), g.Int64(false, 1));
        var cols = g.In("/model", "Unsqueeze", g.In("/model", "Range", g.Int64(true, 0), total, g.Int64(true, 1)), g.Int64(false, 0));
        var causal = g.In("/model", "LessOrEqual", cols, rows);
        var padding = g.In("/model", "Unsqueeze", g.InA("/model", "Cast", ["attention_mask"], ("to", (long)DT.Bool)), g.Int64(false, 1, 2));
        var mask = g.In("/model", "Where", g.In("/model", "And", causal, padding), g.Scalar(0f, DT.Float), g.Scalar(float.MinValue, DT.Float));

        // Positions: the input, or cumsum(mask) - 1 with padding at 1 (what HF's generate feeds), last seq columns.
        string positions;
        if (s.PositionIds) positions = "position_ids";
        else
        {
            var cum = g.In("/model", "Sub", g.In("/model", "CumSum", "attention_mask", g.Int64(true, 1)), g.Int64(true, 1));
            var isPad = g.In("/model", "Equal", "attention_mask", g.Int64(true, 0));
            var all = g.In("/model", "Where", isPad, g.Int64(true, 1), cum);
            positions = g.In("/model", "Slice", all, g.In("/model", "Neg", seq1), g.Int64(false, long.MaxValue), g.Int64(false, 1));
        }

        // Rotary (transformers >= 4.38 style): freqs = positions x inv_freq, emb = cat(freqs, freqs), cos/sin [b, 1, s, d].
        const string r = "/model/rotary_emb";
        var posF = g.In(r, "Unsqueeze", g.InA(r, "Cast", [positions], ("to", (long)DT.Float)), g.Int64(false, 2));
        var freqs = g.In(r, "MatMul", posF, w.InvFreq);
        var emb = g.InA(r, "Concat", [freqs, freqs], ("axis", -1L));
        string CastT(string scope, string x) => fp16 ? g.InA(scope, "Cast", [x], ("to", (long)T)) : x;
        var cos = g.In(r, "Unsqueeze", CastT(r, g.In(r, "Cos", emb)), g.Int64(false, 1));
        var sin = g.In(r, "Unsqueeze", CastT(r, g.In(r, "Sin", emb)), g.Int64(false, 1));
        return (mask, cos, sin);
    }

    /// <summary>HF LlamaRMSNorm as TorchScript exports it: to float32, x * 1/sqrt(mean(x^2) + eps), back, times weight.</summary>
    private static string RmsNorm(GraphBuilder g, string scope, string x, string weight, DecoderSpec s, bool fp16)
    {
        var xf = fp16 ? g.InA(scope, "Cast", [x], ("to", (long)DT.Float)) : x;
        var squared = g.In(scope, "Pow", xf, g.Scalar(2f, DT.Float));
        // ReduceMean took axes as an attribute until opset 18, as an input since.
        var variance = s.EffectiveOpset < 18
            ? g.InA(scope, "ReduceMean", [squared], ("axes", new long[] { -1 }), ("keepdims", 1L))
            : g.InA(scope, "ReduceMean", [squared, g.Int64(false, -1)], ("keepdims", 1L));
        var inv = g.In(scope, "Div", g.Scalar(1f, DT.Float), g.In(scope, "Sqrt", g.In(scope, "Add", variance, g.Scalar((float)s.RmsEps, DT.Float))));
        var normed = g.In(scope, "Mul", xf, inv);
        if (fp16) normed = g.InA(scope, "Cast", [normed], ("to", (long)DT.Float16));
        return g.In(scope, "Mul", weight, normed);
    }

    /// <summary>A Hugging Face LlamaConfig config.json for <paramref name="s"/>.</summary>
    public static void WriteHfConfig(DecoderSpec s, string path)
    {
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("LlamaForCausalLM"),
            ["model_type"] = "llama",
            ["hidden_act"] = "silu",
            ["hidden_size"] = s.Hidden,
            ["intermediate_size"] = s.Intermediate,
            ["num_hidden_layers"] = s.Layers,
            ["num_attention_heads"] = s.Heads,
            ["num_key_value_heads"] = s.KvHeads,
            ["head_dim"] = s.HeadDim,
            ["rms_norm_eps"] = s.RmsEps,
            ["rope_theta"] = s.RopeTheta,
            ["max_position_embeddings"] = s.MaxPositions,
            ["vocab_size"] = s.Vocab,
            ["bos_token_id"] = s.BosTokenId,
            ["eos_token_id"] = s.EosTokenId,
            ["pad_token_id"] = s.PadTokenId,
            ["tie_word_embeddings"] = false,
            ["torch_dtype"] = s.DType == DecoderDType.Float16 ? "float16" : "float32",
            ["use_cache"] = true,
        };
        File.WriteAllText(path, config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
