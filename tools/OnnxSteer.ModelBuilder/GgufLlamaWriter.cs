using System.Text.Json;
using System.Text.Json.Nodes;
using OnnxSteer.Vectors;

namespace OnnxSteer.ModelBuilder;

/// <summary>Writes a Llama decoder as an F32 GGUF model for llama.cpp, from the same weights the ONNX writers take, so
/// that llama.cpp and ONNX Runtime can be compared on identical numbers. Follows what llama.cpp's
/// <c>convert_hf_to_gguf.py</c> does for <c>LlamaForCausalLM</c>: its tensor names (<c>token_embd</c>,
/// <c>blk.N.attn_q</c>, ..., <c>output_norm</c>, <c>output</c>), its <c>llama.*</c> keys, and its row permutation of
/// the q and k projections (Hugging Face rotates the two halves of a head, llama.cpp's llama rope rotates adjacent
/// pairs). The file format itself (header, key/values, alignment) is <see cref="Gguf.WriteFile"/>'s.</summary>
internal static class GgufLlamaWriter
{
    // llama_token_type values (llama.cpp's llama-vocab.h).
    private const int TokenNormal = 1, TokenUnknown = 2, TokenControl = 3, TokenUnused = 5, TokenByte = 6;

    /// <summary>A vocabulary as GGUF stores it.</summary>
    /// <param name="Model"><c>gpt2</c> (byte-level BPE, with merges) or <c>llama</c> (SentencePiece-style, with scores).</param>
    internal sealed record Vocabulary(string Model, string[] Tokens, int[] TokenTypes, string[] Merges, float[]? Scores, int? UnknownId);

