// The `search-cifar` command: the options, their defaults (the paper's settings), the console
// output and the exit codes. The executable only calls `SearchCommand.main`.
//
// Exit codes: 0 done; 1 data, file or numerical failure; 2 usage or configuration error.

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine

/// The full PC-DARTS search as a command-line program.
public enum SearchCommand {
  /// Every option with its default; the defaults are the paper's CIFAR-10 search.
  public static let parser = CommandLineParser(
    commandName: "search-cifar",
    abstract: "PC-DARTS architecture search (Xu et al., ICLR 2020) on CIFAR-10, CIFAR-100 or Fashion-MNIST.",
    options: [
      .string("dataset", default: "cifar10", help: "cifar10, cifar100 or fashion-mnist") {
        DatasetName(rawValue: $0) == nil ? "expected cifar10, cifar100 or fashion-mnist" : nil
      },
      .string("data", default: "", help: "data folder; empty: $PCDARTS_DATA if set, else ./data (fashion-mnist: /usr/share/datasets/fashion-mnist)"),
      .int("batch-size", default: 256, help: "images per batch", validate: positive),
      .double("lr", default: 0.1, help: "initial weight learning rate (SGD)", validate: positiveDouble),
      .double("lr-min", default: 0, help: "final learning rate of the cosine schedule", validate: nonNegative),
      .double("momentum", default: 0.9, help: "SGD momentum") { $0 >= 0 && $0 < 1 ? nil : "expected a value in [0, 1)" },
      .double("weight-decay", default: 3e-4, help: "SGD weight decay", validate: nonNegative),
      .int("epochs", default: 50, help: "search epochs", validate: positive),
      .int("warmup-epochs", default: 15, help: "epochs before architecture updates start") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .int("init-channels", default: 16, help: "channels of the first cells", validate: positive),
      .int("layers", default: 8, help: "cells in the super-net") { $0 >= 3 ? nil : "expected at least 3" },
      .int("K", default: 4, help: "partial-channel factor: 1/K of the channels enter the operations (1 = DARTS)", validate: positive),
      .double("grad-clip", default: 5, help: "gradient-norm clipping of the weights", validate: positiveDouble),
      .double("train-portion", default: 0.5, help: "share of the training set used for weights; the rest for the architecture") {
        $0 > 0 && $0 < 1 ? nil : "expected a value strictly between 0 and 1"
      },
      .double("arch-lr", default: 6e-4, help: "architecture learning rate (Adam)", validate: positiveDouble),
      .double("arch-weight-decay", default: 1e-3, help: "architecture weight decay", validate: nonNegative),
      .flag("unrolled", help: "second-order (unrolled) architecture gradient"),
      .int("seed", default: 2, help: "seed of every random choice") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .string("out", default: "runs/search", help: "output folder (log, genotypes, checkpoint, cell drawings)"),
      .flag("resume", help: "continue from the checkpoint in --out"),
      threadsOption,
      .int("subset", default: 0, help: "use only the first N training images (0 = all)") { $0 >= 0 ? nil : "expected a value ≥ 0" },
    ])

  @Sendable static func positive(_ v: Int) -> String? { v > 0 ? nil : "expected a value ≥ 1" }
  @Sendable static func positiveDouble(_ v: Double) -> String? { v > 0 ? nil : "expected a positive value" }
  @Sendable static func nonNegative(_ v: Double) -> String? { v >= 0 ? nil : "expected a value ≥ 0" }

  /// The settings the options describe.
  public static func settings(from o: ParsedOptions) -> SearchSettings {
    var s = SearchSettings()
    s.batchSize = o.int("batch-size")
    s.learningRate = Float(o.double("lr"))
    s.learningRateMin = Float(o.double("lr-min"))
    s.momentum = Float(o.double("momentum"))
    s.weightDecay = Float(o.double("weight-decay"))
    s.epochs = o.int("epochs")
    s.warmupEpochs = o.int("warmup-epochs")
    s.network.initChannels = o.int("init-channels")
    s.network.layers = o.int("layers")
    s.network.partialChannels = o.int("K")
    s.gradClip = Float(o.double("grad-clip"))
    s.trainPortion = o.double("train-portion")
    s.architect = ArchitectSettings(learningRate: Float(o.double("arch-lr")),
                                    weightDecay: Float(o.double("arch-weight-decay")),
                                    unrolled: o.flag("unrolled"))
    s.seed = UInt64(o.int("seed"))
    s.subset = o.int("subset") > 0 ? o.int("subset") : nil
    return s
  }

  /// Runs the command with `arguments` (without the program name); returns the exit code.
  public static func main(_ arguments: [String]) -> Int32 {
    runCommand(parser, arguments, run)
  }

