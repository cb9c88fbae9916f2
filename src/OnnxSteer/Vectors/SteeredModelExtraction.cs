using OnnxSteer.Contract;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Vectors;

/// <summary>Vector extraction on a loaded <see cref="SteeredModel"/> (here, above the runtime layer, as an extension).</summary>
public static class SteeredModelExtraction
{
    /// <summary>Extracts an instruction vector from contrast pairs on <paramref name="model"/>'s own session (nothing is
    /// loaded a second time): for every layer, the mean difference of the last prompt token's residual with and without
    /// the instruction (the paper's diff-mean), each prompt wrapped in the model's chat template with the assistant turn
    /// opened, as generation sees it. The result is an <see cref="ISteeringVectorSource"/>: pass it to
    /// <see cref="Steering.From"/> directly, or <see cref="InstructionVectorFile.Save"/> it. Counted as a call in flight:
    /// disposing the model cancels it between batches and waits.</summary>
    /// <param name="model">A loaded patched model.</param>
    /// <param name="pairs">The contrast pairs (e.g. <see cref="PairsFile.Read"/> or built in code), enumerated once.</param>
    /// <param name="name">The vector's name (what <see cref="Steering.Add(string, int, float)"/> and friends look up).</param>
    /// <param name="options">Layers (default: every exposed layer), batch size, chat template on or off; its Name is
    /// replaced by <paramref name="name"/>. Graph pruning does not apply: the loaded session runs the whole graph (same
    /// vectors, some more work per prompt than <see cref="VectorExtraction"/> on a folder).</param>
    /// <param name="progress">Pairs done, after each batch.</param>
    /// <param name="cancellationToken">Stops between batches.</param>
    /// <exception cref="OnnxSteerException">An unpatched model or one that exposes no hidden states (UnsupportedModel),
    /// layers not exposed, bad pairs (InvalidData).</exception>
    /// <exception cref="ObjectDisposedException">The model is disposed.</exception>
    public static InstructionVectorFile ExtractVector(this SteeredModel model, IEnumerable<PromptPair> pairs, string name,
        ExtractionOptions? options = null, IProgress<int>? progress = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(pairs);
        ArgumentNullException.ThrowIfNull(name);
        options = (options ?? new ExtractionOptions()) with { Name = name };
        var useTemplate = options.ChatTemplate;
        return model.UseSession((session, ct) =>
        {
            var manifest = model.Manifest
                ?? throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{model.Directory} is not patched (no {SteeringContract.ManifestFileName}); patch it before extracting vectors");
            if (manifest.ExposedLayers.Count == 0)
                throw new OnnxSteerException(ErrorKind.UnsupportedModel, $"{model.Directory} exposes no hidden states; patch it with the layers to read exposed");
            using var extractor = new VectorExtractor(manifest, model.ModelPath, model.PadTokenId, session);
            return extractor.Extract(pairs, prompt => model.EncodePrompt([new ChatTurn("user", prompt)], useTemplate), options, progress, ct);
        }, cancellationToken);
    }
}
