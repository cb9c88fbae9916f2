namespace OnnxSteer.ModelBuilder;

/// <summary>Which exporter's graph layout a decoder is written in.</summary>
public enum DecoderLayout
{
    /// <summary>onnxruntime-genai model builder: fused SkipSimplifiedLayerNormalization, contrib attention,
    /// <c>model.onnx</c> + <c>model.onnx.data</c> + <c>genai_config.json</c>.</summary>
    GenAi,
    /// <summary>Hugging Face Optimum (torch.onnx TorchScript): decomposed RMSNorm, plain residual Adds,
    /// attention and rotary from standard ops; <c>model.onnx</c> + <c>config.json</c>.</summary>
    Optimum,
    /// <summary>Optimum <c>--legacy</c> merged decoder: <c>decoder_model_merged.onnx</c> whose graph is one
    /// <c>If</c> on <c>use_cache_branch</c> with a full decoder in each branch.</summary>
    OptimumMerged,
    /// <summary>ONNX Runtime transformer optimizer's fused GPT-2 (see <see cref="OrtFusedGpt2Writer"/>).</summary>
    OrtFused,
    /// <summary>onnxruntime-genai builder's Gemma 2 (sandwich norms, fp32 residual; see <see cref="Gemma2Writer"/>).</summary>
    Gemma2,
}

/// <summary>Element type of weights, activations, KV cache and logits.</summary>
public enum DecoderDType
{
    /// <summary>float32.</summary>
    Float32,
    /// <summary>float16 (norm statistics still in float32 where the exporter does so).</summary>
    Float16,
}

/// <summary>Attention operator of the <see cref="DecoderLayout.GenAi"/> layout.</summary>
public enum AttentionKind
{
    /// <summary><c>com.microsoft::RotaryEmbedding</c> on q and k, then <c>com.microsoft::MultiHeadAttention</c>
    /// with an additive causal+padding mask (like the real fixture). With KvHeads &lt; Heads the cache is concatenated
    /// outside the op and KV heads are repeated (the builder's make_repeat_kv). Supports left padding.</summary>
    MultiHead,
    /// <summary><c>com.microsoft::GroupQueryAttention</c> with rotary fused (<c>do_rotary=1</c>), seqlens_k and
    /// total_sequence_length derived from attention_mask, no position_ids input (as the builder does for CPU).
    /// On CPU it supports right padding only (rows' valid tokens must start at position 0).</summary>
    GroupQuery,
}

/// <summary>Weight quantization of the Linear layers (GenAi, Gemma2 and OrtFused layouts).</summary>
public enum WeightQuantization
{
    /// <summary>Plain MatMul with float weights.</summary>
    None,
    /// <summary>com.microsoft::MatMulNBits, 4 bits, symmetric round-to-nearest per block (zero point 8, no zero_points input).</summary>
    Int4,
}

/// <summary>Shape and format of a Llama-style decoder to write. Defaults describe a tiny test fixture.</summary>
internal sealed record DecoderSpec
{
    /// <summary>Number of decoder blocks.</summary>
    public int Layers { get; init; } = 2;
    /// <summary>Residual width.</summary>
    public int Hidden { get; init; } = 32;
    /// <summary>Query heads.</summary>
    public int Heads { get; init; } = 2;
    /// <summary>Key/value heads (a divisor of <see cref="Heads"/>).</summary>
    public int KvHeads { get; init; } = 2;
    /// <summary>Per-head width (Heads * HeadDim need not equal Hidden).</summary>
    public int HeadDim { get; init; } = 16;
    /// <summary>SwiGLU inner width.</summary>
    public int Intermediate { get; init; } = 64;
    /// <summary>Vocabulary size.</summary>
    public int Vocab { get; init; } = 128;
    /// <summary>Rotary base.</summary>
    public double RopeTheta { get; init; } = 10000.0;
    /// <summary>RMSNorm epsilon.</summary>
    public double RmsEps { get; init; } = 1e-6;
    /// <summary>Rows of the rotary caches and genai_config context_length.</summary>
    public int MaxPositions { get; init; } = 256;
    /// <summary>Element type.</summary>
    public DecoderDType DType { get; init; } = DecoderDType.Float32;
    /// <summary>Exporter layout.</summary>
    public DecoderLayout Layout { get; init; } = DecoderLayout.GenAi;
    /// <summary>Attention operator (GenAi layout only; Optimum layouts always use standard ops).</summary>
    public AttentionKind Attention { get; init; } = AttentionKind.MultiHead;
    /// <summary>Whether the graph has a <c>position_ids</c> input. GenAi+MultiHead always has it; GenAi+GroupQuery never;
    /// Optimum layouts have it when true and derive positions from attention_mask (cumsum - 1) when false.</summary>
    public bool PositionIds { get; init; } = true;
    /// <summary>Weights in an external data file (<c>model.onnx.data</c> for genai, <c>model.onnx_data</c> for optimum);
    /// null picks the exporter's habit: genai yes, optimum no.</summary>
    public bool? ExternalData { get; init; }
    /// <summary>Linear-layer weight quantization (GenAi, Gemma2 and OrtFused): <see cref="WeightQuantization.Int4"/>
    /// writes MatMulNBits for q/k/v/o, gate/up/down and lm_head (genai, gemma2), or the attention output, MLP and
    /// lm_head MatMuls (ort-fused).</summary>
    public WeightQuantization Quantization { get; init; } = WeightQuantization.None;
    /// <summary>MatMulNBits block size (power of two, at least 16).</summary>
    public int QuantBlockSize { get; init; } = 32;
    /// <summary>Default-domain opset (14..21); null picks the exporter's habit: genai 21 (newer builders), optimum 14.
    /// The ir_version follows: 7 below opset 15 (as older genai builders wrote, like the shared fixture), 8 up to 17,
    /// 9 up to 20, 10 for 21.</summary>
    public int? Opset { get; init; }

