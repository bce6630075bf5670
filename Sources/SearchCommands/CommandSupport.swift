// What the commands share: the progress bar, the mapping of errors to messages and exit codes,
// the run folder's start (resume, overwrite, an earlier run's outputs), the data, the messages
// of an interrupted or diverged run, --threads, and byte formatting.

import Foundation
import PCDARTS
import TensorEngine

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
    let line = String(
      format: "epoch %d/%d [%@%@] %d/%d loss %.4f acc %.4f %.1f img/s ETA %d:%02d",
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
/// error is one `error:` line on stderr. Under MPI, rank 0 prints what every rank met, a rank
/// alone with an error prints it with its rank and ends the job (``Launch/finish(after:code:)``).
///
/// - Parameter flags: the flag of each setting path, to name the flag in a setting's range error.
func runCommand(
  _ parser: CommandLineParser, _ arguments: [String], flags: [String: String] = [:],
  _ body: (ParsedOptions) throws -> Void
) -> Int32 {
  let launch = Launch.current
  do {
    try body(try parser.parse(arguments))
    return launch.finish(after: nil, code: 0)
  } catch let shared as SharedFailure {
    guard let error = shared.error else { return launch.finish(after: shared, code: 1) }
    let (message, code) = messageAndExitCode(error, flags: flags)
    if shared.reportHere { printError(launch.isFirstRank ? message : "rank \(launch.rank): \(message)") }
    return launch.finish(after: shared, code: code)
  } catch {
    let (message, code) = messageAndExitCode(error, flags: flags)
    if case CommandLineError.helpRequested(let help) = error {
      print(help)
    } else if launch.isFirstRank {
      printError(message)
    } else if !launch.isShared(error) {
      printError("rank \(launch.rank): \(message)")
    }
    return launch.finish(after: error, code: code)
  }
}

/// The one-line message and the exit code of a command's error.
private func messageAndExitCode(_ error: Error, flags: [String: String]) -> (String, Int32) {
  switch error {
  case let error as CommandLineError:
    return ("\(error)", error.exitCode)
  case let failure as CommandFailure:
    return (failure.message, failure.exitCode)
  case SearchError.invalidSetting(let setting, let problem):
    return (flags[setting].map { "invalid \($0): \(problem)" } ?? "invalid setting \(setting): \(problem)", 2)
  case let error as SearchError:
    switch error {
    case .invalidConfiguration, .invalidGenotype: return ("\(error)", 2)
    default: return ("\(error)", 1)
    }
  default:
    return ("\(error)", 1)
  }
}

/// SIGINT and SIGTERM turned into a request to stop at the next step boundary, while the
/// instance lives; a second signal ends the process at once. The default handlers come back
/// when it is released.
final class StopSignals: @unchecked Sendable {
  private let lock = NSLock()
  private var first: Int32?
  private var sources: [DispatchSourceSignal] = []

  init() {
    for number in [SIGINT, SIGTERM] {
      signal(number, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
      source.setEventHandler { [weak self] in self?.receive(number) }
      source.resume()
      sources.append(source)
    }
  }

  deinit {
    for source in sources { source.cancel() }
    signal(SIGINT, SIG_DFL)
    signal(SIGTERM, SIG_DFL)
  }

  /// The first signal received, if any.
  var received: Int32? {
    lock.lock()
    defer { lock.unlock() }
    return first
  }

  private func receive(_ number: Int32) {
    lock.lock()
    let again = first != nil
    if first == nil { first = number }
    lock.unlock()
    if again {
      // Every file is written atomically, so stopping now leaves no half-written output.
      FileHandle.standardError.write(Data("\nerror: stopped by a second signal\n".utf8))
      _exit(128 + number)
    }
    FileHandle.standardError.write(Data("\nstopping after this step (a second signal stops at once)\n".utf8))
  }
}

/// Refuses settings whose estimated peak memory exceeds this machine's physical memory, before
/// anything is allocated (``NetworkConfig/estimatedPeakTensorBytes(batchSize:)``).
func checkMemory(_ settings: SearchSettings, batchFlag: String, imageSide: Int = ImageDataset.cifarSide) throws {
  let estimate = settings.network.estimatedPeakTensorBytes(batchSize: settings.batchSize, imageSide: imageSide)
  let physical = Double(sysconf(Int32(_SC_PHYS_PAGES))) * Double(sysconf(Int32(_SC_PAGESIZE)))
  guard physical > 0, estimate > physical else { return }
  func gib(_ bytes: Double) -> String { String(format: "%.1f GiB", bytes / 1_073_741_824) }
  throw CommandFailure(
    message: "this search would need about \(gib(estimate)) of memory (an estimate), more than the "
      + "\(gib(physical)) of this machine: lower \(batchFlag) (\(settings.batchSize)) or --init-channels "
      + "(\(settings.network.initChannels)), or raise --K (\(settings.network.partialChannels))",
    exitCode: 2)
}

/// A failure a command has already put into words, with its exit code.
struct CommandFailure: Error {
  /// The one-line message (without `error: `).
  var message: String
  /// 1 for a data, file or numerical failure, 2 for a usage or configuration error.
  var exitCode: Int32
  /// Whether every rank of an MPI job meets it at the same point (then each ends normally).
  var shared = false
}

/// `--dataset`, shared by the commands (read with ``datasetOptions(_:)``).
let datasetOption = OptionSpec.string(
  "dataset", default: "cifar10",
  help: "cifar10, cifar100, fashion-mnist, or folder (JPEG/PNG files, one folder per class)"
) {
  DatasetName(rawValue: $0) == nil ? "expected cifar10, cifar100, fashion-mnist or folder" : nil
}

/// The options of `--dataset folder`, shared by the commands (read with ``datasetOptions(_:)``).
let imageFolderOptions: [OptionSpec] = [
  .int(
    "image-size", default: ImageDataset.cifarSide,
    help: "--dataset folder: images resized and centre-cropped to this side"
  ) {
    (1...4096).contains($0) ? nil : "expected 1 to 4096"
  },
  .flag("skip-bad-images", help: "--dataset folder: leave out unreadable or non-image files, each listed as a warning"),
  .string("mean", default: "", help: "--dataset folder: per-channel mean R,G,B of pixels in [0, 1] (empty: computed)") {
    channelTriple($0, positive: false) == nil ? "expected three numbers R,G,B" : nil
  },
  .string("std", default: "", help: "--dataset folder: per-channel standard deviation R,G,B (empty: computed)") {
    channelTriple($0, positive: true) == nil ? "expected three positive numbers R,G,B" : nil
  },
]

/// `--setting`, shared by the commands: `cifar` (the default) or `imagenet`.
func settingOption(_ imageNetHelp: String) -> OptionSpec {
  .string(
    "setting", default: "cifar", help: "cifar or imagenet (" + imageNetHelp + "); flags given override its values"
  ) {
    ["cifar", "imagenet"].contains($0) ? nil : "expected cifar or imagenet"
  }
}

/// Whether `--setting imagenet` is chosen.
func isImageNetSetting(_ o: ParsedOptions) -> Bool { o.string("setting") == "imagenet" }

/// The folder options of `--setting imagenet`: decoded per batch at 224 (or `--image-size`),
/// normalised with ImageNet's constants (the official scripts) unless `--mean`/`--std` are given,
/// training batches colour-jittered with `colorJitter`.
/// - Throws: a usage failure for a dataset other than a folder.
func imageNetFolderOptions(
  _ o: ParsedOptions, dataset: DatasetName, folder: ImageFolderOptions, colorJitter: ColorJitter?
) throws -> ImageFolderOptions {
  guard dataset == .folder else {
    throw CommandFailure(
      message: "--setting imagenet reads a folder of images: pass --dataset folder --data PATH (PATH/train/<class>/…)",
      exitCode: 2)
  }
  var folder = folder
  folder.decodePerBatch = true
  folder.colorJitter = colorJitter
  if !o.isSet("image-size") { folder.imageSize = 224 }
  if folder.mean == nil { (folder.mean, folder.std) = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]) }
  return folder
}

