// The `bench` command: memory and throughput of one search iteration per K, each K in a fresh
// child process (the same executable, re-run with a hidden --child flag) so that one K's memory
// cannot hide in another's peak RSS.
//
// One iteration is the search's own (SearchIteration.run): an architecture step on one batch
// (first order, or second order with --unrolled) and a weight step on another, with the search's
// default settings (SearchSettings) but for K, the batch and the network size, on random data.

import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine

/// Whether `path` names an existing folder.
private func isDirectoryPath(_ path: String) -> Bool {
  var isDirectory: ObjCBool = false
  return FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) && isDirectory.boolValue
}

/// The measurements of one K.
public struct BenchResult: Codable, Equatable, Sendable {
  /// The partial-channel factor measured.
  public var K: Int
  /// Images per batch.
  public var batch: Int
  /// Cells of the measured search network.
  public var layers: Int
  /// C, the channels of the first cells.
  public var initChannels: Int
  /// Median over the timed iterations.
  public var secondsPerIteration: Double
  /// `batch / secondsPerIteration`.
  public var imagesPerSecond: Double
  /// Median forward time of the weight step.
  public var forwardMilliseconds: Double
  /// Median backward time of the weight step.
  public var backwardMilliseconds: Double
  /// Peak engine-accounted tensor bytes during the timed iterations.
  public var peakTensorBytes: Int
  /// That peak minus the bytes alive between iterations (weights, gradients, optimizer state,
  /// data): the activations, gradients in flight and scratch of one iteration.
  public var peakActivationBytes: Int
  /// Peak resident set size of the child process.
  public var peakRSSBytes: Int
}

