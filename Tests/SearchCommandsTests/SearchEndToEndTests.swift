// The search command end to end on a tiny CIFAR-10 written here in the official binary layout
// (cifar-10-batches-bin/data_batch_{1..5}.bin + test_batch.bin, records of 1 label byte and 3072
// pixel bytes, pixels and labels from a seeded generator): the files a run leaves, determinism,
// resuming after an interruption, and bad input that must fail without touching --out.
//
// Sizes are tiny (16 images split 8/8, 3 cells of 4 channels, batch 4: two steps per epoch) and the
// first run is shared, so the whole file stays within about half a minute in a debug build.
import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

@testable import SearchCommands

final class SearchEndToEndTests: XCTestCase {
  /// A temporary folder with the data and the first run, shared by the tests of this class: the
  /// debug build trains only a few images per second, so the 2-epoch run is made once.
  private struct Shared {
    let root: URL
    let code: Int32
    let stderr: String
  }
  nonisolated(unsafe) private static var shared: Shared?

  private var root: URL { Self.shared!.root }
  private var dataPath: String { root.appendingPathComponent("data").path }
  /// The output folder of the shared run (2 epochs with the default ``flags(out:epochs:data:layers:)``).
  private var firstRun: String { out("first") }

  override func setUpWithError() throws {
    if Self.shared == nil {
      let root = FileManager.default.temporaryDirectory.appendingPathComponent("pcdarts-e2e-\(UUID().uuidString)")
      Self.shared = Shared(root: root, code: -1, stderr: "")
      try writeCIFAR10(at: root.appendingPathComponent("data"))
      let (code, message) = try search(flags(out: firstRun))
      Self.shared = Shared(root: root, code: code, stderr: message)
    }
    let shared = try XCTUnwrap(Self.shared)
    XCTAssertEqual(shared.code, 0, "the shared first run failed: \(shared.stderr)")
  }

  override class func tearDown() {
    if let root = shared?.root { try? FileManager.default.removeItem(at: root) }
    shared = nil
    super.tearDown()
  }

  // MARK: - Helpers

  /// The tiny search's flags.
  private func flags(out: String, epochs: Int = 2, data: String? = nil, layers: Int = 3) -> [String] {
    [
      "--data", data ?? dataPath, "--subset", "16", "--layers", String(layers), "--init-channels", "4",
      "--K", "2", "--batch-size", "4", "--epochs", String(epochs), "--warmup-epochs", "1", "--out", out,
    ]
  }

  private func out(_ name: String) -> String { root.appendingPathComponent(name).path }

  /// Runs `SearchCommand.main`; returns the exit code and stderr.
  private func search(_ arguments: [String]) throws -> (code: Int32, stderr: String) {
    try runCapturingStderr(SearchCommand.main, arguments, scratch: root)
  }

  // MARK: - A run and its outputs