/// Three comma-separated numbers (empty text: `[]`); `nil` when the text is not that.
private func channelTriple(_ text: String, positive: Bool) -> [Float]? {
  if text.isEmpty { return [] }
  let values = text.split(separator: ",").compactMap { Float($0.trimmingCharacters(in: .whitespaces)) }
  guard values.count == 3, text.split(separator: ",").count == 3,
    values.allSatisfy({ $0.isFinite && (!positive || $0 > 0) })
  else { return nil }
  return values
}

/// `--data`, shared by the commands (read with ``datasetOptions(_:)``).
let dataOption = OptionSpec.string(
  "data", default: "",
  help: "data folder; empty: $PCDARTS_DATA if set, else ./data (fashion-mnist: /usr/share/datasets/fashion-mnist)")

/// `--threads`, shared by the commands: the engine's thread count (``Engine/threadCount``).
let threadsOption = OptionSpec.int(
  "threads", default: 0, help: "threads of the engine's loops (0 = one per core, \(Engine.defaultThreadCount) here)"
) { (0...Engine.maximumThreadCount).contains($0) ? nil : "expected 0 to \(Engine.maximumThreadCount)" }

/// `--recompute-depthwise`, shared by the commands (applied by ``applyRecomputation(_:imageNetStem:)``).
let recomputeOption = OptionSpec.string(
  "recompute-depthwise", default: "auto",
  help: "recompute depthwise outputs in backward (about a quarter less memory): on, off, or auto (on with the "
    + "CIFAR stem, where bench measured it no slower; off with the ImageNet stem)"
) { ["auto", "on", "off"].contains($0) ? nil : "expected auto, on or off" }