    /// <summary>Writes <paramref name="spec"/> with <paramref name="weights"/> (Hugging Face names and shapes) and the
    /// vocabulary of <paramref name="tokenizerJson"/> to <paramref name="outputPath"/> (atomically).</summary>
    public static void Write(DecoderSpec spec, IWeightSource weights, string tokenizerJson, string outputPath, string name = "onnxsteer-modelbuilder")
    {
        spec.Validate();
        var vocab = ReadVocabulary(tokenizerJson, spec.Vocab);
        var metadata = new List<KeyValuePair<string, object>>
        {
            new("general.architecture", "llama"),
            new("general.name", name),
            new("general.file_type", 0u), // LLAMA_FTYPE_ALL_F32
            new("llama.vocab_size", (uint)spec.Vocab),
            new("llama.context_length", (uint)spec.MaxPositions),
            new("llama.embedding_length", (uint)spec.Hidden),
            new("llama.block_count", (uint)spec.Layers),
            new("llama.feed_forward_length", (uint)spec.Intermediate),
            new("llama.rope.dimension_count", (uint)spec.HeadDim),
            new("llama.attention.head_count", (uint)spec.Heads),
            new("llama.attention.head_count_kv", (uint)spec.KvHeads),
            // Written always: llama.cpp otherwise assumes hidden / heads, which a Llama need not have.
            new("llama.attention.key_length", (uint)spec.HeadDim),
            new("llama.attention.value_length", (uint)spec.HeadDim),
            new("llama.attention.layer_norm_rms_epsilon", (float)spec.RmsEps),
            new("llama.rope.freq_base", (float)spec.RopeTheta),
            new("tokenizer.ggml.model", vocab.Model),
            // "default" is the pre-tokenizer llama.cpp accepts without a hash of a known tokenizer; ids are what matter here.
            new("tokenizer.ggml.pre", "default"),
            new("tokenizer.ggml.tokens", vocab.Tokens),
            new("tokenizer.ggml.token_type", vocab.TokenTypes),
        };
        if (vocab.Scores is not null) metadata.Add(new("tokenizer.ggml.scores", vocab.Scores));
        if (vocab.Model == "gpt2") metadata.Add(new("tokenizer.ggml.merges", vocab.Merges));
        metadata.Add(new("tokenizer.ggml.bos_token_id", (uint)spec.BosTokenId));
        metadata.Add(new("tokenizer.ggml.eos_token_id", (uint)spec.EosTokenId));
        metadata.Add(new("tokenizer.ggml.padding_token_id", (uint)spec.PadTokenId));
        if (vocab.UnknownId is int unk) metadata.Add(new("tokenizer.ggml.unknown_token_id", (uint)unk));
        // Callers feed token ids; a BOS added by llama.cpp's own tokenizer would shift every comparison.
        metadata.Add(new("tokenizer.ggml.add_bos_token", false));

        var tensors = new List<GgufTensor>();
        // Hugging Face [out, in] row-major is ggml's [in, out]: same bytes, dimensions listed innermost first.
        GgufTensor Matrix(string ggufName, string hfName, int rows, int cols, Func<float[], float[]>? transform = null) =>
            new(ggufName, [cols, rows], () =>
            {
                var data = weights.Get(hfName, [rows, cols]).Data;
                return transform is null ? data : transform(data);
            });
        GgufTensor Vector(string ggufName, string hfName) => new(ggufName, [spec.Hidden], () => weights.Get(hfName, [spec.Hidden]).Data);

        tensors.Add(Matrix("token_embd.weight", LlamaNames.Embed, spec.Vocab, spec.Hidden));
        for (var i = 0; i < spec.Layers; i++)
        {
            var b = $"blk.{i}";
            tensors.Add(Vector($"{b}.attn_norm.weight", LlamaNames.InputNorm(i)));
            tensors.Add(Matrix($"{b}.attn_q.weight", LlamaNames.Attn(i, 'q'), spec.QWidth, spec.Hidden, w => PermuteRotaryRows(w, spec.Heads, spec.HeadDim, spec.Hidden)));
            tensors.Add(Matrix($"{b}.attn_k.weight", LlamaNames.Attn(i, 'k'), spec.KvWidth, spec.Hidden, w => PermuteRotaryRows(w, spec.KvHeads, spec.HeadDim, spec.Hidden)));
            tensors.Add(Matrix($"{b}.attn_v.weight", LlamaNames.Attn(i, 'v'), spec.KvWidth, spec.Hidden));
            tensors.Add(Matrix($"{b}.attn_output.weight", LlamaNames.Attn(i, 'o'), spec.Hidden, spec.QWidth));
            tensors.Add(Vector($"{b}.ffn_norm.weight", LlamaNames.PostAttentionNorm(i)));
            tensors.Add(Matrix($"{b}.ffn_gate.weight", LlamaNames.Mlp(i, "gate"), spec.Intermediate, spec.Hidden));
            tensors.Add(Matrix($"{b}.ffn_up.weight", LlamaNames.Mlp(i, "up"), spec.Intermediate, spec.Hidden));
            tensors.Add(Matrix($"{b}.ffn_down.weight", LlamaNames.Mlp(i, "down"), spec.Hidden, spec.Intermediate));
        }
        tensors.Add(Vector("output_norm.weight", LlamaNames.FinalNorm));
        tensors.Add(Matrix("output.weight", LlamaNames.LmHead, spec.Vocab, spec.Hidden));

        Onnx.AtomicFile.Write(outputPath, stream => Gguf.WriteFile(stream, metadata, tensors));
    }

    /// <summary>convert_hf_to_gguf.py's <c>LlamaModel.permute</c>: within each head of <paramref name="headDim"/> rows,
    /// row <c>j * headDim/2 + i</c> (half j, index i) moves to row <c>2i + j</c>, so that the pair llama.cpp rotates
    /// together (adjacent rows) is the pair Hugging Face rotates together (i and i + headDim/2).</summary>
    public static float[] PermuteRotaryRows(float[] w, int heads, int headDim, int cols)
    {
        var result = new float[w.Length];
        var half = headDim / 2;
        for (var h = 0; h < heads; h++)
            for (var j = 0; j < 2; j++)
                for (var i = 0; i < half; i++)
                {
                    var from = (long)(h * headDim + j * half + i) * cols;
                    var to = (long)(h * headDim + 2 * i + j) * cols;
                    Array.Copy(w, from, result, to, cols);
                }
        return result;
    }

