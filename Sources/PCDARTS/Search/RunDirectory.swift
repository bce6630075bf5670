// The output folder of a search: every file is written atomically (temporary file + rename), so
// an interrupted run never leaves a half-written log, genotype or checkpoint behind.
//
//   log.jsonl                      one JSON object per completed epoch
//   genotype.json, genotype.txt    the latest genotype (JSON and DARTS string); with a
//                                  skip_connect cap, genotype.json adds `max_skip_connect` and
//                                  `capped`, the capped genotype
//   genotypes/epoch_NNN.{json,txt} one copy per epoch
//   checkpoint.safetensors         weights, architecture, optimizers, data-loader state
//   normal.dot, reduction.dot      the cells, plus .svg and .png when graphviz's `dot` is found

import Foundation
import TensorEngine

/// The files of one search run under a folder.
public struct RunDirectory {
  /// The folder.
  public let url: URL

  /// `log.jsonl`, one line per completed epoch.
  public var logURL: URL { url.appendingPathComponent("log.jsonl") }
  /// `checkpoint.safetensors`.
  public var checkpointURL: URL { url.appendingPathComponent("checkpoint.safetensors") }

  /// Creates the folder if needed and checks that it is writable.
  /// - Throws: ``SearchError/invalidConfiguration(_:)`` naming the folder and the reason.
  public init(_ path: String) throws {
    url = URL(fileURLWithPath: path)
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    if fm.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue {
      throw SearchError.invalidConfiguration("the output folder \(path) is a file, not a folder; choose a folder path")
    }
    do {
      try fm.createDirectory(at: url.appendingPathComponent("genotypes"), withIntermediateDirectories: true)
      let probe = url.appendingPathComponent(".write-test-\(getpid())")
      try Data().write(to: probe)
      try fm.removeItem(at: probe)
    } catch {
      throw SearchError.invalidConfiguration(
        "the output folder \(path) is not writable (\(error.localizedDescription)); choose a folder you can write to")
    }
  }

  /// Whether a checkpoint exists to resume from.
  public var hasCheckpoint: Bool { FileManager.default.fileExists(atPath: checkpointURL.path) }

  /// Writes the state after an epoch: log, genotypes, cell drawings, then the checkpoint last,
  /// so that a checkpoint always has its log and genotype beside it.
  public func writeEpoch(_ run: SearchRun) throws {
    try write(run.history.map(\.jsonLine).joined(separator: "\n") + "\n", to: logURL)
    let genotype = run.network.genotype()
    // With a skip_connect cap, the capped genotype joins the raw one as fields of its own.
    var object = genotype.jsonObject
    if let cap = run.settings.maxSkipConnect {
      object["max_skip_connect"] = cap
      object["capped"] = run.network.genotype(maxSkipConnect: cap).jsonObject
    }
    let json = String(
      decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    let epoch = String(format: "%03d", run.nextEpoch - 1)
    for (name, text) in [
      ("genotype.json", json + "\n"), ("genotype.txt", genotype.pythonDescription + "\n"),
      ("genotypes/epoch_\(epoch).json", json + "\n"),
      ("genotypes/epoch_\(epoch).txt", genotype.pythonDescription + "\n"),
    ] {
      try write(text, to: url.appendingPathComponent(name))
    }
    try drawCells(genotype)
    try writeAtomically(run.checkpoint().serialized(), to: checkpointURL)
  }

  /// Rewrites the log from a restored history (drops lines of an epoch that was interrupted).
  public func writeLog(_ history: [EpochRecord]) throws {
    try write(history.map(\.jsonLine).joined(separator: "\n") + (history.isEmpty ? "" : "\n"), to: logURL)
  }

  /// DOT files of both cells, rendered to SVG and PNG when graphviz is installed.
  public func drawCells(_ genotype: Genotype) throws {
    for (name, edges, concat) in [
      ("normal", genotype.normal, genotype.normalConcat),
      ("reduction", genotype.reduce, genotype.reduceConcat),
    ] {
      let dot = url.appendingPathComponent("\(name).dot")
      try write(cellDOT(name: name, edges: edges, concat: concat), to: dot)
      guard let dotTool = graphvizExecutable() else { continue }
      for format in ["svg", "png"] {
        let target = url.appendingPathComponent("\(name).\(format)")
        let temporary = url.appendingPathComponent(".\(name).\(format).tmp")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: dotTool)
        process.arguments = ["-T\(format)", dot.path, "-o", temporary.path]
        try? process.run()
        process.waitUntilExit()
        if process.terminationStatus == 0 {
          rename(temporary.path, target.path)  // atomic replace
        } else {
          try? FileManager.default.removeItem(at: temporary)
        }
      }
    }
  }

  private func write(_ text: String, to target: URL) throws {
    try writeAtomically(Data(text.utf8), to: target)
  }
}

/// A Graphviz drawing of a cell in the style of DARTS's visualize.py: inputs c_{k-2}, c_{k-1},
/// intermediate nodes 0…n−1, output c_{k}; edges labelled with their operation.
public func cellDOT(name: String, edges: [GenotypeEdge], concat: [Int]) -> String {
  var lines = [
    "digraph \(name) {", "  rankdir=LR;",
    "  node [style=filled, shape=rect, align=center, fontname=helvetica, fontsize=20, height=0.5, width=0.5, penwidth=2];",
    "  edge [fontname=times, fontsize=20];",
    "  \"c_{k-2}\" [fillcolor=darkseagreen2];", "  \"c_{k-1}\" [fillcolor=darkseagreen2];",
  ]
  let steps = edges.count / 2
  for i in 0..<steps { lines.append("  \"\(i)\" [fillcolor=lightblue];") }
  func node(_ j: Int) -> String { j == 0 ? "c_{k-2}" : j == 1 ? "c_{k-1}" : String(j - 2) }
  for (k, edge) in edges.enumerated() {
    lines.append("  \"\(node(edge.input))\" -> \"\(k / 2)\" [label=\"\(edge.op)\", fillcolor=gray];")
  }
  lines.append("  \"c_{k}\" [fillcolor=palegoldenrod];")
  for j in concat { lines.append("  \"\(node(j))\" -> \"c_{k}\" [fillcolor=gray];") }
  lines.append("}")
  return lines.joined(separator: "\n") + "\n"
}

/// The path of graphviz's `dot`, if it is on the PATH.
func graphvizExecutable() -> String? {
  let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
  return path.split(separator: ":").map { "\($0)/dot" }.first { FileManager.default.isExecutableFile(atPath: $0) }
}