  func testRunWritesEveryOutputAndRepeatsExactly() throws {
    let a = firstRun

    let lines = try logLines(a)
    XCTAssertEqual(lines.count, 2)
    let required = [
      "epoch", "lr", "train_loss", "train_acc", "valid_loss", "valid_acc", "seconds",
      "images_per_second", "peak_tensor_bytes", "genotype",
    ]
    for (e, line) in lines.enumerated() {
      for key in required { XCTAssertNotNil(line[key], "epoch \(e): missing \(key)") }
      XCTAssertEqual(line["epoch"] as? Int, e)
      // --warmup-epochs 1: weights only in epoch 0, architecture steps from epoch 1.
      XCTAssertEqual(line["arch_updates"] as? Bool, e >= 1)
      for key in ["train_acc", "valid_acc"] {
        let value = try XCTUnwrap(line[key] as? Double, key)
        XCTAssertTrue((0...1).contains(value), "\(key) \(value) is not a fraction")
      }
      for key in ["train_loss", "valid_loss", "seconds", "images_per_second"] {
        let value = try XCTUnwrap(line[key] as? Double, key)
        XCTAssertTrue(value.isFinite && value > 0, "\(key) = \(value)")
      }
      XCTAssertGreaterThan(try XCTUnwrap(line["peak_tensor_bytes"] as? Int), 0)
    }
    // Cosine annealing over 2 epochs from 0.1 to 0: 0.1, then 0.1·(1 + cos(π/2))/2 = 0.05.
    XCTAssertEqual(try XCTUnwrap(lines[0]["lr"] as? Double), 0.1, accuracy: 1e-7)
    XCTAssertEqual(try XCTUnwrap(lines[1]["lr"] as? Double), 0.05, accuracy: 1e-7)

    let lastGenotype = try Genotype(pythonDescription: try XCTUnwrap(lines[1]["genotype"] as? String))
    XCTAssertEqual(try Genotype(json: readText(a, "genotype.json")), lastGenotype)
    XCTAssertEqual(try Genotype(pythonDescription: readText(a, "genotype.txt")), lastGenotype)
    for epoch in ["000", "001"] {
      let json = try Genotype(json: readText(a, "genotypes/epoch_\(epoch).json"))
      let text = try Genotype(pythonDescription: readText(a, "genotypes/epoch_\(epoch).txt"))
      XCTAssertEqual(json, text, "epoch \(epoch)")
    }
    XCTAssertEqual(try Genotype(json: readText(a, "genotypes/epoch_001.json")), lastGenotype)
    XCTAssertEqual(
      try Genotype(pythonDescription: lines[0]["genotype"] as! String),
      try Genotype(json: readText(a, "genotypes/epoch_000.json")))

    let checkpoint = try SafeTensorsFile.read(from: URL(fileURLWithPath: a + "/checkpoint.safetensors"))
    for name in ["alphas_normal", "stem.0.weight"] { XCTAssertNotNil(checkpoint.tensors[name], name) }
    XCTAssertTrue(checkpoint.tensors.keys.contains { $0.hasPrefix("optimizer.") }, "no optimizer state")
    XCTAssertEqual(checkpoint.metadata["next_epoch"], "2")
    for cell in ["normal", "reduction"] {
      XCTAssertTrue(try readText(a, "\(cell).dot").hasPrefix("digraph \(cell) {"), cell)
    }

    // The same flags in another folder: the same numbers, genotype and weights.
    let b = out("b")
    let second = try search(flags(out: b))
    XCTAssertEqual(second.code, 0, second.stderr)
    let repeated = try logLines(b)
    XCTAssertEqual(repeated.count, lines.count)
    for (x, y) in zip(lines, repeated) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
    XCTAssertEqual(try readText(b, "genotype.txt"), try readText(a, "genotype.txt"))
    XCTAssertEqual(try readText(b, "genotype.json"), try readText(a, "genotype.json"))
    let checkpointB = try SafeTensorsFile.read(from: URL(fileURLWithPath: b + "/checkpoint.safetensors"))
    XCTAssertTrue(checkpointB.tensors == checkpoint.tensors, "the checkpoints' tensors differ")
  }

  // MARK: - Resume

