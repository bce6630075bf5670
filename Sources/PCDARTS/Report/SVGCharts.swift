// Inline SVG charts for the run report: line charts with axes and a legend, and heat maps.
// Everything is plain SVG text (no script, no external resource), so a report opens in any
// browser with no network.

import Foundation

/// A linear map from a data interval to a pixel interval, with round tick values.
public struct LinearScale: Equatable, Sendable {
  /// The data interval, widened to round ticks by ``nice(_:_:ticks:)``.
  public let domain: ClosedRange<Double>
  /// The pixel interval (may run downwards, as a y axis does).
  public let range: (Double, Double)

  /// - Parameters:
  ///   - domain: data values; a zero-width domain is widened by ±1 (or ±|value|/2).
  ///   - range: the pixels `domain`'s ends map to.
  public init(domain: ClosedRange<Double>, range: (Double, Double)) {
    if domain.lowerBound == domain.upperBound {
      let pad = domain.lowerBound == 0 ? 1 : abs(domain.lowerBound) / 2
      self.domain = (domain.lowerBound - pad)...(domain.upperBound + pad)
    } else {
      self.domain = domain
    }
    self.range = range
  }

  /// The pixel of data value `x`.
  public func callAsFunction(_ x: Double) -> Double {
    let t = (x - domain.lowerBound) / (domain.upperBound - domain.lowerBound)
    return range.0 + t * (range.1 - range.0)
  }

  /// Tick values: multiples of 1, 2 or 5 × 10ᵏ inside the domain, about `count` of them.
  public func ticks(count: Int = 5) -> [Double] {
    let step = Self.niceStep((domain.upperBound - domain.lowerBound) / Double(max(count, 1)))
    let first = (domain.lowerBound / step).rounded(.up) * step
    return stride(from: first, through: domain.upperBound + step * 1e-9, by: step).map {
      abs($0) < step * 1e-9 ? 0 : $0
    }
  }

  /// A domain covering `low...high` whose ends are multiples of the tick step.
  public static func nice(_ low: Double, _ high: Double, ticks count: Int = 5) -> ClosedRange<Double> {
    guard high > low else { return low...high }
    let step = niceStep((high - low) / Double(max(count, 1)))
    // A little slack, so that a bound already on a multiple (409.4 of 0.2) stays put.
    return ((low / step) + 1e-9).rounded(.down) * step...((high / step) - 1e-9).rounded(.up) * step
  }

  /// The smallest of 1, 2, 5 × 10ᵏ that is ≥ `raw`.
  static func niceStep(_ raw: Double) -> Double {
    guard raw > 0, raw.isFinite else { return 1 }
    let magnitude = pow(10, (log10(raw)).rounded(.down))
    for factor in [1.0, 2, 5, 10] where factor * magnitude >= raw * (1 - 1e-12) { return factor * magnitude }
    return 10 * magnitude
  }

  public static func == (a: LinearScale, b: LinearScale) -> Bool {
    a.domain == b.domain && a.range == b.range
  }
}

/// One named line of a chart.
public struct ChartSeries: Sendable {
  /// The legend's label.
  public var name: String
  /// The points, in x order.
  public var points: [(x: Double, y: Double)]
  /// A series of `points` labelled `name`.
  public init(name: String, points: [(x: Double, y: Double)]) { (self.name, self.points) = (name, points) }
}

/// Distinct colours for up to 14 series (the edges of a cell), then repeating.
let chartColors = [
  "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
  "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39",
]

/// Escapes text for XML content and attributes.
func xmlEscaped(_ text: String) -> String {
  text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
    .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
}

/// A tick label: integers as integers, others with up to 4 significant digits.
func tickLabel(_ value: Double) -> String {
  if value == value.rounded(), abs(value) < 1e9 { return String(Int(value)) }
  return String(format: "%.4g", value)
}