    /// <summary>Reads a Hugging Face <c>tokenizer.json</c> (BPE) into GGUF's vocabulary arrays of exactly
    /// <paramref name="vocabSize"/> entries (the model's embedding rows; ids the tokenizer does not use become unused
    /// placeholder tokens). Byte-level BPE becomes llama.cpp's <c>gpt2</c> vocabulary with its merges; a byte-fallback
    /// BPE (Llama 2's, converted from SentencePiece) becomes <c>llama</c>, with scores falling with the id (the
    /// SentencePiece order such vocabularies keep). Added tokens marked special are control tokens.</summary>
    public static Vocabulary ReadVocabulary(string tokenizerJson, int vocabSize)
    {
        if (!File.Exists(tokenizerJson)) throw new OnnxSteerException(ErrorKind.NotFound, $"tokenizer '{tokenizerJson}' does not exist.");
        JsonNode root;
        try { root = JsonNode.Parse(File.ReadAllText(tokenizerJson)) ?? throw new JsonException("empty"); }
        catch (JsonException e) { throw new OnnxSteerException(ErrorKind.InvalidData, $"'{tokenizerJson}' is not JSON: {e.Message}"); }
        var model = root["model"] as JsonObject ?? throw new OnnxSteerException(ErrorKind.InvalidData, $"'{tokenizerJson}' has no model.");
        if (model["type"]?.GetValue<string>() is { } type && type != "BPE")
            throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"'{tokenizerJson}' is a {type} tokenizer; the GGUF writer converts BPE vocabularies.");
        var tokens = new string?[vocabSize];
        var types = new int[vocabSize];
        void Put(string token, int id, int tokenType)
        {
            if (id < 0 || id >= vocabSize)
                throw new OnnxSteerException(ErrorKind.InvalidData, $"'{tokenizerJson}' has token id {id} ('{token}'); the model's vocabulary is {vocabSize}.");
            tokens[id] = token;
            types[id] = tokenType;
        }
        var byteLevel = IsByteLevel(root["pre_tokenizer"]) || IsByteLevel(root["decoder"]);
        var byteFallback = model["byte_fallback"]?.GetValueKind() == JsonValueKind.True;
        var unkToken = model["unk_token"]?.GetValueKind() == JsonValueKind.String ? model["unk_token"]!.GetValue<string>() : null;
        int? unkId = null;
        foreach (var (token, idNode) in model["vocab"] as JsonObject ?? [])
        {
            var id = idNode!.GetValue<int>();
            var tokenType = token == unkToken ? TokenUnknown
                : !byteLevel && token.Length == 6 && token.StartsWith("<0x", StringComparison.Ordinal) && token[^1] == '>' ? TokenByte
                : TokenNormal;
            if (tokenType == TokenUnknown) unkId = id;
            Put(token, id, tokenType);
        }
        foreach (var added in root["added_tokens"] as JsonArray ?? [])
        {
            var id = added!["id"]!.GetValue<int>();
            var content = added["content"]!.GetValue<string>();
            var special = added["special"]?.GetValueKind() == JsonValueKind.True;
            Put(content, id, special ? (content == unkToken ? TokenUnknown : TokenControl) : TokenNormal);
        }
        for (var i = 0; i < vocabSize; i++)
            if (tokens[i] is null) { tokens[i] = $"[PAD{i}]"; types[i] = TokenUnused; }

        var merges = (model["merges"] as JsonArray ?? []).Select(m => m is JsonArray pair
            ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}"
            : m!.GetValue<string>()).ToArray();
        if (byteLevel)
            return new Vocabulary("gpt2", tokens!, types, merges, null, unkId);
        if (!byteFallback)
            throw new OnnxSteerException(ErrorKind.UnsupportedModel,
                $"'{tokenizerJson}' is neither byte-level nor byte-fallback BPE; the GGUF writer knows llama.cpp's gpt2 and llama vocabularies only.");
        var scores = Enumerable.Range(0, vocabSize).Select(i => types[i] == TokenNormal ? -(float)i : 0f).ToArray();
        return new Vocabulary("llama", tokens!, types, merges, scores, unkId);
    }

    /// <summary>Whether a pre-tokenizer or decoder is ByteLevel, alone or inside a Sequence.</summary>
    private static bool IsByteLevel(JsonNode? node) => node is JsonObject o &&
        (o["type"]?.GetValue<string>() == "ByteLevel" ||
         (o["pretokenizers"] ?? o["decoders"]) is JsonArray parts && parts.Any(IsByteLevel));
}
