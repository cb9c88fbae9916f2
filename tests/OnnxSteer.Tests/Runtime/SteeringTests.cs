using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntime;
using Microsoft.ML.OnnxRuntime.Tensors;
using OnnxSteer.Onnx;
using OnnxSteer.Decoder;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Chat;
using OnnxSteer.Cli;

namespace OnnxSteer.Tests.Runtime;

/// <summary>The real fixture patched once (all layers steered and exposed, optional steering inputs).</summary>
public sealed class PatchedFixtureModel : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-runtime-patched");

    public PatchedFixtureModel()
    {
        Directory = Path.Combine(_dir.Path, "patched");
        ModelPatcher.Patch(TestPaths.GenAiTinyLlamaFp16, Directory, new PatchOptions());
        Model = SteeredModel.Load(Directory, new RuntimeOptions { IntraOpThreads = 1 });
    }

    public string Directory { get; }
    public SteeredModel Model { get; }

    public void Dispose()
    {
        Model.Dispose();
        _dir.Dispose();
    }
}

/// <summary>Steered generation on the patched real fixture, each mode and position setting checked against a plain,
/// hand-written ONNX Runtime loop that feeds the steering inputs itself.</summary>
public sealed class SteeringTests(PatchedFixtureModel fixture) : IClassFixture<PatchedFixtureModel>
{
    private SteeredModel Model => fixture.Model;
    private static readonly GeneratorOptions Raw = new() { MaxNewTokens = 10, UseChatTemplate = false };
    private const int Hidden = 16;

    private static SteeringVector Vector(int seed)
    {
        var random = new Random(seed);
        return SteeringVector.FromRaw(Enumerable.Range(0, Hidden).Select(_ => (float)(random.NextDouble() * 2 - 1)).ToArray(), zBar: 3f);
    }

    private int[] Prompt => Model.Tokenizer.Encode("Hello world, this is a test");