  func testResumeAfterAnInterruptionMatchesAnUninterruptedRun() throws {
    // 3 epochs, cut after the first (the warm-up epoch): the resumed process continues the SGD
    // momentum, the cosine schedule and both data streams from the checkpoint and runs the two
    // epochs with architecture steps. (Restoring non-zero Adam moments is checked by
    // GoldenNetworkTests.testCheckpointRoundTripRestoresIdenticalValues.)
    let whole = out("whole")
    let uninterrupted = try search(flags(out: whole, epochs: 3))
    XCTAssertEqual(uninterrupted.code, 0, uninterrupted.stderr)

    // The interrupted run: what `search-cifar` with the same flags leaves after its first epoch,
    // made with the command's own option parsing and the library calls its loop makes.
    let cut = out("cut")
    do {
      let settings = SearchCommand.settings(from: try SearchCommand.parser.parse(flags(out: cut, epochs: 3)))
      let run = try SearchRun(settings: settings, data: try loadDataset(.cifar10, from: dataPath, train: true))
      try run.runEpoch()
      try RunDirectory(cut).writeEpoch(run)
    }
    XCTAssertEqual(try logLines(cut).count, 1)
    XCTAssertFalse(try readText(cut, "log.jsonl").contains("\"epoch\":1"))
    let resumed = try search(flags(out: cut, epochs: 3) + ["--resume"])
    XCTAssertEqual(resumed.code, 0, resumed.stderr)

    let (expected, actual) = (try logLines(whole), try logLines(cut))
    XCTAssertEqual(actual.count, 3)
    for (x, y) in zip(expected, actual) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
    XCTAssertEqual(try readText(cut, "genotype.txt"), try readText(whole, "genotype.txt"))
    XCTAssertEqual(try readText(cut, "genotype.json"), try readText(whole, "genotype.json"))
    let tensors = { (folder: String) in
      try SafeTensorsFile.read(from: URL(fileURLWithPath: folder + "/checkpoint.safetensors")).tensors
    }
    XCTAssertTrue(try tensors(cut) == tensors(whole), "resumed weights, architecture or optimizer state differ")
  }

  // MARK: - Bad input

