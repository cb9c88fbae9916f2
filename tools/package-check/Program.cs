// A fresh app's view of the OnnxSteer package (tools/package-check.sh builds it against the packed library from a
// local feed). Usage: app <repo-root> <work-dir> cpu|gpu
using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntime;
using OnnxSteer;
using OnnxSteer.Decoder;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Chat;
using OnnxSteer.Vectors;

var (repo, work, mode) = (args[0], args[1], args[2]);
Console.WriteLine($".NET {Environment.Version}, ONNX Runtime {OrtEnv.Instance().GetVersionString()}, providers: {string.Join(", ", OrtEnv.Instance().GetAvailableProviders())}");

if (mode == "gpu")
{
    // The Gpu package's native library must be the one loaded: it lists the CUDA provider.
    if (!OrtEnv.Instance().GetAvailableProviders().Contains("CUDAExecutionProvider"))
        return Fail("the Gpu package's native library was not selected (no CUDAExecutionProvider)");
    try
    {
        using var gpu = SteeredModel.Load(Path.Combine(repo, "models", "tiny-instruct"), new RuntimeOptions { Provider = ExecutionProvider.Cuda });
        Console.WriteLine($"CUDA: {gpu.Generate("Hello", null, new GeneratorOptions { MaxNewTokens = 8 }).Text}");
    }
    catch (OnnxSteerException e) when (e.Kind == ErrorKind.ProviderUnavailable)
    {
        // Expected on a machine without the CUDA libraries: the provider is there but cannot start.
        Console.WriteLine($"CUDA provider present, not startable here: {e.Message}");
    }
    return 0;
}

var patched = Path.Combine(work, "tiny-steer");
Console.WriteLine(ModelPatcher.Patch(Path.Combine(repo, "models", "tiny-instruct"), patched));
await using var model = SteeredModel.Load(patched, new RuntimeOptions { IntraOpThreads = 1 });
var vectors = model.ExtractVector(PairsFile.Read(Path.Combine(repo, "models", "data", "pairs", "change_case.english_lowercase.jsonl")), "format.lowercase");
vectors.Save(Path.Combine(work, "lowercase.safetensors"));
var steering = Steering.From(VectorFileSource.Load(Path.Combine(work, "lowercase.safetensors"))).Project("format.lowercase", layer: 1);
var options = new GeneratorOptions { MaxNewTokens = 40 };
const string prompt = "Write a short note about the ocean.";
var plain = model.Generate(prompt, null, options).Text;
var steered = model.Generate(prompt, steering, options).Text;
Console.WriteLine($"unsteered: {plain}\nsteered:   {steered}");
if (plain == steered) return Fail("steering changed nothing");

IChatClient client = model.AsChatClient(options);
var reply = await client.GetStreamingResponseAsync(prompt, new ChatOptions().WithSteering(steering)).ToChatResponseAsync();
Console.WriteLine($"chat: {reply.FinishReason}, {reply.Usage?.OutputTokenCount} tokens, model {reply.ModelId}");
if (reply.Text != steered || reply.FinishReason is null || reply.Usage is null) return Fail("the chat client's streamed reply differs from Generate");

try
{
    SteeredModel.Load(patched, new RuntimeOptions { Provider = ExecutionProvider.Cuda }).Dispose();
    return Fail("CUDA loaded with the CPU package");
}
catch (OnnxSteerException e) when (e.Kind == ErrorKind.ProviderUnavailable)
{
    Console.WriteLine($"Cuda with the CPU package: {e.Message}");
    if (!e.Message.Contains("Microsoft.ML.OnnxRuntime.Gpu")) return Fail("the provider error does not name the package");
}
Console.WriteLine("package check: ok");
return 0;

static int Fail(string why)
{
    Console.Error.WriteLine($"package check: FAILED: {why}");
    return 1;
}
