namespace OnnxSteer.ModelBuilder;

internal static class OptimumWriter
{
    public static void Write(DecoderSpec s, IWeightSource w, string dir) => throw new NotImplementedException("optimum layout: coming next");
}