  func testBadInputFailsWithAMessageAndLeavesTheOutputFolderUntouched() throws {
    // A copy of the finished first run, so a failure here cannot disturb the other tests.
    let done = out("done")
    try FileManager.default.copyItem(atPath: firstRun, toPath: done)
    let pristine = try snapshot(done)
    XCTAssertNotNil(pristine["checkpoint.safetensors"])

    // Broken copies of the data.
    func brokenData(_ name: String, _ change: (inout [UInt8]) -> Void) throws -> String {
      let folder = root.appendingPathComponent(name)
      try writeCIFAR10(at: folder)
      let file = folder.appendingPathComponent("cifar-10-batches-bin/data_batch_3.bin")
      var bytes = [UInt8](try Data(contentsOf: file))
      change(&bytes)
      try Data(bytes).write(to: file)
      return folder.path
    }
    let truncated = try brokenData("truncated") { $0.removeLast(5) }
    let badLabel = try brokenData("label10") { $0[2 * 3073] = 10 }  // record 2's label byte
    let regularFile = out("not-a-folder")
    try Data("keep me".utf8).write(to: URL(fileURLWithPath: regularFile))

    // (arguments, expected exit code, words the message must contain)
    let cases: [(String, [String], Int32, [String])] = [
      ("unknown flag", flags(out: done) + ["--bogus"], 2, ["--bogus"]),
      ("bad value", flags(out: done) + ["--lr", "abc"], 2, ["--lr", "abc"]),
      ("too many threads", flags(out: done) + ["--threads", "999"], 2, ["--threads", "999", "0 to 256"]),
      (
        "unknown sampling", flags(out: done) + ["--channel-sampling", "mask"], 2,
        ["--channel-sampling", "shuffle or random"]
      ),
      (
        "no arch steps", flags(out: done) + ["--arch-update-every", "0"], 2,
        ["invalid --arch-update-every", "1...1000000"]
      ),
      ("negative cap", flags(out: done) + ["--max-skip-connect", "-2"], 2, ["invalid --max-skip-connect", "-2"]),
      // Ranges are checked once, by the settings, and the message names the flag typed.
      ("zero learning rate", flags(out: done) + ["--lr", "0"], 2, ["invalid --lr", "must be positive", "0.0"]),
      (
        "negative arch decay", flags(out: done) + ["--arch-weight-decay", "-1"], 2,
        ["invalid --arch-weight-decay", "-1"]
      ),
      ("two cells", flags(out: done, layers: 2), 2, ["invalid --layers", "3...1000", "2"]),
      // Values that used to trap on overflow or allocate without bound.
      ("2^63-1 cells", flags(out: done) + ["--layers", "9223372036854775807"], 2, ["invalid --layers"]),
      ("2^62 channels", flags(out: done) + ["--init-channels", "4611686018427387904"], 2, ["invalid --init-channels"]),
      (
        "100000 channels", flags(out: done) + ["--init-channels", "100000"], 2, ["invalid --init-channels", "1...4096"]
      ),
      ("2^63-1 epochs", flags(out: done) + ["--epochs", "9223372036854775807"], 2, ["invalid --epochs"]),
      (
        "more memory than the machine", flags(out: done) + ["--init-channels", "4096", "--batch-size", "65536"], 2,
        ["would need about", "GiB", "--batch-size (65536)", "--K"]
      ),
      ("lr-min above lr", flags(out: done) + ["--lr-min", "1"], 2, ["invalid --lr-min", "learningRate"]),
      ("K does not divide", flags(out: done) + ["--K", "3"], 2, ["K = 3", "4 channels"]),
      // With --resume the command gets past the existing checkpoint to the data.
      (
        "truncated data file", flags(out: done, data: truncated) + ["--resume"], 1,
        ["data_batch_3.bin", "30725 bytes"]
      ),
      ("label 10", flags(out: done, data: badLabel) + ["--resume"], 1, ["data_batch_3.bin", "label 10"]),
      (
        "missing data folder", flags(out: done, data: out("nowhere")) + ["--resume"], 1,
        ["cifar-10-batches-bin", "--data PATH", "--dataset fashion-mnist"]
      ),
      ("--out is a file", flags(out: regularFile), 2, [regularFile, "not a folder"]),
      // Checkpoint settings differ from the flags: the message names the field. The command
      // reports this as a checkpoint (file) problem, exit 1.
      ("resume with other settings", flags(out: done, layers: 4) + ["--resume"], 1, ["layers", "4", "3"]),
      ("checkpoint without --resume", flags(out: done), 2, ["--resume", "checkpoint.safetensors"]),
      // A learning rate that blows the weights up: the first non-finite loss stops the run.
      (
        "loss becomes NaN", flags(out: out("diverged")) + ["--lr", "1e30"], 1,
        ["not finite", "--lr (now 1e+30)", "no checkpoint was written yet"]
      ),
    ]
    for (what, arguments, expectedCode, words) in cases {
      let (code, message) = try search(arguments)
      XCTAssertEqual(code, expectedCode, "\(what): \(message)")
      for word in words { XCTAssertTrue(message.contains(word), "\(what): '\(word)' not in: \(message)") }
      // The error is the last line on stderr (a run that started has printed progress lines).
      let lastLine = message.split(separator: "\n").last.map(String.init) ?? ""
      XCTAssertTrue(lastLine.hasPrefix("error: ") && !lastLine.hasPrefix("error: error:"), "\(what): \(message)")
      XCTAssertTrue(try snapshot(done) == pristine, "\(what): the --out folder changed")
    }
    XCTAssertEqual(try Data(contentsOf: URL(fileURLWithPath: regularFile)), Data("keep me".utf8))
  }

  // MARK: - Nothing lost

  func testEarlierOutputsWithoutACheckpointAreNeitherReplacedNorMixedIn() throws {
    // What a kill during the first epoch's writes used to leave: outputs, no checkpoint.
    let folder = out("leftovers")
    try FileManager.default.copyItem(atPath: firstRun, toPath: folder)
    try FileManager.default.removeItem(atPath: folder + "/checkpoint.safetensors")
    let before = try snapshot(folder)
    let refused = try search(flags(out: folder))
    XCTAssertEqual(refused.code, 2, refused.stderr)
    for word in ["earlier run", "log.jsonl", "genotypes/", "--overwrite", "no checkpoint"] {
      XCTAssertTrue(refused.stderr.contains(word), "'\(word)' not in: \(refused.stderr)")
    }
    XCTAssertTrue(try snapshot(folder) == before, "a refused run changed the folder")

    let overwritten = try search(flags(out: folder) + ["--overwrite"])
    XCTAssertEqual(overwritten.code, 0, overwritten.stderr)
    let aside = try XCTUnwrap(
      try FileManager.default.contentsOfDirectory(atPath: folder).first { $0.hasPrefix("previous-") })
    XCTAssertEqual(
      try readText(folder + "/" + aside, "log.jsonl"), before["log.jsonl"].map { String(decoding: $0, as: UTF8.self) })
    XCTAssertEqual(try logLines(folder).count, 2)
    XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/checkpoint.safetensors"))
    let both = try search(flags(out: folder) + ["--overwrite", "--resume"])
    XCTAssertEqual(both.code, 2, both.stderr)
  }

