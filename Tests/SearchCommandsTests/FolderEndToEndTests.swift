// The search and train commands on a folder of JPEG and PNG files (`--dataset folder`), built here
// from the fixture images of Tests/Fixtures/images: a tiny run of each writes its outputs, and
// bad folders, bad files and sizes the network cannot take fail with a message and an exit code.
import Foundation
import TensorEngine
import XCTest

@testable import SearchCommands

final class FolderEndToEndTests: XCTestCase {
  private var root: URL!
  private static let images = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/images")

  override func setUpWithError() throws {
    root = FileManager.default.temporaryDirectory.appendingPathComponent("pcdarts-folder-e2e-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: root) }

  /// `train/` with 8 images in each of the classes `cat` and `dog` (colour and grey, JPEG and PNG,
  /// odd sizes) and `val/` with 2 each; `extra` adds files (relative path → bytes).
  private func makeFolder(_ name: String, extra: [String: Data] = [:]) throws -> String {
    let names = ["rgb_37x23.jpg", "grey_50x41.jpg", "rgb_45x64.png", "palette_33x29.png"]
    var files: [String: Data] = extra
    for (part, count) in [("train", 8), ("val", 2)] {
      for n in 0..<count {
        for (c, label) in ["cat", "dog"].enumerated() {
          let source = names[(n + c) % names.count]
          files["\(part)/\(label)/\(n).\((source as NSString).pathExtension)"] = try Data(
            contentsOf: Self.images.appendingPathComponent(source))
        }
      }
    }
    let folder = root.appendingPathComponent(name)
    for (relative, data) in files {
      let url = folder.appendingPathComponent(relative)
      try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
      try data.write(to: url)
    }
    return folder.path
  }

  private func out(_ name: String) -> String { root.appendingPathComponent(name).path }

  private func searchFlags(data: String, out: String) -> [String] {
    [
      "--dataset", "folder", "--data", data, "--image-size", "16", "--layers", "3", "--init-channels", "4", "--K", "2",
      "--batch-size", "4", "--epochs", "1", "--warmup-epochs", "0", "--out", out,
    ]
  }

  func testSearchAndTrainOnAFolderWriteTheirOutputs() throws {
    let data = try makeFolder("pets")
    let (searchCode, searchError) = try runCapturingStderr(
      SearchCommand.main, searchFlags(data: data, out: out("search")), scratch: root)
    XCTAssertEqual(searchCode, 0, searchError)
    let searchLog = try logLines(out("search"))
    XCTAssertEqual(searchLog.count, 1)
    XCTAssertNotNil(searchLog[0]["genotype"])
    XCTAssertTrue(FileManager.default.fileExists(atPath: out("search") + "/checkpoint.safetensors"))

    let trainFlags = [
      "--dataset", "folder", "--data", data, "--genotype", out("search"), "--image-size", "32", "--layers", "3",
      "--init-channels", "4", "--batch-size", "4", "--epochs", "1", "--out", out("train"),
    ]
    let (trainCode, trainError) = try runCapturingStderr(TrainCommand.main, trainFlags, scratch: root)
    XCTAssertEqual(trainCode, 0, trainError)
    let trainLog = try logLines(out("train"))
    XCTAssertEqual(trainLog.count, 1)
    XCTAssertNotNil(trainLog[0]["test_acc"])
    // The trained network evaluates on val/ at the size it was trained on.
    let (evaluateCode, evaluateError) = try runCapturingStderr(
      TrainCommand.main,
      [
        "--dataset", "folder", "--data", data, "--image-size", "32", "--evaluate",
        out("train") + "/checkpoint.safetensors",
      ],
      scratch: root)
    XCTAssertEqual(evaluateCode, 0, evaluateError)
  }

  func testTheImageNetSettingSearchesAFolderDecodedPerBatch() throws {
    let data = try makeFolder("imagenet")
    let flags = [
      "--setting", "imagenet", "--dataset", "folder", "--data", data, "--image-size", "32", "--layers", "3",
      "--init-channels", "4", "--batch-size", "4", "--epochs", "2", "--warmup-epochs", "1", "--lr-warmup-epochs", "1",
      "--train-subset-portion", "0.5", "--arch-subset-portion", "0.5", "--out", out("search"),
    ]
    let (code, stderr) = try runCapturingStderr(SearchCommand.main, flags, scratch: root)
    XCTAssertEqual(code, 0, stderr)
    let checkpoint = try SafeTensorsFile.read(from: URL(fileURLWithPath: out("search") + "/checkpoint.safetensors"))
    let settings = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(XCTUnwrap(checkpoint.metadata["settings"]).utf8)) as? [String: Any])
    let network = try XCTUnwrap(settings["network"] as? [String: Any])
    XCTAssertEqual(network["stem"] as? String, "imagenet")
    XCTAssertEqual(network["partialChannels"] as? Int, 2)
    XCTAssertEqual(settings["learningRate"] as? Double, 0.5)
    XCTAssertEqual(settings["learningRateWarmupEpochs"] as? Int, 1)
    let log = try logLines(out("search"))
    // Epoch 0 warms up (0.5 · 1/1), epoch 1 follows the cosine schedule at 1 of 2 epochs.
    XCTAssertEqual(log.map { $0["lr"] as? Double }, [0.5, 0.25])
  }