/// Memory and throughput per K, printed as a table of ratios to K = 1.
public enum BenchCommand {
  /// The options of `bench`, with their defaults, checks and help text.
  public static let parser = CommandLineParser(
    commandName: "bench",
    abstract: "Peak memory and speed of one PC-DARTS search iteration for each partial-channel factor K.",
    options: [
      .intList("K", default: [1, 2, 4, 8], help: "partial-channel factors to measure") { ks in
        ks.isEmpty ? "expected a list like 1,2,4,8" : nil
      },
      .int("batch", default: 64, help: "images per batch"),
      .int("layers", default: 8, help: "cells in the super-net"),
      .int("init-channels", default: 16, help: "channels of the first cells"),
      .int("iters", default: 3, help: "timed iterations per K") { $0 >= 1 ? nil : "expected a value ≥ 1" },
      .int("warmup", default: 1, help: "untimed iterations before timing") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .flag("unrolled", help: "second-order architecture step"),
      .string("channel-sampling", default: "shuffle", help: "shuffle (the paper) or random channel sampling") {
        ChannelSampling(rawValue: $0) == nil ? "expected shuffle or random" : nil
      },
      threadsOption,
      .string("json", default: "", help: "also write the results as a JSON array to this path"),
      .double(
        "budget-gb", default: 0, help: "also report the largest batch whose peak RSS fits in this many GiB (0 = skip)"
      ) {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
      .int("child", default: 0, help: "internal: measure this K in this process and print JSON") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
    ])

  /// Runs the command; returns the exit code.
  public static func main(_ arguments: [String]) -> Int32 {
    runCommand(parser, arguments, flags: flagsOfSettings) { options in
      applyThreads(options)
      guard options.int("child") > 0 else { return try runAll(options) }
      let result = try measure(
        settings: settings(options, k: options.int("child"), batch: options.int("batch")),
        iterations: options.int("iters"), warmup: options.int("warmup"))
      print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
    }
  }

  /// The flag of each setting the options set, for range errors.
  static let flagsOfSettings: [String: String] = [
    "network.partialChannels": "--K", "batchSize": "--batch", "network.layers": "--layers",
    "network.initChannels": "--init-channels",
  ]

  /// The search's settings for one measurement: the defaults of `search-cifar` but for K, the
  /// batch, the network size and the order of the architecture step.
  static func settings(_ options: ParsedOptions, k: Int, batch: Int) -> SearchSettings {
    var s = SearchSettings()
    s.network.partialChannels = k
    s.network.layers = options.int("layers")
    s.network.initChannels = options.int("init-channels")
    s.batchSize = batch
    s.architect.unrolled = options.flag("unrolled")
    s.network.channelSampling = ChannelSampling(rawValue: options.string("channel-sampling")) ?? .shuffle
    s.seed = 0
    return s
  }

  private static func runAll(_ options: ParsedOptions) throws {
    let batch = options.int("batch")
    // Every K's settings are checked before the first measurement starts.
    for k in options.intList("K") {
      let s = settings(options, k: k, batch: batch)
      try s.validate()
      try checkMemory(s, batchFlag: "--batch")
    }
    let json = options.string("json")
    if !json.isEmpty {
      let folder = URL(fileURLWithPath: json).deletingLastPathComponent().path
      guard isDirectoryPath(folder), access(folder, W_OK) == 0 else {
        throw CommandFailure(
          message: "--json \(json): the folder \(folder) does not exist or is not writable", exitCode: 2)
      }
    }
    var results: [BenchResult] = []
    print(
      "bench: \(options.int("layers")) cells, \(options.int("init-channels")) initial channels, batch \(batch), "
        + "\(options.flag("unrolled") ? "second" : "first")-order, \(options.int("iters")) timed iterations after \(options.int("warmup")) warm-up, "
        + "\(Engine.threadCount) threads")
    for k in options.intList("K") {
      let result = try child(options, k: k, batch: batch)
      results.append(result)
      print(
        String(
          format: "  K=%d  %.2f s/iter  %.1f img/s  peak RSS %@", k, result.secondsPerIteration,
          result.imagesPerSecond, formatBytes(result.peakRSSBytes)))
    }
    print(table(results))
    let budget = options.double("budget-gb")
    if budget > 0 {
      print("")
      print(try budgetReport(options, results: results, budgetBytes: budget * 1_073_741_824))
    }
    if !options.string("json").isEmpty {
      let encoder = JSONEncoder()
      encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
      try writeAtomically(encoder.encode(results), to: URL(fileURLWithPath: options.string("json")))
      print("wrote \(options.string("json"))")
    }
  }

  /// Runs one K in a fresh process and parses its JSON line.
  static func child(_ options: ParsedOptions, k: Int, batch: Int) throws -> BenchResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
    if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
      process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    }
    process.arguments =
      [
        "--child", String(k), "--batch", String(batch), "--layers", String(options.int("layers")),
        "--init-channels", String(options.int("init-channels")), "--iters", String(options.int("iters")),
        "--warmup", String(options.int("warmup")), "--threads", String(Engine.threadCount),
        "--channel-sampling", options.string("channel-sampling"),
      ] + (options.flag("unrolled") ? ["--unrolled"] : [])
    let pipe = Pipe()
    process.standardOutput = pipe
    try process.run()
    let output = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0,
      let line = String(decoding: output, as: UTF8.self).split(separator: "\n").last,
      let result = try? JSONDecoder().decode(BenchResult.self, from: Data(line.utf8))
    else {
      guard process.terminationReason == .uncaughtSignal else {
        throw CommandFailure(
          message: "the measurement of K = \(k) at batch \(batch) failed (exit \(process.terminationStatus))",
          exitCode: 1)
      }
      // The largest peak RSS of the children waited for so far: this one's, when it used the most.
      var usage = rusage()
      getrusage(RUSAGE_CHILDREN.rawValue, &usage)
      let signal = process.terminationStatus
      let name = signal == SIGKILL ? "SIGKILL (the kernel's out-of-memory killer, most likely)" : "signal \(signal)"
      throw CommandFailure(
        message: "the measurement of K = \(k) at batch \(batch) was killed by \(name); the largest measurement so far "
          + "used \(formatBytes(Int(usage.ru_maxrss) * 1024)): lower --batch or raise K",
        exitCode: 1)
    }
    return result
  }

  /// One measurement, in this process: `warmup` untimed iterations, then `iterations` timed ones
  /// of the search's iteration on two fixed random batches.
  static func measure(settings: SearchSettings, iterations: Int, warmup: Int) throws -> BenchResult {
    let search = try SearchIteration(settings: settings)
    let (batch, config) = (settings.batchSize, settings.network)
    var rng = SeededGenerator(seed: settings.seed &+ 1)
    func randomBatch() -> LabeledBatch {
      LabeledBatch(
        images: Tensor.randomNormal([batch, config.inputChannels, 32, 32], using: &rng),
        labels: (0..<batch).map { _ in Int32(rng.nextInt(below: config.classes)) })
    }
    let (train, valid) = (randomBatch(), randomBatch())
    var seconds: [Double] = [], forward: [Double] = [], backward: [Double] = []
    var memory: MemoryMeasurement?
    for iteration in 0..<(warmup + iterations) {
      let timed = iteration >= warmup
      if timed && iteration == warmup { memory = MemoryMeasurement() }
      let start = Date()
      let result = try search.run(train: train, valid: valid, epoch: 0, step: iteration + 1)
      if timed {
        seconds.append(Date().timeIntervalSince(start))
        forward.append(result.forwardSeconds * 1000)
        backward.append(result.backwardSeconds * 1000)
      }
    }
    let (peak, resident) = (memory?.peakBytes ?? 0, memory?.startBytes ?? 0)
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    let perIteration = median(seconds)
    return BenchResult(
      K: config.partialChannels, batch: batch, layers: config.layers, initChannels: config.initChannels,
      secondsPerIteration: perIteration, imagesPerSecond: Double(batch) / perIteration,
      forwardMilliseconds: median(forward), backwardMilliseconds: median(backward),
      peakTensorBytes: peak, peakActivationBytes: peak - resident,
      peakRSSBytes: Int(usage.ru_maxrss) * 1024)
  }

  static func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
  }

  /// The results with each figure's ratio to the first K (K = 1 when measured).
  public static func table(_ results: [BenchResult]) -> String {
    guard let base = results.first(where: { $0.K == 1 }) ?? results.first else { return "" }
    var lines = [
      String(
        format: "%-4@ %12@ %12@ %10@ %10@ %14@ %14@ %12@", "K" as NSString, "s/iter" as NSString,
        "images/s" as NSString, "fwd ms" as NSString, "bwd ms" as NSString,
        "peak tensors" as NSString, "peak activ." as NSString, "peak RSS" as NSString)
    ]
    func cell(_ v: String, _ r: Double) -> String { String(format: "%@ (%.2f×)", v, r) }
    for r in results {
      lines.append(
        String(
          format: "%-4d %12@ %12@ %10.0f %10.0f %14@ %14@ %12@", r.K,
          String(format: "%.2f", r.secondsPerIteration) as NSString,
          String(format: "%.1f", r.imagesPerSecond) as NSString, r.forwardMilliseconds, r.backwardMilliseconds,
          formatBytes(r.peakTensorBytes) as NSString, formatBytes(r.peakActivationBytes) as NSString,
          formatBytes(r.peakRSSBytes) as NSString))
    }
    lines.append("")
    lines.append("ratios to K=\(base.K): images/s, peak tensors, peak activations, peak RSS")
    for r in results {
      lines.append(
        String(
          format: "K=%-3d %6.2f× %6.2f× %6.2f× %6.2f×", r.K, r.imagesPerSecond / base.imagesPerSecond,
          Double(r.peakTensorBytes) / Double(base.peakTensorBytes),
          Double(r.peakActivationBytes) / Double(base.peakActivationBytes),
          Double(r.peakRSSBytes) / Double(base.peakRSSBytes)))
    }
    return lines.joined(separator: "\n")
  }

  /// Per K: peak RSS is modelled as fixed + perImage · batch from the measured batch and half of
  /// it, checked against a third measurement at a quarter, and solved for the budget.
  static func budgetReport(_ options: ParsedOptions, results: [BenchResult], budgetBytes: Double) throws -> String {
    var lines = [
      String(
        format: "largest batch under %.2f GiB of peak RSS (linear model from batches B and B/2, checked at B/4):",
        budgetBytes / 1_073_741_824)
    ]
    for r in results {
      let half = max(1, r.batch / 2), quarter = max(1, r.batch / 4)
      let h = try child(options, k: r.K, batch: half)
      let q = try child(options, k: r.K, batch: quarter)
      let slope = Double(r.peakRSSBytes - h.peakRSSBytes) / Double(max(r.batch - half, 1))
      let fixed = Double(r.peakRSSBytes) - slope * Double(r.batch)
      let predicted = fixed + slope * Double(quarter)
      let error = (predicted - Double(q.peakRSSBytes)) / Double(q.peakRSSBytes)
      let largest = slope > 0 ? Int((budgetBytes - fixed) / slope) : Int.max
      lines.append(
        String(
          format: "  K=%d  batch %@  (%@ + %@/image; model error at batch %d: %+.1f%%)", r.K,
          largest > 0 ? String(largest) : "none", formatBytes(Int(fixed)), formatBytes(Int(slope)),
          quarter, error * 100))
    }
    return lines.joined(separator: "\n")
  }
}
