using System.CommandLine;
using OnnxSteer.Contract;
using OnnxSteer.Vectors;

namespace OnnxSteer.Cli;

/// <summary><c>onnxsteer vectors show|convert|combine</c>: inspect, convert (safetensors ↔ GGUF) and combine vector files.</summary>
internal static class VectorsCommand
{
    public static Command Create(TextWriter stdout, TextWriter stderr)
    {
        var command = new Command("vectors", "Show, convert (safetensors <-> GGUF control vector) and combine instruction-vector files.");
        command.Subcommands.Add(Show(stdout, stderr));
        command.Subcommands.Add(Convert(stderr));
        command.Subcommands.Add(Combine(stdout, stderr));
        return command;
    }

    private static Command Show(TextWriter stdout, TextWriter stderr)
    {
        var file = new Argument<string>("file") { Description = "A vector file (.safetensors or GGUF control vector)." };
        var json = new Option<bool>("--json") { Description = "Print JSON for scripts." };
        var command = new Command("show", "Print the vectors in a file: names, layers, norms, z_bar, separability and the model fingerprint.");
        command.Arguments.Add(file);
        command.Options.Add(json);
        command.SetAction(parse =>
        {
            var path = parse.GetValue(file)!;
            var loaded = InstructionVectorFile.Load(path);
            if (parse.GetValue(json))
                stdout.WriteLine(CliJson.Format(VectorPrinting.Describe(loaded, path)));
            else
                VectorPrinting.Print(loaded, path, stdout);
            return 0;
        });
        return command;
    }

    private static Command Convert(TextWriter stderr)
    {
        var input = new Argument<string>("file") { Description = "Input vector file: FILE or FILE:NAME (.safetensors or .gguf)." };
        var output = new Argument<string>("output") { Description = "Output file; the extension (.gguf or .safetensors) picks the format." };
        var layers = new Option<string>("--layers")
        {
            Description = "Layers to keep: all, or a list such as 3,5,10-12, clamped to the layers the vector has (GGUF drops layer 0, which llama.cpp never steers).",
            DefaultValueFactory = _ => "all",
        };
        var scale = new Option<string>("--gguf-scale")
        {
            Description = "What GGUF direction.N holds: unit (u_hat; llama.cpp --control-vector-scaled FILE c adds c*u_hat) or mean-diff (u = |u|*u_hat, repeng-like).",
            DefaultValueFactory = _ => "unit",
        };
        scale.AcceptOnlyFromAmong("unit", "mean-diff");
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output file if it exists." };
        var command = new Command("convert", "Convert a vector file between safetensors and GGUF (llama.cpp/repeng control vector).");
        command.Arguments.Add(input);
        command.Arguments.Add(output);
        command.Options.Add(layers);
        command.Options.Add(scale);
        command.Options.Add(overwrite);
        command.SetAction(parse =>
        {
            var term = VectorTerm.Parse(parse.GetValue(input)!);
            var outPath = parse.GetValue(output)!;
            OutputPolicy.CheckFile(outPath, parse.GetValue(overwrite), "output");
            var selection = CliLayers.ParseSome(parse.GetValue(layers)!, "--layers");
            var file = InstructionVectorFile.Load(term.Path);
            foreach (var w in file.Warnings) stderr.WriteLine($"onnxsteer: warning: {w}");
            var notes = VectorTools.Convert(file, outPath, term.Name, parse.GetValue(scale) == "mean-diff" ? GgufScale.MeanDiff : GgufScale.Unit, selection);
            foreach (var n in notes) stderr.WriteLine($"onnxsteer: note: {n}");
            var written = InstructionVectorFile.Load(outPath);
            stderr.WriteLine($"wrote {outPath}: {string.Join("; ", written.Vectors.Select(v => $"'{v.Name}' at layers {LayerSelection.Format(v.Layers.Keys)}"))}");
            return 0;
        });
        return command;
    }

    private static Command Combine(TextWriter stdout, TextWriter stderr)
    {
        var terms = new Argument<string[]>("terms")
        {
            Description = "Terms FILE[:NAME][*W], e.g. a.safetensors:word.x*-1 b.safetensors*0.5 (W defaults to 1).",
            Arity = ArgumentArity.OneOrMore,
        };
        var output = new Option<string>("--output", "-o") { Description = "Output .safetensors file.", Required = true };
        var name = new Option<string>("--name") { Description = "Name of the combined vector.", DefaultValueFactory = _ => "combined" };
        var overwrite = new Option<bool>("--overwrite") { Description = "Replace the output file if it exists." };
        var command = new Command("combine",
            "Weighted sum of vectors' mean differences at the layers they share, renormalised (z_bar and separability are left empty).");
        command.Arguments.Add(terms);
        command.Options.Add(output);
        command.Options.Add(name);
        command.Options.Add(overwrite);
        command.SetAction(parse =>
        {
            var outPath = parse.GetValue(output)!;
            if (!outPath.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase))
                throw new OnnxSteerException(ErrorKind.Usage, $"--output '{outPath}' must end in .safetensors (convert it to GGUF afterwards).");
            OutputPolicy.CheckFile(outPath, parse.GetValue(overwrite), "-o");
            var combined = VectorTools.Combine(parse.GetValue(terms)!.Select(VectorTerm.Parse).ToList(), parse.GetValue(name)!);
            combined.Save(outPath);
            var v = combined.Vectors[0];
            stdout.WriteLine($"wrote {outPath}: '{v.Name}' = {v.Method}, layers {LayerSelection.Format(v.Layers.Keys)}");
            return 0;
        });
        return command;
    }
}