  func testASecondRunOnTheSameFolderIsRefusedNamingTheFirstOnesPid() throws {
    let folder = out("locked")
    do {
      let holder = try RunDirectory(folder)  // as a running search holds it
      let (code, message) = try search(flags(out: folder))
      XCTAssertEqual(code, 2, message)
      XCTAssertTrue(message.contains("another run (pid \(getpid()))") && message.contains(folder), message)
      withExtendedLifetime(holder) {}
    }
    // Released with its holder: the folder is free again.
    XCTAssertNoThrow(try RunDirectory(folder))
  }

  func testResumeWithoutACheckpointStartsFromTheBeginningAndStaleTemporaryFilesGo() throws {
    let folder = out("fresh-resume")
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    // A temporary file of a process that no longer runs, and one of this (running) process.
    var dead: Int32 = 999_999
    while kill(dead, 0) == 0 || errno != ESRCH { dead -= 1 }
    let stale = folder + "/.checkpoint.safetensors.tmp-\(dead)-7"
    let live = folder + "/.log.jsonl.tmp-\(getpid())-8"
    for path in [stale, live] { XCTAssertTrue(FileManager.default.createFile(atPath: path, contents: Data("x".utf8))) }
    let (code, message) = try search(flags(out: folder) + ["--resume"])
    XCTAssertEqual(code, 0, message)
    XCTAssertEqual(try logLines(folder).count, 2)
    XCTAssertFalse(FileManager.default.fileExists(atPath: stale), "the dead process's temporary file stayed")
    XCTAssertTrue(FileManager.default.fileExists(atPath: live), "a running process's temporary file was removed")
    try FileManager.default.removeItem(atPath: live)
    let lines = try logLines(folder), expected = try logLines(firstRun)
    for (x, y) in zip(expected, lines) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
  }

  func testResumeRewritesWhatIsDerivedFromTheCheckpoint() throws {
    // Derived files one epoch ahead of the checkpoint, as a kill between the two writes of an
    // epoch could leave them.
    let folder = out("ahead")
    try FileManager.default.copyItem(atPath: firstRun, toPath: folder)
    let log = try readText(folder, "log.jsonl")
    try (log + log.split(separator: "\n").last! + "\n").write(
      toFile: folder + "/log.jsonl", atomically: true, encoding: .utf8)
    try "x".write(toFile: folder + "/genotypes/epoch_002.json", atomically: true, encoding: .utf8)
    let (code, message) = try search(flags(out: folder) + ["--resume"])
    XCTAssertEqual(code, 0, message)
    XCTAssertEqual(try readText(folder, "log.jsonl"), log)
    XCTAssertFalse(FileManager.default.fileExists(atPath: folder + "/genotypes/epoch_002.json"))
    XCTAssertTrue(FileManager.default.fileExists(atPath: folder + "/genotypes/epoch_001.json"))
  }

