using System.Text.Json.Nodes;
using OnnxSteer.Cli;
using OnnxSteer.Decoder;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;
using OnnxSteer.Modeling;

namespace OnnxSteer.Tests.Reliability;

/// <summary>A patched copy of the bundled model (weights hard-linked) per test, plus a file outside it that a hostile
/// folder tries to reach.</summary>
internal sealed class HostileFolder : IDisposable
{
    private readonly TempDir _dir = TestPaths.NewTempDir("onnxsteer-hostile");

    public HostileFolder()
    {
        Model = _dir.Combine("patched");
        ModelPatcher.Patch(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), Model, new PatchOptions());
        Outside = _dir.Combine("outside");
        Directory.CreateDirectory(Outside);
        // A complete model outside the folder: a path that reaches it would run it, so a refusal is the only pass.
        foreach (var f in Directory.GetFiles(Model)) File.Copy(f, Path.Combine(Outside, Path.GetFileName(f)));
        File.WriteAllText(Path.Combine(Outside, "secret.txt"), "SECRET-OUTSIDE-TEXT {{ messages }}");
        Pairs = _dir.Combine("pairs.jsonl");
        File.WriteAllLines(Pairs, [new JsonObject { ["prompt"] = "Describe a lake.", ["instruction"] = "Use lowercase letters only." }.ToJsonString()]);
    }

    public string Model { get; }
    public string Outside { get; }
    public string Pairs { get; }
    public string Combine(string name) => _dir.Combine(name);

    public void EditJson(string file, Action<JsonObject> edit)
    {
        var path = Path.Combine(Model, file);
        var json = File.Exists(path) ? JsonNode.Parse(File.ReadAllText(path))!.AsObject() : new JsonObject();
        edit(json);
        File.WriteAllText(path, json.ToJsonString());
    }

    /// <summary>Runs the CLI in-process; returns the exit code and stderr.</summary>
    public static (int Code, string Stderr, string Stdout) Cli(params string[] args)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(args, o, e);
        return (code, e.ToString(), o.ToString());
    }

    /// <summary>The verbs that read a model folder, each of which must give the same answer.</summary>
    public IEnumerable<string[]> Verbs() =>
    [
        ["generate", Model, "--prompt", "Hi", "--max-new-tokens", "4", "--json"],
        ["extract", Model, "--pairs", Pairs, "-o", Combine("v.safetensors"), "--overwrite"],
        ["verify", Model],
    ];

    public void Dispose() => _dir.Dispose();
}

/// <summary>Issue 16: every path a model folder names resolves inside it or is refused (exit 6, one line); config values
/// of the wrong kind are one InvalidModel line (exit 4); the context length is a hard limit.</summary>
public sealed class ModelFolderTests
{
    private static void AssertOneErrorLine(int expected, (int Code, string Stderr, string Stdout) r)
    {
        Assert.True(expected == r.Code, $"exit {r.Code}, expected {expected}: {r.Stderr}");
        var lines = r.Stderr.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Single(lines);
        Assert.StartsWith("onnxsteer: error: ", lines[0]);
        Assert.DoesNotContain("   at ", r.Stderr);
    }

    [Theory]
    [InlineData("../outside/model.onnx")]
    [InlineData("ABSOLUTE")]
    [InlineData("sub/../../outside/model.onnx")]
    [InlineData("")]
    public void SteeringJsonModelFileOutsideTheFolderIsRefusedByEveryVerb(string modelFile)
    {
        using var f = new HostileFolder();
        if (modelFile == "ABSOLUTE") modelFile = Path.Combine(f.Outside, "model.onnx");
        f.EditJson("steering.json", j => j["model_file"] = modelFile);
        foreach (var verb in f.Verbs())
        {
            var r = HostileFolder.Cli(verb);
            // An empty name is not a valid manifest (exit 4) rather than a path; every other one is an unsafe path.
            AssertOneErrorLine(modelFile.Length == 0 ? (int)ErrorKind.InvalidModel : (int)ErrorKind.UnsafePath, r);
        }
        Assert.False(File.Exists(f.Combine("v.safetensors")));
    }

    [Fact]
    public void VerifyRefusesASourceModelFileOutsideTheSourceFolder()
    {
        using var f = new HostileFolder();
        f.EditJson("steering.json", j => j["source"]!["model_file"] = "../../../../../../etc/passwd");
        AssertOneErrorLine((int)ErrorKind.UnsafePath, HostileFolder.Cli("verify", f.Model));
    }

