using Microsoft.Extensions.AI;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.Cli;
using OnnxSteer.Contract;
using OnnxSteer.Decoder;
using OnnxSteer.GenAI;
using OnnxSteer.Runtime;
using OnnxSteer.Runtime.Chat;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.GenAI;

/// <summary>The bundled model and the real fp16 export, each patched for GenAI (required steering inputs) once and
/// loaded on both engines (CPU).</summary>
public sealed class GenAiModels : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-genai");

    public GenAiModels()
    {
        foreach (var (name, source) in new[] { ("tiny-instruct", Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct")), ("fp16", TestPaths.GenAiTinyLlamaFp16) })
        {
            var dir = _dir.Combine(name);
            ModelPatcher.Patch(source, dir, new PatchOptions { SteerInput = SteerInputMode.Required });
            Dirs[name] = dir;
            Ort[name] = SteeredModel.Load(dir, new RuntimeOptions { IntraOpThreads = 1 });
            GenAi[name] = GenAiSteeredModel.Load(dir, new RuntimeOptions { IntraOpThreads = 1 });
        }
        Optional = _dir.Combine("optional");
        ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), Optional, new PatchOptions());
    }

    public Dictionary<string, string> Dirs { get; } = [];
    public Dictionary<string, SteeredModel> Ort { get; } = [];
    public Dictionary<string, GenAiSteeredModel> GenAi { get; } = [];
    /// <summary>tiny-instruct patched with the default optional inputs (the trap).</summary>
    public string Optional { get; }

    public void Dispose()
    {
        foreach (var m in Ort.Values) m.Dispose();
        foreach (var m in GenAi.Values) m.Dispose();
        _dir.Dispose();
    }
}

/// <summary>Greedy ids from the genai engine equal the ort engine's, unsteered and in every steering mode, position
/// setting and per-row batch, on the bundled model and the real fp16 export.</summary>
public sealed class GenAiEngineTests(GenAiModels models) : IClassFixture<GenAiModels>
{
    private static readonly GeneratorOptions Greedy = new() { MaxNewTokens = 16 };

    private static SteeringVector Vector(int hidden, int seed)
    {
        var random = new Random(seed);
        return SteeringVector.FromRaw([.. Enumerable.Range(0, hidden).Select(_ => (float)(random.NextDouble() * 2 - 1))], zBar: 2f);
    }

    private IReadOnlyList<int> Prompt(string model) => model == "fp16"
        ? models.Ort[model].Tokenizer.Encode("Hello world, this is a test")
        : models.Ort[model].EncodePrompt([new ChatTurn("user", "Write about rivers.")]);

    // Weights large enough to move greedy ids on both models (checked below: each steering changes the output).
    private static Steering Build(string model, string mode)
    {
        int h = model == "fp16" ? 16 : 128;
        float w = model == "fp16" ? 8 : 200;
        return mode switch
        {
            "none" => Steering.None,
            "add" => Steering.None.Add(Vector(h, 1), 1, w),
            "project" => Steering.None.Project(Vector(h, 2), 1, target: w),
            "ablate" => Steering.None.Ablate(Vector(h, 3), 0).Add(Vector(h, 5), 0, w / 2),
            "two-layers" => Steering.None.Add(Vector(h, 1), 0, w / 2).Project(Vector(h, 4), 1, target: -w),
            "prompt" => Steering.None.Add(Vector(h, 1), 1, w).At(SteeringPositions.Prompt),
            "generated" => Steering.None.Add(Vector(h, 1), 1, w).At(SteeringPositions.Generated),
            // Header steering: the prompt's last positions, each with its own vector (the prompt runs in pieces), plus an
            // unscoped add everywhere. Layer 0, since a change after the last layer at an earlier position reaches nothing.
            "header" => Steering.None.AddAtPromptPosition(Vector(h, 6), 0, w, 1).AddAtPromptPosition(Vector(h, 7), 0, w, 3).Add(Vector(h, 8), 1, w / 4),
            _ => throw new ArgumentException(mode),
        };
    }

