using System.Text.Json;
using OnnxSteer.Cli;

namespace OnnxSteer.Tests.Decoder;

/// <summary>inspect / patch / verify through <see cref="CliApp.Run"/>.</summary>
public class PatchCliTests
{
    private static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (o, e) = (new StringWriter(), new StringWriter());
        var code = CliApp.Run(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public void InspectJsonReportsTheContractFields()
    {
        var (code, stdout, stderr) = Run("inspect", TestPaths.GenAiTinyLlamaFp16, "--json", "--explain");
        Assert.Equal(0, code);
        Assert.Equal("", stderr);
        using var doc = JsonDocument.Parse(stdout);
        var r = doc.RootElement;
        Assert.Equal("genai", r.GetProperty("layout").GetString());
        Assert.Equal(2, r.GetProperty("num_layers").GetInt32());
        Assert.Equal(16, r.GetProperty("hidden_size").GetInt32());
        Assert.Equal("float16", r.GetProperty("dtype").GetString());
        Assert.Equal(7, r.GetProperty("ir_version").GetInt64());
        Assert.Equal(14, r.GetProperty("opsets").GetProperty("ai.onnx").GetInt64());
        Assert.Equal(1, r.GetProperty("opsets").GetProperty("com.microsoft").GetInt64());
        Assert.Equal(2, r.GetProperty("residuals").GetArrayLength());
        Assert.Equal(7, r.GetProperty("inputs").GetArrayLength());
        Assert.Equal(5, r.GetProperty("outputs").GetArrayLength());
        Assert.False(r.GetProperty("patched").GetBoolean());
        var explain = r.GetProperty("explain").EnumerateArray().ToList();
        var byName = explain.ToDictionary(e => e.GetProperty("layout").GetString()!);
        Assert.Equal(OnnxSteer.Decoder.LayoutMatchers.All.Select(m => m.Name), byName.Keys);
        Assert.True(byName["genai"].GetProperty("matched").GetBoolean());
        Assert.Single(explain, e => e.GetProperty("matched").GetBoolean());
        Assert.Contains("Gather", byName["optimum"].GetProperty("stopped_at").GetString());
    }

    [Fact]
    public void InspectTextExplainsEveryLayout()
    {
        var (code, stdout, _) = Run("inspect", Path.Combine(TestPaths.GenAiTinyLlamaFp16, "model.onnx"), "--explain");
        Assert.Equal(0, code);
        Assert.Contains("layout:      genai", stdout);
        Assert.Contains("optimum: no:", stdout);
        Assert.Contains("(not materialised: output 3 of SkipSimplifiedLayerNormalization", stdout);
    }

    [Fact]
    public void PatchVerifyThenInspectPatched()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("patched");
        var (code, stdout, stderr) = Run("patch", TestPaths.GenAiTinyLlamaFp16, "-o", output, "--layers", "1", "--expose", "0-1", "--verify");
        Assert.True(code == 0, stderr + stdout);
        Assert.Contains("patched genai decoder (2 layers, hidden 16, float16)", stdout);
        Assert.Contains("steering inputs added 3", stdout);
        Assert.Contains("all 9 checks passed", stdout);

        (code, stdout, _) = Run("verify", output, "--json");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(stdout)) Assert.True(doc.RootElement.GetProperty("passed").GetBoolean());

        (code, stdout, _) = Run("inspect", output, "--json");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.True(doc.RootElement.GetProperty("patched").GetBoolean());
            Assert.Equal([1], doc.RootElement.GetProperty("steering").GetProperty("steered_layers").EnumerateArray().Select(e => e.GetInt32()));
        }
    }

    [Fact]
    public void PatchJsonAndVerifyRefusals()
    {
        using var dir = TestPaths.NewTempDir();
        var output = dir.Combine("p");
        var (code, stdout, _) = Run("patch", TestPaths.GenAiTinyLlamaFp16, "-o", output, "--json", "--steer-input", "required");
        Assert.Equal(0, code);
        using (var doc = JsonDocument.Parse(stdout))
        {
            Assert.Equal("Required", doc.RootElement.GetProperty("manifest").GetProperty("steer_input").GetString());
            Assert.Equal(5, doc.RootElement.GetProperty("passes").GetArrayLength());
        }
        // verify: not a patched folder; missing source.
        var (c1, _, e1) = Run("verify", TestPaths.GenAiTinyLlamaFp16);
        Assert.Equal((int)ErrorKind.UnsupportedModel, c1); // "not patched" is exit 5 in verify as in extract and eval
        Assert.Contains("steering.json", e1);
        var (c2, _, e2) = Run("verify", output, "--source", dir.Combine("nowhere"));
        Assert.Equal((int)ErrorKind.NotFound, c2);
        Assert.Contains("source model", e2);
        // A source of another signature (the bundled 6-layer model) is said once, not as a cascade of failed checks.
        var (c3, o3, e3) = Run("verify", output, "--source", Path.Combine(TestPaths.RepoRoot, "models", "tiny-instruct"));
        Assert.Equal((int)ErrorKind.VerificationFailed, c3);
        Assert.Equal("", o3);
        Assert.Single(e3.TrimEnd().Split('\n'));
        Assert.Contains("is not the model", e3);
    }
}
