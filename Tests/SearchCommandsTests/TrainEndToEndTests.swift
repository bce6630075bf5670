// The train-cifar command end to end on a tiny CIFAR-10 in the official binary layout (50 training
// and 4 test images): the files a run leaves and their numbers, determinism, an exact resume,
// --evaluate, genotypes from a search folder, and bad input that must fail without touching --out.
//
// Sizes are tiny (8 training images, 3 cells of 4 channels, batch 4: two steps per epoch).
import Foundation
import NeuralNetwork
import PCDARTS
import TensorEngine
import XCTest

@testable import SearchCommands

final class TrainEndToEndTests: XCTestCase {
  private var root: URL!
  private var dataPath: String { root.appendingPathComponent("data").path }

  override func setUpWithError() throws {
    root = FileManager.default.temporaryDirectory.appendingPathComponent("pcdarts-train-e2e-\(UUID().uuidString)")
    try writeCIFAR10(at: root.appendingPathComponent("data"))
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(at: root)
  }

  private func out(_ name: String) -> String { root.appendingPathComponent(name).path }

  /// The tiny training's flags.
  private func flags(out: String, epochs: Int = 2, genotype: String = "PC_DARTS_cifar") -> [String] {
    [
      "--genotype", genotype, "--data", dataPath, "--subset", "8", "--layers", "3", "--init-channels", "4",
      "--batch-size", "4", "--epochs", String(epochs), "--out", out,
    ]
  }

  private func train(_ arguments: [String]) throws -> (code: Int32, stderr: String) {
    try runCapturingStderr(TrainCommand.main, arguments, scratch: root)
  }

  private func tensors(_ folder: String, _ name: String = "checkpoint.safetensors") throws -> SafeTensorsFile {
    try SafeTensorsFile.read(from: URL(fileURLWithPath: folder + "/" + name))
  }