    public static TheoryData<string, string> Cases()
    {
        var data = new TheoryData<string, string>();
        foreach (var model in new[] { "tiny-instruct", "fp16" })
            foreach (var mode in new[] { "none", "add", "project", "ablate", "two-layers", "prompt", "generated", "header" })
                data.Add(model, mode);
        return data;
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void Greedy_ids_equal_the_ort_engine(string model, string mode)
    {
        var request = new GenerationRequest { PromptTokenIds = Prompt(model), Steering = Build(model, mode) };
        var options = Greedy with { UseChatTemplate = model != "fp16" };
        var ort = models.Ort[model].Generate([request], options)[0];
        var genai = models.GenAi[model].Generate([request], options)[0];
        Assert.Equal(ort.TokenIds, genai.TokenIds);
        Assert.Equal(ort.Text, genai.Text);
        Assert.Equal(ort.FinishReason, genai.FinishReason);
        if (mode != "none")
        {
            // The steering reached the model through GenAI (the optional-input trap would leave these unsteered).
            var plain = models.GenAi[model].Generate([request with { Steering = null }], options)[0];
            Assert.NotEqual(plain.TokenIds, genai.TokenIds);
        }
    }

    [Theory]
    [InlineData("tiny-instruct", true)]
    [InlineData("tiny-instruct", false)]
    [InlineData("fp16", false)]
    public void Per_row_steering_in_a_batch_of_three_equals_the_ort_engine(string model, bool equalLengths)
    {
        var prompt = Prompt(model).ToArray();
        int[] shorter = equalLengths ? prompt : prompt[..^3];
        var batch = new[]
        {
            new GenerationRequest { PromptTokenIds = prompt, Steering = Build(model, "add") },
            new GenerationRequest { PromptTokenIds = shorter },
            new GenerationRequest { PromptTokenIds = prompt, Steering = Build(model, "two-layers") },
        };
        var ort = models.Ort[model].Generate(batch, Greedy);
        var genai = models.GenAi[model].Generate(batch, Greedy);
        for (int b = 0; b < 3; b++)
        {
            var ortAlone = models.Ort[model].Generate([batch[b]], Greedy)[0].TokenIds;
            var genaiAlone = models.GenAi[model].Generate([batch[b]], Greedy)[0].TokenIds;
            Assert.True(ort[b].TokenIds.SequenceEqual(genai[b].TokenIds), $"row {b}: ort {string.Join(",", ort[b].TokenIds)} genai {string.Join(",", genai[b].TokenIds)} ortAlone {string.Join(",", ortAlone)} genaiAlone {string.Join(",", genaiAlone)}");
        }
        Assert.NotEqual(genai[0].TokenIds, genai[2].TokenIds);
        // Each row is what it would be alone.
        for (int b = 0; b < 3; b++) Assert.Equal(models.GenAi[model].Generate([batch[b]], Greedy)[0].TokenIds, genai[b].TokenIds);
    }

    [Fact]
    public void Stop_strings_and_streaming_match_the_ort_engine()
    {
        // The stop string is a word from the middle of the unstopped answer, so the test does not depend on what the
        // bundled model happens to write (the retrained model answers this prompt in capitals).
        var plain = models.Ort["tiny-instruct"].Generate("Write about rivers.", null, new GeneratorOptions { MaxNewTokens = 24 });
        var words = plain.Text.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(words.Length >= 4, plain.Text);
        var stop = words[words.Length / 2];
        var options = new GeneratorOptions { MaxNewTokens = 24, StopStrings = [stop] };
        var ort = models.Ort["tiny-instruct"].Generate("Write about rivers.", null, options);
        var pieces = new List<string>();
        var genai = models.GenAi["tiny-instruct"].Generate([GenerationRequest.FromPrompt("Write about rivers.")], options, p => pieces.Add(p.Text))[0];
        Assert.Equal(FinishReason.StopString, genai.FinishReason);
        Assert.Equal(ort.Text, genai.Text);
        Assert.Equal(genai.Text, string.Concat(pieces));
        Assert.DoesNotContain(stop, genai.Text);
    }

    [Fact]
    public void Time_to_first_token_is_filled_as_on_the_ort_engine()
    {
        // Unequal prompt lengths: the rows run as two batches, each row's first token timed from the one call's start.
        var model = models.GenAi["tiny-instruct"];
        var batch = new[] { GenerationRequest.FromPrompt("Write about rivers."), GenerationRequest.FromPrompt("Tell me something about the old mountains.") };
        long before = System.Diagnostics.Stopwatch.GetTimestamp();
        var results = model.Generate(batch, new GeneratorOptions { MaxNewTokens = 4 });
        var call = System.Diagnostics.Stopwatch.GetElapsedTime(before);
        Assert.NotEqual(results[0].PromptTokenIds.Length, results[1].PromptTokenIds.Length);
        foreach (var r in results)
        {
            Assert.NotEmpty(r.TokenIds);
            // From the call's start (prompt encoding included) to the first token: at least the prefill, at most the call.
            Assert.True(r.TimeToFirstToken > TimeSpan.Zero && r.TimeToFirstToken >= r.PrefillTime && r.TimeToFirstToken <= call,
                $"time to first token {r.TimeToFirstToken}, prefill {r.PrefillTime}, call {call}");
            Assert.True(r.FirstTokenTimestamp > before && r.FirstTokenTimestamp - before <= call.Ticks * (double)System.Diagnostics.Stopwatch.Frequency / TimeSpan.TicksPerSecond + 1);
        }
        // The second group starts after the first has finished, so its first token comes later.
        Assert.NotEqual(results[0].FirstTokenTimestamp, results[1].FirstTokenTimestamp);
        // Nothing generated: no first token.
        var none = model.Generate([GenerationRequest.FromPrompt("Write about rivers.")], new GeneratorOptions { MaxNewTokens = 0 })[0];
        Assert.Equal(TimeSpan.Zero, none.TimeToFirstToken);
        Assert.Equal(0, none.FirstTokenTimestamp);
    }

    [Fact]
    public async Task Streaming_and_the_chat_client_run_on_the_genai_engine()
    {
        var model = models.GenAi["tiny-instruct"];
        var steering = Build("tiny-instruct", "add");
        var whole = model.Generate("Write about rivers.", steering, Greedy);
        var streamed = new List<string>();
        await foreach (var piece in model.GenerateAsync("Write about rivers.", steering, Greedy)) streamed.Add(piece.Text);
        Assert.Equal(whole.Text, string.Concat(streamed));

        using IChatClient client = new SteeredChatClient(model);
        var reply = await client.GetResponseAsync("Write about rivers.", new ChatOptions { MaxOutputTokens = 16 }.WithSteering(steering));
        Assert.Equal(whole.Text, reply.Text);
    }

    [Fact]
    public async Task Cancellation_stops_a_genai_generation()
    {
        using var cts = new CancellationTokenSource();
        var model = models.GenAi["tiny-instruct"];
        int seen = 0;
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () =>
        {
            await foreach (var _ in model.GenerateAsync("Write about rivers.", null, new GeneratorOptions { MaxNewTokens = 200 }, cts.Token))
                if (++seen == 3) await cts.CancelAsync();
        });
        Assert.Equal(3, seen);
    }

