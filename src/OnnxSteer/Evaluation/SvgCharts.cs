using System.Globalization;
using System.Security;
using System.Text;

namespace OnnxSteer.Evaluation;

/// <summary>Small hand-written SVG charts for reports (no plotting dependency). Values are accuracies in [0, 1].</summary>
internal static class SvgCharts
{
    private static readonly string[] Palette = ["#9e9e9e", "#1f77b4", "#ffbb78", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f", "#aec7e8"];

    private static string N(double v) => v.ToString("0.##", CultureInfo.InvariantCulture);
    private static string E(string s) => SecurityElement.Escape(s) ?? "";

    /// <summary>A grouped bar chart: one group per <paramref name="groups"/> entry, one bar per series.</summary>
    /// <param name="title">Chart title.</param>
    /// <param name="groups">Group labels (x axis).</param>
    /// <param name="series">Series names (legend).</param>
    /// <param name="values">values[series][group], in [0, 1].</param>
    public static string GroupedBars(string title, IReadOnlyList<string> groups, IReadOnlyList<string> series, IReadOnlyList<double[]> values)
    {
        const double left = 50, top = 40, plotH = 260, barW = 14, groupGap = 18, bottom = 120;
        var groupW = series.Count * barW + groupGap;
        var plotW = Math.Max(groups.Count * groupW, 200);
        var width = left + plotW + 20;
        var legendH = 18 * series.Count;
        var height = top + plotH + bottom + legendH;
        var sb = Header(width, height, title);
        Axes(sb, left, top, plotW, plotH, "accuracy (loose)");
        for (var g = 0; g < groups.Count; g++)
        {
            var gx = left + g * groupW + groupGap / 2;
            for (var s = 0; s < series.Count; s++)
            {
                var v = Math.Clamp(values[s][g], 0, 1);
                var h = v * plotH;
                sb.AppendLine($"  <rect x=\"{N(gx + s * barW)}\" y=\"{N(top + plotH - h)}\" width=\"{N(barW - 2)}\" height=\"{N(h)}\" fill=\"{Palette[s % Palette.Length]}\"><title>{E(groups[g])}, {E(series[s])}: {values[s][g].ToString("0.00", CultureInfo.InvariantCulture)}</title></rect>");
            }
            var lx = gx + series.Count * barW / 2;
            var ly = top + plotH + 10;
            sb.AppendLine($"  <text x=\"{N(lx)}\" y=\"{N(ly)}\" font-size=\"11\" text-anchor=\"end\" transform=\"rotate(-40 {N(lx)} {N(ly)})\">{E(groups[g])}</text>");
        }
        Legend(sb, left, top + plotH + bottom, series, dashed: null);
        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    /// <summary>A line chart of accuracy against layer, one line per series, with an optional dashed baseline per series.</summary>
    /// <param name="title">Chart title.</param>
    /// <param name="layers">The x values (layers), ascending.</param>
    /// <param name="series">Series name → value per layer (null where the layer was not tried).</param>
    /// <param name="baselines">Series name → its unsteered accuracy, drawn as a dashed line.</param>
    public static string Lines(string title, IReadOnlyList<int> layers, IReadOnlyDictionary<string, double?[]> series, IReadOnlyDictionary<string, double>? baselines = null)
    {
        const double left = 50, top = 40, plotH = 260, plotW = 420, bottom = 50;
        var names = series.Keys.ToList();
        var legendH = 18 * names.Count;
        var sb = Header(left + plotW + 30, top + plotH + bottom + legendH, title);
        Axes(sb, left, top, plotW, plotH, "accuracy (loose)");
        double X(int i) => layers.Count == 1 ? left + plotW / 2 : left + 15 + i * (plotW - 30) / (layers.Count - 1);
        double Y(double v) => top + plotH - Math.Clamp(v, 0, 1) * plotH;
        for (var i = 0; i < layers.Count; i++)
            sb.AppendLine($"  <text x=\"{N(X(i))}\" y=\"{N(top + plotH + 16)}\" font-size=\"11\" text-anchor=\"middle\">{layers[i]}</text>");
        sb.AppendLine($"  <text x=\"{N(left + plotW / 2)}\" y=\"{N(top + plotH + 34)}\" font-size=\"12\" text-anchor=\"middle\">layer</text>");
        for (var s = 0; s < names.Count; s++)
        {
            var color = Palette[(s + 1) % Palette.Length];
            var values = series[names[s]];
            if (baselines is not null && baselines.TryGetValue(names[s], out var b))
                sb.AppendLine($"  <line x1=\"{N(left)}\" y1=\"{N(Y(b))}\" x2=\"{N(left + plotW)}\" y2=\"{N(Y(b))}\" stroke=\"{color}\" stroke-dasharray=\"4 3\" stroke-width=\"1\"/>");
            var points = Enumerable.Range(0, layers.Count).Where(i => values[i] is not null).Select(i => $"{N(X(i))},{N(Y(values[i]!.Value))}").ToList();
            if (points.Count > 1) sb.AppendLine($"  <polyline points=\"{string.Join(' ', points)}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"2\"/>");
            for (var i = 0; i < layers.Count; i++)
                if (values[i] is { } v)
                    sb.AppendLine($"  <circle cx=\"{N(X(i))}\" cy=\"{N(Y(v))}\" r=\"3\" fill=\"{color}\"><title>{E(names[s])}, layer {layers[i]}: {v.ToString("0.00", CultureInfo.InvariantCulture)}</title></circle>");
        }
        Legend(sb, left, top + plotH + bottom, names, dashed: baselines is null ? null : "dashed: no steering", offset: 1);
        sb.AppendLine("</svg>");
        return sb.ToString();
    }

    private static StringBuilder Header(double width, double height, string title)
    {
        var sb = new StringBuilder();
        sb.AppendLine($"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{N(width)}\" height=\"{N(height)}\" viewBox=\"0 0 {N(width)} {N(height)}\" font-family=\"sans-serif\">");
        sb.AppendLine($"  <rect width=\"100%\" height=\"100%\" fill=\"white\"/>");
        sb.AppendLine($"  <text x=\"{N(width / 2)}\" y=\"22\" font-size=\"14\" text-anchor=\"middle\" font-weight=\"bold\">{E(title)}</text>");
        return sb;
    }

    private static void Axes(StringBuilder sb, double left, double top, double plotW, double plotH, string yLabel)
    {
        for (var t = 0; t <= 4; t++)
        {
            var y = top + plotH - t * plotH / 4;
            sb.AppendLine($"  <line x1=\"{N(left)}\" y1=\"{N(y)}\" x2=\"{N(left + plotW)}\" y2=\"{N(y)}\" stroke=\"#e0e0e0\"/>");
            sb.AppendLine($"  <text x=\"{N(left - 6)}\" y=\"{N(y + 4)}\" font-size=\"11\" text-anchor=\"end\">{N(t / 4.0)}</text>");
        }
        sb.AppendLine($"  <line x1=\"{N(left)}\" y1=\"{N(top)}\" x2=\"{N(left)}\" y2=\"{N(top + plotH)}\" stroke=\"black\"/>");
        sb.AppendLine($"  <line x1=\"{N(left)}\" y1=\"{N(top + plotH)}\" x2=\"{N(left + plotW)}\" y2=\"{N(top + plotH)}\" stroke=\"black\"/>");
        sb.AppendLine($"  <text x=\"14\" y=\"{N(top + plotH / 2)}\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 {N(top + plotH / 2)})\">{E(yLabel)}</text>");
    }

    private static void Legend(StringBuilder sb, double left, double y, IReadOnlyList<string> names, string? dashed, int offset = 0)
    {
        for (var s = 0; s < names.Count; s++)
        {
            var yy = y + s * 18;
            sb.AppendLine($"  <rect x=\"{N(left)}\" y=\"{N(yy - 10)}\" width=\"12\" height=\"12\" fill=\"{Palette[(s + offset) % Palette.Length]}\"/>");
            sb.AppendLine($"  <text x=\"{N(left + 18)}\" y=\"{N(yy)}\" font-size=\"12\">{E(names[s])}</text>");
        }
        if (dashed is not null)
            sb.AppendLine($"  <text x=\"{N(left + 260)}\" y=\"{N(y)}\" font-size=\"11\" fill=\"#555\">{E(dashed)}</text>");
    }
}