  func testRunWritesEveryOutputRepeatsExactlyAndEvaluates() throws {
    let a = out("a")
    let first = try train(flags(out: a))
    XCTAssertEqual(first.code, 0, first.stderr)

    let lines = try logLines(a)
    XCTAssertEqual(lines.count, 2)
    for (e, line) in lines.enumerated() {
      XCTAssertEqual(line["epoch"] as? Int, e)
      for key in ["train_loss", "test_loss", "seconds", "images_per_second"] {
        let value = try XCTUnwrap(line[key] as? Double, key)
        XCTAssertTrue(value.isFinite && value > 0, "\(key) = \(value)")
      }
      for key in ["train_acc", "test_acc", "best_test_acc"] {
        XCTAssertTrue((0...1).contains(try XCTUnwrap(line[key] as? Double, key)), key)
      }
    }
    // Cosine from 0.025 over 2 epochs: 0.025, 0.0125; drop-path ramps 0.3·e/2: 0, 0.15.
    XCTAssertEqual(try XCTUnwrap(lines[0]["lr"] as? Double), 0.025, accuracy: 1e-8)
    XCTAssertEqual(try XCTUnwrap(lines[1]["lr"] as? Double), 0.0125, accuracy: 1e-8)
    XCTAssertEqual(try XCTUnwrap(lines[0]["drop_path_prob"] as? Double), 0, accuracy: 1e-8)
    XCTAssertEqual(try XCTUnwrap(lines[1]["drop_path_prob"] as? Double), 0.15, accuracy: 1e-7)
    let accuracies = try lines.map { try XCTUnwrap($0["test_acc"] as? Double) }
    XCTAssertEqual(try XCTUnwrap(lines[1]["best_test_acc"] as? Double), accuracies.max()!)

    // The result: the final epoch's test error, the best beside it.
    let result = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(readText(a, "result.json").utf8)) as? [String: Any])
    XCTAssertEqual(try XCTUnwrap(result["test_error"] as? Double), 1 - accuracies[1], accuracy: 1e-12)
    XCTAssertEqual(try XCTUnwrap(result["best_test_acc"] as? Double), accuracies.max()!)
    XCTAssertEqual(result["epochs"] as? Int, 2)
    XCTAssertEqual(
      try Genotype(pythonDescription: readText(a, "genotype.txt")), Genotype.published["PC_DARTS_cifar"])
    XCTAssertEqual(try Genotype(json: readText(a, "genotype.json")), Genotype.published["PC_DARTS_cifar"])

    // The checkpoint holds SGD's momentum; weights.safetensors only the official state_dict.
    let checkpoint = try tensors(a)
    XCTAssertEqual(checkpoint.metadata["next_epoch"], "2")
    XCTAssertNotNil(checkpoint.tensors["optimizer.sgd.momentum_buffer.auxiliary_head.features.2.weight"])
    let weights = try tensors(a, "weights.safetensors")
    XCTAssertFalse(weights.tensors.keys.contains { $0.hasPrefix("optimizer.") })
    for name in ["stem.0.weight", "cells.2._ops.0.op.1.weight", "auxiliary_head.classifier.bias", "classifier.weight"] {
      XCTAssertNotNil(weights.tensors[name], name)
    }
    XCTAssertEqual(
      Set(weights.tensors.keys), Set(checkpoint.tensors.keys.filter { !$0.hasPrefix("optimizer.") }))
    for (name, t) in weights.tensors { XCTAssertTrue(checkpoint.tensors[name] == t, name) }

    // The same flags in another folder: the same numbers and weights.
    let b = out("b")
    XCTAssertEqual(try train(flags(out: b)).code, 0)
    for (x, y) in zip(lines, try logLines(b)) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
    XCTAssertTrue(try tensors(b).tensors == checkpoint.tensors, "the checkpoints' tensors differ")

    // --evaluate on the weights gives the last epoch's test figures (test.py).
    let evaluation = try capturingOutput(of: STDOUT_FILENO, scratch: root) {
      TrainCommand.main(["--evaluate", a + "/weights.safetensors", "--data", dataPath])
    }
    XCTAssertEqual(evaluation.code, 0, evaluation.output)
    XCTAssertTrue(
      evaluation.output.contains(String(format: "test_acc %.4f", accuracies[1])), evaluation.output)
    XCTAssertTrue(evaluation.output.contains("4 images of cifar10-test"), evaluation.output)
  }

  func testResumeAfterAnInterruptionMatchesAnUninterruptedRun() throws {
    // 3 epochs, cut after the first: the resumed process continues SGD's momentum, the schedules,
    // the data stream and the drop-path masks from the checkpoint.
    let whole = out("whole")
    XCTAssertEqual(try train(flags(out: whole, epochs: 3)).code, 0)
    let cut = out("cut")
    do {
      let settings = try TrainCommand.settings(from: try TrainCommand.parser.parse(flags(out: cut, epochs: 3)))
      let run = try TrainingRun(
        settings: settings, genotype: Genotype.published["PC_DARTS_cifar"]!,
        trainData: try loadDataset(.cifar10, from: dataPath, train: true),
        testData: try loadDataset(.cifar10, from: dataPath, train: false))
      try run.runEpoch()
      try RunDirectory(cut, layout: .training).writeEpoch(run)
    }
    XCTAssertEqual(try logLines(cut).count, 1)
    XCTAssertFalse(FileManager.default.fileExists(atPath: cut + "/result.json"))
    let resumed = try train(flags(out: cut, epochs: 3) + ["--resume"])
    XCTAssertEqual(resumed.code, 0, resumed.stderr)
    let (expected, actual) = (try logLines(whole), try logLines(cut))
    XCTAssertEqual(actual.count, 3)
    for (x, y) in zip(expected, actual) { XCTAssertEqual(deterministicPart(x), deterministicPart(y)) }
    XCTAssertTrue(try tensors(cut).tensors == tensors(whole).tensors, "resumed weights or momentum differ")
    XCTAssertEqual(try readText(cut, "result.json"), try readText(whole, "result.json"))

    // More epochs on resume: allowed, recorded in the next line, and the result is rewritten.
    let longer = try train(flags(out: cut, epochs: 4) + ["--resume"])
    XCTAssertEqual(longer.code, 0, longer.stderr)
    let four = try logLines(cut)
    XCTAssertEqual(four.count, 4)
    XCTAssertEqual(four[3]["settings_changed"] as? [String], ["epochs: 3 → 4"])
    XCTAssertTrue(try readText(cut, "result.json").contains("\"epochs\":4"))
  }

  func testGenotypesFromASearchFolderAStringOrAFile() throws {
    // A search folder whose genotype.json has a skip_connect cap: the capped genotype is trained.
    let search = out("search")
    try FileManager.default.createDirectory(atPath: search, withIntermediateDirectories: true)
    let raw = try XCTUnwrap(Genotype.published["DARTS_V2"]),
      capped = try XCTUnwrap(Genotype.published["PC_DARTS_cifar"])
    var object = raw.jsonObject
    object["max_skip_connect"] = 1
    object["capped"] = capped.jsonObject
    try JSONSerialization.data(withJSONObject: object).write(to: URL(fileURLWithPath: search + "/genotype.json"))
    XCTAssertEqual(try Genotype.resolve(search).genotype, capped)
    XCTAssertEqual(try Genotype.resolve(raw.pythonDescription).genotype, raw)
    try Data(raw.pythonDescription.utf8).write(to: URL(fileURLWithPath: search + "/g.txt"))
    XCTAssertEqual(try Genotype.resolve(search + "/g.txt").genotype, raw)
    XCTAssertEqual(try Genotype.resolve("PCDARTS").genotype, capped)
    let run = try train(flags(out: out("from-search"), epochs: 1, genotype: search))
    XCTAssertEqual(run.code, 0, run.stderr)
    XCTAssertEqual(try Genotype(json: readText(out("from-search"), "genotype.json")), capped)
  }

  func testBadInputFailsWithAMessageAndLeavesTheOutputFolderUntouched() throws {
    let done = out("done")
    XCTAssertEqual(try train(flags(out: done, epochs: 1)).code, 0)
    let pristine = try snapshot(done)
    let unknownOp =
      "Genotype(normal=[('conv_9x9', 0), ('skip_connect', 1)], normal_concat=[2], "
      + "reduce=[('max_pool_3x3', 0), ('skip_connect', 1)], reduce_concat=[2])"
    let badInput =
      "Genotype(normal=[('sep_conv_3x3', 3), ('skip_connect', 1)], normal_concat=[2], "
      + "reduce=[('max_pool_3x3', 0), ('skip_connect', 1)], reduce_concat=[2])"
    var withoutGenotype = flags(out: done)
    withoutGenotype.removeSubrange(0..<2)
    let cases: [(String, [String], Int32, [String])] = [
      ("no genotype", withoutGenotype, 2, ["--genotype", "PC_DARTS_cifar"]),
      ("unknown name", flags(out: done, genotype: "PC_DARTS_cifra"), 2, ["PC_DARTS_cifra", "DARTS_V2"]),
      ("unknown operation", flags(out: done, genotype: unknownOp), 2, ["conv_9x9", "sep_conv_3x3"]),
      ("edge from a later node", flags(out: done, genotype: badInput), 2, ["normal edge 0", "node 0...1"]),
      ("folder without genotype", flags(out: done, genotype: root.path), 2, ["genotype.json", root.path]),
      ("both auxiliary switches", flags(out: done) + ["--auxiliary", "--no-auxiliary"], 2, ["--no-auxiliary"]),
      ("drop-path of 1", flags(out: done) + ["--drop-path-prob", "1"], 2, ["invalid --drop-path-prob", "[0, 1)"]),
      ("cutout of 0", flags(out: done) + ["--cutout-length", "0"], 2, ["invalid --cutout-length"]),
      ("checkpoint without --resume", flags(out: done), 2, ["--resume", "checkpoint.safetensors"]),
      (
        "resume with another genotype", flags(out: done, genotype: "DARTS_V2") + ["--resume"], 1,
        ["trains Genotype(normal=[('sep_conv_3x3', 1)", "pass the checkpoint's genotype"]
      ),
      ("resume with other layers", flags(out: done) + ["--resume", "--layers", "4"], 1, ["network.layers", "4", "3"]),
      ("subset beyond the data", flags(out: out("big")) + ["--subset", "51"], 2, ["invalid --subset", "51", "50"]),
      ("evaluate a missing file", ["--evaluate", out("nothing.safetensors"), "--data", dataPath], 1, ["no such file"]),
      (
        "evaluate a search checkpoint", ["--evaluate", done + "/log.jsonl", "--data", dataPath], 1,
        ["log.jsonl"]
      ),
      (
        "loss becomes NaN", flags(out: out("diverged")) + ["--lr", "1e30"], 1,
        ["not finite", "--lr (now 1e+30)"]
      ),
    ]
    for (what, arguments, expectedCode, words) in cases {
      let (code, message) = try train(arguments)
      XCTAssertEqual(code, expectedCode, "\(what): \(message)")
      for word in words { XCTAssertTrue(message.contains(word), "\(what): '\(word)' not in: \(message)") }
      let lastLine = message.split(separator: "\n").last.map(String.init) ?? ""
      XCTAssertTrue(lastLine.hasPrefix("error: "), "\(what): \(message)")
      XCTAssertTrue(try snapshot(done) == pristine, "\(what): the --out folder changed")
    }
  }

  func testEveryFlagOfASettingNamesARealSetting() throws {
    let settings = try TrainCommand.settings(from: TrainCommand.parser.parse([]))
    XCTAssertEqual(settings, TrainingSettings(), "the command's defaults are the library's (train.py's)")
    let paths = Set(settings.flatList.map(\.0))
    for (path, flag) in TrainCommand.flagsOfSettings {
      XCTAssertTrue(paths.contains(path) || path == "testSubset" || path == "subset", "\(flag) → \(path)")
      XCTAssertNotNil(TrainCommand.parser.options.first { "--" + $0.name == flag }, flag)
    }
    for (path, flag) in BenchCommand.flagsOfTrainingSettings {
      XCTAssertTrue(paths.contains(path), "bench \(flag) → \(path)")
      XCTAssertNotNil(BenchCommand.parser.options.first { "--" + $0.name == flag }, "bench \(flag)")
    }
  }
}