    [Theory]
    [InlineData("../outside/model.onnx")]
    [InlineData("ABSOLUTE")]
    public void GenAiDecoderFilenameOutsideTheFolderIsRefused(string filename)
    {
        using var f = new HostileFolder();
        File.Delete(Path.Combine(f.Model, "steering.json")); // unpatched folders take the decoder filename
        if (filename == "ABSOLUTE") filename = Path.Combine(f.Outside, "model.onnx");
        f.EditJson("genai_config.json", j => j["model"]!["decoder"]!["filename"] = filename);
        AssertOneErrorLine((int)ErrorKind.UnsafePath, HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2"));
        var e = Assert.Throws<OnnxSteerException>(() => SteeredModel.Load(f.Model));
        Assert.Equal(ErrorKind.UnsafePath, e.Kind);
        Assert.Contains("genai_config.json", e.Message);
    }

    [Theory]
    [InlineData("chat_template.jinja")]
    [InlineData("tokenizer.json")]
    [InlineData("tokenizer_config.json")]
    [InlineData("special_tokens_map.json")]
    [InlineData("genai_config.json")]
    [InlineData("generation_config.json")]
    [InlineData("config.json")]
    [InlineData("steering.json")]
    [InlineData("model.onnx")]
    public void AFileThatIsASymlinkOutOfTheFolderIsRefusedBeforeItIsRead(string name)
    {
        if (OperatingSystem.IsWindows()) return; // symlinks need privileges there
        using var f = new HostileFolder();
        var target = Path.Combine(f.Outside, File.Exists(Path.Combine(f.Outside, name)) ? name : "secret.txt");
        File.Delete(Path.Combine(f.Model, name));
        File.CreateSymbolicLink(Path.Combine(f.Model, name), target);
        var r = HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2", "--json");
        AssertOneErrorLine((int)ErrorKind.UnsafePath, r);
        Assert.Contains(name, r.Stderr);
        Assert.DoesNotContain("SECRET-OUTSIDE-TEXT", r.Stdout);
        // extract reads the same files through the same rule
        AssertOneErrorLine((int)ErrorKind.UnsafePath, HostileFolder.Cli("extract", f.Model, "--pairs", f.Pairs, "-o", f.Combine("v.safetensors")));
    }

    [Fact]
    public void ASymlinkThatStaysInsideTheFolderIsFollowed()
    {
        if (OperatingSystem.IsWindows()) return;
        using var f = new HostileFolder();
        Directory.CreateDirectory(Path.Combine(f.Model, "sub"));
        File.WriteAllText(Path.Combine(f.Model, "sub", "t.jinja"), "{% for m in messages %}[{{ m.content }}]{% endfor %}");
        File.CreateSymbolicLink(Path.Combine(f.Model, "chat_template.jinja"), "sub/t.jinja");
        // tokenizer_config.json's chat_template wins over chat_template.jinja, so take it out to reach the file
        f.EditJson("tokenizer_config.json", j => j.Remove("chat_template"));
        using var model = SteeredModel.Load(f.Model);
        Assert.Equal("[Hi]", model.ApplyChatTemplate([new ChatTurn("user", "Hi")]));
    }

    [Fact]
    public async Task AFifoInTheFolderIsNeverOpened()
    {
        if (!OperatingSystem.IsLinux()) return;
        using var f = new HostileFolder();
        var fifo = Path.Combine(f.Model, "chat_template.jinja");
        using (var p = System.Diagnostics.Process.Start("mkfifo", [fifo])) p.WaitForExit();
        Assert.True(File.Exists(fifo));
        // Opening a FIFO blocks until a writer comes; the folder reader sees its zero length and never opens it.
        var folder = new ModelFolder(f.Model);
        var text = await Task.Run(() => folder.ReadText("chat_template.jinja")).WaitAsync(TimeSpan.FromSeconds(20));
        Assert.Equal("", text);
    }

    [Theory]
    [InlineData("a\0b")]
    [InlineData("..")]
    [InlineData("x/../../y")]
    [InlineData("/etc/passwd")]
    [InlineData("\\\\server\\share\\x")]
    [InlineData("C:\\x")]
    [InlineData("")]
    public void ModelFolderRefusesNamesThatLeave(string name)
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<OnnxSteerException>(() => new ModelFolder(dir.Path).Resolve(name, "test name"));
        Assert.Equal(ErrorKind.UnsafePath, e.Kind);
        Assert.StartsWith("refusing test name", e.Message);
    }