  func testResumeMayChangeLearningRatesAndEpochsButNotWhatDefinesTheRun() throws {
    let folder = out("changed")
    try FileManager.default.copyItem(atPath: firstRun, toPath: folder)
    let changed = try search(flags(out: folder, epochs: 3) + ["--resume", "--lr", "0.05", "--arch-lr", "3e-4"])
    XCTAssertEqual(changed.code, 0, changed.stderr)
    let lines = try logLines(folder)
    XCTAssertEqual(lines.count, 3)
    XCTAssertNil(lines[1]["settings_changed"])
    let changes = try XCTUnwrap(lines[2]["settings_changed"] as? [String])
    XCTAssertEqual(changes.count, 3, "\(changes)")
    for word in ["learningRate: 0.1 → 0.05", "architect.learningRate", "epochs: 2 → 3"] {
      XCTAssertTrue(changes.contains { $0.contains(word) }, "'\(word)' not in \(changes)")
    }
    let before = try snapshot(folder)
    let refused = try search(flags(out: folder, epochs: 3) + ["--resume", "--seed", "5"])
    XCTAssertEqual(refused.code, 1, refused.stderr)
    XCTAssertTrue(refused.stderr.contains("seed: 2 vs 5") && refused.stderr.contains("define the run"), refused.stderr)
    XCTAssertTrue(try snapshot(folder) == before)
  }

  func testACheckpointWithNonFiniteWeightsOrAnEditedEpochIsRefused() throws {
    let folder = out("poisoned")
    try FileManager.default.copyItem(atPath: firstRun, toPath: folder)
    let url = URL(fileURLWithPath: folder + "/checkpoint.safetensors")
    let original = try SafeTensorsFile.read(from: url)
    var nan = original
    var weight = try XCTUnwrap(nan.tensors["stem.0.weight"])
    var values = try XCTUnwrap(weight.floats)
    values[3] = .nan
    weight = SafeTensor(shape: weight.shape, floats: values)
    nan.tensors["stem.0.weight"] = weight
    for (what, file, words) in [
      ("NaN weight", nan, ["stem.0.weight", "non-finite", "element 3"]),
      (
        "epoch -5",
        {
          var f = original
          f.metadata["next_epoch"] = "-5"
          return f
        }(), ["next epoch -5"]
      ),
      (
        "epoch 99",
        {
          var f = original
          f.metadata["next_epoch"] = "99"
          return f
        }(), ["next epoch 99", "2 epochs"]
      ),
    ] {
      try file.write(to: url)
      let before = try snapshot(folder)
      let (code, message) = try search(flags(out: folder) + ["--resume"])
      XCTAssertEqual(code, 1, "\(what): \(message)")
      for word in words { XCTAssertTrue(message.contains(word), "\(what): '\(word)' not in \(message)") }
      XCTAssertTrue(try snapshot(folder) == before, "\(what): the folder changed")
    }
  }