  private static func run(_ options: ParsedOptions) throws {
    applyThreads(options)
    let settings = settings(from: options)
    try settings.validate()
    let dataset = DatasetName(rawValue: options.string("dataset"))!
    let path = options.string("data").isEmpty ? defaultDataPath(for: dataset) : options.string("data")
    let directory = try RunDirectory(options.string("out"))
    if directory.hasCheckpoint && !options.flag("resume") {
      throw SearchError.invalidConfiguration(
        "\(directory.checkpointURL.path) exists; pass --resume to continue it or choose another --out")
    }
    let data = try loadDataset(dataset, from: path, train: true)
    let run = try SearchRun(settings: settings, data: data)
    if options.flag("resume") {
      guard directory.hasCheckpoint else {
        throw SearchError.checkpointMismatch("--resume: there is no \(directory.checkpointURL.path); start without --resume")
      }
      try run.restore(from: SafeTensorsFile.read(from: directory.checkpointURL))
      try directory.writeLog(run.history)
      print("resumed at epoch \(run.nextEpoch) of \(settings.epochs) from \(directory.checkpointURL.path)")
    }
    print("search-cifar: \(data.name), \(run.trainLoader.indices.count) search-train / \(run.validIndices.count) search-val images, "
      + "K=\(settings.network.partialChannels), \(settings.network.layers) cells of \(settings.network.initChannels) channels, "
      + "\(run.network.weightCount) weights, batch \(settings.batchSize), \(settings.epochs) epochs "
      + "(\(settings.warmupEpochs) warm-up), \(settings.architect.unrolled ? "second" : "first")-order")
    let bar = ProgressBar(interactive: isatty(STDERR_FILENO) != 0)
    run.onStep = { bar.update($0, epochs: settings.epochs) }
    while !run.isFinished {
      let record = try run.runEpoch()
      bar.finish()
      try directory.writeEpoch(run)
      print(String(format: "epoch %d/%d  lr %.5f  train loss %.4f acc %.4f  valid loss %.4f acc %.4f  %.1fs  %.1f img/s  peak %@",
                   record.epoch + 1, settings.epochs, record.lr, record.trainLoss, record.trainAcc,
                   record.validLoss, record.validAcc, record.seconds, record.imagesPerSecond,
                   formatBytes(record.peakTensorBytes)))
      print("  genotype = \(record.genotype)")
    }
    if let last = run.history.last {
      print("final genotype: \(last.genotype)")
      print(String(format: "final validation accuracy: %.4f", last.validAcc))
      print("outputs in \(directory.url.path)")
    }
  }
}

/// A one-line progress bar on stderr (redrawn in place on a terminal, a line per tenth of the
/// epoch otherwise, so logs stay short).
final class ProgressBar {
  let interactive: Bool
  private var lastTenth = -1

  init(interactive: Bool) { self.interactive = interactive }

  func update(_ p: StepProgress, epochs: Int) {
    let width = 24
    let filled = width * p.step / max(p.steps, 1)
    let eta = Int(p.epochSecondsLeft.rounded())
    let line = String(format: "epoch %d/%d [%@%@] %d/%d loss %.4f acc %.4f %.1f img/s ETA %d:%02d",
                      p.epoch + 1, epochs, String(repeating: "#", count: filled),
                      String(repeating: ".", count: width - filled), p.step, p.steps, p.trainLoss,
                      p.trainAccuracy, p.imagesPerSecond, eta / 60, eta % 60)
    if interactive {
      FileHandle.standardError.write(Data(("\r" + line).utf8))
    } else {
      let tenth = 10 * p.step / max(p.steps, 1)
      if tenth != lastTenth {
        lastTenth = tenth
        FileHandle.standardError.write(Data((line + "\n").utf8))
      }
    }
  }

  func finish() {
    if interactive { FileHandle.standardError.write(Data("\n".utf8)) }
    lastTenth = -1
  }
}

/// Parses `arguments` with `parser` and runs `body`, turning the outcome into an exit code: 0 when
/// done (or after `--help`), 2 for usage and configuration errors, 1 for anything else. Every
/// error is one `error:` line on stderr.
func runCommand(_ parser: CommandLineParser, _ arguments: [String], _ body: (ParsedOptions) throws -> Void) -> Int32 {
  do {
    try body(try parser.parse(arguments))
    return 0
  } catch let error as CommandLineError {
    if case .helpRequested(let help) = error { print(help) } else { printError("\(error)") }
    return error.exitCode
  } catch let error as SearchError {
    printError("\(error)")
    if case .invalidConfiguration = error { return 2 }
    return 1
  } catch {
    printError("\(error)")
    return 1
  }
}

/// `--threads`, shared by the commands: the engine's thread count (``Engine/threadCount``).
let threadsOption = OptionSpec.int(
  "threads", default: 0, help: "threads of the engine's loops (0 = one per core, \(Engine.defaultThreadCount) here)"
) { (0...Engine.maximumThreadCount).contains($0) ? nil : "expected 0 to \(Engine.maximumThreadCount)" }

/// Sets ``Engine/threadCount`` from `--threads` (0 keeps the default).
func applyThreads(_ options: ParsedOptions) {
  if options.int("threads") > 0 { Engine.threadCount = options.int("threads") }
}

/// Writes `message` to stderr as `error: message`.
func printError(_ message: String) {
  FileHandle.standardError.write(Data("error: \(message)\n".utf8))
}

/// Bytes in binary units (`12.3 MiB`).
public func formatBytes(_ bytes: Int) -> String {
  let units = ["B", "KiB", "MiB", "GiB", "TiB"]
  var value = Double(bytes)
  var unit = 0
  while value >= 1024 && unit < units.count - 1 {
    value /= 1024
    unit += 1
  }
  return String(format: unit == 0 ? "%.0f %@" : "%.1f %@", value, units[unit])
}