    [Fact]
    public void The_optional_input_trap_is_refused_not_silently_unsteered()
    {
        var e = Assert.Throws<OnnxSteerException>(() => GenAiSteeredModel.Load(models.Optional));
        Assert.Equal(ErrorKind.UnsupportedModel, e.Kind);
        Assert.Contains("--for genai", e.Message);
        Assert.Throws<OnnxSteerException>(() => GenAiSteeringInputs.Load(models.Optional));

        var stderr = new StringWriter();
        int code = CliApp.Run(["generate", models.Optional, "--prompt", "hi", "--engine", "genai"], new StringWriter(), stderr);
        Assert.Equal((int)ErrorKind.UnsupportedModel, code);
        Assert.Single(stderr.ToString().Trim().Split('\n'));
        // auto falls back to the ort engine, which feeds optional inputs correctly.
        Assert.Equal(GenerationEngine.Ort, SteeredGenerator.Resolve(models.Optional, GenerationEngine.Auto));
    }

    [Fact]
    public void Cli_reports_the_engine_and_patch_for_genai_writes_required_inputs()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("genai");
        Assert.Equal(0, CliApp.Run(["patch", Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), "-o", output, "--for", "genai"], new StringWriter(), new StringWriter()));
        Assert.Equal(SteerInputMode.Required, SteeringManifest.TryLoad(output)!.SteerInput);
        var ids = new Dictionary<string, string>();
        foreach (var engine in new[] { "ort", "genai", "auto" })
        {
            var stdout = new StringWriter();
            Assert.Equal(0, CliApp.Run(["generate", output, "--prompt", "Write about rivers.", "--max-new-tokens", "8", "--engine", engine, "--json"], stdout, new StringWriter()));
            var json = System.Text.Json.JsonDocument.Parse(stdout.ToString()).RootElement;
            Assert.Equal(engine == "ort" ? "ort" : "genai", json.GetProperty("engine").GetString());
            ids[engine] = json.GetProperty("token_ids").GetRawText();
        }
        Assert.Equal(ids["ort"], ids["genai"]);

        // Optimum folders have no genai_config.json: --for genai says so.
        var stderr = new StringWriter();
        Assert.Equal((int)ErrorKind.UnsupportedModel,
            CliApp.Run(["patch", Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct-optimum"), "-o", dir.Combine("x"), "--for", "genai"], new StringWriter(), stderr));
        Assert.Contains("genai_config.json", stderr.ToString());
    }

    [Fact]
    public void Two_lines_steer_a_generator_the_app_owns()
    {
        var dir = models.Dirs["tiny-instruct"];
        var steering = Build("tiny-instruct", "two-layers");
        var prompt = Prompt("tiny-instruct").ToArray();
        var expected = models.Ort["tiny-instruct"].Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }], Greedy)[0].TokenIds;

        using var model = new Model(dir);
        using var search = new GeneratorParams(model);
        search.SetSearchOption("max_length", prompt.Length + Greedy.MaxNewTokens);
        using var generator = new Generator(model, search);
        var steeringInputs = GenAiSteeringInputs.Load(dir);
        using var fed = steeringInputs.Apply(generator, steering);
        generator.AppendTokens(prompt);
        fed.PromptDone();
        var ids = new List<int>();
        while (!generator.IsDone() && ids.Count < Greedy.MaxNewTokens)
        {
            generator.GenerateNextToken();
            ids.Add(generator.GetNextTokens()[0]);
            if (ids[^1] == 2) break;
        }
        Assert.Equal(expected, ids);
    }

    [Fact]
    public void What_genai_cannot_do_is_refused_with_a_message()
    {
        var model = models.GenAi["tiny-instruct"];
        var e = Assert.Throws<OnnxSteerException>(() => model.Generate("hi", null, new GeneratorOptions { ComputeLogProbs = true }));
        Assert.Contains("--engine ort", e.Message);
        var wrong = Assert.Throws<OnnxSteerException>(() => model.Generate("hi", Steering.None.Add(Vector(128, 1), 9, 1f)));
        Assert.Equal(ErrorKind.UnsupportedModel, wrong.Kind);
        // An app's own generator appends the prompt in one piece: header steering is refused there.
        using var config = new Config(models.Dirs["tiny-instruct"]);
        using var genAiModel = new Model(config);
        using var parameters = new GeneratorParams(genAiModel);
        using var generator = new Generator(genAiModel, parameters);
        var header = Assert.Throws<OnnxSteerException>(() => GenAiSteeringInputs.Load(models.Dirs["tiny-instruct"])
            .Apply(generator, Steering.None.AddAtPromptPosition(Vector(128, 1), 0, 1f, 1)));
        Assert.Contains("GenAiSteeredModel", header.Message);
    }
}
