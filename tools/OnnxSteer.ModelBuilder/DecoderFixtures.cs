namespace OnnxSteer.ModelBuilder;

/// <summary>A decoder written to disk.</summary>
/// <param name="Directory">The model folder.</param>
/// <param name="ModelPath">The .onnx file (<c>model.onnx</c> or <c>decoder_model_merged.onnx</c>).</param>
/// <param name="Spec">What was written.</param>
internal sealed record DecoderFixture(string Directory, string ModelPath, DecoderSpec Spec)
{
    /// <summary>Every file written into <see cref="Directory"/> (model, external data, configs).</summary>
    public IReadOnlyList<string> Files => System.IO.Directory.GetFiles(Directory).Order(StringComparer.Ordinal).ToList();
}

/// <summary>Entry point for tests and tools: writes a decoder in any exporter layout.</summary>
internal static class DecoderFixtures
{
    /// <summary>The model file name each layout uses.</summary>
    public static string ModelFileName(DecoderLayout layout) => layout switch
    {
        DecoderLayout.OptimumMerged => "decoder_model_merged.onnx",
        _ => "model.onnx",
    };

    /// <summary>Copies the tokenizer files (<see cref="LlamaExport.CompanionFiles"/>) found in <paramref name="sourceDirectory"/>
    /// (e.g. the shared real export) into a fixture folder, for tests that need a tokenizer; returns the copied names.
    /// Build such fixtures with the tokenizer's vocabulary size (32000 for the shared Llama tokenizer).</summary>
    public static IReadOnlyList<string> CopyTokenizerFiles(string sourceDirectory, string targetDirectory)
    {
        var copied = new List<string>();
        foreach (var f in LlamaExport.CompanionFiles)
        {
            var from = Path.Combine(sourceDirectory, f);
            if (!File.Exists(from)) continue;
            File.Copy(from, Path.Combine(targetDirectory, f), overwrite: true);
            copied.Add(f);
        }
        return copied;
    }

    /// <summary>Writes <paramref name="spec"/> into <paramref name="directory"/> (created if missing; existing files of the
    /// same names are replaced) with weights from <paramref name="weights"/> (default: <see cref="RandomWeights"/> seed 1).</summary>
    public static DecoderFixture Write(DecoderSpec spec, string directory, IWeightSource? weights = null)
    {
        spec.Validate();
        System.IO.Directory.CreateDirectory(directory);
        weights ??= new RandomWeights(1);
        switch (spec.Layout)
        {
            case DecoderLayout.GenAi: GenAiWriter.Write(spec, weights, directory); break;
            case DecoderLayout.OrtFused: OrtFusedGpt2Writer.Write(spec, weights, directory); break;
            case DecoderLayout.Gemma2: Gemma2Writer.Write(spec, weights, directory); break;
            case DecoderLayout.Optimum:
            case DecoderLayout.OptimumMerged: OptimumWriter.Write(spec, weights, directory); break;
            default: throw new ArgumentOutOfRangeException(nameof(spec));
        }
        return new DecoderFixture(Path.GetFullPath(directory), Path.GetFullPath(Path.Combine(directory, ModelFileName(spec.Layout))), spec);
    }
}