  func testTheImageNetTrainingSettingTrainsNetworkImageNetOnAFolder() throws {
    let data = try makeFolder("imagenet-train")
    let flags = [
      "--setting", "imagenet", "--dataset", "folder", "--data", data, "--genotype", "PC_DARTS_image", "--image-size",
      "32",
      "--no-auxiliary", "--init-channels", "8", "--layers", "3", "--batch-size", "4", "--epochs", "6",
      "--lr-warmup-epochs", "2", "--out", out("train"),
    ]
    let (code, stderr) = try runCapturingStderr(TrainCommand.main, flags, scratch: root)
    XCTAssertEqual(code, 0, stderr)
    let checkpoint = try SafeTensorsFile.read(from: URL(fileURLWithPath: out("train") + "/checkpoint.safetensors"))
    let settings = try XCTUnwrap(
      JSONSerialization.jsonObject(with: Data(XCTUnwrap(checkpoint.metadata["settings"]).utf8)) as? [String: Any])
    XCTAssertEqual((settings["network"] as? [String: Any])?["stem"] as? String, "imagenet")
    XCTAssertEqual(settings["learningRateSchedule"] as? String, "linear")
    XCTAssertEqual(settings["labelSmoothing"] as? Double ?? 0, 0.1, accuracy: 1e-7)
    XCTAssertNil(settings["cutoutLength"], "no cutout in the ImageNet setting")
    XCTAssertEqual(settings["weightDecay"] as? Double ?? 0, 3e-5, accuracy: 1e-9)
    // Two warm-up epochs (0.25, 0.5), then the linear decay: 0.5·(6 − 5 − e)/1 while more than 5
    // epochs remain (none here), then 0.5·(6 − e)/5.
    let lrs = try logLines(out("train")).map { try XCTUnwrap($0["lr"] as? Double) }
    XCTAssertEqual(lrs.count, 6)
    for (lr, want) in zip(lrs, [0.25, 0.5, 0.4, 0.3, 0.2, 0.1]) { XCTAssertEqual(lr, want, accuracy: 1e-6) }
  }

  func testBadFoldersFilesAndSizesFailWithAMessage() throws {
    let jpeg = try Data(contentsOf: Self.images.appendingPathComponent("rgb_37x23.jpg"))
    let data = try makeFolder(
      "broken", extra: ["train/dog/cut.jpg": jpeg.prefix(300), "train/cat/readme.txt": Data("x".utf8)])
    func search(_ flags: [String]) throws -> (code: Int32, stderr: String) {
      try runCapturingStderr(SearchCommand.main, flags, scratch: root)
    }

    var (code, message) = try search(searchFlags(data: data, out: out("a")))
    XCTAssertEqual(code, 1, message)
    XCTAssertTrue(message.contains("\(data)/train/cat/readme.txt") && message.contains("--skip-bad-images"), message)

    (code, message) = try search(searchFlags(data: data, out: out("b")) + ["--skip-bad-images"])
    XCTAssertEqual(code, 0, message)
    XCTAssertTrue(message.contains("warning: skipped '\(data)/train/dog/cut.jpg'"), message)
    XCTAssertTrue(message.contains("warning: skipped '\(data)/train/cat/readme.txt'"), message)

    let missing = out("nowhere")
    (code, message) = try search(searchFlags(data: missing, out: out("c")))
    XCTAssertEqual(code, 1, message)
    XCTAssertTrue(message.contains("Image folder '\(missing)' not found"), message)

    let good = try makeFolder("good")
    (code, message) = try search(searchFlags(data: good, out: out("d")) + ["--image-size", "30"])
    XCTAssertEqual(code, 2, message)
    XCTAssertTrue(message.contains("multiple of 4"), message)

    (code, message) = try search(["--setting", "imagenet", "--dataset", "cifar10", "--out", out("h")])
    XCTAssertEqual(code, 2, message)
    XCTAssertTrue(message.contains("--setting imagenet reads a folder"), message)
    (code, message) = try search(
      searchFlags(data: good, out: out("i")) + ["--setting", "imagenet", "--image-size", "48"])
    XCTAssertEqual(code, 2, message)
    XCTAssertTrue(message.contains("multiple of 32"), message)

    (code, message) = try search(["--dataset", "cifar10", "--image-size", "64", "--out", out("e")])
    XCTAssertEqual(code, 2, message)
    XCTAssertTrue(message.contains("--dataset folder only"), message)

    (code, message) = try search(searchFlags(data: good, out: out("f")) + ["--mean", "0.5,0.5,0.5"])
    XCTAssertEqual(code, 2, message)
    XCTAssertTrue(message.contains("--mean and --std together"), message)

    let (trainCode, trainMessage) = try runCapturingStderr(
      TrainCommand.main,
      ["--dataset", "folder", "--data", good, "--genotype", "PC_DARTS_cifar", "--image-size", "16", "--out", out("g")],
      scratch: root)
    XCTAssertEqual(trainCode, 2, trainMessage)
    XCTAssertTrue(trainMessage.contains("auxiliary head needs images of at least 32 × 32"), trainMessage)
  }
}