    [Fact]
    public void ModelFolderRefusesAFileLargerThanItsLimitBeforeReadingIt()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(Path.Combine(dir.Path, "config.json"), new string(' ', 4096) + "{}");
        var e = Assert.Throws<OnnxSteerException>(() => new ModelFolder(dir.Path).ReadJsonObject("config.json", maxBytes: 1024));
        Assert.Equal(ErrorKind.InvalidModel, e.Kind);
        Assert.Null(new ModelFolder(dir.Path).ReadJsonObject("absent.json"));
    }

    // --- steering.json numbers: checked for range and against the graph before anything is sized by them ---

    [Theory]
    [InlineData("num_layers", 2147483647)]
    [InlineData("hidden_size", 2147483647)]
    [InlineData("num_layers", 0)]
    [InlineData("hidden_size", -5)]
    [InlineData("hidden_size", 64)] // in range, but not what the graph has
    [InlineData("num_layers", 3)]   // fewer than the steered/exposed layers it lists
    public void SteeringJsonNumbersAreCheckedBeforeAnythingIsAllocated(string key, long value)
    {
        using var f = new HostileFolder();
        f.EditJson("steering.json", j => j[key] = value);
        foreach (var verb in f.Verbs())
            AssertOneErrorLine((int)ErrorKind.InvalidModel, HostileFolder.Cli(verb));
    }

    [Theory]
    [InlineData("model_file", null)]
    [InlineData("source", null)]
    [InlineData("steered_layers", null)]
    [InlineData("exposed_layers", "[0, 0]")]
    [InlineData("exposed_layers", "[99]")]
    [InlineData("inputs", null)]
    [InlineData("outputs", "{\"0\": null}")]
    [InlineData("layout", "5")]
    [InlineData("steer_input", "\"sometimes\"")]
    public void SteeringJsonNullsAndWrongTypesAreOneLine(string key, string? json)
    {
        using var f = new HostileFolder();
        f.EditJson("steering.json", j => j[key] = json is null ? null : JsonNode.Parse(json));
        AssertOneErrorLine((int)ErrorKind.InvalidModel, HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2"));
        AssertOneErrorLine((int)ErrorKind.InvalidModel, HostileFolder.Cli("extract", f.Model, "--pairs", f.Pairs, "-o", f.Combine("v.safetensors")));
    }

    [Fact]
    public void SteeringJsonWithADuplicateKeyIsRefused()
    {
        using var f = new HostileFolder();
        var path = Path.Combine(f.Model, "steering.json");
        File.WriteAllText(path, File.ReadAllText(path).Replace("\"layout\":", "\"hidden_size\": 7, \"layout\":"));
        AssertOneErrorLine((int)ErrorKind.InvalidModel, HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2"));
    }

    // --- genai_config.json / config.json / generation_config.json ---

    [Theory]
    [InlineData("genai_config.json", "model.context_length", "\"long\"")]
    [InlineData("genai_config.json", "model.context_length", "-1")]
    [InlineData("genai_config.json", "model.context_length", "1.5")]
    [InlineData("genai_config.json", "model.decoder", "[]")]
    [InlineData("genai_config.json", "model.decoder.hidden_size", "2147483647")]
    [InlineData("genai_config.json", "model.decoder.num_hidden_layers", "1e300")]
    [InlineData("genai_config.json", "model.eos_token_id", "[[2]]")]
    [InlineData("generation_config.json", "pad_token_id", "99999999")] // outside the vocabulary: would fail mid-run
    [InlineData("genai_config.json", "model.type", "{}")]
    [InlineData("config.json", "max_position_embeddings", "0")]
    [InlineData("config.json", "eos_token_id", "\"2\"")]
    [InlineData("config.json", "hidden_size", "9223372036854775807")]
    [InlineData("generation_config.json", "pad_token_id", "18446744073709551616")]
    [InlineData("generation_config.json", "eos_token_id", "{\"a\": 1}")]
    public void ConfigValuesOfTheWrongKindAreOneInvalidModelLine(string file, string key, string json)
    {
        using var f = new HostileFolder();
        f.EditJson(file, j =>
        {
            var parts = key.Split('.');
            var node = j;
            foreach (var p in parts[..^1]) node = node[p] as JsonObject ?? (JsonObject)(node[p] = new JsonObject());
            node[parts[^1]] = JsonNode.Parse(json);
        });
        var r = HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2");
        AssertOneErrorLine((int)ErrorKind.InvalidModel, r);
        Assert.Contains(file, r.Stderr);
    }

    [Theory]
    [InlineData("genai_config.json", "[]")]
    [InlineData("config.json", "{\"a\": 1, \"a\": 2}")]
    [InlineData("generation_config.json", "{\"eos_token_id\": 2")]
    public void ConfigFilesThatAreNotJsonObjectsAreOneLine(string file, string text)
    {
        using var f = new HostileFolder();
        File.WriteAllText(Path.Combine(f.Model, file), text);
        AssertOneErrorLine((int)ErrorKind.InvalidModel, HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "2"));
    }

    [Fact]
    public void NullsAndNegativeIdsInHuggingFaceConfigsMeanNotSet()
    {
        using var f = new HostileFolder();
        // Real config.json files write "pad_token_id": null or -1 (the original LLaMA); both mean "none".
        f.EditJson("config.json", j => { j["pad_token_id"] = -1; j["eos_token_id"] = null; j["max_position_embeddings"] = null; });
        f.EditJson("generation_config.json", j => j["pad_token_id"] = null);
        using var model = SteeredModel.Load(f.Model);
        Assert.Equal(256, model.ContextLength);
    }

    // --- context length ---

    [Fact]
    public void TheBundledModelKnowsItsContextLength()
    {
        using var model = SteeredModel.Load(Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"));
        Assert.Equal(256, model.ContextLength);
        // the rotary cache in the graph is at least as long, else it would be the limit
        Assert.True(DecoderSignature.InspectGraph(model.ModelPath).RotaryCacheLength is null or >= 256);
    }

    [Fact]
    public void APromptLongerThanTheContextIsRefusedInOneLine()
    {
        // Before: "internal error ... GroupQueryAttention ... cos_cache dimension 0 shall not be less than total_sequence_length".
        var prompt = string.Join(' ', Enumerable.Repeat("word", 300));
        var r = HostileFolder.Cli("generate", Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"), "--prompt", prompt, "--max-new-tokens", "10");
        AssertOneErrorLine((int)ErrorKind.InvalidData, r);
        Assert.Contains("context length is 256", r.Stderr);
    }

    [Fact]
    public void GenerationStopsAtTheContextLengthWithFinishReasonLength()
    {
        // Before: a generation that never produced EOS ran into ONNX Runtime's error at 256 tokens.
        using var f = new HostileFolder();
        f.EditJson("genai_config.json", j => j["model"]!["context_length"] = 40);
        f.EditJson("config.json", j => j["max_position_embeddings"] = 1000); // the smallest stated limit wins
        using var model = SteeredModel.Load(f.Model);
        Assert.Equal(40, model.ContextLength);
        Assert.Contains("context_length", model.ContextLengthSource);
        // Sampling hot with a fixed seed: this run does not produce EOS before the limit (deterministic).
        var options = new GeneratorOptions { MaxNewTokens = 1000, Temperature = 1.5f, Seed = 3 };
        var result = model.Generate([GenerationRequest.FromPrompt("Tell me about rivers.")], options)[0];
        Assert.Equal(FinishReason.Length, result.FinishReason);
        Assert.Equal(40, result.PromptTokenIds.Length + result.TokenIds.Length);

        var r = HostileFolder.Cli("generate", f.Model, "--prompt", string.Join(' ', Enumerable.Repeat("word", 60)), "--max-new-tokens", "5");
        AssertOneErrorLine((int)ErrorKind.InvalidData, r);
    }

    [Fact]
    public void GenerateJsonReportsLengthAndTheContextAtTheLimit()
    {
        using var f = new HostileFolder();
        f.EditJson("genai_config.json", j => j["model"]!["context_length"] = 30);
        f.EditJson("generation_config.json", j => j["eos_token_id"] = new JsonArray());
        f.EditJson("genai_config.json", j => j["model"]!["eos_token_id"] = new JsonArray());
        f.EditJson("tokenizer_config.json", j => j.Remove("eos_token"));
        f.EditJson("special_tokens_map.json", j => j.Remove("eos_token"));
        var r = HostileFolder.Cli("generate", f.Model, "--prompt", "Hi", "--max-new-tokens", "500", "--json");
        Assert.True(r.Code == 0, r.Stderr);
        var json = JsonNode.Parse(r.Stdout)!;
        Assert.Equal(30, (int)json["context_length"]!);
        Assert.Equal("length", (string)json["finish_reason"]!);
        Assert.Equal(30, json["prompt_token_ids"]!.AsArray().Count + json["token_ids"]!.AsArray().Count);
    }

    [Fact]
    public void ExtractRefusesAPairLongerThanTheContext()
    {
        using var f = new HostileFolder();
        File.WriteAllLines(f.Pairs, [new JsonObject { ["prompt"] = string.Join(' ', Enumerable.Repeat("word", 300)), ["instruction"] = "Use lowercase." }.ToJsonString()]);
        var r = HostileFolder.Cli("extract", f.Model, "--pairs", f.Pairs, "-o", f.Combine("v.safetensors"));
        AssertOneErrorLine((int)ErrorKind.InvalidData, r);
        Assert.Contains("line 1", r.Stderr);
        Assert.False(File.Exists(f.Combine("v.safetensors")));
    }
}
