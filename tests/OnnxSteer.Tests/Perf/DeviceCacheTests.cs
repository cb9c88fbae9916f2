using OnnxSteer.Runtime;

namespace OnnxSteer.Tests.Perf;

/// <summary>The device-resident form of the bound decode (cache buffers from ONNX Runtime's allocator for the provider's
/// memory, the prefill's presents read in place, growth without copies, host inputs rebound every step), run here over
/// the CPU allocator: the same code CUDA and DirectML take, minus the device. Its GPU form has not been run.</summary>
public sealed class DeviceCacheTests
{
    [Theory]
    [MemberData(nameof(BoundDecodeTests.Layouts), MemberType = typeof(BoundDecodeTests))]
    public void The_allocator_cache_gives_the_plain_loops_tokens(string layout, bool applies)
    {
        using var dir = TestPaths.NewTempDir();
        var path = BoundDecodeTests.WritePatched(layout, dir);
        // Headroom 1: the buffers grow at steps 1, 2, 4, 8 (growth binds old past and new present, nothing copied).
        using var device = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundCacheOnAllocator = true, BoundCacheHeadroom = 1 });
        using var host = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1 });
        using var plain = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundDecode = false });
        var options = new GeneratorOptions { MaxNewTokens = 12, UseChatTemplate = false };
        foreach (bool steer in new[] { false, true })
        {
            var requests = BoundDecodeTests.Requests(device.HiddenSize!.Value, steer);
            var a = device.Generate(requests, options);
            var b = plain.Generate(requests, options);
            var c = host.Generate(requests, options);
            for (int i = 0; i < requests.Count; i++)
            {
                Assert.Equal(b[i].TokenIds, a[i].TokenIds);
                Assert.Equal(b[i].TokenIds, c[i].TokenIds);
                if (a[i].DecodeSteps > 0) Assert.Equal(applies, a[i].BoundDecode);
            }
        }
    }

    [Fact]
    public void The_allocator_cache_allocates_no_managed_memory_per_step()
    {
        using var dir = TestPaths.NewTempDir();
        var path = BoundDecodeTests.WritePatched("genai-mha-fp32", dir);
        using var model = SteeredModel.Load(path, new RuntimeOptions { IntraOpThreads = 1, BoundCacheOnAllocator = true });
        var options = new GeneratorOptions { MaxNewTokens = 40, UseChatTemplate = false };
        var requests = BoundDecodeTests.Requests(model.HiddenSize!.Value, steer: true);
        model.Generate(requests, options);
        var results = model.Generate(requests, options);
        Assert.True(results[0].BoundDecode);
        Assert.True(results[0].SteadySteps >= 5);
        Assert.Equal(0, results[0].SteadyAllocatedBytes);
    }

    [Fact]
    public void Real_export_on_the_allocator_cache_gives_the_golden_ids()
    {
        using var model = SteeredModel.Load(TestPaths.GenAiTinyLlamaFp16, new RuntimeOptions { IntraOpThreads = 1, BoundCacheOnAllocator = true, BoundCacheHeadroom = 2 });
        var prompt = model.Tokenizer.Encode("Hello world, this is a test");
        var result = model.Generate([new GenerationRequest { PromptTokenIds = prompt }], new GeneratorOptions { MaxNewTokens = 12, UseChatTemplate = false })[0];
        Assert.True(result.BoundDecode);
        Assert.Equal(OnnxSteer.Tests.Runtime.GenerationTests.GoldenHelloIds, result.TokenIds);
    }
}