    [Fact]
    public void Patched_model_without_steering_gives_the_unpatched_golden_ids()
    {
        Assert.Equal([0, 1], Model.SteeredLayers);
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt }], Raw with { MaxNewTokens = 12 })[0];
        Assert.Equal(GenerationTests.GoldenHelloIds, result.TokenIds);
    }

    [Fact]
    public void Steering_changes_the_output_deterministically()
    {
        var steering = Steering.None.Add(Vector(1), 0, 8f);
        var a = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];
        var b = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];
        Assert.Equal(a.TokenIds, b.TokenIds);
        Assert.NotEqual(GenerationTests.GoldenHelloIds[..Raw.MaxNewTokens], a.TokenIds);
    }

    public static TheoryData<string> Modes() => ["add", "project", "ablate", "add+project"];

    private static Steering Build(string mode) => mode switch
    {
        "add" => Steering.None.Add(Vector(1), 0, 8f),
        "project" => Steering.None.Project(Vector(2), 1, 6f),
        "ablate" => Steering.None.Ablate(Vector(3), 0),
        _ => Steering.None.Add(Vector(1), 0, 4f).Add(Vector(4), 0, 4f).Project(Vector(2), 0),
    };

    /// <summary>Positions "all": every run steers every position, so a loop without any cache that re-runs the whole
    /// sequence with the steering fed is an exact reference.</summary>
    [Theory]
    [MemberData(nameof(Modes))]
    public void All_positions_match_a_no_cache_reference(string mode)
    {
        var steering = Build(mode);
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];
        var feeds = Feeds(steering);
        Assert.Equal(Reference(Prompt, Raw.MaxNewTokens, prefill: feeds, decode: feeds, useCache: false), result.TokenIds);
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Prompt_only_matches_a_prefix_run_steered_then_plain_decoding(string mode)
    {
        var steering = Build(mode).At(SteeringPositions.Prompt);
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];
        Assert.Equal(Reference(Prompt, Raw.MaxNewTokens, prefill: Feeds(steering), decode: [], useCache: true), result.TokenIds);
        var all = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering.At(SteeringPositions.All) }], Raw)[0];
        Assert.Equal(all.TokenIds[0], result.TokenIds[0]); // the first token comes from the (steered) prompt
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void Generated_only_matches_a_plain_prefix_run_then_steered_decoding(string mode)
    {
        var steering = Build(mode).At(SteeringPositions.Generated);
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];
        Assert.Equal(Reference(Prompt, Raw.MaxNewTokens, prefill: [], decode: Feeds(steering), useCache: true), result.TokenIds);
        Assert.Equal(GenerationTests.GoldenHelloIds[0], result.TokenIds[0]); // the first token comes from the unsteered prompt
    }

    [Fact]
    public void Per_row_steering_in_a_batch_equals_rows_alone()
    {
        var requests = new List<GenerationRequest>
        {
            new() { PromptTokenIds = Model.Tokenizer.Encode("Hello"), Steering = Build("add") },
            new() { PromptTokenIds = Model.Tokenizer.Encode("The quick brown fox jumps over"), Steering = null },
            new() { PromptTokenIds = Model.Tokenizer.Encode("Rivers of the world"), Steering = Build("project").At(SteeringPositions.Generated) },
            new() { PromptTokenIds = Model.Tokenizer.Encode("Rivers of the world"), Steering = Build("add+project") },
        };
        var batch = Model.Generate(requests, Raw);
        for (int i = 0; i < requests.Count; i++)
            Assert.Equal(Model.Generate([requests[i]], Raw)[0].TokenIds, batch[i].TokenIds);
        Assert.NotEqual(batch[2].TokenIds, batch[3].TokenIds);
    }

    [Fact]
    public async Task Concurrent_generations_with_different_steering_equal_their_runs_alone()
    {
        var steerings = new[] { Steering.None, Build("add"), Build("project"), Build("ablate"), Build("add+project").At(SteeringPositions.Prompt), Steering.None.Add(Vector(9), 1, -6f) };
        var alone = steerings.Select(s => Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = s }], Raw)[0].TokenIds).ToArray();
        for (int round = 0; round < 2; round++)
        {
            var tasks = steerings.Select(s => Task.Run(() => Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = s }], Raw)[0].TokenIds)).ToArray();
            var together = await Task.WhenAll(tasks);
            for (int i = 0; i < steerings.Length; i++) Assert.Equal(alone[i], together[i]);
        }
        Assert.True(alone.Distinct(new SequenceComparer()).Count() >= 4);
    }

    [Fact]
    public void Resolved_feed_sums_adds_and_takes_projection_targets()
    {
        var u = Vector(1); var v = Vector(4); var p = Vector(2);
        var steering = Steering.None.Add(u, 0, 2f).Add(v, 0, 3f).Project(p, 0).Ablate(u, 1);
        var layers = SteeringFeed.Resolve(steering, SteeringPhase.Prompt, Hidden);
        for (int i = 0; i < Hidden; i++)
        {
            Assert.Equal(2f * u.Direction[i] + 3f * v.Direction[i], layers[0].Add[i], 5);
            Assert.Equal(p.Direction[i], layers[0].Direction[i], 5);
            Assert.Equal(u.Direction[i], layers[1].Direction[i], 5);
        }
        Assert.Equal(3f, layers[0].Target);   // z_bar
        Assert.Equal(0f, layers[1].Target);   // ablation
        Assert.Empty(SteeringFeed.Resolve(steering.At(SteeringPositions.Generated), SteeringPhase.Prompt, Hidden));
        Assert.Empty(SteeringFeed.Resolve(steering.At(SteeringPositions.Prompt), SteeringPhase.Decode, Hidden));
    }

    [Fact]
    public void Bad_steering_is_refused_with_clear_messages()
    {
        var layer = Assert.Throws<OnnxSteerException>(() => Model.Validate(Steering.None.Add(Vector(1), 5, 1f)));
        Assert.Equal(ErrorKind.UnsupportedModel, layer.Kind);
        Assert.Contains("layer 5", layer.Message);
        Assert.Contains("0-1", layer.Message);

        var size = Assert.Throws<OnnxSteerException>(() => Model.Validate(Steering.None.Add(SteeringVector.FromRaw([1f, 2f, 3f]), 0, 1f)));
        Assert.Equal(ErrorKind.InvalidVector, size.Kind);
        Assert.Contains("3 values", size.Message);
        Assert.Contains("16", size.Message);

        var nan = new float[Hidden]; nan[3] = float.NaN;
        Assert.Equal(ErrorKind.InvalidVector, Assert.Throws<OnnxSteerException>(() => Steering.None.Add(new SteeringVector(nan, null, 1), 0, 1f)).Kind);
        Assert.Equal(ErrorKind.InvalidVector, Assert.Throws<OnnxSteerException>(() => Steering.None.Add(Vector(1), 0, float.PositiveInfinity)).Kind);

        var twice = Assert.Throws<OnnxSteerException>(() => Steering.None.Project(Vector(1), 0).Ablate(Vector(2), 0));
        Assert.Contains("two projections at layer 0", twice.Message);

        var noZBar = Assert.Throws<OnnxSteerException>(() => Steering.None.Project(new SteeringVector(Vector(1).Direction, null, 1), 0));
        Assert.Contains("z_bar", noZBar.Message);

        var missing = Assert.Throws<OnnxSteerException>(() => Steering.From(new InMemoryVectorSource()).Add("conciseness", 0, 1f));
        Assert.Contains("conciseness", missing.Message);
    }

    [Fact]
    public void Named_vectors_come_from_a_source()
    {
        var source = new InMemoryVectorSource().Add("format.lowercase", 1, Vector(2)).Add("conciseness", 0, Vector(1));
        var steering = Steering.From(source).Project("format.lowercase", layer: 1).Add("conciseness", layer: 0, weight: 8);
        var direct = Steering.None.Project(Vector(2), 1).Add(Vector(1), 0, 8f);
        Assert.Equal(
            Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = direct }], Raw)[0].TokenIds,
            Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0].TokenIds);
    }

    [Fact]
    public async Task Chat_client_passes_steering_per_request()
    {
        using var client = new SteeredChatClient(Model, new GeneratorOptions { MaxNewTokens = 8 });
        var steering = Build("add");
        var messages = new[] { new ChatMessage(ChatRole.User, "Hello") };
        var plain = await client.GetResponseAsync(messages);
        var steered = await client.GetResponseAsync(messages, new ChatOptions().WithSteering(steering));
        Assert.Equal(Model.Generate("Hello", null, new GeneratorOptions { MaxNewTokens = 8 }).Text, plain.Text);
        Assert.Equal(Model.Generate("Hello", steering, new GeneratorOptions { MaxNewTokens = 8 }).Text, steered.Text);
        Assert.NotEqual(plain.Text, steered.Text);

        var streamed = new List<string>();
        await foreach (var update in client.GetStreamingResponseAsync(messages, new ChatOptions { MaxOutputTokens = 8 }.WithSteering(steering)))
            streamed.Add(update.Text);
        Assert.Equal(steered.Text, string.Concat(streamed));
        Assert.Equal(8, steered.Usage!.OutputTokenCount);
    }

    [Fact]
    public void Cli_generate_steers_with_a_vector_file()
    {
        using var dir = TestPaths.NewTempDir();
        var file = OnnxSteer.Vectors.InstructionVectorFile.Create(
            [OnnxSteer.Vectors.InstructionVector.FromMeanDiffs("conciseness", "test", new Dictionary<int, float[]> { [0] = Vector(1).Direction.Select(x => x * 5).ToArray(), [1] = Vector(2).Direction })],
            null);
        var path = dir.Combine("v.safetensors");
        file.Save(path);

        string Run(params string[] args)
        {
            var stdout = new StringWriter(); var stderr = new StringWriter();
            var code = OnnxSteer.Cli.CliApp.Run(args, stdout, stderr);
            Assert.True(code == 0, stderr.ToString());
            return stdout.ToString();
        }
        var plain = Run("generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--json");
        var steered = Run("generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--json", "--steer", $"{path}:conciseness@0=add:8");
        var expected = Model.Generate("Hello", SteerSpec.ToSteering([SteerSpec.Parse($"{path}:conciseness@0=add:8")]), Raw with { MaxNewTokens = 6 });
        int[] Ids(string json) => System.Text.Json.JsonDocument.Parse(json).RootElement.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();
        Assert.Equal(expected.TokenIds, Ids(steered));
        Assert.NotEqual(Ids(plain), Ids(steered));
        // The CPU decode runs through the pre-bound buffers, and the report says so.
        Assert.True(System.Text.Json.JsonDocument.Parse(steered).RootElement.GetProperty("timing").GetProperty("bound_decode").GetBoolean());

        var stderr2 = new StringWriter();
        Assert.Equal((int)ErrorKind.InvalidVector, OnnxSteer.Cli.CliApp.Run(["generate", fixture.Directory, "--prompt", "x", "--steer", $"{path}@7=ablate"], new StringWriter(), stderr2));
        Assert.StartsWith("onnxsteer: error: vector 'conciseness'", stderr2.ToString());
        Assert.Contains("no layer 7", stderr2.ToString());
    }

    [Fact]
    public void Cli_generate_steers_every_layer_in_norm_units_and_reports_random_seeds()
    {
        using var dir = TestPaths.NewTempDir();
        var diffs = new Dictionary<int, float[]> { [0] = Vector(3).Direction.Select(x => x * 5).ToArray(), [1] = Vector(4).Direction.Select(x => x * 2).ToArray() };
        var path = dir.Combine("v.safetensors");
        OnnxSteer.Vectors.InstructionVectorFile.Create([OnnxSteer.Vectors.InstructionVector.FromMeanDiffs("c", "test", diffs)], null).Save(path);
        System.Text.Json.JsonElement Json(params string[] extra)
        {
            var (o, e) = (new StringWriter(), new StringWriter());
            var code = OnnxSteer.Cli.CliApp.Run(["generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--json", .. extra], o, e);
            Assert.True(code == 0, e.ToString());
            return System.Text.Json.JsonDocument.Parse(o.ToString()).RootElement;
        }
        int[] Ids(System.Text.Json.JsonElement r) => r.GetProperty("token_ids").EnumerateArray().Select(e => e.GetInt32()).ToArray();

        // @all=add:3x is an add at every layer of 3 x that layer's |u_L| (5 at layer 0, 2 at layer 1).
        var layers = OnnxSteer.Vectors.InstructionVectorFile.Load(path).Get().Layers;
        var (l0, l1) = (layers[0].ToSteeringVector(), layers[1].ToSteeringVector());
        Assert.Equal(5f, l0.Norm, 4);
        var expected = Model.Generate("Hello", Steering.None.Add(l0, 0, 3 * l0.Norm).Add(l1, 1, 3 * l1.Norm), Raw with { MaxNewTokens = 6 });
        Assert.NotEqual(Model.Generate("Hello", null, Raw with { MaxNewTokens = 6 }).TokenIds, expected.TokenIds);
        Assert.Equal(expected.TokenIds, Ids(Json("--steer", $"{path}@all=add:3x")));
        Assert.Equal(expected.TokenIds, Ids(Json("--steer", $"{path}@0,1=add:3x")));
        Assert.Equal(expected.TokenIds, Ids(Json("--steer", $"{path}@0-1=add:3x")));

        // Greedy: no seed. Sampling without --seed: a random one, reported, and it repeats the run.
        Assert.Equal(System.Text.Json.JsonValueKind.Null, Json().GetProperty("seed").ValueKind);
        var sampled = Json("--temperature", "1.5");
        var seed = sampled.GetProperty("seed").GetInt32();
        Assert.Equal(Ids(sampled), Ids(Json("--temperature", "1.5", "--seed", seed.ToString(System.Globalization.CultureInfo.InvariantCulture))));
        Assert.Equal(7, Json("--temperature", "1.5", "--seed", "7").GetProperty("seed").GetInt32());
    }

    [Fact]
    public void Session_threads_default_to_the_cores_this_process_may_use()
    {
        Assert.Equal(Environment.ProcessorCount, SessionThreads.Resolve(null));
        Assert.Equal(Environment.ProcessorCount, SessionThreads.Resolve(0));
        Assert.Equal(3, SessionThreads.Resolve(3));
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => SessionThreads.Resolve(-2)).Kind);
    }

    /// <summary>Issue 12: --threads reaches the session, the JSON timing has load and time to first token, and the streamed
    /// text (now written from the decode loop's own thread) is the JSON's text.</summary>
    [Fact]
    public void Cli_generate_takes_threads_and_reports_time_to_first_token()
    {
        (int Code, string Out, string Err) Run(params string[] args)
        {
            var stdout = new StringWriter(); var stderr = new StringWriter();
            var code = OnnxSteer.Cli.CliApp.Run(args, stdout, stderr);
            return (code, stdout.ToString(), stderr.ToString());
        }
        var json = Run("generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--json", "--threads", "1");
        Assert.True(json.Code == 0, json.Err);
        var root = System.Text.Json.JsonDocument.Parse(json.Out).RootElement;
        var timing = root.GetProperty("timing");
        Assert.Equal(1, timing.GetProperty("threads").GetInt32());
        double load = timing.GetProperty("load_ms").GetDouble();
        double firstToken = timing.GetProperty("first_token_ms").GetDouble();
        double sinceStart = timing.GetProperty("time_to_first_token_ms").GetDouble();
        Assert.True(load > 0 && firstToken > 0, json.Out);
        // From process start: the test host started long before this call, so it includes at least load and first token.
        Assert.True(sinceStart >= load + firstToken, json.Out);

        var streamed = Run("generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--threads", "1");
        Assert.Equal(0, streamed.Code);
        Assert.Equal(root.GetProperty("text").GetString() + Environment.NewLine, streamed.Out);

        var bad = Run("generate", fixture.Directory, "--prompt", "Hello", "--threads", "-1");
        Assert.Equal((int)ErrorKind.Usage, bad.Code);

        // --spin off reaches a two-thread session (ONNX Runtime accepts the config entry and runs); other values are refused.
        var sleeping = Run("generate", fixture.Directory, "--prompt", "Hello", "--no-chat-template", "--max-new-tokens", "6", "--json", "--threads", "2", "--spin", "off");
        Assert.True(sleeping.Code == 0, sleeping.Err);
        Assert.Equal(2, System.Text.Json.JsonDocument.Parse(sleeping.Out).RootElement.GetProperty("timing").GetProperty("threads").GetInt32());
        Assert.Equal((int)ErrorKind.Usage, Run("generate", fixture.Directory, "--prompt", "Hello", "--spin", "sometimes").Code);
    }

    [Theory]
    [InlineData("v.safetensors@12", "v.safetensors", null, 12, SteeringMode.Project, 0f, null)]
    [InlineData("v.safetensors:format.lowercase@18=project", "v.safetensors", "format.lowercase", 18, SteeringMode.Project, 0f, null)]
    [InlineData("dir/v.gguf:conciseness@12=add:20", "dir/v.gguf", "conciseness", 12, SteeringMode.Add, 20f, null)]
    [InlineData("v:x@3=project:-1.5", "v", "x", 3, SteeringMode.Project, 0f, -1.5f)]
    [InlineData("C:\\vec\\v.safetensors@2=ablate", "C:\\vec\\v.safetensors", null, 2, SteeringMode.Ablate, 0f, null)]
    public void Steer_specs_parse(string text, string file, string? name, int layer, SteeringMode mode, float weight, float? target) =>
        Assert.Equal(new SteerSpec(file, name, OnnxSteer.Contract.LayerSelection.Of(layer), mode, weight, target), SteerSpec.Parse(text));

    [Theory]
    [InlineData("v@all=add:4x", "all", SteeringMode.Add, 4f, true)]
    [InlineData("v@1-5", "1-5", SteeringMode.Project, 0f, false)]
    [InlineData("v@3,5=add:-2", "3,5", SteeringMode.Add, -2f, false)]
    [InlineData("v@3, 5=ablate", "3,5", SteeringMode.Ablate, 0f, false)]
    [InlineData("v@0-2,4=add:1.5x", "0-2,4", SteeringMode.Add, 1.5f, true)]
    public void Steer_specs_take_layer_lists_and_relative_weights(string text, string layers, SteeringMode mode, float weight, bool relative)
    {
        var spec = SteerSpec.Parse(text);
        Assert.Equal(layers, spec.Layers.ToString());
        Assert.Equal((mode, weight, relative), (spec.Mode, spec.Weight, spec.RelativeWeight));
    }

    [Theory]
    [InlineData("v.safetensors")]
    [InlineData("v@x")]
    [InlineData("v@1=add")]
    [InlineData("v@1=add:nan")]
    [InlineData("v@1=scale:2")]
    [InlineData("v:@1")]
    [InlineData("v@1=ablate:3")]
    [InlineData("v@none")]
    [InlineData("v@-3")]
    [InlineData("v@5-3")]
    [InlineData("v@1=add:x")]
    [InlineData("v@1=header")]
    [InlineData("v@1=header:big")]
    public void Bad_steer_specs_are_usage_errors(string text) =>
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => SteerSpec.Parse(text)).Kind);

    // ------------------------------------------------------------------ header steering (one prompt position per term)

    /// <summary>Terms scoped to prompt positions: the prompt runs up to the header, then each header position on its own
    /// with its own steering (and any unscoped prompt steering), then plain decoding; a hand-written loop that does the same
    /// is the reference, for scoped terms alone and mixed with unscoped ones at all positions.</summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Header_terms_steer_only_their_prompt_position(bool withUnscoped)
    {
        // Layer 0 for position 3: the fixture has two layers, and a change after the last one at an earlier position reaches nothing.
        var header = Steering.None.AddAtPromptPosition(Vector(1), 1, 8f, 1).AddAtPromptPosition(Vector(4), 0, 12f, 3);
        var unscoped = withUnscoped ? Steering.None.Add(Vector(9), 1, -5f) : Steering.None;
        var steering = withUnscoped ? header.With(unscoped.Terms[0]) : header;
        Assert.Equal(3, steering.HeaderLength);
        var result = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = steering }], Raw)[0];

        var all = Feeds(unscoped);
        var atPosition = new[] { 3, 2, 1 }.Select(k => Feeds(Sum(unscoped, steering.Terms.Where(t => t.PromptPosition == k)))).ToList();
        Assert.Equal(Reference(Prompt, Raw.MaxNewTokens, prefill: all, decode: all, useCache: true, header: atPosition), result.TokenIds);
        Assert.NotEqual(Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = unscoped }], Raw)[0].TokenIds, result.TokenIds);
        // The same terms at every position are another steering.
        var everywhere = Steering.None.Add(Vector(1), 1, 8f).Add(Vector(4), 0, 12f);
        Assert.NotEqual(Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = everywhere }], Raw)[0].TokenIds, result.TokenIds);

        static Steering Sum(Steering start, IEnumerable<SteeringTerm> terms)
        {
            foreach (var t in terms) start = start.With(t with { PromptPosition = null });
            return start;
        }
    }

    /// <summary>Splitting the prompt changes nothing by itself: zero-weight header terms give the unsteered golden ids, and
    /// prompt-only steering split at the header gives what it gives in one run.</summary>
    [Fact]
    public void Running_the_prompt_in_pieces_keeps_the_results()
    {
        var zero = Steering.None.AddAtPromptPosition(Vector(1), 0, 0f, 4);
        var split = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = zero }], Raw with { MaxNewTokens = 12 })[0];
        Assert.Equal(GenerationTests.GoldenHelloIds, split.TokenIds);

        var prompt = Build("add").At(SteeringPositions.Prompt);
        var whole = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = prompt }], Raw)[0];
        var pieces = Model.Generate([new GenerationRequest { PromptTokenIds = Prompt, Steering = prompt.With(zero.Terms[0]) }], Raw)[0];
        Assert.Equal(whole.TokenIds, pieces.TokenIds);
    }

    [Fact]
    public void Header_steering_reads_its_position_vectors_from_the_source()
    {
        var source = new InMemoryVectorSource()
            .Add("kw", 0, Vector(1) with { Norm = 4f })
            .Add(OnnxSteer.Contract.HeaderVectors.Name("kw", 2), 0, Vector(2) with { Norm = 2f })
            .Add(OnnxSteer.Contract.HeaderVectors.Name("kw", 3), 0, Vector(3) with { Norm = 1f })
            .Add(OnnxSteer.Contract.HeaderVectors.Name("kw", 5), 0, Vector(5)); // after a gap: not part of the header
        Assert.Equal("kw.header-2", OnnxSteer.Contract.HeaderVectors.Name("kw", 2));
        var steering = Steering.From(source).AddHeader("kw", 0, 1.5f);
        Assert.Equal([(1, 6f), (2, 3f), (3, 1.5f)], steering.Terms.Select(t => (t.PromptPosition!.Value, t.Weight)).ToArray());
        Assert.Equal(3, steering.HeaderLength);
        Assert.Contains("at prompt position -2", steering.ToString());
        Assert.Contains("\"prompt_position\":3", System.Text.Json.JsonSerializer.Serialize(steering));
    }

    [Fact]
    public void Bad_header_steering_is_refused()
    {
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => Steering.None.AddAtPromptPosition(Vector(1), 0, 1f, 0)).Kind);
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => Steering.None.AddAtPromptPosition(Vector(1), 0, 1f, OnnxSteer.Contract.HeaderVectors.MaxPositions + 1)).Kind);
        var projected = new SteeringTerm("p", 0, SteeringMode.Project, 0, 1f, Vector(2)) { PromptPosition = 1 };
        Assert.Contains("only additive terms", Assert.Throws<OnnxSteerException>(() => Steering.None.With(projected)).Message);
        var generated = Steering.None.AddAtPromptPosition(Vector(1), 0, 1f, 1).At(SteeringPositions.Generated);
        Assert.Equal(ErrorKind.Usage, Assert.Throws<OnnxSteerException>(() => Model.Validate(generated)).Kind);
        // A prompt no longer than the header cannot be split.
        var tooShort = Assert.Throws<OnnxSteerException>(() => Model.Generate(
            [new GenerationRequest { PromptTokenIds = Prompt[..3], Steering = Steering.None.AddAtPromptPosition(Vector(1), 0, 1f, 3) }], Raw));
        Assert.Equal(ErrorKind.InvalidData, tooShort.Kind);
        Assert.Contains("3 tokens", tooShort.Message);
    }

    [Fact]
    public void Cli_generate_header_steers_each_header_position_with_its_own_vector()
    {
        using var dir = TestPaths.NewTempDir();
        var last = Vector(5).Direction.Select(x => x * 3).ToArray();
        var second = Vector(6).Direction.Select(x => x * 7).ToArray();
        var file = OnnxSteer.Vectors.InstructionVectorFile.Create(
        [
            OnnxSteer.Vectors.InstructionVector.FromMeanDiffs("kw", "test", new Dictionary<int, float[]> { [0] = last }),
            OnnxSteer.Vectors.InstructionVector.FromMeanDiffs(OnnxSteer.Contract.HeaderVectors.Name("kw", 2), "test", new Dictionary<int, float[]> { [0] = second }),
        ], null);
        var path = dir.Combine("kw.safetensors");
        file.Save(path);
        var spec = SteerSpec.Parse($"{path}:kw@0=header:1.5x");
        Assert.True(spec.Header);
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = OnnxSteer.Cli.CliApp.Run(["generate", fixture.Directory, "--prompt", "Hello world, this is", "--no-chat-template", "--max-new-tokens", "6", "--json",
            "--steer", $"{path}:kw@0=header:1.5"], o, e);
        Assert.True(code == 0, e.ToString());
        var expected = Steering.None.AddAtPromptPosition(SteeringVector.FromRaw(last), 0, 4.5f, 1).AddAtPromptPosition(SteeringVector.FromRaw(second), 0, 10.5f, 2);
        var want = Model.Generate("Hello world, this is", expected, Raw with { MaxNewTokens = 6 }).TokenIds;
        Assert.Equal(want, System.Text.Json.JsonDocument.Parse(o.ToString()).RootElement.GetProperty("token_ids").EnumerateArray().Select(x => x.GetInt32()).ToArray());
        Assert.NotEqual(Model.Generate("Hello world, this is", null, Raw with { MaxNewTokens = 6 }).TokenIds, want);
    }

    // ------------------------------------------------------------------ reference

    /// <summary>The steering inputs a steering means for one layer set, computed directly from the terms (float16).</summary>
    private static List<(string Name, float[] Values, long[] Shape)> Feeds(Steering steering)
    {
        var result = new List<(string, float[], long[])>();
        foreach (var group in steering.Terms.GroupBy(t => t.Layer))
        {
            var add = new float[Hidden]; var dir = new float[Hidden]; float target = 0;
            foreach (var t in group)
            {
                var u = t.Vector.Direction;
                double norm = Math.Sqrt(u.Sum(x => (double)x * x));
                for (int i = 0; i < Hidden; i++)
                {
                    if (t.Mode == SteeringMode.Add) add[i] += (float)(t.Weight * u[i] / norm);
                    else dir[i] = (float)(u[i] / norm);
                }
                if (t.Mode != SteeringMode.Add) target = t.Mode == SteeringMode.Ablate ? 0 : t.Target;
            }
            result.Add(($"steering.{group.Key}.add", add, [1, 1, Hidden]));
            result.Add(($"steering.{group.Key}.direction", dir, [1, 1, Hidden]));
            result.Add(($"steering.{group.Key}.target", [target], [1, 1, 1]));
        }
        return result;
    }

    /// <summary>Greedy decoding written plainly against the patched model: with <paramref name="useCache"/> a prefix
    /// run over the prompt (fed <paramref name="prefill"/>) and then one run per token with the cache (fed
    /// <paramref name="decode"/>); without, the whole sequence every step (fed <paramref name="decode"/>). With
    /// <paramref name="header"/> (one feed per header position, the farthest from the end first), the prompt's last
    /// header.Count tokens run one at a time after the rest, each fed its own steering (header steering).</summary>
    private int[] Reference(int[] prompt, int maxNew, List<(string Name, float[] Values, long[] Shape)> prefill, List<(string Name, float[] Values, long[] Shape)> decode, bool useCache,
        IReadOnlyList<List<(string Name, float[] Values, long[] Shape)>>? header = null)
    {
        using var session = new InferenceSession(Path.Combine(fixture.Directory, "model.onnx"));
        var tokens = new List<int>(prompt);
        var generated = new List<int>();
        var cache = new Dictionary<string, OrtValue>();
        var cacheInputs = session.InputMetadata.Where(kv => kv.Key.StartsWith("past_key_values", StringComparison.Ordinal)).ToList();

        // Runs tokens [start, end) with the cache so far (none when start is 0); returns the last position's argmax.
        int Run(int start, int end, List<(string Name, float[] Values, long[] Shape)> feeds)
        {
            var ids = tokens.Skip(start).Take(end - start).Select(t => (long)t).ToArray();
            using var idsValue = OrtValue.CreateTensorValueFromMemory(ids, [1, ids.Length]);
            using var mask = OrtValue.CreateTensorValueFromMemory(Enumerable.Repeat(1L, end).ToArray(), [1, end]);
            using var pos = OrtValue.CreateTensorValueFromMemory(Enumerable.Range(start, ids.Length).Select(i => (long)i).ToArray(), [1, ids.Length]);
            var names = new List<string> { "input_ids", "attention_mask", "position_ids" };
            var values = new List<OrtValue> { idsValue, mask, pos };
            var temporary = new List<OrtValue>();
            foreach (var (name, meta) in cacheInputs)
            {
                var past = start > 0 ? cache[name]
                    : OrtValue.CreateAllocatedTensorValue(OrtAllocator.DefaultInstance, meta.ElementDataType, [1, meta.Dimensions[1], 0, meta.Dimensions[3]]);
                temporary.Add(past); names.Add(name); values.Add(past);
            }
            foreach (var (name, data, shape) in feeds)
            {
                var half = data.Select(x => new Float16(BitConverter.HalfToUInt16Bits((Half)x))).ToArray();
                var v = OrtValue.CreateTensorValueFromMemory(half, shape);
                temporary.Add(v); names.Add(name); values.Add(v);
            }
            var outputNames = new List<string> { "logits" };
            outputNames.AddRange(cacheInputs.Select(c => c.Key.Replace("past_key_values", "present")));
            using var outputs = session.Run(new RunOptions(), names, values, outputNames);
            foreach (var t in temporary) t.Dispose();
            cache.Clear();
            for (int i = 0; i < cacheInputs.Count; i++)
            {
                // Copy the present out so it outlives the output collection.
                var present = outputs[1 + i];
                var shape = present.GetTensorTypeAndShape().Shape;
                var copy = present.GetTensorDataAsSpan<Float16>().ToArray();
                cache[cacheInputs[i].Key] = OrtValue.CreateTensorValueFromMemory(copy, shape);
            }
            var logitsShape = outputs[0].GetTensorTypeAndShape().Shape;
            int seq = (int)logitsShape[1], vocab = (int)logitsShape[2];
            return GenerationTests.ArgMaxHalf(outputs[0].GetTensorDataAsSpan<Float16>().Slice((seq - 1) * vocab, vocab));
        }

        try
        {
            for (int step = 0; step < maxNew; step++)
            {
                int n = tokens.Count, best;
                if (!useCache) best = Run(0, n, decode);
                else if (step > 0) best = Run(n - 1, n, decode);
                else
                {
                    int h = header?.Count ?? 0;
                    best = Run(0, n - h, prefill);
                    for (int k = h; k >= 1; k--) best = Run(n - k, n - k + 1, header![h - k]);
                }
                generated.Add(best);
                tokens.Add(best);
                if (Model.EosTokenIds.Contains(best)) break;
            }
        }
        finally
        {
            foreach (var v in cache.Values) v.Dispose();
        }
        return [.. generated];
    }

    private sealed class SequenceComparer : IEqualityComparer<int[]>
    {
        public bool Equals(int[]? x, int[]? y) => x!.SequenceEqual(y!);
        public int GetHashCode(int[] obj) => obj.Length == 0 ? 0 : obj[0];
    }
}