/// Sets ``Engine/recomputesDepthwiseOutputs`` from `--recompute-depthwise`; `auto` turns it on
/// for networks with the CIFAR stem, search (every K) and evaluation alike, where bench measured
/// it no slower since the fused op keeps each sample's depthwise planes in cache (docs/benchmarks.md:
/// 1.03× at K = 1, 1.00× at K = 8, 0.97× at K = 4 against the unfused build, 1.11× at K = 4 and
/// batch 256, 1.06× for the training step). It stays off with the ImageNet stem (a K = 2 search
/// 0.84×, docs/imagenet.md; NetworkImageNet's step 0.83–0.87×).
func applyRecomputation(_ options: ParsedOptions, imageNetStem: Bool) {
  switch options.string("recompute-depthwise") {
  case "on": Engine.recomputesDepthwiseOutputs = true
  case "off": Engine.recomputesDepthwiseOutputs = false
  default: Engine.recomputesDepthwiseOutputs = !imageNetStem
  }
}

/// Sets ``Engine/threadCount`` from `--threads`; 0 keeps the default, or under MPI shares this
/// machine's cores among its ranks.
func applyThreads(_ options: ParsedOptions) {
  if options.int("threads") > 0 {
    Engine.threadCount = options.int("threads")
  } else if Launch.current.mpi != nil {
    Engine.threadCount = Launch.current.defaultThreadCount
  }
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

/// The run folder of `--out`, checked against `--resume` and `--overwrite` before anything is
/// loaded: a folder holding an earlier run's outputs is refused unless one of them is given.
/// - Returns: the folder (locked) and the earlier outputs found in it.
func openRunDirectory(
  _ options: ParsedOptions, layout: RunDirectory.Layout
) throws -> (directory: RunDirectory, earlier: [String]) {
  if options.flag("resume") && options.flag("overwrite") {
    throw CommandFailure(
      message: "--resume continues the run in --out and --overwrite moves it aside: pass one", exitCode: 2)
  }
  let directory = try RunDirectory(options.string("out"), layout: layout)
  let earlier = directory.existingOutputs
  if !options.flag("resume") && !earlier.isEmpty && !options.flag("overwrite") {
    let what =
      directory.hasCheckpoint
      ? "\(directory.checkpointURL.path) exists; pass --resume to continue it"
      : "\(directory.url.path) holds the outputs of an earlier run (\(earlier.joined(separator: ", "))) but no checkpoint; "
        + "pass --overwrite to move them into \(directory.url.path)/previous-<time>"
    throw SearchError.invalidConfiguration(what + ", or choose another --out")
  }
  return (directory, earlier)
}

/// Starts a run in its folder: moves an earlier run aside with `--overwrite`, or with `--resume`
/// restores the checkpoint (`restore`) and rewrites what is derived from it (`rewriteDerived`);
/// `--resume` without a checkpoint starts from the first epoch. Under MPI only rank 0 has the
/// folder (`directory` is `nil` on the others): it reads the checkpoint and every rank restores
/// it.
func startRun(
  in directory: RunDirectory?, earlier: [String], _ options: ParsedOptions,
  restore: (SafeTensorsFile) throws -> Void, rewriteDerived: () throws -> Void
) throws {
  let checkpoint = try Launch.current.fileOfFirstRank {
    guard let directory else { return nil }
    if options.flag("overwrite") && !earlier.isEmpty {
      print("moved the earlier outputs to \(try directory.moveOutputsAside().path)")
    } else if options.flag("resume") && !directory.hasCheckpoint {
      // A run killed in its first epoch: nothing to continue, so start from the beginning.
      print("no checkpoint in \(directory.url.path) yet: starting from the first epoch")
      if !earlier.isEmpty { print("moved the earlier outputs to \(try directory.moveOutputsAside().path)") }
    } else if options.flag("resume") {
      return directory.checkpointURL
    }
    return nil
  }
  guard let checkpoint else { return }
  try restore(checkpoint)
  // The checkpoint is the commit point: the derived files are rewritten from it.
  if directory != nil { try rewriteDerived() }
}

/// The run folder of `--out` on rank 0 (see ``openRunDirectory(_:layout:)``), `nil` on the
/// other ranks of an MPI job.
func openRunDirectoryOnFirstRank(
  _ options: ParsedOptions, layout: RunDirectory.Layout
) throws -> (directory: RunDirectory?, earlier: [String]) {
  guard Launch.current.isFirstRank else { return (nil, []) }
  let (directory, earlier) = try openRunDirectory(options, layout: layout)
  return (directory, earlier)
}

/// The ranks of this launch for a run, and the line that says so (`nil` in one process).
func commandDataParallel(syncBatchNorm: Bool) -> (DataParallel, String?) {
  let launch = Launch.current
  let dataParallel = DataParallel(group: launch.group)
  guard let mpi = launch.mpi else { return (dataParallel, nil) }
  return (
    dataParallel,
    "MPI: \(mpi.size) rank\(mpi.size == 1 ? "" : "s") (rank 0 on \(mpi.processorName)), \(Engine.threadCount) "
      + "thread\(Engine.threadCount == 1 ? "" : "s") each, batch norms \(syncBatchNorm ? "synchronised" : "per rank")"
  )
}

/// Loads a dataset for a command; a missing dataset's message names the flags that fix it, and
/// the data's warnings go to stderr.
func loadCommandData(
  _ name: DatasetName, from path: String, train: Bool, folder: ImageFolderOptions = ImageFolderOptions()
) throws -> ImageDataset {
  let data: ImageDataset
  let start = Date()
  do {
    data = try loadDataset(name, from: path, train: train, folder: folder)
  } catch let error as DataError {
    guard case .missingData = error else { throw error }
    throw CommandFailure(
      message: "\(error) (flags: --data PATH, or --dataset fashion-mnist for data with no download)", exitCode: 1)
  }
  if Launch.current.isFirstRank {
    for warning in data.warnings { FileHandle.standardError.write(Data("warning: \(warning)\n".utf8)) }
    if name == .folder, data.files != nil {
      print(
        "found \(data.count) images of \(data.classCount) classes in \(path), decoded per batch at "
          + "\(data.height) × \(data.width)")
    } else if name == .folder {
      // Decoding is the folder's cost: its pace, beside the step's images/s of the epoch lines.
      let seconds = Date().timeIntervalSince(start)
      print(
        String(
          format: "decoded %d images of %d classes from %@ in %.1fs (%.0f images/s), %d × %d pixels", data.count,
          data.classCount, path, seconds, Double(data.count) / max(seconds, 1e-9), data.height, data.width))
    }
  }
  return data
}

/// The dataset and folder of `--dataset` and `--data` (empty: the dataset's default folder), and
/// how an image folder is read (`--image-size`, `--skip-bad-images`, `--mean`, `--std`).
/// - Throws: a usage failure for folder options given with another dataset, or only one of
///   `--mean` and `--std`.
func datasetOptions(_ options: ParsedOptions) throws -> (name: DatasetName, path: String, folder: ImageFolderOptions) {
  let dataset = DatasetName(rawValue: options.string("dataset"))!
  let mean = channelTriple(options.string("mean"), positive: false) ?? []
  let std = channelTriple(options.string("std"), positive: true) ?? []
  let folder = ImageFolderOptions(
    imageSize: options.int("image-size"), skipBadFiles: options.flag("skip-bad-images"),
    mean: mean.isEmpty ? nil : mean,
    std: std.isEmpty ? nil : std)
  if dataset != .folder && folder != ImageFolderOptions() {
    throw CommandFailure(
      message:
        "--image-size, --skip-bad-images, --mean and --std apply to --dataset folder only, not \(dataset.rawValue)",
      exitCode: 2)
  }
  if mean.isEmpty != std.isEmpty {
    throw CommandFailure(message: "pass --mean and --std together (or neither, to compute both)", exitCode: 2)
  }
  return (dataset, options.string("data").isEmpty ? defaultDataPath(for: dataset) : options.string("data"), folder)
}

/// The failure that ends a run stopped by a signal or by a non-finite loss, in words that say
/// what is intact and how to continue; any other error is returned as it is.
///
/// - Parameters:
///   - command: the command's name, to spell the command that continues.
///   - completedEpochs: the epochs the checkpoint holds.
///   - flags: the flag of each setting path, to name what to lower.
///   - settingValue: the current value of a setting path.
func runFailure(
  _ error: Error, command: String, arguments: [String], signal received: Int32?, completedEpochs: Int,
  hasCheckpoint: Bool, flags: [String: String], settingValue: (String) -> String?
) -> Error {
  switch error {
  case SearchError.interrupted(let epoch, let step):
    let signal = received ?? SIGINT
    let kept =
      completedEpochs > 0 ? "the checkpoint of epoch \(completedEpochs) is intact" : "no checkpoint was written yet"
    let again = ([command] + arguments.filter { $0 != "--resume" } + ["--resume"]).joined(separator: " ")
    return CommandFailure(
      message:
        "interrupted by \(signal == SIGTERM ? "SIGTERM" : "SIGINT") "
        + (step == 0 ? "before epoch \(epoch + 1) started" : "after step \(step) of epoch \(epoch + 1)")
        + "; nothing of that epoch was written and \(kept); continue with: \(again)",
      exitCode: 128 + signal, shared: true)
  case SearchError.nonFiniteLoss(let loss):
    let lower = loss.settingsToLower.map { setting in
      "\(flags[setting] ?? setting) (now \(settingValue(setting) ?? "?"))"
    }
    let next =
      hasCheckpoint ? "resume from the last checkpoint with --resume" : "start again (no checkpoint was written yet)"
    return CommandFailure(
      message: "the loss is not finite: \(loss); lower \(lower.joined(separator: " or ")) and \(next)", exitCode: 1,
      shared: true)
  default:
    return error
  }
}

/// Runs the epochs of `run` that are left, with the progress bar on stderr and SIGINT/SIGTERM
/// turned into a stop at the next step boundary: after each epoch `write` (the checkpoint first)
/// and then `report` (a line on stdout). A stop or a non-finite loss ends in the failure
/// ``runFailure(_:command:arguments:signal:completedEpochs:hasCheckpoint:flags:settingValue:)``
/// words. Under MPI, rank 0 alone (the one with a `directory`) shows progress, writes and
/// reports, and the ranks stop together when any of them received a signal.
func runEpochs<Run: EpochRun>(
  _ run: Run, epochs: Int, command: String, arguments: [String], directory: RunDirectory?,
  flags: [String: String], settingValue: @escaping (String) -> String?,
  write: (Run) throws -> Void, report: (Run.Record) -> Void
) throws {
  let bar = directory.map { _ in ProgressBar(interactive: isatty(STDERR_FILENO) != 0) }
  run.onStep = { bar?.update($0, epochs: epochs) }
  let signals = StopSignals()
  run.shouldStop = { Launch.current.any(signals.received != nil) }
  while !run.isFinished {
    let record: Run.Record
    do {
      record = try run.runEpoch()
    } catch {
      bar?.finish()
      throw runFailure(
        error, command: command, arguments: arguments, signal: signals.received, completedEpochs: run.nextEpoch,
        hasCheckpoint: directory?.hasCheckpoint ?? false, flags: flags, settingValue: settingValue)
    }
    bar?.finish()
    guard directory != nil else { continue }
    try write(run)
    report(record)
  }
}