  func testSIGINTStopsAtAStepBoundaryAndTheRunResumesToTheSameResult() throws {
    // The built executable, beside this test bundle.
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
      .appendingPathComponent("search-cifar")
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "no search-cifar at \(binary.path)")
    let folder = out("interrupted")
    let process = Process()
    process.executableURL = binary
    process.arguments = flags(out: folder)
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = FileHandle.nullDevice
    try process.run()
    // Wait for the first progress line of the second epoch (a checkpoint exists then), then signal.
    var seen = Data()
    while !String(decoding: seen, as: UTF8.self).contains("epoch 2/2 [") {
      let chunk = errors.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      seen += chunk
    }
    kill(process.processIdentifier, SIGINT)
    seen += errors.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    let message = String(decoding: seen, as: UTF8.self)
    XCTAssertEqual(process.terminationStatus, 130, message)
    XCTAssertTrue(message.contains("interrupted by SIGINT") && message.contains("--resume"), message)
    XCTAssertTrue(message.contains("checkpoint of epoch 1 is intact"), message)
    XCTAssertEqual(try logLines(folder).count, 1, "the interrupted epoch left a line in the log")
    let resumed = try search(flags(out: folder) + ["--resume"])
    XCTAssertEqual(resumed.code, 0, resumed.stderr)
    let (expected, actual) = (try logLines(firstRun), try logLines(folder))
    XCTAssertEqual(actual.count, 2)
    for (x, y) in zip(expected, actual) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
  }

  func testKilledAtSeededMomentsTheRunResumesToTheSameResult() throws {
    let binary = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
      .appendingPathComponent("search-cifar")
    try XCTSkipUnless(FileManager.default.isExecutableFile(atPath: binary.path), "no search-cifar at \(binary.path)")
    var rng = SeededGenerator(seed: 2026)
    let expected = try logLines(firstRun)
    for (trial, signal) in [SIGKILL, SIGKILL, SIGTERM].enumerated() {
      let folder = out("killed-\(trial)")
      let process = Process()
      process.executableURL = binary
      process.arguments = flags(out: folder)
      process.standardError = FileHandle.nullDevice
      process.standardOutput = FileHandle.nullDevice
      try process.run()
      // A moment within the run: before, during or after the first epoch's writes.
      usleep(UInt32(300_000 + rng.nextInt(below: 2_500_000)))
      kill(process.processIdentifier, signal)
      process.waitUntilExit()
      if process.terminationReason == .uncaughtSignal {
        XCTAssertEqual(process.terminationStatus, SIGKILL, "trial \(trial)")
      } else if process.terminationStatus != 0 {
        XCTAssertEqual(process.terminationStatus, 143, "trial \(trial): SIGTERM stops with 128 + 15")
      }
      // Whatever the moment, --resume (from a checkpoint, or from the start) ends where an
      // uninterrupted run ends.
      let resumed = try search(flags(out: folder) + ["--resume"])
      XCTAssertEqual(resumed.code, 0, "trial \(trial): \(resumed.stderr)")
      let actual = try logLines(folder)
      XCTAssertEqual(actual.count, 2, "trial \(trial)")
      for (x, y) in zip(expected, actual) {
        XCTAssertEqual(deterministicPart(x), deterministicPart(y), "trial \(trial)")
      }
      let leftovers = try FileManager.default.contentsOfDirectory(atPath: folder).filter { $0.contains(".tmp-") }
      XCTAssertEqual(leftovers, [], "trial \(trial): temporary files stayed")
    }
  }

  // MARK: - The report

  func testTheReportRendersInHeadlessChromiumWithEveryChartAndRegeneratesIdentically() throws {
    let folder = out("report")
    try FileManager.default.copyItem(atPath: firstRun, toPath: folder)
    let written = try readText(folder, "report.html")
    let ids = [
      "chart-loss", "chart-accuracy", "chart-lr", "chart-throughput", "chart-memory", "heatmap-alpha-normal",
      "heatmap-alpha-reduce", "trajectory-op-normal", "trajectory-op-reduce", "trajectory-beta-normal",
      "trajectory-beta-reduce", "cell-normal", "cell-reduction", "settings",
    ]
    for id in ids { XCTAssertTrue(written.contains("id=\"\(id)\""), "report.html lacks #\(id)") }
    XCTAssertFalse(written.contains("<script"), "the report needs no script")
    XCTAssertEqual(try readText(folder, "architecture.jsonl").split(separator: "\n").count, 2)

    // Regenerated from the folder's files: the same page.
    try FileManager.default.removeItem(atPath: folder + "/report.html")
    let (code, message) = try search(["--report", folder])
    XCTAssertEqual(code, 0, message)
    // The same page but for the folder's name in the title.
    XCTAssertEqual(
      try readText(folder, "report.html"),
      written.replacingOccurrences(of: "PC-DARTS search — first", with: "PC-DARTS search — report"))
    let missing = try search(["--report", out("no-such-run")])
    XCTAssertEqual(missing.code, 2, missing.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out("no-such-run")), "--report created a folder")

    // As a person sees it: Chromium parses every chart and paints a page that is not blank.
    let chromium = "/usr/bin/chromium"
    try XCTSkipUnless(
      FileManager.default.isExecutableFile(atPath: chromium),
      "Debian's chromium is not installed (make test installs it)")
    func chromiumRun(_ arguments: [String]) throws -> String {
      let process = Process()
      process.executableURL = URL(fileURLWithPath: chromium)
      process.arguments = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"] + arguments
      let output = Pipe()
      process.standardOutput = output
      process.standardError = FileHandle.nullDevice
      try process.run()
      let data = output.fileHandleForReading.readDataToEndOfFile()
      process.waitUntilExit()
      XCTAssertEqual(process.terminationStatus, 0, "chromium \(arguments)")
      return String(decoding: data, as: UTF8.self)
    }
    let dom = try chromiumRun(["--dump-dom", "file://\(folder)/report.html"])
    for id in ids { XCTAssertTrue(dom.contains("id=\"\(id)\""), "the rendered page lacks #\(id)") }
    let blankPage = root.appendingPathComponent("blank.html")
    try "<!DOCTYPE html><html><body></body></html>".write(to: blankPage, atomically: true, encoding: .utf8)
    var sizes: [Int] = []
    for (page, shot) in [("file://\(folder)/report.html", "report.png"), (blankPage.absoluteString, "blank.png")] {
      let png = root.appendingPathComponent(shot).path
      _ = try chromiumRun(["--window-size=1280,2000", "--screenshot=\(png)", page])
      let bytes = try Data(contentsOf: URL(fileURLWithPath: png))
      XCTAssertEqual(Array(bytes.prefix(4)), [0x89, 0x50, 0x4E, 0x47], "\(shot) is not a PNG")
      sizes.append(bytes.count)
    }
    // A white page compresses to a few KiB; the charts, heat maps and cells to far more.
    XCTAssertGreaterThan(sizes[0], 20 * sizes[1], "the report's screenshot looks blank: \(sizes)")
  }

  func testTheSearchVariantFlagsReachTheRunAndItsOutputs() throws {
    let folder = out("variants")
    let (code, message) = try search(
      flags(out: folder) + ["--channel-sampling", "random", "--arch-update-every", "2", "--max-skip-connect", "0"])
    XCTAssertEqual(code, 0, message)
    let lines = try logLines(folder)
    // 8 search-train images in batches of 4: 2 steps; one architecture step (the first) in epoch 1.
    XCTAssertEqual(lines.map { $0["arch_steps"] as? Int }, [0, 1])
    let capped = try Genotype(pythonDescription: try XCTUnwrap(lines[1]["genotype_capped"] as? String))
    XCTAssertEqual(capped.normalSkipConnectCount, 0)
    let object = try XCTUnwrap(
      try JSONSerialization.jsonObject(with: Data(readText(folder, "genotype.json").utf8)) as? [String: Any])
    XCTAssertEqual(object["max_skip_connect"] as? Int, 0)
    XCTAssertNotNil(object["capped"])
    let settings = SearchCommand.settings(
      from: try SearchCommand.parser.parse(
        flags(out: folder) + ["--channel-sampling", "random", "--max-skip-connect", "3"]))
    XCTAssertEqual(settings.network.channelSampling, .random)
    XCTAssertEqual(settings.maxSkipConnect, 3)
    XCTAssertNil(SearchCommand.settings(from: try SearchCommand.parser.parse([])).maxSkipConnect)
  }

  func testEveryFlagOfASettingNamesARealSetting() {
    var settings = SearchSettings()
    settings.subset = 10
    settings.maxSkipConnect = 2
    for (setting, flag) in SearchCommand.flagsOfSettings.merging(
      BenchCommand.flagsOfSettings, uniquingKeysWith: { a, _ in a })
    {
      XCTAssertNotNil(settings.value(of: setting), "\(flag) maps to \(setting), which SearchSettings does not have")
      XCTAssertNotNil(
        SearchCommand.parser.options.first { "--" + $0.name == flag }
          ?? BenchCommand.parser.options.first { "--" + $0.name == flag }, "\(flag) is no option")
    }
  }
}
