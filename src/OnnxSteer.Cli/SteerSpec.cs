using System.Globalization;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Cli;

/// <summary>One <c>--steer FILE[:NAME]@LAYER[=add:W|=project|=project:TARGET|=ablate]</c> argument, parsed.
/// Without a mode the vector is projected to its stored z̄ (the paper's setting for instruction vectors).</summary>
/// <param name="File">The vector file (or folder of vector files).</param>
/// <param name="Name">The vector's name in the file; null for the file's only vector.</param>
/// <param name="Layer">The layer steered.</param>
/// <param name="Mode">Add, project or ablate.</param>
/// <param name="Weight">The weight of an add.</param>
/// <param name="Target">An explicit projection target (null: the vector's z̄).</param>
internal sealed record SteerSpec(string File, string? Name, int Layer, SteeringMode Mode, float Weight = 0, float? Target = null)
{
    /// <summary>Parses a spec.</summary>
    /// <exception cref="OnnxSteerException">The text does not follow the syntax (Usage), naming the part that is wrong.</exception>
    public static SteerSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        const string syntax = "expected FILE[:NAME]@LAYER[=add:W|=project|=project:TARGET|=ablate]";
        int at = text.LastIndexOf('@');
        if (at <= 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': no @LAYER; {syntax}");
        var source = text[..at];
        var rest = text[(at + 1)..];
        // The last ':' separates the name, except a Windows drive letter ("C:\vectors.safetensors").
        string file = source; string? name = null;
        int colon = source.LastIndexOf(':');
        bool drive = colon == 1 && char.IsLetter(source[0]) && source.Length > 2 && source[2] is '\\' or '/';
        if (colon >= 0 && !drive)
        {
            file = source[..colon];
            name = source[(colon + 1)..];
            if (name.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': empty vector name after ':'; {syntax}");
        }
        if (file.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': no file; {syntax}");
        int eq = rest.IndexOf('=');
        var layerText = eq < 0 ? rest : rest[..eq];
        if (!int.TryParse(layerText, NumberStyles.None, CultureInfo.InvariantCulture, out var layer))
            throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': layer '{layerText}' is not a non-negative integer; {syntax}");
        if (eq < 0) return new SteerSpec(file, name, layer, SteeringMode.Project);
        var mode = rest[(eq + 1)..];
        int modeColon = mode.IndexOf(':');
        var modeName = modeColon < 0 ? mode : mode[..modeColon];
        string? argument = modeColon < 0 ? null : mode[(modeColon + 1)..];
        switch (modeName)
        {
            case "add":
                if (argument is null || !TryFloat(argument, out var w))
                    throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': add needs a finite weight (=add:W); {syntax}");
                return new SteerSpec(file, name, layer, SteeringMode.Add, w);
            case "project":
                if (argument is null) return new SteerSpec(file, name, layer, SteeringMode.Project);
                if (!TryFloat(argument, out var t))
                    throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': projection target '{argument}' is not a finite number; {syntax}");
                return new SteerSpec(file, name, layer, SteeringMode.Project, 0, t);
            case "ablate":
                if (argument is not null) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': ablate takes no argument; {syntax}");
                return new SteerSpec(file, name, layer, SteeringMode.Ablate);
            default:
                throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': unknown mode '{modeName}'; {syntax}");
        }
    }

    /// <summary>Builds a steering from specs, loading each vector file once.</summary>
    public static Steering ToSteering(IEnumerable<SteerSpec> specs, SteeringPositions positions = SteeringPositions.All, Func<string, VectorFileSource>? load = null)
    {
        load ??= VectorFileSource.Load;
        var files = new Dictionary<string, VectorFileSource>(StringComparer.Ordinal);
        var steering = Steering.None.At(positions);
        foreach (var spec in specs)
        {
            if (!files.TryGetValue(spec.File, out var source)) files[spec.File] = source = load(spec.File);
            var name = spec.Name ?? source.SingleName();
            if (!source.TryGet(name, spec.Layer, out var vector))
                throw new OnnxSteerException(ErrorKind.InvalidVector, source.Names.Contains(name)
                    ? $"vector '{name}' in {spec.File} has no layer {spec.Layer}"
                    : $"no vector '{name}' in {spec.File} (it holds {string.Join(", ", source.Names)})");
            steering = spec.Mode switch
            {
                SteeringMode.Add => steering.Add(vector, spec.Layer, spec.Weight, name),
                SteeringMode.Project => steering.Project(vector, spec.Layer, spec.Target, name),
                _ => steering.Ablate(vector, spec.Layer, name),
            };
        }
        return steering;
    }

    private static bool TryFloat(string s, out float value) =>
        float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && float.IsFinite(value);
}
