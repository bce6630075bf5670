// report.html: one self-contained page per run folder (inline SVG, no script, no network) with
// the settings, the curves of every epoch, the architecture weights and the derived cells.

import Foundation
import TensorEngine

/// The report of a search run, built from what its folder holds (so any run, resumed or not,
/// can be reported again).
public struct RunReport {
  /// The run's settings as a flat list of `path = value`, when known.
  public var settings: [(String, String)]
  /// One record per completed epoch.
  public var history: [EpochRecord]
  /// The architecture weights after each epoch (may be empty).
  public var architecture: [ArchitectureRecord]
  /// The SVG drawings of the normal and the reduction cell (graphviz's), or nil.
  public var normalCellSVG: String?, reductionCellSVG: String?
  /// The page's heading.
  public var title: String

  /// A report of the given parts.
  public init(
    title: String, settings: [(String, String)], history: [EpochRecord], architecture: [ArchitectureRecord],
    normalCellSVG: String? = nil, reductionCellSVG: String? = nil
  ) {
    (self.title, self.settings, self.history, self.architecture) = (title, settings, history, architecture)
    (self.normalCellSVG, self.reductionCellSVG) = (normalCellSVG, reductionCellSVG)
  }

  /// The report of the run in `folder`: settings from its checkpoint, the epochs from
  /// `log.jsonl`, the architecture from `architecture.jsonl`, the cells from `normal.svg` and
  /// `reduction.svg`.
  /// - Parameter settings: the run's settings when the caller has them (a running search), which
  ///   spares reading the checkpoint.
  /// - Throws: ``SearchError/invalidConfiguration(_:)`` when the folder holds no log.
  public init(folder: URL, settings known: SearchSettings? = nil) throws {
    let decoder = JSONDecoder()
    func lines<T: Decodable>(_ name: String, _: T.Type) throws -> [T] {
      guard let text = try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8) else { return [] }
      return try text.split(separator: "\n").map { line in
        do { return try decoder.decode(T.self, from: Data(line.utf8)) } catch {
          throw SearchError.invalidConfiguration(
            "\(folder.path)/\(name) has a line that is not a record: \(line.prefix(80))")
        }
      }
    }
    guard FileManager.default.fileExists(atPath: folder.appendingPathComponent("log.jsonl").path) else {
      throw SearchError.invalidConfiguration(
        "\(folder.path) holds no log.jsonl: it is not a run folder, or no epoch ended yet")
    }
    var settings = known?.flatList ?? []
    let checkpoint = folder.appendingPathComponent("checkpoint.safetensors")
    if known == nil, let file = try? SafeTensorsFile.read(from: checkpoint), let json = file.metadata["settings"],
      let saved = try? decoder.decode(SearchSettings.self, from: Data(json.utf8))
    {
      settings = saved.flatList
    }
    func svg(_ name: String) -> String? {
      (try? String(contentsOf: folder.appendingPathComponent(name), encoding: .utf8)).map { text in
        text.range(of: "<svg").map { String(text[$0.lowerBound...]) } ?? text
      }
    }
    self.init(
      title: "PC-DARTS search — \(folder.lastPathComponent)", settings: settings,
      history: try lines("log.jsonl", EpochRecord.self),
      architecture: try lines("architecture.jsonl", ArchitectureRecord.self),
      normalCellSVG: svg("normal.svg"), reductionCellSVG: svg("reduction.svg"))
  }

  /// The page.
  public var html: String {
    let epochs = history.map { Double($0.epoch + 1) }
    func series(_ name: String, _ values: [Double]) -> ChartSeries {
      ChartSeries(name: name, points: zip(epochs, values).map { ($0, $1) })
    }
    var body: [String] = ["<h1>\(xmlEscaped(title))</h1>"]
    if let last = history.last {
      body.append(
        "<p>\(history.count) epochs; last: train loss \(String(format: "%.4f", last.trainLoss)), valid accuracy "
          + "\(String(format: "%.4f", last.validAcc)).</p><p class=\"genotype\">\(xmlEscaped(last.genotype))</p>")
    }
    body.append("<h2>Curves</h2><div class=\"row\">")
    body.append(
      lineChartSVG(
        id: "chart-loss", title: "Loss", xLabel: "epoch", yLabel: "cross-entropy",
        series: [series("train", history.map(\.trainLoss)), series("valid", history.map(\.validLoss))]))
    body.append(
      lineChartSVG(
        id: "chart-accuracy", title: "Accuracy", xLabel: "epoch", yLabel: "fraction correct",
        series: [series("train", history.map(\.trainAcc)), series("valid", history.map(\.validAcc))]))
    body.append(
      lineChartSVG(
        id: "chart-lr", title: "Learning rate", xLabel: "epoch", yLabel: "lr",
        series: [series("weights", history.map(\.lr))]))
    body.append(
      lineChartSVG(
        id: "chart-throughput", title: "Throughput", xLabel: "epoch", yLabel: "images/s",
        series: [series("train", history.map(\.imagesPerSecond))]))
    body.append(
      lineChartSVG(
        id: "chart-memory", title: "Peak tensor memory", xLabel: "epoch", yLabel: "MiB",
        series: [series("peak", history.map { Double($0.peakTensorBytes) / 1_048_576 })]))
    body.append("</div>")
    if let latest = architecture.last {
      body.append("<h2>Architecture weights</h2><div class=\"row\">")
      let edgeNames = Self.edgeNames(count: latest.normalEdgeWeights.count)
      for (cell, ops) in [("normal", latest.normalOpWeights), ("reduce", latest.reduceOpWeights)] {
        body.append(
          heatMapSVG(
            id: "heatmap-alpha-\(cell)", title: "softmax(α), \(cell) cell, epoch \(latest.epoch + 1)",
            rowLabels: edgeNames, columnLabels: latest.primitives, values: ops.map { $0.map(Double.init) }))
      }
      body.append("</div><div class=\"row\">")
      let none = latest.primitives.firstIndex(of: Primitive.noneName)
      for cell in ["normal", "reduce"] {
        let strongest = edgeNames.indices.map { e in
          ChartSeries(
            name: edgeNames[e],
            points: architecture.map { record in
              let row = (cell == "normal" ? record.normalOpWeights : record.reduceOpWeights)[e]
              return (Double(record.epoch + 1), Double(row.indices.filter { $0 != none }.map { row[$0] }.max() ?? 0))
            })
        }
        body.append(
          lineChartSVG(
            id: "trajectory-op-\(cell)", title: "Strongest operation weight per edge, \(cell) cell", xLabel: "epoch",
            yLabel: "softmax(α)", series: strongest, height: 330))
        let betas = edgeNames.indices.map { e in
          ChartSeries(
            name: edgeNames[e],
            points: architecture.map { record in
              (
                Double(record.epoch + 1),
                Double((cell == "normal" ? record.normalEdgeWeights : record.reduceEdgeWeights)[e])
              )
            })
        }
        body.append(
          lineChartSVG(
            id: "trajectory-beta-\(cell)", title: "Edge weight β per edge, \(cell) cell", xLabel: "epoch",
            yLabel: "normalised β", series: betas, height: 330))
      }
      body.append("</div>")
    }
    body.append("<h2>Cells</h2><div class=\"row\">")
    for (id, name, svg) in [
      ("cell-normal", "normal", normalCellSVG), ("cell-reduction", "reduction", reductionCellSVG),
    ] {
      body.append(
        "<figure id=\"\(id)\">\(svg ?? "<p>(no drawing: graphviz's dot was not found)</p>")<figcaption>\(name) cell</figcaption></figure>"
      )
    }
    body.append("</div>")
    if !settings.isEmpty {
      body.append("<h2>Settings</h2><table id=\"settings\">")
      for (key, value) in settings { body.append("<tr><td>\(xmlEscaped(key))</td><td>\(xmlEscaped(value))</td></tr>") }
      body.append("</table>")
    }
    return """
      <!DOCTYPE html>
      <html lang="en"><head><meta charset="utf-8"><title>\(xmlEscaped(title))</title>
      <style>body{font-family:sans-serif;margin:24px;color:#222}.row{display:flex;flex-wrap:wrap;gap:12px}
      figure{margin:0}figure svg{max-width:560px;height:auto}.genotype{font-family:monospace;font-size:12px}
      table{border-collapse:collapse;font-size:13px}td{border:1px solid #ddd;padding:2px 8px}</style></head>
      <body>
      \(body.joined(separator: "\n"))
      </body></html>

      """
  }

  /// "node j ← input i" for the edges of a cell, in edge order (node 0 has inputs 0, 1; …).
  static func edgeNames(count: Int) -> [String] {
    var names: [String] = []
    var node = 0
    while names.count < count {
      for input in 0..<(node + 2) where names.count < count { names.append("n\(node) ← \(input)") }
      node += 1
    }
    return names
  }
}