    /// <summary>The opset written after applying the layout default.</summary>
    public int EffectiveOpset => Opset ?? (Layout is DecoderLayout.Optimum or DecoderLayout.OptimumMerged ? 14 : 21);

    /// <summary>The ir_version written for <see cref="EffectiveOpset"/>.</summary>
    public int IrVersion => EffectiveOpset switch { < 15 => 7, < 18 => 8, < 21 => 9, _ => 10 };

    /// <summary>Beginning-of-sequence token id (genai_config / config.json).</summary>
    public int BosTokenId { get; init; } = 1;
    /// <summary>End-of-sequence token id.</summary>
    public int EosTokenId { get; init; } = 2;
    /// <summary>Padding token id.</summary>
    public int PadTokenId { get; init; } = 0;

    /// <summary>Whether this spec writes weights externally after applying the layout default.</summary>
    public bool UsesExternalData => ExternalData ?? Layout is DecoderLayout.GenAi or DecoderLayout.Gemma2;

    /// <summary>Whether the written graph has a position_ids input.</summary>
    public bool HasPositionIdsInput => Layout is DecoderLayout.GenAi or DecoderLayout.Gemma2 ? Attention == AttentionKind.MultiHead : Layout == DecoderLayout.OrtFused || PositionIds;

    /// <summary>Q projection width.</summary>
    public int QWidth => Heads * HeadDim;
    /// <summary>K/V projection width.</summary>
    public int KvWidth => KvHeads * HeadDim;

    /// <summary>A tiny default fixture (2 layers, hidden 32, 2 heads of 16, ffn 64, vocab 128) in the given layout.</summary>
    public static DecoderSpec Tiny(DecoderLayout layout = DecoderLayout.GenAi, DecoderDType dtype = DecoderDType.Float32,
        AttentionKind attention = AttentionKind.MultiHead) => new() { Layout = layout, DType = dtype, Attention = attention };

    /// <summary>The ~100M-parameter benchmark shape (12 layers, hidden 768, 12 heads, ffn 2048, vocab 32000).</summary>
    public static DecoderSpec Medium(DecoderLayout layout = DecoderLayout.GenAi, DecoderDType dtype = DecoderDType.Float32) => new()
    {
        Layers = 12, Hidden = 768, Heads = 12, KvHeads = 12, HeadDim = 64, Intermediate = 2048, Vocab = 32000,
        MaxPositions = 2048, Layout = layout, DType = dtype,
    };

    /// <summary>Throws <see cref="OnnxSteerException"/> (Usage) when the combination cannot be built.</summary>
    public void Validate()
    {
        void Positive(int v, string n) { if (v <= 0) throw new OnnxSteerException(ErrorKind.Usage, $"{n} must be positive, got {v}."); }
        Positive(Layers, "layers"); Positive(Hidden, "hidden"); Positive(Heads, "heads"); Positive(KvHeads, "kv_heads");
        Positive(HeadDim, "head_dim"); Positive(Intermediate, "intermediate"); Positive(Vocab, "vocab"); Positive(MaxPositions, "max_positions");
        if (HeadDim % 2 != 0) throw new OnnxSteerException(ErrorKind.Usage, $"head_dim must be even for rotary, got {HeadDim}.");
        if (Heads % KvHeads != 0) throw new OnnxSteerException(ErrorKind.Usage, $"heads ({Heads}) must be a multiple of kv_heads ({KvHeads}).");
        if (Opset is < 14 or > 21) throw new OnnxSteerException(ErrorKind.Usage, $"opset must be 14..21, got {Opset}.");
        if (Quantization != WeightQuantization.None && Layout is not (DecoderLayout.GenAi or DecoderLayout.Gemma2 or DecoderLayout.OrtFused))
            throw new OnnxSteerException(ErrorKind.Usage, $"int4 weights are written only in the genai, gemma2 and ort-fused layouts, not {Layout}.");
        if (Quantization != WeightQuantization.None && (QuantBlockSize < 16 || (QuantBlockSize & (QuantBlockSize - 1)) != 0))
            throw new OnnxSteerException(ErrorKind.Usage, $"block size must be a power of two >= 16, got {QuantBlockSize}.");
        if (Layout == DecoderLayout.GenAi && Attention == AttentionKind.GroupQuery && HeadDim % 16 != 0)
            throw new OnnxSteerException(ErrorKind.Usage, $"GroupQueryAttention on CPU needs head_dim a multiple of 16, got {HeadDim}.");
    }
}
