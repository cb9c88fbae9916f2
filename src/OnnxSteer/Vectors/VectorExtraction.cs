using OnnxSteer.Modeling.Tokenization;
using OnnxSteer.Modeling;
using OnnxSteer.Modeling.Chat;

namespace OnnxSteer.Vectors;

/// <summary>What <c>onnxsteer extract</c> asks for.</summary>
/// <param name="ModelPath">Patched model folder (or its .onnx file).</param>
/// <param name="PairsPath">pairs.jsonl.</param>
/// <param name="Options">Name, layers, batch size, chat template.</param>
public sealed record ExtractionRequest(string ModelPath, string PairsPath, ExtractionOptions Options);

/// <summary>Pairs done out of the total.</summary>
public readonly record struct ExtractionProgress(int Done, int Total);

/// <summary>The extracted file and anything the user should hear about (chat-template fallback, ...).</summary>
public sealed record ExtractionResult(InstructionVectorFile File, IReadOnlyList<string> Warnings);

/// <summary>The worker behind <c>onnxsteer extract</c>: validates the pairs file, opens the patched model and its
/// tokenizer, wraps each prompt in the chat template (assistant turn opened) and runs <see cref="VectorExtractor"/>.</summary>
public static class VectorExtraction
{
    /// <summary>Runs a whole extraction.</summary>
    /// <exception cref="OnnxSteerException">Bad pairs (InvalidData), an unpatched or unusable model, bad layers, write failures.</exception>
    public static ExtractionResult Run(ExtractionRequest request, IProgress<ExtractionProgress>? progress = null, CancellationToken cancellationToken = default)
    {
        // Validate every line first, so a bad line late in the file fails before any model work.
        var total = PairsFile.Count(request.PairsPath);
        var warnings = new List<string>();
        using var extractor = VectorExtractor.Load(request.ModelPath, request.Options);
        var encode = PromptEncoding.Create(Path.GetDirectoryName(extractor.ModelFile)!, request.Options.ChatTemplate, warnings, cancellationToken);
        var options = request.Options;
        if (options.HeaderPositions == ExtractionOptions.TemplateHeader && !options.ChatTemplate)
            throw new OnnxSteerException(ErrorKind.Usage, "header positions 'template' count the chat template's answer header; without the chat template give a number");
        IProgress<int>? pairProgress = progress is null ? null : new Relay(done => progress.Report(new ExtractionProgress(done, total)));
        progress?.Report(new ExtractionProgress(0, total));
        var file = extractor.Extract(PairsFile.Read(request.PairsPath), encode, options, pairProgress, cancellationToken);
        return new ExtractionResult(file, warnings);
    }

    private sealed class Relay(Action<int> report) : IProgress<int>
    {
        public void Report(int value) => report(value);
    }
}

/// <summary>Turns a user prompt into the token ids a generation would see: the model's chat template with the assistant
/// turn opened (or the raw text with the tokenizer's special tokens when the template is off), by the same
/// <see cref="PromptEncoder"/> rule as <c>SteeredModel.EncodePrompt</c>, without loading a second inference session.</summary>
internal static class PromptEncoding
{
    /// <summary>The encoder; <paramref name="cancellationToken"/> stops a slow template render.</summary>
    public static Func<string, IReadOnlyList<int>> Create(string modelDirectory, bool chatTemplate, List<string> warnings, CancellationToken cancellationToken = default)
    {
        var tokenizer = TextTokenizer.Load(modelDirectory);
        var template = chatTemplate ? ChatTemplate.Load(modelDirectory, tokenizer) : null;
        if (template?.Warning is { } w) warnings.Add(w);
        return prompt => PromptEncoder.Encode(tokenizer, template, [new ChatTurn("user", prompt)], chatTemplate, cancellationToken).Ids;
    }

    /// <summary>How many tokens the encoder puts after the user's message (the chat template's answer header, e.g.
    /// <c>&lt;|im_end|&gt;\n&lt;|im_start|&gt;assistant\n</c>): the common token suffix of two one-letter messages.</summary>
    /// <exception cref="OnnxSteerException">(Usage) the template puts nothing after the message.</exception>
    public static int HeaderLength(Func<string, IReadOnlyList<int>> encode)
    {
        var (a, b) = (encode("x"), encode("y"));
        int n = 0;
        while (n < Math.Min(a.Count, b.Count) && a[a.Count - 1 - n] == b[b.Count - 1 - n]) n++;
        if (n == 0) throw new OnnxSteerException(ErrorKind.Usage, "the chat template puts no tokens after the user's message: give the header positions as a number");
        return Math.Min(n, OnnxSteer.Contract.HeaderVectors.MaxPositions);
    }
}
