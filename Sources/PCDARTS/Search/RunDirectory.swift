// The output folder of a run: every file is written atomically (temporary file + rename), so
// an interrupted run never leaves a half-written log, genotype or checkpoint behind.
//
// A search (SearchRun) writes:
//   log.jsonl                      one JSON object per completed epoch
//   architecture.jsonl             softmax(α) and normalised β of both cell types per epoch
//   report.html                    the run's curves, architecture weights and cells (RunReport)
//   genotype.json, genotype.txt    the latest genotype (JSON and DARTS string); with a
//                                  skip_connect cap, genotype.json adds `max_skip_connect` and
//                                  `capped`, the capped genotype
//   genotypes/epoch_NNN.{json,txt} one copy per epoch
//   checkpoint.safetensors         weights, architecture, optimizers, data-loader state
//   normal.dot, reduction.dot      the cells, plus .svg and .png when graphviz's `dot` is found
//
// The training of a genotype (TrainingRun, RunDirectory+Training.swift) writes log.jsonl,
// checkpoint.safetensors, weights.safetensors, genotype.{json,txt} and result.json.

import Foundation
import TensorEngine

/// The files of one run under a folder, which it holds an exclusive lock on while it exists
/// (`.lock`, with the holder's pid), so that two runs never write into one folder.
public final class RunDirectory {
  /// The outputs a kind of run writes: what counts as an earlier run's output in a folder.
  public struct Layout: Sendable {
    /// Output files, relative to the folder.
    public var files: [String]
    /// Output subfolders (created with the folder; an earlier run's when not empty).
    public var folders: [String]

    /// A layout of `files` and `folders`.
    public init(files: [String], folders: [String] = []) { (self.files, self.folders) = (files, folders) }

    /// What a search writes.
    public static let search = Layout(
      files: [
        "log.jsonl", "architecture.jsonl", "report.html", "genotype.json", "genotype.txt", "checkpoint.safetensors",
        "normal.dot", "normal.svg", "normal.png", "reduction.dot", "reduction.svg", "reduction.png",
      ],
      folders: ["genotypes"])
  }

  /// The folder.
  public let url: URL
  /// The outputs of the kind of run that writes here.
  public let layout: Layout
  /// The open lock file; closing it (when the directory is released) releases the lock.
  private let lockDescriptor: Int32

  /// `log.jsonl`, one line per completed epoch.
  public var logURL: URL { url.appendingPathComponent("log.jsonl") }
  /// `checkpoint.safetensors`.
  public var checkpointURL: URL { url.appendingPathComponent("checkpoint.safetensors") }

  /// Creates the folder if needed, checks that it is writable, takes its lock and removes the
  /// temporary files that interrupted writes of processes no longer running left behind.
  /// - Parameter layout: what the run writes (a search's by default).
  /// - Throws: ``SearchError/invalidConfiguration(_:)`` naming the folder and the reason: not a
  ///   folder, not writable, or locked by another run (whose pid the message gives).
  public init(_ path: String, layout: Layout = .search) throws {
    url = URL(fileURLWithPath: path)
    self.layout = layout
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    if fm.fileExists(atPath: url.path, isDirectory: &isDirectory), !isDirectory.boolValue {
      throw SearchError.invalidConfiguration("the output folder \(path) is a file, not a folder; choose a folder path")
    }
    do {
      try fm.createDirectory(at: url, withIntermediateDirectories: true)
      for folder in layout.folders {
        try fm.createDirectory(at: url.appendingPathComponent(folder), withIntermediateDirectories: true)
      }
    } catch {
      throw SearchError.invalidConfiguration(
        "the output folder \(path) is not writable (\(error.localizedDescription)); choose a folder you can write to")
    }
    let lockPath = url.appendingPathComponent(".lock").path
    let fd = open(lockPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
    guard fd >= 0 else {
      throw SearchError.invalidConfiguration(
        "the output folder \(path) is not writable (\(String(cString: strerror(errno)))); choose a folder you can write to"
      )
    }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      let holder = (try? String(contentsOfFile: lockPath, encoding: .utf8))?.trimmingCharacters(
        in: .whitespacesAndNewlines)
      close(fd)
      throw SearchError.invalidConfiguration(
        "another run (pid \(holder.flatMap { $0.isEmpty ? nil : $0 } ?? "unknown")) is writing to \(path); "
          + "wait for it to end or choose another output folder")
    }
    let pid = Array("\(getpid())\n".utf8)
    _ = ftruncate(fd, 0)
    _ = pwrite(fd, pid, pid.count, 0)
    lockDescriptor = fd
    removeStaleTemporaryFiles()
  }

  deinit { close(lockDescriptor) }