/// A line chart with x and y axes, ticks, axis labels and a legend, as one `<svg>` element.
///
/// - Parameters:
///   - id: the element id (the report's tests look charts up by it).
///   - title, xLabel, yLabel: the texts.
///   - series: the lines; non-finite points are skipped.
///   - width, height: the size in pixels.
public func lineChartSVG(
  id: String, title: String, xLabel: String, yLabel: String, series: [ChartSeries], width: Int = 560,
  height: Int = 300
) -> String {
  let (left, right, top, bottom) = (64.0, 150.0, 28.0, 44.0)
  let points = series.flatMap(\.points).filter { $0.x.isFinite && $0.y.isFinite }
  let xs = points.map(\.x), ys = points.map(\.y)
  let x = LinearScale(
    domain: LinearScale.nice(xs.min() ?? 0, xs.max() ?? 1), range: (left, Double(width) - right))
  let y = LinearScale(
    domain: LinearScale.nice(ys.min() ?? 0, ys.max() ?? 1), range: (Double(height) - bottom, top))
  var out = [
    "<svg id=\"\(xmlEscaped(id))\" class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" "
      + "height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"11\">",
    "<rect width=\"\(width)\" height=\"\(height)\" fill=\"white\"/>",
    "<text x=\"\(left)\" y=\"16\" font-size=\"13\" font-weight=\"bold\">\(xmlEscaped(title))</text>",
  ]
  let (x0, x1, y0, y1) = (x.range.0, x.range.1, y.range.0, y.range.1)
  for t in y.ticks() {
    let py = String(format: "%.1f", y(t))
    out.append("<line class=\"grid\" x1=\"\(x0)\" x2=\"\(x1)\" y1=\"\(py)\" y2=\"\(py)\" stroke=\"#e5e5e5\"/>")
    out.append("<text class=\"ytick\" x=\"\(x0 - 6)\" y=\"\(py)\" text-anchor=\"end\" dy=\"4\">\(tickLabel(t))</text>")
  }
  for t in x.ticks() {
    let px = String(format: "%.1f", x(t))
    out.append("<line x1=\"\(px)\" x2=\"\(px)\" y1=\"\(y0)\" y2=\"\(y0 + 4)\" stroke=\"black\"/>")
    out.append("<text class=\"xtick\" x=\"\(px)\" y=\"\(y0 + 16)\" text-anchor=\"middle\">\(tickLabel(t))</text>")
  }
  out.append("<line class=\"axis\" x1=\"\(x0)\" x2=\"\(x1)\" y1=\"\(y0)\" y2=\"\(y0)\" stroke=\"black\"/>")
  out.append("<line class=\"axis\" x1=\"\(x0)\" x2=\"\(x0)\" y1=\"\(y0)\" y2=\"\(y1)\" stroke=\"black\"/>")
  out.append(
    "<text x=\"\((x0 + x1) / 2)\" y=\"\(Double(height) - 8)\" text-anchor=\"middle\">\(xmlEscaped(xLabel))</text>")
  out.append(
    "<text transform=\"translate(14 \((y0 + y1) / 2)) rotate(-90)\" text-anchor=\"middle\">\(xmlEscaped(yLabel))</text>"
  )
  for (i, s) in series.enumerated() {
    let color = chartColors[i % chartColors.count]
    let finite = s.points.filter { $0.x.isFinite && $0.y.isFinite }
    let coordinates = finite.map { String(format: "%.1f,%.1f", x($0.x), y($0.y)) }.joined(separator: " ")
    out.append(
      "<polyline class=\"series\" fill=\"none\" stroke=\"\(color)\" stroke-width=\"1.8\" points=\"\(coordinates)\"/>")
    if finite.count == 1, let p = finite.first {
      out.append(String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>", x(p.x), y(p.y), color))
    }
    let ly = top + 6 + Double(i) * 15
    out.append(
      "<line x1=\"\(x1 + 12)\" x2=\"\(x1 + 30)\" y1=\"\(ly)\" y2=\"\(ly)\" stroke=\"\(color)\" stroke-width=\"2\"/>")
    out.append("<text class=\"legend\" x=\"\(x1 + 35)\" y=\"\(ly + 4)\">\(xmlEscaped(s.name))</text>")
  }
  out.append("</svg>")
  return out.joined(separator: "\n")
}

/// A heat map of `values` (rows × columns), white at the smallest value and dark blue at the
/// largest, each cell labelled with its value, as one `<svg>` element.
public func heatMapSVG(id: String, title: String, rowLabels: [String], columnLabels: [String], values: [[Double]])
  -> String
{
  let (cell, left, top) = (46.0, 96.0, 110.0)
  // Room on the right for the last column's slanted label.
  let width = Int(left + cell * Double(columnLabels.count) + 60)
  let height = Int(top + cell * 0.6 * Double(rowLabels.count) + 10)
  let flat = values.flatMap { $0 }.filter(\.isFinite)
  let (low, high) = (flat.min() ?? 0, flat.max() ?? 1)
  var out = [
    "<svg id=\"\(xmlEscaped(id))\" class=\"heatmap\" xmlns=\"http://www.w3.org/2000/svg\" width=\"\(width)\" "
      + "height=\"\(height)\" viewBox=\"0 0 \(width) \(height)\" font-family=\"sans-serif\" font-size=\"10\">",
    "<rect width=\"\(width)\" height=\"\(height)\" fill=\"white\"/>",
    "<text x=\"4\" y=\"14\" font-size=\"13\" font-weight=\"bold\">\(xmlEscaped(title))</text>",
  ]
  for (j, label) in columnLabels.enumerated() {
    let cx = left + cell * (Double(j) + 0.5)
    out.append(
      "<text transform=\"translate(\(cx) \(top - 6)) rotate(-45)\" class=\"column\">\(xmlEscaped(label))</text>")
  }
  for (i, label) in rowLabels.enumerated() {
    let y = top + cell * 0.6 * Double(i)
    out.append("<text class=\"row\" x=\"\(left - 6)\" y=\"\(y + 17)\" text-anchor=\"end\">\(xmlEscaped(label))</text>")
    for (j, value) in values[i].enumerated() {
      let t = high > low ? (value - low) / (high - low) : 0
      let shade = { (full: Double) in Int((255 - (255 - full) * t).rounded()) }
      let fill = String(format: "#%02x%02x%02x", shade(8), shade(48), shade(107))
      let x = left + cell * Double(j)
      out.append(
        "<rect class=\"cell\" x=\"\(x)\" y=\"\(y)\" width=\"\(cell - 1)\" height=\"\(cell * 0.6 - 1)\" fill=\"\(fill)\">"
          + "<title>\(xmlEscaped(label)) \(xmlEscaped(columnLabels[j])): \(String(format: "%.4f", value))</title></rect>"
      )
      out.append(
        "<text x=\"\(x + cell / 2)\" y=\"\(y + 17)\" text-anchor=\"middle\" fill=\"\(t > 0.55 ? "white" : "black")\">"
          + String(format: "%.3f", value) + "</text>")
    }
  }
  out.append("</svg>")
  return out.joined(separator: "\n")
}
