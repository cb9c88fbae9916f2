namespace OnnxSteer.Contract;

/// <summary>The names a patched model exposes. They are a public contract: the runtime, vector files,
/// other runtimes (Python, node, GenAI) and users' scripts depend on them, so they never change.</summary>
/// <remarks>For the residual stream x after decoder block L (0-based), the patched graph computes
/// <c>x' = x + add + (target - x·direction) · direction</c>, in float32 for the projection term, and both the
/// next block and <c>hidden_states.{L}</c> see x'. Shapes: add and direction [steer_batch, 1, hidden],
/// target [steer_batch, 1, 1], where steer_batch is 1 (one steering for all rows) or the batch size.</remarks>
public static class SteeringContract
{
    /// <summary>Version of the patched-model contract and of steering.json.</summary>
    public const int FormatVersion = 1;

    /// <summary>Name of the manifest written beside a patched model.</summary>
    public const string ManifestFileName = "steering.json";

    /// <summary>metadata_props key that marks a model as patched (patching it again is refused).</summary>
    public const string PatchedMetadataKey = "onnxsteer.patched";

    /// <summary>Output carrying the residual stream after block <paramref name="layer"/>, [batch, sequence, hidden].</summary>
    public static string HiddenStateOutput(int layer) => $"hidden_states.{layer}";

    /// <summary>Additive steering input for block <paramref name="layer"/>, [steer_batch, 1, hidden].</summary>
    public static string AddInput(int layer) => $"steering.{layer}.add";

    /// <summary>Unit direction for projection/ablation at block <paramref name="layer"/>, [steer_batch, 1, hidden].</summary>
    public static string DirectionInput(int layer) => $"steering.{layer}.direction";

    /// <summary>Target component along the direction at block <paramref name="layer"/>, [steer_batch, 1, 1].</summary>
    public static string TargetInput(int layer) => $"steering.{layer}.target";

    /// <summary>Symbolic batch dimension of the steering inputs of block <paramref name="layer"/>. Each layer gets its own
    /// symbol because ONNX Runtime requires equal symbols to have equal sizes, which would forbid feeding a per-row
    /// batch at one layer while another layer keeps its batch-1 default.</summary>
    public static string SteerBatchSymbol(int layer) => $"steer_batch_{layer}";

    /// <summary>Whether <paramref name="name"/> is one of the steering inputs (<c>steering.{L}.*</c>).</summary>
    public static bool IsSteeringInput(string name) => name.StartsWith("steering.", StringComparison.Ordinal);

    /// <summary>Whether <paramref name="name"/> is one of the hidden-state outputs (<c>hidden_states.{L}</c>).</summary>
    public static bool IsHiddenStateOutput(string name) => name.StartsWith("hidden_states.", StringComparison.Ordinal);
}