  /// Whether a checkpoint exists to resume from.
  public var hasCheckpoint: Bool { FileManager.default.fileExists(atPath: checkpointURL.path) }

  /// The outputs of an earlier run in the folder (the layout's files, and its folders that are
  /// not empty, with a trailing `/`), by name.
  public var existingOutputs: [String] {
    let fm = FileManager.default
    var found = layout.files.filter { fm.fileExists(atPath: url.appendingPathComponent($0).path) }
    for folder in layout.folders {
      if let contents = try? fm.contentsOfDirectory(atPath: url.appendingPathComponent(folder).path),
        !contents.isEmpty
      {
        found.append(folder + "/")
      }
    }
    return found
  }

  /// Moves every output of an earlier run into a new subfolder `previous-<date>-<time>` (nothing
  /// is deleted) and returns it.
  @discardableResult
  public func moveOutputsAside() throws -> URL {
    let stamp = DateFormatter()
    stamp.dateFormat = "yyyyMMdd-HHmmss"
    stamp.timeZone = TimeZone(identifier: "UTC")
    var aside = url.appendingPathComponent("previous-\(stamp.string(from: Date()))")
    var n = 1
    while FileManager.default.fileExists(atPath: aside.path) {
      n += 1
      aside = url.appendingPathComponent("previous-\(stamp.string(from: Date()))-\(n)")
    }
    let fm = FileManager.default
    try fm.createDirectory(at: aside, withIntermediateDirectories: false)
    for name in existingOutputs {
      let item = name.hasSuffix("/") ? String(name.dropLast()) : name
      try fm.moveItem(at: url.appendingPathComponent(item), to: aside.appendingPathComponent(item))
    }
    for folder in layout.folders {
      try fm.createDirectory(at: url.appendingPathComponent(folder), withIntermediateDirectories: true)
    }
    return aside
  }

  /// Writes the state after an epoch: the checkpoint first — the commit point of the epoch — then
  /// what is derived from it (log, genotypes, cell drawings), so that after a kill or a full disk
  /// the derived files are never ahead of the checkpoint, and ``writeDerived(_:)`` on resume
  /// brings them back in line with it.
  public func writeEpoch(_ run: SearchRun) throws {
    try writeAtomically(run.checkpoint().serialized(), to: checkpointURL)
    try writeDerived(run)
  }

  /// Rewrites everything derived from the run's state after its last completed epoch: the log
  /// from its history, the latest genotype files and drawings, and the per-epoch genotypes (those
  /// of epochs not completed, left by an interrupted run, are removed).
  public func writeDerived(_ run: SearchRun) throws {
    try write(run.history.map(\.jsonLine).joined(separator: "\n") + (run.history.isEmpty ? "" : "\n"), to: logURL)
    let architecture = run.architectureHistory.map(\.jsonLine).joined(separator: "\n")
    try write(architecture + (architecture.isEmpty ? "" : "\n"), to: url.appendingPathComponent("architecture.jsonl"))
    let genotypes = url.appendingPathComponent("genotypes")
    for name in (try? FileManager.default.contentsOfDirectory(atPath: genotypes.path)) ?? [] {
      guard name.hasPrefix("epoch_"), let epoch = Int(name.dropFirst(6).prefix { $0.isNumber }), epoch >= run.nextEpoch
      else { continue }
      try FileManager.default.removeItem(at: genotypes.appendingPathComponent(name))
    }
    guard run.nextEpoch > 0 else { return }
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
    try writeReport(settings: run.settings)
  }

  /// Writes `report.html` from the folder's files (see ``RunReport/init(folder:settings:)``);
  /// the settings come from the checkpoint unless given.
  public func writeReport(settings: SearchSettings? = nil) throws {
    try write(try RunReport(folder: url, settings: settings).html, to: url.appendingPathComponent("report.html"))
  }

  /// Removes `.<name>.tmp-<pid>-…` files (interrupted atomic writes) whose process is gone.
  private func removeStaleTemporaryFiles() {
    let fm = FileManager.default
    for folder in [url] + layout.folders.map({ url.appendingPathComponent($0) }) {
      for name in (try? fm.contentsOfDirectory(atPath: folder.path)) ?? [] {
        guard name.hasPrefix("."), let marker = name.range(of: ".tmp-"),
          let pid = Int32(name[marker.upperBound...].prefix { $0.isNumber }), pid != getpid(),
          kill(pid, 0) != 0, errno == ESRCH
        else { continue }
        try? fm.removeItem(at: folder.appendingPathComponent(name))
      }
    }
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
        let temporary = url.appendingPathComponent(".\(name).\(format).tmp-\(getpid())")
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

  /// Writes `text` to `target` atomically.
  func write(_ text: String, to target: URL) throws {
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
