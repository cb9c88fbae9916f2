using System.Diagnostics;
using System.Globalization;
using Microsoft.ML.OnnxRuntimeGenAI;
using OnnxSteer.Onnx;
using OnnxSteer.Runtime;

namespace OnnxSteer.Benchmarks;

/// <summary>The <c>peers</c> suite (issue 12): OnnxSteer's <see cref="SteeredModel.Generate(IReadOnlyList{GenerationRequest}, GeneratorOptions?, Action{GeneratedPiece}?, CancellationToken)"/>
/// (what <c>onnxsteer generate</c> runs) against ONNX Runtime GenAI 0.20 on the same model folder, fed the same prompt
/// token ids, greedy, interleaved round by round (the order rotates each round) so that load on the shared machine hits
/// every contender alike. Each round loads every model afresh, so load time and time to first token are measured cold
/// for the objects (the file cache is warm after round one).</summary>
/// <remarks>llama.cpp (LLamaSharp) on a GGUF of the same weights is not in this suite yet (see docs/benchmarks.md).</remarks>
internal static class PeersBench
{
    private sealed record Sample(double LoadMs, double FirstTokenMs, double DecodeTokensPerSecond, int[] Tokens);

    private sealed record Contender(string Name, Func<int[], int, Sample> Run);

    public static void Run(BenchModel m, Options o, Report report)
    {
        int threads = SessionThreads.Resolve(o.Threads);
        var prompt = DecodeBench.Prompts(1, o.Prompt, m.Vocab)[0];
        int tokens = o.Tokens;
        int middle = m.Layers / 2;
        var contenders = new List<Contender>
        {
            new("onnxsteer, original", (p, n) => Ours(m.Original, p, n, threads, null)),
            new($"onnxsteer, patched, add @ layer {middle}", (p, n) => Ours(m.PatchedExposeAll, p, n, threads, middle)),
            new("GenAI 0.20, original", (p, n) => GenAi(m.Original, p, n, threads)),
        };
        var samples = contenders.Select(_ => new List<Sample>()).ToArray();
        var loads = new List<double>();
        for (int round = -1; round < o.Repeats; round++)
        {
            for (int i = 0; i < contenders.Count; i++)
            {
                int c = (i + Math.Max(round, 0)) % contenders.Count;
                var s = contenders[c].Run(prompt, round < 0 ? Math.Min(8, tokens) : tokens);
                if (round >= 0) samples[c].Add(s);
            }
            loads.Add(Machine.LoadValue());
        }

        report.Heading($"Peers, {m.Name}: greedy, {tokens} new tokens after a {o.Prompt}-token prompt, {threads} intra-op thread(s), " +
                       $"interleaved (median (min-max) of {o.Repeats}; load average {Summary.Of(loads).Format("F1")})");
        report.Row("contender", "load ms", "first token ms", "decode tokens/s", "decode vs GenAI (ratio of medians)", "tokens equal to GenAI's");
        report.Rule(6);
        int genai = contenders.Count - 1;
        double genaiTps = Summary.Of(samples[genai].Select(s => s.DecodeTokensPerSecond)).Median;
        for (int c = 0; c < contenders.Count; c++)
        {
            var tps = Summary.Of(samples[c].Select(s => s.DecodeTokensPerSecond));
            // Ratio per round (each against GenAI's run in the same round) shows the spread of the comparison itself.
            var paired = Summary.Of(samples[c].Zip(samples[genai], (a, b) => a.DecodeTokensPerSecond / b.DecodeTokensPerSecond));
            int same = samples[c][0].Tokens.Zip(samples[genai][0].Tokens).TakeWhile(x => x.First == x.Second).Count();
            report.Row(contenders[c].Name, Summary.Of(samples[c].Select(s => s.LoadMs)).Format("F0"),
                Summary.Of(samples[c].Select(s => s.FirstTokenMs)).Format("F1"), tps.Format("F1"),
                $"{(tps.Median / genaiTps).ToString("F2", CultureInfo.InvariantCulture)} (per round {paired.Format("F2")})",
                $"{same} of {samples[c][0].Tokens.Length}");
        }
    }

    private static Sample Ours(string folder, int[] prompt, int tokens, int threads, int? steeredLayer)
    {
        long t0 = Stopwatch.GetTimestamp();
        using var model = SteeredModel.Load(folder, new RuntimeOptions { IntraOpThreads = threads });
        double load = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        var steering = steeredLayer is int layer
            ? Steering.None.Add(DecodeBench.RandomUnit(new Random(layer), model.HiddenSize!.Value), layer, 4f, "bench")
            : Steering.None;
        var result = model.Generate([new GenerationRequest { PromptTokenIds = prompt, Steering = steering }],
            new GeneratorOptions { MaxNewTokens = tokens, UseChatTemplate = false })[0];
        return new Sample(load, result.TimeToFirstToken.TotalMilliseconds, result.TokensPerSecond, result.TokenIds);
    }

    private static Sample GenAi(string folder, int[] prompt, int tokens, int threads)
    {
        long t0 = Stopwatch.GetTimestamp();
        using var config = new Config(folder);
        config.ClearProviders();
        // Same thread count as ours; the benchmark copies forget their EOS ids, which GenAI needs, so it gets one back and
        // min_length keeps it from ending early (every contender generates exactly the requested tokens).
        config.Overlay("{\"model\":{\"eos_token_id\":2,\"decoder\":{\"session_options\":{\"intra_op_num_threads\":" +
            threads.ToString(CultureInfo.InvariantCulture) + ",\"inter_op_num_threads\":1}}}}");
        using var model = new Model(config);
        double load = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        using var parameters = new GeneratorParams(model);
        parameters.SetSearchOption("max_length", prompt.Length + tokens);
        parameters.SetSearchOption("min_length", prompt.Length + tokens);
        parameters.SetSearchOption("do_sample", false);
        long start = Stopwatch.GetTimestamp();
        using var generator = new Generator(model, parameters);
        generator.AppendTokens(prompt);
        generator.GenerateNextToken();
        long first = Stopwatch.GetTimestamp();
        int steps = 0;
        while (!generator.IsDone() && steps < tokens - 1)
        {
            generator.GenerateNextToken();
            steps++;
        }
        double decode = Stopwatch.GetElapsedTime(first).TotalSeconds;
        var sequence = generator.GetSequence(0).ToArray();
        return new Sample(load, Stopwatch.GetElapsedTime(start, first).TotalMilliseconds, steps / decode, sequence[prompt.Length..]);
    }
}
