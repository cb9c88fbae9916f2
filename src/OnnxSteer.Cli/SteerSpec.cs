using System.Globalization;
using OnnxSteer.Contract;
using OnnxSteer.Runtime;
using OnnxSteer.Vectors;

namespace OnnxSteer.Cli;

/// <summary>One <c>--steer FILE[:NAME]@LAYERS[=add:W|=add:Wx|=project|=project:TARGET|=ablate|=header:S]</c> argument, parsed.
/// LAYERS is a <see cref="LayerSelection"/>: one layer, a list or range (<c>@3,5</c>, <c>@1-5</c>) or <c>@all</c>, every
/// layer the vector has that the model steers (llama.cpp applies a control vector at every layer by default). Without a
/// mode the vector is projected to its stored z̄ (the paper's setting for instruction vectors). <c>add:4x</c> weighs the
/// unit direction by 4 × |u_L|, the layer's own mean-difference norm (the unit <c>sweep</c> and <c>eval</c> use), so one
/// weight means the same push at every layer.</summary>
/// <param name="File">The vector file (or folder of vector files).</param>
/// <param name="Name">The vector's name in the file; null for the file's only vector.</param>
/// <param name="Layers">The layers steered.</param>
/// <param name="Mode">Add, project or ablate.</param>
/// <param name="Weight">The weight of an add (absolute, or a multiple of |u_L| when <paramref name="RelativeWeight"/>).</param>
/// <param name="Target">An explicit projection target (null: the vector's z̄).</param>
/// <param name="RelativeWeight">The weight is a multiple of |u_L| (<c>add:4x</c>).</param>
/// <param name="Header">Header steering (<c>=header:S</c>): the vector's answer-header positions each add S × their own
/// mean difference at their own prompt position (<see cref="Steering.AddHeader(ISteeringVectorSource, string, int, float)"/>).</param>
internal sealed record SteerSpec(string File, string? Name, LayerSelection Layers, SteeringMode Mode, float Weight = 0, float? Target = null, bool RelativeWeight = false,
    bool Header = false)
{
    private const string Syntax = "expected FILE[:NAME]@LAYERS[=add:W|=add:Wx|=project|=project:TARGET|=ablate|=header:S], LAYERS like 12, 3,5, 1-5 or all";

    /// <summary>Parses a spec.</summary>
    /// <exception cref="OnnxSteerException">The text does not follow the syntax (Usage), naming the part that is wrong.</exception>
    public static SteerSpec Parse(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        int at = text.LastIndexOf('@');
        if (at <= 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': no @LAYERS; {Syntax}");
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
            if (name.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': empty vector name after ':'; {Syntax}");
        }
        if (file.Length == 0) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': no file; {Syntax}");
        int eq = rest.IndexOf('=');
        var layerText = eq < 0 ? rest : rest[..eq];
        LayerSelection layers;
        try { layers = LayerSelection.Parse(layerText, $"--steer '{text}': layers"); }
        catch (OnnxSteerException e) { throw new OnnxSteerException(ErrorKind.Usage, $"{e.Message} {Syntax}"); }
        if (layers.IsNone) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': no layer to steer; {Syntax}");
        if (eq < 0) return new SteerSpec(file, name, layers, SteeringMode.Project);
        var mode = rest[(eq + 1)..];
        int modeColon = mode.IndexOf(':');
        var modeName = modeColon < 0 ? mode : mode[..modeColon];
        string? argument = modeColon < 0 ? null : mode[(modeColon + 1)..];
        switch (modeName)
        {
            case "add":
                var relative = argument is not null && argument.EndsWith('x');
                if (argument is null || !TryFloat(relative ? argument[..^1] : argument, out var w))
                    throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': add needs a finite weight (=add:W, or =add:Wx for W × |u_L|); {Syntax}");
                return new SteerSpec(file, name, layers, SteeringMode.Add, w, null, relative);
            case "project":
                if (argument is null) return new SteerSpec(file, name, layers, SteeringMode.Project);
                if (!TryFloat(argument, out var t))
                    throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': projection target '{argument}' is not a finite number; {Syntax}");
                return new SteerSpec(file, name, layers, SteeringMode.Project, 0, t);
            case "header":
                var scaleText = argument is not null && argument.EndsWith('x') ? argument[..^1] : argument;
                if (scaleText is null || !TryFloat(scaleText, out var scale))
                    throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': header needs a finite scale of each position's |u| (=header:1 or =header:1x); {Syntax}");
                return new SteerSpec(file, name, layers, SteeringMode.Add, scale, null, RelativeWeight: true, Header: true);
            case "ablate":
                if (argument is not null) throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': ablate takes no argument; {Syntax}");
                return new SteerSpec(file, name, layers, SteeringMode.Ablate);
            default:
                throw new OnnxSteerException(ErrorKind.Usage, $"--steer '{text}': unknown mode '{modeName}'; {Syntax}");
        }
    }

    /// <summary>Builds a steering from specs, loading each vector file once.</summary>
    /// <param name="specs">The parsed <c>--steer</c> arguments.</param>
    /// <param name="positions">Positions steered.</param>
    /// <param name="steeredLayers">The layers the model steers (from its steering.json), which <c>@all</c> is limited to;
    /// null to take every layer of the vector.</param>
    /// <param name="load">Loads a vector file or folder (default <see cref="VectorFileSource.Load"/>).</param>
    /// <exception cref="OnnxSteerException">A missing vector or layer (InvalidVector), or a file that cannot be loaded.</exception>
    public static Steering ToSteering(IEnumerable<SteerSpec> specs, SteeringPositions positions = SteeringPositions.All,
        IReadOnlyCollection<int>? steeredLayers = null, Func<string, VectorFileSource>? load = null)
    {
        load ??= VectorFileSource.Load;
        var files = new Dictionary<string, VectorFileSource>(StringComparer.Ordinal);
        var steering = Steering.None.At(positions);
        foreach (var spec in specs)
        {
            if (!files.TryGetValue(spec.File, out var source)) files[spec.File] = source = load(spec.File);
            var name = spec.Name ?? source.SingleName();
            if (!source.Names.Contains(name))
                throw new OnnxSteerException(ErrorKind.InvalidVector, $"no vector '{name}' in {spec.File} (it holds {string.Join(", ", source.Names)})");
            var has = source.Get(name).Layers.Keys;
            IReadOnlyList<int> layers;
            if (spec.Layers.IsAll)
            {
                layers = LayerSelection.All.Within(steeredLayers is null ? has : has.Intersect(steeredLayers));
                if (layers.Count == 0)
                    throw new OnnxSteerException(ErrorKind.InvalidVector,
                        $"vector '{name}' in {spec.File} has no layer the model steers (vector: {LayerSelection.Format(has)}; model: {LayerSelection.Format(steeredLayers ?? [])})");
            }
            else
            {
                layers = spec.Layers.Layers!;
                var missing = layers.FirstOrDefault(l => !has.Contains(l), -1);
                if (missing >= 0)
                    throw new OnnxSteerException(ErrorKind.InvalidVector, $"vector '{name}' in {spec.File} has no layer {missing} (it has {LayerSelection.Format(has)})");
            }
            foreach (var layer in layers)
            {
                source.TryGet(name, layer, out var vector);
                if (spec.Header)
                {
                    steering = steering.AddHeader(source, name, layer, spec.Weight);
                    continue;
                }
                steering = spec.Mode switch
                {
                    SteeringMode.Add => steering.Add(vector!, layer, spec.RelativeWeight ? spec.Weight * vector!.Norm : spec.Weight, name),
                    SteeringMode.Project => steering.Project(vector!, layer, spec.Target, name),
                    _ => steering.Ablate(vector!, layer, name),
                };
            }
        }
        return steering;
    }

    private static bool TryFloat(string s, out float value) =>
        float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out value) && float.IsFinite(value);
}
