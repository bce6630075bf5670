// Image folders: decoding, resizing and cropping against Pillow and torchvision, the folder
// layout, and every bad input the loader must name.
//
// Tests/Fixtures/images holds small JPEG and PNG files in the colour modes a folder may hold and,
// in expected.safetensors, what Pillow (`convert('RGB')`) and torchvision (`Resize(S)`,
// `CenterCrop(S)`) make of them (scripts/make_image_fixtures.py). The loader must agree byte for byte.
import Foundation
import TensorEngine
import XCTest

@testable import PCDARTS

final class ImageFolderTests: XCTestCase {
  private var directory: URL!
  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("Fixtures/images")
  /// The fixture images, by file name.
  private static let imageNames = [
    "rgb_37x23.jpg", "rgb_progressive_61x47.jpg", "grey_50x41.jpg", "rgb_45x64.png", "grey_28x28.png",
    "greyalpha_30x26.png", "rgba_64x40.png", "palette_33x29.png", "onebit_17x19.png",
  ]

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory.appendingPathComponent("pcdarts-folder-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: directory) }

  // MARK: - Helpers

  private func fixtureBytes(_ name: String) throws -> Data {
    try Data(contentsOf: Self.fixtures.appendingPathComponent(name))
  }

  private func expected() throws -> SafeTensorsFile {
    try SafeTensorsFile.read(from: Self.fixtures.appendingPathComponent("expected.safetensors"))
  }

  private func bytes(_ file: SafeTensorsFile, _ name: String) throws -> [UInt8] {
    let values = try XCTUnwrap(file.tensors[name]?.int64s, "expected.safetensors has no \(name)")
    return values.map { UInt8($0) }
  }

  /// Writes `files` (relative path → bytes) under a new folder and returns its path.
  private func makeFolder(_ name: String, _ files: [String: Data]) throws -> String {
    let root = directory.appendingPathComponent(name)
    for (relative, data) in files {
      let url = root.appendingPathComponent(relative)
      try FileManager.default.createDirectory(at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
      try data.write(to: url)
    }
    return root.path
  }

  private func failure(_ body: () throws -> Void) -> String {
    do {
      try body()
      return "no error"
    } catch {
      return "\(error)"
    }
  }

  // MARK: - Against Pillow and torchvision

  func testDecodingEqualsPillowConvertRGB() throws {
    let golden = try expected()
    for name in Self.imageNames {
      let image = try DecodedImage(decoding: try fixtureBytes(name), file: name)
      let stem = (name as NSString).deletingPathExtension
      let shape = try XCTUnwrap(golden.tensors[stem + ".decoded"]?.shape)
      XCTAssertEqual([image.height, image.width, 3], shape, name)
      XCTAssertEqual(image.pixels, try bytes(golden, stem + ".decoded"), "\(name): decoded pixels differ from Pillow's")
    }
  }

  func testResizeAndCentreCropEqualTorchvision() throws {
    let golden = try expected()
    for name in Self.imageNames {
      let image = try DecodedImage(decoding: try fixtureBytes(name), file: name)
      let stem = (name as NSString).deletingPathExtension
      for size in [32, 16] {
        let planes = image.resized(shorterSide: size).centreCropPlanes(size)
        let want = try bytes(golden, "\(stem).s\(size)")
        let differing = zip(planes, want).filter { $0 != $1 }.count
        XCTAssertEqual(
          differing, 0, "\(name) at \(size): \(differing) of \(want.count) bytes differ from torchvision's")
      }
    }
  }

  func testResizedCropsAndTheEvaluationTransformEqualTorchvision() throws {
    let golden = try expected()
    for name in ["rgb_37x23.jpg", "rgb_progressive_61x47.jpg", "rgba_64x40.png", "grey_50x41.jpg"] {
      let image = try DecodedImage(decoding: try fixtureBytes(name), file: name)
      let stem = (name as NSString).deletingPathExtension
      for k in 0..<4 {
        let box = try XCTUnwrap(golden.tensors["\(stem).crop\(k).box"]?.int64s).map { Int($0) }
        let draw = ResizedCropDraw(top: box[0], left: box[1], height: box[2], width: box[3], flip: box[4] == 1)
        XCTAssertEqual(
          image.resizedCropPlanes(draw, size: 16), try bytes(golden, "\(stem).crop\(k)"), "\(name) box \(box)")
      }
      XCTAssertEqual(image.resizedCentreCropPlanes(resize: 18, size: 16), try bytes(golden, stem + ".eval16"), name)
    }
  }

  func testColourJitterEqualsTorchvisionOnPillow() throws {
    let golden = try expected()
    let source = try bytes(golden, "rgb_progressive_61x47.s16")
    let cases: [(String, ColorJitter.Draw)] = [
      ("brightness_up", .init(order: [0], brightness: 1.3, contrast: nil, saturation: nil, hue: nil)),
      ("brightness_down", .init(order: [0], brightness: 0.7, contrast: nil, saturation: nil, hue: nil)),
      ("contrast_up", .init(order: [1], brightness: nil, contrast: 1.35, saturation: nil, hue: nil)),
      ("contrast_down", .init(order: [1], brightness: nil, contrast: 0.65, saturation: nil, hue: nil)),
      ("saturation_up", .init(order: [2], brightness: nil, contrast: nil, saturation: 1.2, hue: nil)),
      ("saturation_down", .init(order: [2], brightness: nil, contrast: nil, saturation: 0.6, hue: nil)),
      ("hue_up", .init(order: [3], brightness: nil, contrast: nil, saturation: nil, hue: 0.15)),
      ("hue_down", .init(order: [3], brightness: nil, contrast: nil, saturation: nil, hue: -0.17)),
      ("sequence", .init(order: [2, 0, 3, 1], brightness: 1.1, contrast: 0.8, saturation: 1.3, hue: -0.05)),
    ]
    for (name, draw) in cases {
      var planes = source
      ColorJitter.apply(draw, to: &planes)
      let want = try bytes(golden, "jitter." + name)
      let differing = zip(planes, want).filter { $0 != $1 }.count
      XCTAssertEqual(differing, 0, "\(name): \(differing) of \(want.count) bytes differ from torchvision's")
    }
    // Every colour through HSV and back, against the conversions' own round trip on greys.
    XCTAssertTrue((0...255).allSatisfy { v in ColorJitter.rgbToHSV(UInt8(v), UInt8(v), UInt8(v)) == (0, 0, UInt8(v)) })
    // The draws: a permutation of the four, factors in range, none for a strength of 0.
    var rng = SeededGenerator(seed: 2)
    for _ in 0..<200 {
      let draw = ColorJitter(brightness: 0.4, contrast: 0, saturation: 0.4, hue: 0.2).draw(using: &rng)
      XCTAssertEqual(draw.order.sorted(), [0, 1, 2, 3])
      XCTAssertNil(draw.contrast)
      XCTAssertTrue((0.6...1.4).contains(draw.brightness!) && (-0.2...0.2).contains(draw.hue!))
    }
  }

  func testRandomResizedCropDrawsStayInTorchvisionsRanges() {
    var rng = SeededGenerator(seed: 5)
    var flips = 0
    for trial in 0..<2000 {
      let (width, height) = (trial % 7 == 0 ? 500 : 37 + trial % 300, 23 + (trial * 7) % 400)
      let draw = ResizedCropDraw.random(imageWidth: width, imageHeight: height, using: &rng)
      XCTAssertTrue(
        draw.top >= 0 && draw.left >= 0 && draw.top + draw.height <= height && draw.left + draw.width <= width)
      let fraction = Double(draw.width * draw.height) / Double(width * height)
      let ratio = Double(draw.width) / Double(draw.height)
      // A drawn box keeps 8-100% of the area at a ratio within [3/4, 4/3] up to the rounding of
      // its sides; the fallback is the centre crop of the clamped ratio.
      XCTAssertTrue(fraction > 0.06 && fraction <= 1, "\(draw) of \(width) × \(height)")
      XCTAssertTrue(ratio > 0.7 && ratio < 1.43 || draw.width == width || draw.height == height, "\(draw)")
      flips += draw.flip ? 1 : 0
    }
    XCTAssertEqual(Double(flips) / 2000, 0.5, accuracy: 0.05)
    // An image too narrow for any drawn box: the fallback keeps its whole width at ratio 3/4.
    var fallback = SeededGenerator(seed: 1)
    let thin = ResizedCropDraw.random(imageWidth: 10, imageHeight: 400, using: &fallback)
    XCTAssertEqual([thin.width, thin.height, thin.top, thin.left], [10, 13, 193, 0])
  }

  func testAFolderDecodedPerBatchGivesTheTransformsOfItsFiles() throws {
    var files: [String: Data] = [:]
    let names = ["rgb_37x23.jpg", "rgb_progressive_61x47.jpg", "rgba_64x40.png", "grey_50x41.jpg"]
    for n in 0..<8 {
      files["c\(n % 2)/\(n).\((names[n % 4] as NSString).pathExtension)"] = try fixtureBytes(names[n % 4])
    }
    let path = try makeFolder("perbatch", files)
    var options = ImageFolderOptions(imageSize: 16, mean: [0.5, 0.4, 0.3], std: [0.2, 0.25, 0.3])
    options.decodePerBatch = true
    let data = try loadImageFolder(from: path, train: true, options: options)
    XCTAssertTrue(data.images.isEmpty)
    XCTAssertEqual(data.files?.paths.count, 8)
    XCTAssertEqual(data.files?.evaluationResize, 18)
    // Evaluation batches: Resize(18), CenterCrop(16), normalised.
    let golden = try expected()
    let loader = BatchLoader(dataset: data, batchSize: 8, augment: false, seed: 1, prefetch: false)
    let batch = try XCTUnwrap(loader.nextBatch())
    XCTAssertEqual([batch.height, batch.width, batch.count], [16, 16, 8])
    for (k, index) in batch.indices.enumerated() {
      // Class c0 holds files 0, 2, 4, 6 and c1 files 1, 3, 5, 7, each in name order.
      let file = index < 4 ? 2 * index : 2 * (index - 4) + 1
      let stem = (names[file % 4] as NSString).deletingPathExtension
      let want = try bytes(golden, stem + ".eval16")
      for i in stride(from: 0, to: 768, by: 37) {
        let c = i / 256
        XCTAssertEqual(
          batch.images[k * 768 + i], (Float(want[i]) / 255 - options.mean![c]) / options.std![c], accuracy: 1e-6)
      }
      XCTAssertEqual(batch.labels[k], Int32(file % 2))
    }
    // Training batches: the same with or without prefetch, and two ranks' rows are the whole batch's.
    let whole = BatchLoader(dataset: data, batchSize: 6, augment: true, seed: 9, prefetch: true)
    let wholeBatch = try XCTUnwrap(whole.nextBatch())
    let again = try XCTUnwrap(
      BatchLoader(dataset: data, batchSize: 6, augment: true, seed: 9, prefetch: false).nextBatch())
    XCTAssertEqual(wholeBatch.images, again.images)
    let rank1 = try XCTUnwrap(
      BatchLoader(dataset: data, batchSize: 6, augment: true, seed: 9, prefetch: false, rank: 1, ranks: 2).nextBatch())
    XCTAssertEqual(rank1.images, Array(wholeBatch.images[3 * 768..<6 * 768]))
    XCTAssertNotEqual(wholeBatch.images, try XCTUnwrap(loader.nextCycling()).images)
    // A subset keeps its files; statistics come from a sample when not given.
    XCTAssertEqual(data.subset([5, 2]).files?.paths, [data.files!.paths[5], data.files!.paths[2]])
    options.mean = nil
    options.std = nil
    let estimated = try loadImageFolder(from: path, train: true, options: options)
    XCTAssertTrue(estimated.warnings.contains { $0.contains("estimated from 8 images") }, "\(estimated.warnings)")
    XCTAssertTrue(estimated.std.allSatisfy { $0 > 0.05 && $0 < 0.5 })
  }

  // MARK: - The folder layout

  func testFolderClassesInSortedOrderWithNestedFilesAndStatistics() throws {
    let path = try makeFolder(
      "layout",
      [
        "train/zebra/a.png": try fixtureBytes("grey_28x28.png"),
        "train/Ant/b.jpg": try fixtureBytes("rgb_37x23.jpg"),
        "train/Ant/sub/c.PNG": try fixtureBytes("rgba_64x40.png"),
        "train/bee/d.jpeg": try fixtureBytes("grey_50x41.jpg"),
        "val/Ant/e.png": try fixtureBytes("palette_33x29.png"),
        "val/bee/f.png": try fixtureBytes("rgb_45x64.png"),
        "val/zebra/g.png": try fixtureBytes("onebit_17x19.png"),
      ])
    let train = try loadImageFolder(from: path, train: true, options: ImageFolderOptions(imageSize: 16))
    // Code-point order: upper case first, as Python's sorted().
    XCTAssertEqual(train.classNames, ["Ant", "bee", "zebra"])
    XCTAssertEqual(train.labels, [0, 0, 1, 2])
    XCTAssertEqual([train.height, train.width, train.count], [16, 16, 4])
    let golden = try expected()
    // Ant/b.jpg before Ant/sub/c.PNG: files of a folder before its sub-folders' (sorted os.walk).
    XCTAssertEqual(Array(train.images[0..<768]), try bytes(golden, "rgb_37x23.s16"))
    XCTAssertEqual(Array(train.images[768..<1536]), try bytes(golden, "rgba_64x40.s16"))
    // Population statistics of the kept bytes.
    let (mean, std) = pixelStatistics(train)
    XCTAssertEqual(train.mean, mean)
    XCTAssertEqual(train.std, std)
    var red: [Double] = []
    for n in 0..<4 {
      for i in 0..<256 { red.append(Double(train.images[n * 768 + i]) / 255) }
    }
    let redMean: Double = red.reduce(0, +) / Double(red.count)
    var squares: Double = 0
    for v in red { squares += (v - redMean) * (v - redMean) }
    let redStd: Double = (squares / Double(red.count)).squareRoot()
    XCTAssertEqual(Double(mean[0]), redMean, accuracy: 1e-6)
    XCTAssertEqual(Double(std[0]), redStd, accuracy: 1e-6)
    // The validation part is normalised with the training part's statistics.
    let val = try loadImageFolder(from: path, train: false, options: ImageFolderOptions(imageSize: 16))
    XCTAssertEqual(val.labels, [0, 1, 2])
    XCTAssertEqual(val.mean, mean)
    XCTAssertEqual(val.std, std)
    XCTAssertEqual(Array(val.images[768..<1536]), try bytes(golden, "rgb_45x64.s16"))
    // A single folder of classes is the training part; loadDataset reads it the same way.
    let single = try loadDataset(
      .folder, from: path + "/val", train: true,
      folder: ImageFolderOptions(imageSize: 16, mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25]))
    XCTAssertEqual(single.images, val.images)
    XCTAssertEqual(single.mean, [0.5, 0.5, 0.5])
  }

  func testABatchOfFolderImagesHasTheFolderSize() throws {
    var files: [String: Data] = [:]
    for n in 0..<6 { files["c\(n % 2)/\(n).png"] = try fixtureBytes(n % 2 == 0 ? "rgb_45x64.png" : "grey_28x28.png") }
    let data = try loadImageFolder(
      from: try makeFolder("batch", files), train: true, options: ImageFolderOptions(imageSize: 24))
    let loader = BatchLoader(dataset: data, batchSize: 4, augment: true, cutoutLength: 8, seed: 3, prefetch: false)
    let batch = LabeledBatch(try XCTUnwrap(loader.nextBatch()))
    XCTAssertEqual(batch.images.shape, [4, 3, 24, 24])
  }

  // MARK: - Bad input

  func testBadInputNamesTheFileOrFolder() throws {
    let png = try fixtureBytes("rgb_45x64.png"), jpeg = try fixtureBytes("rgb_37x23.jpg")
    let missing = directory.appendingPathComponent("nowhere").path
    XCTAssertTrue(failure { _ = try loadImageFolder(from: missing, train: true) }.contains("'\(missing)' not found"))

    let one = try makeFolder("one", ["only/a.png": png])
    XCTAssertTrue(failure { _ = try loadImageFolder(from: one, train: true) }.contains("one class folder ('only')"))

    let none = try makeFolder("none", ["a.png": png])
    XCTAssertTrue(failure { _ = try loadImageFolder(from: none, train: true) }.contains("no class folders"))

    let empty = try makeFolder("empty", ["a/x.png": png, "b/notes.txt": Data("hi".utf8)])
    let emptyMessage = failure { _ = try loadImageFolder(from: empty, train: true) }
    XCTAssertTrue(
      emptyMessage.contains("\(empty)/b/notes.txt") && emptyMessage.contains("--skip-bad-images"), emptyMessage)
    let emptyClass = failure {
      _ = try loadImageFolder(from: empty, train: true, options: ImageFolderOptions(skipBadFiles: true))
    }
    XCTAssertTrue(emptyClass.contains("\(empty)/b") && emptyClass.contains("holds no .jpg"), emptyClass)

    let truncatedJPEG = jpeg.prefix(jpeg.count / 2), truncatedPNG = png.prefix(png.count / 2)
    let corrupt = try makeFolder(
      "corrupt",
      [
        "a/good.png": png, "a/half.jpg": truncatedJPEG, "b/good.jpg": jpeg, "b/half.png": truncatedPNG,
        "b/text.png": Data("not an image".utf8),
      ])
    let corruptMessage = failure { _ = try loadImageFolder(from: corrupt, train: true) }
    XCTAssertTrue(corruptMessage.contains("'\(corrupt)/a/half.jpg'") && corruptMessage.contains("JPEG"), corruptMessage)
    // Skipping keeps the good files and lists each bad one.
    let kept = try loadImageFolder(from: corrupt, train: true, options: ImageFolderOptions(skipBadFiles: true))
    XCTAssertEqual(kept.labels, [0, 1])
    XCTAssertEqual(kept.warnings.count, 3, "\(kept.warnings)")
    XCTAssertTrue(kept.warnings.contains { $0.contains("b/half.png") && $0.contains("PNG") }, "\(kept.warnings)")
    XCTAssertTrue(
      kept.warnings.contains { $0.contains("b/text.png") && $0.contains("not a JPEG or PNG") }, "\(kept.warnings)")

    let noVal = try makeFolder("noval", ["train/a/x.png": png, "train/b/y.png": png])
    XCTAssertTrue(failure { _ = try loadImageFolder(from: noVal, train: false) }.contains("no val/ folder"))

  }
}
