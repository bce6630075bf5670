// The `bench` command: memory and throughput of one search iteration per K, each K in a fresh
// child process (the same executable, re-run with a hidden --child flag) so that one K's memory
// cannot hide in another's peak RSS.
//
// One iteration is the search's own (SearchIteration.run): an architecture step on one batch
// (first order, or second order with --unrolled) and a weight step on another, with the search's
// default settings (SearchSettings) but for K, the batch and the network size, on random data.
// With --train, one training step of a genotype's evaluation network instead (TrainingIteration.run,
// what train-cifar runs), with train-cifar's defaults: C = 36, 20 cells, batch 96, auxiliary head.
//
// Under mpirun the ranks measure the data-parallel step instead, in their own processes (an MPI
// process does not start children): each rank takes its rows of the batch, and the figures add
// the all-reduce's calls, bytes and time per step.

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
  /// The tensor bytes alive at the peak, by what allocated them (``MemoryStats/attributing(to:_:)``:
  /// the stem, preprocessing, each candidate operation, node sums, cell outputs, the backward
  /// pass, and the rest: weights, gradients, optimizer state, data); they add up to
  /// ``peakTensorBytes``. `nil` from results written before it existed.
  public var peakTensorBreakdown: [String: Int]?
  /// With `--train`: the genotype whose evaluation network was measured (`K` is then 0).
  public var genotype: String?
  /// Under MPI: the ranks sharing the batch (the figures above are rank 0's, images/s the job's).
  public var ranks: Int?
  /// Under MPI, per step: all-reduce and broadcast calls, the bytes each rank sent into them,
  /// and the wall time spent in them (waiting for the slowest rank included).
  public var collectiveCalls: Double?, collectiveBytes: Double?, collectiveMilliseconds: Double?
  /// Per timed iteration, what the engine's ops computed and moved (``OperationCounts``: FLOPs,
  /// and bytes read and written, in all and per op); `nil` from results written before they were
  /// counted.
  public var operationsPerIteration: OperationCounts?
  /// With `--roofline`: this machine's sgemm peak and memory bandwidth, measured in the same run.
  public var machinePeaks: MachinePeaks?
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
      .int("batch", default: 64, help: "images per batch (96 with --train)"),
      .int("layers", default: 8, help: "cells in the super-net (20 with --train)"),
      .int("init-channels", default: 16, help: "channels of the first cells (36 with --train)"),
      settingOption("the search network with the ImageNet stem and 1000 classes, on random --image-size images"),
      .flag("train", help: "measure a training step of a genotype's evaluation network (train-cifar) instead"),
      .string("genotype", default: "PC_DARTS_cifar", help: "with --train: the genotype (as train-cifar --genotype)"),
      .double(
        "drop-path-prob", default: 0.15,
        help: "with --train: the step's drop-path probability (0.15: half-way through the paper's ramp to 0.3)"
      ) { (0..<1).contains($0) ? nil : "expected a value in [0, 1)" },
      .double("auxiliary-weight", default: 0.4, help: "with --train: the auxiliary loss's weight (0: no head)") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
      .int("iters", default: 3, help: "timed iterations per K") { $0 >= 1 ? nil : "expected a value ≥ 1" },
      .int("warmup", default: 1, help: "untimed iterations before timing") { $0 >= 0 ? nil : "expected a value ≥ 0" },
      .flag("unrolled", help: "second-order architecture step"),
      .string("channel-sampling", default: "shuffle", help: "shuffle (the paper) or random channel sampling") {
        ChannelSampling(rawValue: $0) == nil ? "expected shuffle or random" : nil
      },
      threadsOption, recomputeOption,
      .flag("sync-bn", help: "under MPI: synchronised batch norms (each a few more all-reduce calls per layer)"),
      .string("json", default: "", help: "also write the results as a JSON array to this path"),
      .flag(
        "roofline",
        help: "also measure this machine's sgemm peak and memory bandwidth first, and place each step against them"),
      .double(
        "budget-gb", default: 0, help: "also report the largest batch whose peak RSS fits in this many GiB (0 = skip)"
      ) {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
      .string(
        "decode", default: "",
        help:
          "measure decoding instead: batches of --batch images of the folder PATH (PATH/train/<class>/… or "
          + "PATH/<class>/…) with the ImageNet setting's training transform at --image-size, on every core"),
      .int("image-size", default: 224, help: "with --decode or --setting imagenet: the image side") {
        (1...4096).contains($0) ? nil : "expected 1 to 4096"
      },
      .int("child", default: 0, help: "internal: measure this K in this process and print JSON") {
        $0 >= 0 ? nil : "expected a value ≥ 0"
      },
    ])

  /// Runs the command; returns the exit code.
  public static func main(_ arguments: [String]) -> Int32 {
    let flags = arguments.contains("--train") ? flagsOfTrainingSettings : flagsOfSettings
    return runCommand(parser, arguments, flags: flags) { options in
      applyThreads(options)
      if options.flag("roofline") && (!options.string("decode").isEmpty || Launch.current.isDistributed) {
        throw CommandFailure(
          message: "--roofline places one process's step against this machine's roofs: run it without --decode "
            + "and without mpirun",
          exitCode: 2)
      }
      if !options.string("decode").isEmpty { return try runDecode(options) }
      if Launch.current.isDistributed { return try runDistributed(options) }
      if options.flag("train") { return try runTraining(options) }
      guard options.int("child") > 0 else { return try runAll(options) }
      let childSettings = settings(options, k: options.int("child"), batch: options.int("batch"))
      applyRecomputation(options, imageNetStem: isImageNetSetting(options))
      let result = try measure(
        settings: childSettings,
        imageSide: imageSide(options), iterations: options.int("iters"), warmup: options.int("warmup"))
      print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
    }
  }

  /// The flag of each search setting the options set, for range errors.
  static let flagsOfSettings: [String: String] = [
    "network.partialChannels": "--K", "batchSize": "--batch", "network.layers": "--layers",
    "network.initChannels": "--init-channels",
  ]

  /// The flag of each training setting the options set with `--train`, for range errors.
  static let flagsOfTrainingSettings: [String: String] = [
    "batchSize": "--batch", "network.layers": "--layers", "network.initChannels": "--init-channels",
    "auxiliaryWeight": "--auxiliary-weight", "dropPathProbability": "--drop-path-prob",
  ]

  /// The side of the measured images: 32, or `--image-size` with `--setting imagenet`.
  static func imageSide(_ options: ParsedOptions) -> Int {
    isImageNetSetting(options) ? options.int("image-size") : ImageDataset.cifarSide
  }

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
    s.syncBatchNorm = options.flag("sync-bn")
    s.seed = 0
    if isImageNetSetting(options) {
      (s.network.stem, s.network.classes) = (.imagenet, 1000)
    }
    return s
  }

  // MARK: - Decoding (--decode)

  /// `--decode PATH`: how fast the loader makes training batches of an image folder decoded per
  /// batch (RandomResizedCrop and flip of each file, normalised), to set beside a step's images/s.
  private static func runDecode(_ options: ParsedOptions) throws {
    var folder = ImageFolderOptions(
      imageSize: options.int("image-size"), mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
    folder.decodePerBatch = true
    let data = try loadCommandData(.folder, from: options.string("decode"), train: true, folder: folder)
    let batch = min(options.int("batch"), data.count)
    let loader = BatchLoader(dataset: data, batchSize: batch, augment: true, seed: 0, prefetch: false)
    for _ in 0..<options.int("warmup") { _ = loader.nextCycling() }
    var (images, seconds) = (0, 0.0)
    for _ in 0..<options.int("iters") {
      let start = Date()
      let made = loader.nextCycling()
      seconds += Date().timeIntervalSince(start)
      images += made.count
    }
    print(
      String(
        format:
          "decode: %d batches of %d images from %@ at %d × %d, %d decoding threads: %.1f images/s (%.1f ms per image)",
        options.int("iters"), batch, options.string("decode"), data.height, data.width,
        ProcessInfo.processInfo.activeProcessorCount, Double(images) / seconds, 1000 * seconds / Double(images)))
  }

  // MARK: - The training step (--train)

  /// train-cifar's settings for one measurement: its defaults (the paper's evaluation) but for
  /// the sizes given, the auxiliary weight (0: no head) and a fixed drop-path probability.
  static func trainingSettings(_ options: ParsedOptions) -> TrainingSettings {
    var s = TrainingSettings()
    let imageNet = isImageNetSetting(options)
    if imageNet {  // train_imagenet.py's network and loss (its batch of 1024 is left to --batch)
      (s.network.stem, s.network.classes, s.network.initChannels, s.network.layers) = (.imagenet, 1000, 48, 14)
      s.labelSmoothing = 0.1
    }
    func given(_ name: String, else fallback: Int) -> Int { options.isSet(name) ? options.int(name) : fallback }
    s.batchSize = given("batch", else: s.batchSize)
    s.network.layers = given("layers", else: s.network.layers)
    s.network.initChannels = given("init-channels", else: s.network.initChannels)
    s.auxiliaryWeight = Float(options.double("auxiliary-weight"))
    s.network.auxiliary = s.auxiliaryWeight > 0
    s.dropPathProbability = Float(options.double("drop-path-prob"))
    s.syncBatchNorm = options.flag("sync-bn")
    return s
  }

  /// `--train`: the parent checks everything and runs one child; the child (`--child 1`) measures.
  private static func runTraining(_ options: ParsedOptions) throws {
    applyRecomputation(options, imageNetStem: isImageNetSetting(options))
    let settings = trainingSettings(options)
    try settings.validate()
    try settings.checkBatches(images: settings.batchSize, ranks: 1)
    let (genotype, _) = try Genotype.resolve(options.string("genotype"))
    try genotype.validate()
    if options.int("child") > 0 {
      let result = try measureTraining(
        settings: settings, genotype: genotype, imageSide: imageSide(options), iterations: options.int("iters"),
        warmup: options.int("warmup"))
      print(String(decoding: try JSONEncoder().encode(result), as: UTF8.self))
      return
    }
    try checkJSONPath(options)
    print(
      "bench --train: \(options.string("genotype")), "
        + (isImageNetSetting(options) ? "NetworkImageNet at \(imageSide(options)) × \(imageSide(options)), " : "")
        + "\(settings.network.layers) cells, \(settings.network.initChannels) "
        + "initial channels, batch \(settings.batchSize), auxiliary \(settings.network.auxiliary ? "\(settings.auxiliaryWeight)" : "off"), "
        + "drop-path \(settings.dropPathProbability), \(options.int("iters")) timed steps after \(options.int("warmup")) warm-up, "
        + "\(Engine.threadCount) threads, OpenBLAS core \(Engine.blasCoreName)")
    let peaks = measurePeaks(options)
    var result = try child(
      options,
      arguments: [
        "--train", "--child", "1", "--genotype", options.string("genotype"), "--batch", String(settings.batchSize),
        "--layers", String(settings.network.layers), "--init-channels", String(settings.network.initChannels),
        "--auxiliary-weight", String(options.double("auxiliary-weight")),
        "--setting", options.string("setting"), "--image-size", String(options.int("image-size")),
        "--recompute-depthwise", options.string("recompute-depthwise"),
        "--drop-path-prob", String(options.double("drop-path-prob")),
      ], what: "the training step at batch \(settings.batchSize)", remedy: "lower --batch or --init-channels")
    print(
      String(
        format:
          "  %.2f s/step  %.1f img/s  fwd %.0f ms  bwd %.0f ms  peak tensors %@  peak activations %@  peak RSS %@",
        result.secondsPerIteration, result.imagesPerSecond, result.forwardMilliseconds, result.backwardMilliseconds,
        formatBytes(result.peakTensorBytes), formatBytes(result.peakActivationBytes), formatBytes(result.peakRSSBytes)))
    if let peaks {
      result.machinePeaks = peaks
      print(rooflineTable([result], peaks: peaks))
    }
    try writeJSON([result], options)
  }

  /// One measurement of the training step, in this process: `warmup` untimed steps, then
  /// `iterations` timed ones on a fixed random batch (drop-path masks drawn per step).
  static func measureTraining(
    settings: TrainingSettings, genotype: Genotype, imageSide: Int = ImageDataset.cifarSide, iterations: Int,
    warmup: Int, dataParallel: DataParallel = DataParallel()
  ) throws -> BenchResult {
    let training = try TrainingIteration(settings: settings, genotype: genotype, dataParallel: dataParallel)
    training.network.dropPathProbability = settings.dropPathProbability
    let config = settings.network
    var rng = SeededGenerator(seed: settings.seed &+ 1)
    let batch = LabeledBatch(
      images: Tensor.randomNormal([settings.batchSize, config.inputChannels, imageSide, imageSide], using: &rng),
      labels: (0..<settings.batchSize).map { _ in Int32(rng.nextInt(below: config.classes)) }
    ).rows(of: dataParallel.shard(of: settings.batchSize))
    return try timed(iterations: iterations, warmup: warmup, dataParallel: dataParallel) { step in
      try training.run(batch, epoch: 0, step: step)
    }.result(
      k: 0, batch: settings.batchSize, layers: config.layers, initChannels: config.initChannels,
      genotype: genotype.pythonDescription)
  }

  /// The medians and memory of `warmup` untimed and `iterations` timed calls of `step` (given
  /// its 1-based number).
  private static func timed(
    iterations: Int, warmup: Int, dataParallel: DataParallel, _ step: (Int) throws -> IterationResult
  ) rethrows -> Timings {
    var timings = Timings()
    var counts = OperationCounts()
    var memory: MemoryMeasurement?
    var traffic = dataParallel.traffic
    for iteration in 0..<(warmup + iterations) {
      let timed = iteration >= warmup
      if timed && iteration == warmup { (memory, traffic) = (MemoryMeasurement(breakdown: true), dataParallel.traffic) }
      let start = Date()
      let (result, stepCounts) = try OperationCounter.counting { try step(iteration + 1) }
      if timed {
        counts = counts + stepCounts
        timings.seconds.append(Date().timeIntervalSince(start))
        timings.forward.append(result.forwardSeconds * 1000)
        timings.backward.append(result.backwardSeconds * 1000)
      }
    }
    (timings.peak, timings.resident) = (memory?.peakBytes ?? 0, memory?.startBytes ?? 0)
    timings.counts = counts.divided(by: Double(max(iterations, 1)))
    timings.breakdown = Dictionary(uniqueKeysWithValues: (memory?.peakBreakdown ?? []).map { ($0.name, $0.bytes) })
    if dataParallel.isDistributed {
      let (after, n) = (dataParallel.traffic, Double(iterations))
      timings.collectives = (
        dataParallel.size, Double(after.calls - traffic.calls) / n, Double(after.bytes - traffic.bytes) / n,
        (after.seconds - traffic.seconds) / n * 1000
      )
    }
    return timings
  }

  /// What ``timed(iterations:warmup:_:)`` collected.
  private struct Timings {
    var seconds: [Double] = [], forward: [Double] = [], backward: [Double] = []
    var peak = 0, resident = 0
    /// Per timed iteration (the mean; every iteration does the same work).
    var counts = OperationCounts()
    /// The tensor bytes at the peak by what allocated them (MemoryMeasurement.peakBreakdown).
    var breakdown: [String: Int] = [:]
    /// Under MPI: the ranks, and per step the collective calls, bytes and milliseconds.
    var collectives: (ranks: Int, calls: Double, bytes: Double, milliseconds: Double)?

    /// The figures as a result (peak RSS read now, at the end of the measurement).
    func result(k: Int, batch: Int, layers: Int, initChannels: Int, genotype: String? = nil) -> BenchResult {
      var usage = rusage()
      getrusage(RUSAGE_SELF.rawValue, &usage)
      let perIteration = median(seconds)
      return BenchResult(
        K: k, batch: batch, layers: layers, initChannels: initChannels, secondsPerIteration: perIteration,
        imagesPerSecond: Double(batch) / perIteration, forwardMilliseconds: median(forward),
        backwardMilliseconds: median(backward), peakTensorBytes: peak, peakActivationBytes: peak - resident,
        peakRSSBytes: Int(usage.ru_maxrss) * 1024, peakTensorBreakdown: breakdown, genotype: genotype,
        ranks: collectives?.ranks,
        collectiveCalls: collectives?.calls, collectiveBytes: collectives?.bytes,
        collectiveMilliseconds: collectives?.milliseconds, operationsPerIteration: counts)
    }
  }

  /// Fails before any measurement when `--json`'s folder does not exist or is not writable.
  private static func checkJSONPath(_ options: ParsedOptions) throws {
    let json = options.string("json")
    guard !json.isEmpty else { return }
    let folder = URL(fileURLWithPath: json).deletingLastPathComponent().path
    guard isDirectoryPath(folder), access(folder, W_OK) == 0 else {
      throw CommandFailure(
        message: "--json \(json): the folder \(folder) does not exist or is not writable", exitCode: 2)
    }
  }

  /// Writes `results` to `--json`, when given, atomically.
  private static func writeJSON(_ results: [BenchResult], _ options: ParsedOptions) throws {
    guard !options.string("json").isEmpty else { return }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    try writeAtomically(encoder.encode(results), to: URL(fileURLWithPath: options.string("json")))
    print("wrote \(options.string("json"))")
  }

  // MARK: - Under MPI

  /// Under mpirun: every rank measures the data-parallel step in its own process, for each K (or
  /// the training step with `--train`); rank 0 prints. The peak figures are rank 0's, and a K's
  /// memory may hide in an earlier K's peak RSS (no fresh process per K here).
  private static func runDistributed(_ options: ParsedOptions) throws {
    let launch = Launch.current
    let (iterations, warmup) = (options.int("iters"), options.int("warmup"))
    var results: [BenchResult] = []
    if options.flag("train") {
      let (settings, genotype) = try launch.together { () throws -> (TrainingSettings, Genotype) in
        let settings = trainingSettings(options)
        try settings.validate()
        try checkJSONPath(options)
        let (genotype, _) = try Genotype.resolve(options.string("genotype"))
        try genotype.validate()
        try settings.checkBatches(images: settings.batchSize, ranks: launch.group.size)
        return (settings, genotype)
      }
      print(
        "bench --train under MPI: \(launch.group.size) ranks × \(Engine.threadCount) threads (OpenBLAS core \(Engine.blasCoreName))\(syncNote(options)), \(options.string("genotype")), "
          + "\(settings.network.layers) cells, \(settings.network.initChannels) initial channels, global batch \(settings.batchSize)"
      )
      results.append(
        try measureTraining(
          settings: settings, genotype: genotype, imageSide: imageSide(options), iterations: iterations, warmup: warmup,
          dataParallel: DataParallel(group: launch.group)))
    } else {
      let batch = options.int("batch")
      try launch.together {
        for k in options.intList("K") { try settings(options, k: k, batch: batch).validate() }
        try checkJSONPath(options)
        try checkShards(images: batch, batchSize: batch, ranks: launch.group.size, "images")
      }
      print(
        "bench under MPI: \(launch.group.size) ranks × \(Engine.threadCount) threads (OpenBLAS core \(Engine.blasCoreName))\(syncNote(options)), \(options.int("layers")) cells, "
          + "\(options.int("init-channels")) initial channels, global batch \(batch), "
          + "\(options.flag("unrolled") ? "second" : "first")-order")
      applyRecomputation(options, imageNetStem: isImageNetSetting(options))
      for k in options.intList("K") {
        results.append(
          try measure(
            settings: settings(options, k: k, batch: batch), imageSide: imageSide(options), iterations: iterations,
            warmup: warmup, dataParallel: DataParallel(group: launch.group)))
      }
    }
    for r in results {
      print(
        String(
          format: "  %@  %.3f s/step  %.1f img/s  all-reduce: %.1f calls, %@, %.1f ms per step  peak RSS (rank 0) %@",
          (r.genotype == nil ? "K=\(r.K)" : "train") as NSString, r.secondsPerIteration, r.imagesPerSecond,
          r.collectiveCalls ?? 0, formatBytes(Int(r.collectiveBytes ?? 0)) as NSString, r.collectiveMilliseconds ?? 0,
          formatBytes(r.peakRSSBytes) as NSString))
    }
    if launch.isFirstRank { try writeJSON(results, options) }
  }

  private static func syncNote(_ options: ParsedOptions) -> String {
    options.flag("sync-bn") ? ", synchronised batch norms" : ""
  }

  // MARK: - The search iteration

  private static func runAll(_ options: ParsedOptions) throws {
    let batch = options.int("batch")
    // Every K's settings are checked before the first measurement starts.
    applyRecomputation(options, imageNetStem: isImageNetSetting(options))
    for k in options.intList("K") {
      let s = settings(options, k: k, batch: batch)
      try s.validate()
      try checkMemory(s, batchFlag: "--batch", imageSide: imageSide(options))
    }
    try checkJSONPath(options)
    var results: [BenchResult] = []
    print(
      "bench: \(options.int("layers")) cells, \(options.int("init-channels")) initial channels, batch \(batch), "
        + (isImageNetSetting(options)
          ? "ImageNet stem at \(imageSide(options)) × \(imageSide(options)), 1000 classes, " : "")
        + "\(options.flag("unrolled") ? "second" : "first")-order, \(options.int("iters")) timed iterations after \(options.int("warmup")) warm-up, "
        + "\(Engine.threadCount) threads, OpenBLAS core \(Engine.blasCoreName)")
    let peaks = measurePeaks(options)
    for k in options.intList("K") {
      var result = try child(options, k: k, batch: batch)
      result.machinePeaks = peaks
      results.append(result)
      print(
        String(
          format: "  K=%d  %.2f s/iter  %.1f img/s  peak RSS %@", k, result.secondsPerIteration,
          result.imagesPerSecond, formatBytes(result.peakRSSBytes)))
    }
    print(table(results))
    print("")
    print(peakBreakdownTable(results))
    if let peaks {
      print("")
      print(rooflineTable(results, peaks: peaks))
    }
    let budget = options.double("budget-gb")
    if budget > 0 {
      print("")
      print(try budgetReport(options, results: results, budgetBytes: budget * 1_073_741_824))
    }
    try writeJSON(results, options)
  }

  /// Runs one K in a fresh process and parses its JSON line.
  static func child(_ options: ParsedOptions, k: Int, batch: Int) throws -> BenchResult {
    try child(
      options,
      arguments: [
        "--child", String(k), "--batch", String(batch), "--layers", String(options.int("layers")),
        "--setting", options.string("setting"), "--image-size", String(options.int("image-size")),
        "--recompute-depthwise", options.string("recompute-depthwise"),
        "--init-channels", String(options.int("init-channels")),
        "--channel-sampling", options.string("channel-sampling"),
      ] + (options.flag("unrolled") ? ["--unrolled"] : []),
      what: "the measurement of K = \(k) at batch \(batch)", remedy: "lower --batch or raise K")
  }

  /// Runs this executable with `arguments` (and the timing and thread options) in a fresh
  /// process and parses the JSON line it prints; `what` names the measurement in errors and
  /// `remedy` says what to change when it runs out of memory.
  static func child(_ options: ParsedOptions, arguments: [String], what: String, remedy: String) throws -> BenchResult {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
    if !FileManager.default.isExecutableFile(atPath: process.executableURL!.path) {
      process.executableURL = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
    }
    process.arguments =
      arguments + [
        "--iters", String(options.int("iters")), "--warmup", String(options.int("warmup")),
        "--threads", String(Engine.threadCount),
      ]
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
        throw CommandFailure(message: "\(what) failed (exit \(process.terminationStatus))", exitCode: 1)
      }
      // The largest peak RSS of the children waited for so far: this one's, when it used the most.
      var usage = rusage()
      getrusage(RUSAGE_CHILDREN.rawValue, &usage)
      let signal = process.terminationStatus
      let name = signal == SIGKILL ? "SIGKILL (the kernel's out-of-memory killer, most likely)" : "signal \(signal)"
      throw CommandFailure(
        message: "\(what) was killed by \(name); the largest measurement so far "
          + "used \(formatBytes(Int(usage.ru_maxrss) * 1024)): \(remedy)",
        exitCode: 1)
    }
    return result
  }

  /// One measurement, in this process: `warmup` untimed iterations, then `iterations` timed ones
  /// of the search's iteration on two fixed random batches.
  static func measure(
    settings: SearchSettings, imageSide: Int = ImageDataset.cifarSide, iterations: Int, warmup: Int,
    dataParallel: DataParallel = DataParallel()
  ) throws -> BenchResult {
    let search = try SearchIteration(settings: settings, dataParallel: dataParallel)
    let (batch, config) = (settings.batchSize, settings.network)
    var rng = SeededGenerator(seed: settings.seed &+ 1)
    func randomBatch() -> LabeledBatch {
      LabeledBatch(
        images: Tensor.randomNormal([batch, config.inputChannels, imageSide, imageSide], using: &rng),
        labels: (0..<batch).map { _ in Int32(rng.nextInt(below: config.classes)) }
      ).rows(of: dataParallel.shard(of: batch))
    }
    let (train, valid) = (randomBatch(), randomBatch())
    return try timed(iterations: iterations, warmup: warmup, dataParallel: dataParallel) { step in
      try search.run(train: train, valid: valid, epoch: 0, step: step)
    }.result(k: config.partialChannels, batch: batch, layers: config.layers, initChannels: config.initChannels)
  }

  /// With `--roofline`: the machine's roofs, measured now (before the steps, in this process, on
  /// the engine's threads), and printed.
  private static func measurePeaks(_ options: ParsedOptions) -> MachinePeaks? {
    guard options.flag("roofline") else { return nil }
    let peaks = MachinePeaks.measure()
    print(
      String(
        format: "  machine: sgemm %.1f GFLOP/s, memory %.1f GB/s (%d threads; ridge at %.1f FLOP/byte)",
        peaks.matrixProductFLOPS / 1e9, peaks.memoryBytesPerSecond / 1e9, Engine.threadCount, peaks.ridgeIntensity))
    return peaks
  }

  /// Per result: the iteration's FLOPs and bytes (``OperationCounts``), their rates over the
  /// measured time as fractions of the machine's sgemm peak and memory bandwidth, and how far the
  /// iteration is from the time the roofline model allows; then the `top` ops that move the most
  /// bytes, with their shares of the bytes and of the FLOPs.
  public static func rooflineTable(_ results: [BenchResult], peaks: MachinePeaks, top: Int = 8) -> String {
    var lines = [
      String(
        format: "roofline (sgemm peak %.1f GFLOP/s, bandwidth %.1f GB/s):", peaks.matrixProductFLOPS / 1e9,
        peaks.memoryBytesPerSecond / 1e9),
      "  step   GFLOP/iter  GB/iter  FLOP/byte  GFLOP/s (of peak)  GB/s (of bandwidth)  roof s/iter  measured/roof",
    ]
    var byOperation: [String] = []
    for r in results {
      guard let counts = r.operationsPerIteration, r.secondsPerIteration > 0 else { continue }
      let name = r.genotype == nil ? "K=\(r.K)" : "train"
      let (rate, traffic) = (counts.flops / r.secondsPerIteration, counts.bytes / r.secondsPerIteration)
      let roof = peaks.roofSeconds(counts)
      lines.append(
        String(
          format: "  %-6@ %10.1f %8.1f %10.1f %8.1f (%4.1f%%) %10.1f (%4.1f%%) %12.2f %12.1f×", name as NSString,
          counts.flops / 1e9, counts.bytes / 1e9, counts.arithmeticIntensity, rate / 1e9,
          100 * rate / peaks.matrixProductFLOPS, traffic / 1e9, 100 * traffic / peaks.memoryBytesPerSecond, roof,
          r.secondsPerIteration / roof))
      let largest = counts.byOperation.sorted {
        $0.value.bytes != $1.value.bytes ? $0.value.bytes > $1.value.bytes : $0.key < $1.key
      }
      byOperation.append(
        "  \(name): "
          + largest.prefix(top).map { op, c in
            String(format: "%@ %.0f%% (%.0f%%)", op, 100 * c.bytes / counts.bytes, 100 * c.flops / max(counts.flops, 1))
          }.joined(separator: ", "))
    }
    lines.append("bytes moved by op, largest first: share of the bytes (share of the FLOPs):")
    return (lines + byOperation).joined(separator: "\n")
  }

  static func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s.count % 2 == 1 ? s[s.count / 2] : (s[s.count / 2 - 1] + s[s.count / 2]) / 2
  }

  /// The results with each figure's ratio to the first K (K = 1 when measured).
  /// What the tensor bytes at each K's peak were allocated by, largest first: the `top` largest
  /// attributions with their share of the peak, the rest summed.
  public static func peakBreakdownTable(_ results: [BenchResult], top: Int = 8) -> String {
    var lines = ["what the peak tensor bytes were allocated by (MemoryStats attributions):"]
    for r in results {
      guard let parts = r.peakTensorBreakdown, !parts.isEmpty else { continue }
      let sorted = parts.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
      let total = Double(max(r.peakTensorBytes, 1))
      var shown = sorted.prefix(top).map { name, bytes in
        String(format: "%@ %@ (%.0f%%)", name, formatBytes(bytes), 100 * Double(bytes) / total)
      }
      let rest = sorted.dropFirst(top).reduce(0) { $0 + $1.value }
      if rest != 0 { shown.append("the rest \(formatBytes(rest))") }
      lines.append("  K=\(r.K) (\(formatBytes(r.peakTensorBytes))): " + shown.joined(separator: ", "))
    }
    return lines.joined(separator: "\n")
  }

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
