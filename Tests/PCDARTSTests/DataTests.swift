// Dataset readers, the search split, the augmentation and the batch loader.
//
// The CIFAR and IDX files are written here byte by byte in the official layouts, with pixel values
// that encode their position, so every parsed pixel and label can be checked exactly.
import CZlib
import Foundation
import NeuralNetwork
import TensorEngine
import TestSupport
import XCTest

@testable import PCDARTS

final class DataTests: XCTestCase {
  private var directory: URL!

  override func setUpWithError() throws {
    directory = FileManager.default.temporaryDirectory
      .appendingPathComponent("pcdarts-data-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws {
    try? FileManager.default.removeItem(at: directory)
  }

  // MARK: - Helpers

  /// The pixel value the helpers write at (record, channel, y, x): distinct for nearby positions.
  private func pixel(_ record: Int, _ c: Int, _ y: Int, _ x: Int) -> UInt8 {
    UInt8((record * 37 + c * 101 + y * 11 + x * 3) % 256)
  }

  /// One CIFAR record: `labels` bytes then the R, G, B planes of 32×32 row-major.
  private func cifarRecord(labels: [UInt8], record: Int) -> [UInt8] {
    var bytes = labels
    for c in 0..<3 {
      for y in 0..<32 {
        for x in 0..<32 { bytes.append(pixel(record, c, y, x)) }
      }
    }
    return bytes
  }

  private func write(_ bytes: [UInt8], to path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
  }

  /// Writes a CIFAR-10 folder; `recordsPerFile[f]` records in file f (5 training files, then test).
  /// Record r over the whole set (counted across files) gets label `r % 10`.
  @discardableResult
  private func makeCIFAR10(recordsPerFile: [Int]) throws -> String {
    let folder = directory.appendingPathComponent("cifar-10-batches-bin").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let names = (1...5).map { "data_batch_\($0).bin" } + ["test_batch.bin"]
    var record = 0
    for (name, n) in zip(names, recordsPerFile) {
      var bytes: [UInt8] = []
      for _ in 0..<n {
        bytes += cifarRecord(labels: [UInt8(record % 10)], record: record)
        record += 1
      }
      try write(bytes, to: folder + "/" + name)
    }
    return folder
  }

  /// Compresses with zlib as gzip (windowBits 31 = 15 + 16 for the gzip wrapper).
  private func gzip(_ bytes: [UInt8]) throws -> Data {
    var stream = z_stream()
    var status = deflateInit2_(
      &stream, Z_BEST_COMPRESSION, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY, zlibVersion(),
      Int32(MemoryLayout<z_stream>.size))
    XCTAssertEqual(status, Z_OK)
    defer { deflateEnd(&stream) }
    var input = bytes
    var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))) + 64)
    input.withUnsafeMutableBufferPointer { inp in
      output.withUnsafeMutableBufferPointer { out in
        stream.next_in = inp.baseAddress
        stream.avail_in = uInt(inp.count)
        stream.next_out = out.baseAddress
        stream.avail_out = uInt(out.count)
        status = deflate(&stream, Z_FINISH)
      }
    }
    XCTAssertEqual(status, Z_STREAM_END)
    return Data(output[0..<Int(stream.total_out)])
  }

  private func bigEndian(_ values: [UInt32]) -> [UInt8] {
    values.flatMap { v in [24, 16, 8, 0].map { UInt8((v >> UInt32($0)) & 0xFF) } }
  }

  /// Writes gzip IDX files for `labels.count` 28×28 images whose pixel (n, y, x) is `(n + y·28 + x) % 251`.
  private func makeFashionMNIST(
    prefix: String, labels: [UInt8], imageMagic: UInt32 = 2051, labelCount: Int? = nil
  ) throws -> String {
    let n = labels.count
    var images = bigEndian([imageMagic, UInt32(n), 28, 28])
    for i in 0..<n {
      for y in 0..<28 {
        for x in 0..<28 { images.append(UInt8((i + y * 28 + x) % 251)) }
      }
    }
    let labelBytes = bigEndian([2049, UInt32(labelCount ?? n)]) + labels
    let folder = directory.path
    try gzip(images).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-images-idx3-ubyte.gz"))
    try gzip(labelBytes).write(to: URL(fileURLWithPath: "\(folder)/\(prefix)-labels-idx1-ubyte.gz"))
    return folder
  }

  private func tinyDataset(count: Int) -> ImageDataset {
    var images: [UInt8] = []
    for r in 0..<count {
      for c in 0..<3 {
        for y in 0..<32 {
          for x in 0..<32 { images.append(pixel(r, c, y, x)) }
        }
      }
    }
    return ImageDataset(
      name: "tiny", images: images, labels: (0..<count).map { Int32($0 % 10) }, classCount: 10,
      mean: [0.5, 0.25, 0.125], std: [0.5, 0.25, 0.2])
  }

  // MARK: - CIFAR-10

  func testCIFAR10ReadsEveryRecordExactly() throws {
    // Uneven record counts: the reader must accept any whole number of records per file (an empty
    // file is an error, see below).
    let folder = try makeCIFAR10(recordsPerFile: [2, 1, 1, 2, 1, 2])
    for path in [folder, directory.path, directory.path + "/"] {
      let train = try loadCIFAR10(from: path, train: true)
      XCTAssertEqual(train.count, 7)
      XCTAssertEqual(train.classCount, 10)
      XCTAssertEqual(train.labels, [0, 1, 2, 3, 4, 5, 6])
      XCTAssertEqual(train.images.count, 7 * 3072)
      for r in 0..<7 {
        for (c, y, x) in [(0, 0, 0), (0, 5, 17), (1, 31, 0), (2, 13, 31), (2, 31, 31)] {
          XCTAssertEqual(
            train.images[r * 3072 + c * 1024 + y * 32 + x], pixel(r, c, y, x),
            "record \(r) channel \(c) (\(y), \(x))")
        }
      }
      XCTAssertEqual(train.mean, [0.49139968, 0.48215827, 0.44653124])
      XCTAssertEqual(train.std, [0.24703233, 0.24348505, 0.26158768])
    }
    let test = try loadCIFAR10(from: folder, train: false)
    XCTAssertEqual(test.labels, [7, 8])
    // The test file's records were numbered 7 and 8 when written.
    XCTAssertEqual(Array(test.images[0..<3072]), cifarRecord(labels: [], record: 7))
    XCTAssertEqual(Array(test.images[3072...]), cifarRecord(labels: [], record: 8))
    XCTAssertEqual(test.name, "cifar10-test")
  }

  func testCIFAR10TruncatedFileNamesFileAndSize() throws {
    let folder = try makeCIFAR10(recordsPerFile: [1, 1, 1, 1, 1, 1])
    let path = folder + "/data_batch_3.bin"
    try write(Array(cifarRecord(labels: [1], record: 0) + [1, 2, 3]), to: path)
    assertThrows(DataError.self, try loadCIFAR10(from: folder, train: true)) { error in
      XCTAssertEqual(error, .badFileSize(file: path, size: 3076, recordSize: 3073))
      XCTAssertTrue(error.description.contains("data_batch_3.bin"), error.description)
      XCTAssertTrue(error.description.contains("3076 bytes"), error.description)
    }
    // The test file is unaffected by a bad training file.
    XCTAssertEqual(try loadCIFAR10(from: folder, train: false).count, 1)
  }

  func testAnEmptyFileOrAFolderInPlaceOfAFileIsAnError() throws {
    let folder = try makeCIFAR10(recordsPerFile: [1, 1, 1, 1, 1, 1])
    let path = folder + "/data_batch_2.bin"
    try write([], to: path)
    assertThrows(DataError.self, try loadCIFAR10(from: folder, train: true)) { error in
      XCTAssertEqual(error, .emptyFile(file: path))
      XCTAssertTrue(error.description.contains("data_batch_2.bin") && error.description.contains("empty"))
    }
    try FileManager.default.removeItem(atPath: path)
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: false)
    assertThrows(DataError.self, try loadCIFAR10(from: folder, train: true)) { error in
      XCTAssertEqual(error, .unreadable(file: path, reason: "it is a folder, not a file"))
      XCTAssertFalse(error.description.contains("NSCocoaErrorDomain"), error.description)
    }
  }

  func testAFileWithOtherThanTheOfficialRecordCountIsUsedWithOneWarning() throws {
    // Cut at a record boundary: 3 records where the official file has 10,000.
    let folder = try makeCIFAR10(recordsPerFile: [3, 3, 3, 3, 3, 2])
    let train = try loadCIFAR10(from: folder, train: true)
    XCTAssertEqual(train.count, 15)
    XCTAssertEqual(train.warnings.count, 5)
    let first = try XCTUnwrap(train.warnings.first)
    XCTAssertTrue(first.contains("data_batch_1.bin") && first.contains("3 records") && first.contains("10000"), first)
    XCTAssertEqual(train.subset([0, 1]).warnings, train.warnings, "a subset keeps its data's warnings")
    XCTAssertEqual(try loadCIFAR10(from: folder, train: false).warnings.count, 1)
  }

  func testCIFAR10LabelOutOfRangeNamesFileAndRecord() throws {
    let folder = try makeCIFAR10(recordsPerFile: [1, 1, 1, 1, 1, 0])
    let path = folder + "/test_batch.bin"
    try write(
      cifarRecord(labels: [3], record: 0) + cifarRecord(labels: [10], record: 1), to: path)
    assertThrows(DataError.self, try loadCIFAR10(from: folder, train: false)) { error in
      XCTAssertEqual(error, .labelOutOfRange(file: path, record: 1, label: 10, classCount: 10))
      XCTAssertTrue(error.description.contains("test_batch.bin' record 1"), error.description)
    }
  }

  func testMissingFolderExplainsDownloadAndFashionMNIST() {
    let path = directory.appendingPathComponent("nowhere").path
    assertThrows(DataError.self, try loadDataset(.cifar10, from: path, train: true)) { error in
      XCTAssertEqual(error, .missingData(dataset: .cifar10, path: path))
      let text = error.description
      for needle in [
        "cifar-10-batches-bin", "data_batch_1.bin", "test_batch.bin", "CIFAR-10 binary version",
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz", "the fashion-mnist dataset",
        "dataset-fashion-mnist", path,
      ] {
        XCTAssertTrue(text.contains(needle), "missing '\(needle)' in: \(text)")
      }
    }
    // A folder that exists but holds a missing training file names that file.
    XCTAssertNoThrow(try makeCIFAR10(recordsPerFile: [1, 1, 1, 1]))
    assertThrows(DataError.self, try loadCIFAR10(from: directory.path, train: true)) { error in
      XCTAssertEqual(
        error,
        .missingData(
          dataset: .cifar10,
          path: directory.appendingPathComponent("cifar-10-batches-bin/data_batch_5.bin").path))
    }
    assertThrows(DataError.self, try loadDataset(.fashionMNIST, from: path, train: true)) { error in
      XCTAssertTrue(error.description.contains("apt install dataset-fashion-mnist"))
      XCTAssertTrue(error.description.contains("train-images-idx3-ubyte.gz"))
    }
  }

  // MARK: - CIFAR-100

  func testCIFAR100UsesFineLabels() throws {
    let folder = directory.appendingPathComponent("cifar-100-binary").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try write(
      cifarRecord(labels: [19, 99], record: 0) + cifarRecord(labels: [0, 42], record: 1),
      to: folder + "/train.bin")
    try write(cifarRecord(labels: [5, 100], record: 0), to: folder + "/test.bin")

    let train = try loadDataset(.cifar100, from: directory.path, train: true)
    XCTAssertEqual(train.labels, [99, 42])
    XCTAssertEqual(train.classCount, 100)
    XCTAssertEqual(Array(train.images[3072...]), cifarRecord(labels: [], record: 1))
    XCTAssertEqual(train.mean, [0.5071, 0.4865, 0.4409])
    XCTAssertEqual(train.std, [0.2673, 0.2564, 0.2762])
    assertThrows(DataError.self, try loadCIFAR100(from: folder, train: false)) { error in
      XCTAssertEqual(
        error, .labelOutOfRange(file: folder + "/test.bin", record: 0, label: 100, classCount: 100))
    }
    // A 2-label-byte file one byte short is not a whole number of 3074-byte records.
    try write(Array(cifarRecord(labels: [1, 2], record: 0).dropLast()), to: folder + "/test.bin")
    assertThrows(DataError.self, try loadCIFAR100(from: folder, train: false)) { error in
      XCTAssertEqual(error, .badFileSize(file: folder + "/test.bin", size: 3073, recordSize: 3074))
    }
  }

  // MARK: - Fashion-MNIST

  func testFashionMNISTGzipIDXRoundTrip() throws {
    let folder = try makeFashionMNIST(prefix: "t10k", labels: [9, 0, 3])
    let data = try loadDataset(.fashionMNIST, from: folder, train: false)
    XCTAssertEqual(data.count, 3)
    XCTAssertEqual(data.labels, [9, 0, 3])
    XCTAssertEqual(data.classCount, 10)
    XCTAssertEqual(data.mean, [0.2860, 0.2860, 0.2860])
    XCTAssertEqual(data.std, [0.3530, 0.3530, 0.3530])
    for n in 0..<3 {
      for c in 0..<3 {
        for y in 0..<32 {
          for x in 0..<32 {
            let inside = (2..<30).contains(y) && (2..<30).contains(x)
            let expected = inside ? UInt8((n + (y - 2) * 28 + (x - 2)) % 251) : 0
            let got = data.images[n * 3072 + c * 1024 + y * 32 + x]
            if got != expected {
              return XCTFail("image \(n) channel \(c) (\(y), \(x)): \(got), expected \(expected)")
            }
          }
        }
      }
    }
  }

  func testFashionMNISTHeaderErrors() throws {
    var folder = try makeFashionMNIST(prefix: "train", labels: [1, 2], imageMagic: 2049)
    let imagesFile = folder + "/train-images-idx3-ubyte.gz"
    assertThrows(DataError.self, try loadFashionMNIST(from: folder, train: true)) { error in
      XCTAssertEqual(error, .badMagic(file: imagesFile, found: 2049, expected: 2051))
      XCTAssertTrue(error.description.contains("train-images-idx3-ubyte.gz"))
    }
    folder = try makeFashionMNIST(prefix: "train", labels: [1, 2], labelCount: 3)
    assertThrows(DataError.self, try loadFashionMNIST(from: folder, train: true)) { error in
      // The labels header claims 3 labels but the file holds 2.
      guard case .badHeader(let file, let problem) = error else { return XCTFail("\(error)") }
      XCTAssertEqual(file, folder + "/train-labels-idx1-ubyte.gz")
      XCTAssertTrue(problem.contains("[3]"), problem)
    }
    folder = try makeFashionMNIST(prefix: "train", labels: [1, 12])
    assertThrows(DataError.self, try loadFashionMNIST(from: folder, train: true)) { error in
      XCTAssertEqual(
        error,
        .labelOutOfRange(
          file: folder + "/train-labels-idx1-ubyte.gz", record: 1, label: 12, classCount: 10))
    }
    // A gzip file cut in half.
    folder = try makeFashionMNIST(prefix: "train", labels: [1, 2])
    let whole = try Data(contentsOf: URL(fileURLWithPath: imagesFile))
    try whole.prefix(whole.count / 2).write(to: URL(fileURLWithPath: imagesFile))
    assertThrows(DataError.self, try loadFashionMNIST(from: folder, train: true)) { error in
      XCTAssertEqual(
        error,
        .decompressionFailed(file: imagesFile, reason: "the stream ends early (truncated file)"))
    }
  }

  func testRealDebianFashionMNISTIfInstalled() throws {
    let path = "/usr/share/datasets/fashion-mnist"
    guard FileManager.default.fileExists(atPath: path + "/train-images-idx3-ubyte.gz") else {
      throw XCTSkip("Debian's dataset-fashion-mnist is not installed")
    }
    let train = try loadDataset(.fashionMNIST, from: path, train: true)
    XCTAssertEqual(train.count, 60000)
    XCTAssertEqual(train.images.count, 60000 * 3072)
    // The first training image is an ankle boot (class 9); the next labels are 0, 0, 3.
    XCTAssertEqual(Array(train.labels[0..<4]), [9, 0, 0, 3])
    // Row 14 of the first image holds 237 at column 12 in the file, so (16, 14) after padding,
    // on every channel.
    for c in 0..<3 {
      XCTAssertEqual(train.images[c * 1024 + 16 * 32 + 14], 237)
      XCTAssertEqual(train.images[c * 1024 + 16 * 32 + 27], 255)
    }
    XCTAssertEqual(Set(train.labels).count, 10)
    let test = try loadDataset(.fashionMNIST, from: path, train: false)
    XCTAssertEqual(test.count, 10000)
    XCTAssertEqual(Array(test.labels[0..<3]), [9, 2, 1])
  }

  // MARK: - Names, paths, subsets, split

  func testDatasetNamesAndDefaultPaths() {
    XCTAssertEqual(DatasetName(rawValue: "fashion-mnist"), .fashionMNIST)
    XCTAssertEqual(DatasetName(rawValue: "cifar10"), .cifar10)
    XCTAssertNil(DatasetName(rawValue: "mnist"))
    XCTAssertEqual(defaultDataPath(for: .cifar10, environment: [:]), "./data")
    XCTAssertEqual(defaultDataPath(for: .cifar100, environment: [:]), "./data")
    XCTAssertEqual(
      defaultDataPath(for: .fashionMNIST, environment: [:]), "/usr/share/datasets/fashion-mnist")
    XCTAssertEqual(defaultDataPath(for: .cifar10, environment: ["PCDARTS_DATA": "/d"]), "/d")
    XCTAssertEqual(defaultDataPath(for: .fashionMNIST, environment: ["PCDARTS_DATA": "/d"]), "/d")
  }

  func testSubsetCopiesImagesAndLabelsInOrder() {
    let data = tinyDataset(count: 5)
    let sub = data.subset([4, 1, 1])
    XCTAssertEqual(sub.count, 3)
    XCTAssertEqual(sub.labels, [4, 1, 1])
    XCTAssertEqual(Array(sub.images[0..<3072]), Array(data.images[4 * 3072..<5 * 3072]))
    XCTAssertEqual(Array(sub.images[3072..<6144]), Array(data.images[3072..<6144]))
    XCTAssertEqual(sub.mean, data.mean)
  }

  func testSearchSplitSizesAndDeterminism() {
    var rng = SeededGenerator(seed: 7)
    let (train, valid) = searchSplit(count: 11, trainPortion: 0.5, rng: &rng)
    XCTAssertEqual(train.count, 5)  // floor(5.5)
    XCTAssertEqual(valid.count, 6)
    XCTAssertEqual((train + valid).sorted(), Array(0..<11))
    XCTAssertNotEqual(train + valid, Array(0..<11), "the split must be shuffled")

    var same = SeededGenerator(seed: 7)
    let again = searchSplit(count: 11, trainPortion: 0.5, rng: &same)
    XCTAssertEqual(again.train, train)
    XCTAssertEqual(again.valid, valid)
    XCTAssertEqual(same, rng, "both generators advanced the same way")

    var other = SeededGenerator(seed: 8)
    XCTAssertNotEqual(searchSplit(count: 11, trainPortion: 0.5, rng: &other).train, train)

    var big = SeededGenerator(seed: 1)
    let split = searchSplit(count: 50000, trainPortion: 0.5, rng: &big)
    XCTAssertEqual(split.train.count, 25000)
    XCTAssertEqual(Set(split.train).intersection(split.valid).count, 0)
  }

  // MARK: - Augmentation

  /// The first image of `data` through ``transformImage`` with `draw` and padding 4.
  private func transformed(_ data: ImageDataset, _ draw: AugmentationDraw) -> [Float] {
    var out = [Float](repeating: .nan, count: 3072)
    data.images.withUnsafeBufferPointer { all in
      out.withUnsafeMutableBufferPointer {
        transformImage(
          UnsafeBufferPointer(rebasing: all[0..<3072]), draw: draw, padding: 4, mean: data.mean,
          std: data.std, into: $0)
      }
    }
    return out
  }

  func testTransformNormalisesCropsAndFlips() {
    let data = tinyDataset(count: 1)
    let identity = transformed(data, AugmentationDraw(top: 4, left: 4, flip: false))
    let flipped = transformed(data, AugmentationDraw(top: 4, left: 4, flip: true))
    let shifted = transformed(data, AugmentationDraw(top: 0, left: 8, flip: false))
    // Pixel (c=1, y=2, x=3) is (0·37 + 101 + 22 + 9) % 256 = 132: (132/255 − 0.25) / 0.25.
    XCTAssertEqual(pixel(0, 1, 2, 3), 132)
    XCTAssertEqual(identity[1024 + 2 * 32 + 3], (132 / 255 - 0.25) / 0.25, accuracy: 1e-6)
    for c in 0..<3 {
      for y in 0..<32 {
        for x in 0..<32 {
          let i = c * 1024 + y * 32 + x
          let expected = (Float(pixel(0, c, y, x)) / 255 - data.mean[c]) / data.std[c]
          XCTAssertEqual(identity[i], expected, accuracy: 1e-5)
          // A flip mirrors each row.
          XCTAssertEqual(flipped[i], identity[c * 1024 + y * 32 + (31 - x)])
          // top 0 shifts the image down by 4 rows, left 8 shifts it left by 4 columns; the
          // uncovered band is zero padding, normalised to (0 − mean) / std.
          if y < 4 || x >= 28 {
            XCTAssertEqual(shifted[i], -data.mean[c] / data.std[c], "padding at \(c), \(y), \(x)")
          } else {
            XCTAssertEqual(shifted[i], identity[c * 1024 + (y - 4) * 32 + (x + 4)])
          }
        }
      }
    }
    XCTAssertEqual(shifted[0], -1)  // channel 0: (0 − 0.5) / 0.5
    XCTAssertEqual(shifted[2048], -0.625)  // channel 2: (0 − 0.125) / 0.2
  }

  func testAugmentationDrawsFollowTorchvisionOrder() {
    var rng = SeededGenerator(seed: 2024)
    var replay = rng
    var seen = Set<Int>()
    var flips = 0
    for _ in 0..<200 {
      let draw = AugmentationDraw.random(padding: 4, using: &rng)
      XCTAssertEqual(draw.top, replay.nextInt(below: 9))
      XCTAssertEqual(draw.left, replay.nextInt(below: 9))
      XCTAssertEqual(draw.flip, replay.nextUniform() < 0.5)
      seen.insert(draw.top * 9 + draw.left)
      flips += draw.flip ? 1 : 0
    }
    // 200 draws over 81 offsets and a fair coin: all far from degenerate.
    XCTAssertGreaterThan(seen.count, 60)
    XCTAssertTrue((70...130).contains(flips), "\(flips) flips in 200")
  }

  func testCutoutZeroesAClippedSquareAfterNormalising() {
    // DARTS utils.py Cutout(16): rows and columns [centre − 8, centre + 8) clipped to the image,
    // set to 0 after Normalize; a centre at (2, 30) leaves rows 0..<10 and columns 22..<32.
    let data = tinyDataset(count: 1)
    let plain = transformed(data, AugmentationDraw(top: 4, left: 4, flip: true))
    let cut = transformed(
      data, AugmentationDraw(top: 4, left: 4, flip: true, cutout: .init(row: 2, column: 30, length: 16)))
    var zeroed = 0
    for c in 0..<3 {
      for y in 0..<32 {
        for x in 0..<32 {
          let i = c * 1024 + y * 32 + x
          if y < 10 && x >= 22 {
            XCTAssertEqual(cut[i], 0, "cut out at \(c), \(y), \(x)")
            zeroed += 1
          } else {
            XCTAssertEqual(cut[i], plain[i], "kept at \(c), \(y), \(x)")
          }
        }
      }
    }
    XCTAssertEqual(zeroed, 3 * 10 * 10)
    // An odd length cuts ⌊length/2⌋ on each side of the centre: 2·⌊7/2⌋ = 6 rows and columns.
    let odd = transformed(
      data, AugmentationDraw(top: 4, left: 4, flip: false, cutout: .init(row: 16, column: 16, length: 7)))
    XCTAssertEqual(odd.filter { $0 == 0 }.count, 3 * 6 * 6)

    // The draws: after the crop and the flip, the centre's row then column, each over 0..<32.
    var rng = SeededGenerator(seed: 7)
    var replay = rng
    for _ in 0..<50 {
      let draw = AugmentationDraw.random(padding: 4, cutoutLength: 16, using: &rng)
      XCTAssertEqual(draw.top, replay.nextInt(below: 9))
      XCTAssertEqual(draw.left, replay.nextInt(below: 9))
      XCTAssertEqual(draw.flip, replay.nextUniform() < 0.5)
      XCTAssertEqual(draw.cutout, .init(row: replay.nextInt(below: 32), column: replay.nextInt(below: 32), length: 16))
    }
    // A loader with cutout gives every augmented image a zeroed square somewhere.
    let loader = BatchLoader(dataset: data, batchSize: 1, augment: true, cutoutLength: 16, seed: 3)
    for _ in 0..<20 {
      XCTAssertGreaterThanOrEqual(loader.nextCycling().images.filter { $0 == 0 }.count, 3 * 8 * 8)
    }
  }

  func testAugmentedBatchesAreCropsAndFlipsOfTheImage() {
    let data = tinyDataset(count: 1)
    // Every image the loader may produce: the 9 × 9 crops, flipped or not.
    var candidates: [[Float]: AugmentationDraw] = [:]
    for top in 0...8 {
      for left in 0...8 {
        for flip in [false, true] {
          let draw = AugmentationDraw(top: top, left: left, flip: flip)
          candidates[transformed(data, draw)] = draw
        }
      }
    }
    XCTAssertEqual(candidates.count, 162)
    let loader = BatchLoader(dataset: data, batchSize: 1, augment: true, seed: 3)
    var draws: [AugmentationDraw] = []
    for _ in 0..<100 {
      let batch = loader.nextCycling()
      guard let draw = candidates[batch.images] else {
        return XCTFail("augmented image is not a 32×32 crop of the padded image, flipped or not")
      }
      draws.append(draw)
    }
    XCTAssertGreaterThan(Set(draws.map { $0.top * 9 + $0.left }).count, 40)
    XCTAssertTrue(draws.contains { $0.flip } && draws.contains { !$0.flip })

    // Without augmentation every batch is the identity crop.
    let plain = BatchLoader(dataset: data, batchSize: 1, augment: false, seed: 3)
    XCTAssertEqual(
      candidates[plain.nextCycling().images], AugmentationDraw(top: 4, left: 4, flip: false))
  }

  // MARK: - Batch loader

  private func collectEpoch(_ loader: BatchLoader) -> [Batch] {
    var batches: [Batch] = []
    while let batch = loader.nextBatch() { batches.append(batch) }
    return batches
  }

  func testLoaderCoversEachIndexOncePerEpochWithoutDroppingTheLast() {
    let data = tinyDataset(count: 12)
    let indices = [0, 2, 3, 5, 7, 8, 9, 10, 11, 1]
    let loader = BatchLoader(dataset: data, indices: indices, batchSize: 4, augment: false, seed: 5)
    XCTAssertEqual(loader.batchesPerEpoch, 3)
    let first = collectEpoch(loader)
    XCTAssertEqual(first.map(\.count), [4, 4, 2])
    XCTAssertEqual(first.flatMap(\.indices).sorted(), indices.sorted())
    for batch in first {
      XCTAssertEqual(batch.labels, batch.indices.map { Int32($0 % 10) })
      XCTAssertEqual(batch.images.count, batch.count * 3072)
      // The normalised first pixel of each image matches its source byte.
      for (k, index) in batch.indices.enumerated() {
        XCTAssertEqual(
          batch.images[k * 3072], (Float(pixel(index, 0, 0, 0)) / 255 - 0.5) / 0.5, accuracy: 1e-6)
      }
    }
    XCTAssertEqual(loader.epochState.epoch, 1)
    let second = collectEpoch(loader)
    XCTAssertEqual(second.flatMap(\.indices).sorted(), indices.sorted())
    XCTAssertNotEqual(second.flatMap(\.indices), first.flatMap(\.indices), "reshuffled per epoch")
  }

  func testLoaderIsDeterministicWithOrWithoutPrefetch() {
    let data = tinyDataset(count: 9)
    let a = BatchLoader(dataset: data, batchSize: 2, augment: true, seed: 11, prefetch: true)
    let b = BatchLoader(dataset: data, batchSize: 2, augment: true, seed: 11, prefetch: false)
    let c = BatchLoader(dataset: data, batchSize: 2, augment: true, seed: 12)
    var differs = false
    for _ in 0..<13 {
      let (x, y, z) = (a.nextCycling(), b.nextCycling(), c.nextCycling())
      XCTAssertEqual(x.images, y.images)
      XCTAssertEqual(x.labels, y.labels)
      XCTAssertEqual(x.indices, y.indices)
      differs = differs || x.images != z.images
      XCTAssertEqual(a.epochState, b.epochState)
    }
    XCTAssertTrue(differs, "another seed must give other batches")
  }

  func testResumeFromSavedStateGivesIdenticalBatches() throws {
    let data = tinyDataset(count: 7)
    for stop in [0, 2, 4, 5, 9] {  // mid-epoch, at an epoch's end (4 batches per epoch), later
      let original = BatchLoader(dataset: data, batchSize: 2, augment: true, seed: 99)
      for _ in 0..<stop { _ = original.nextCycling() }
      // Round trip through JSON, as a checkpoint would store it.
      let saved = try JSONEncoder().encode(original.epochState)
      let state = try JSONDecoder().decode(BatchLoader.EpochState.self, from: saved)
      XCTAssertEqual(state, original.epochState)

      let resumed = BatchLoader(dataset: data, batchSize: 2, augment: true, seed: 1234)
      try resumed.restore(state)
      for step in 0..<10 {
        let (x, y) = (original.nextCycling(), resumed.nextCycling())
        XCTAssertEqual(x.indices, y.indices, "stop \(stop) step \(step)")
        XCTAssertEqual(x.images, y.images, "stop \(stop) step \(step)")
      }
    }

    // Epoch-bounded iteration resumes too, including the end-of-epoch nil.
    let original = BatchLoader(dataset: data, batchSize: 3, augment: true, seed: 4)
    _ = collectEpoch(original)
    _ = original.nextBatch()
    let resumed = BatchLoader(dataset: data, batchSize: 3, augment: true, seed: 4)
    try resumed.restore(original.epochState)
    XCTAssertEqual(resumed.epochState.epoch, 1)
    XCTAssertEqual(resumed.epochState.batchIndex, 1)
    var rest: [[Int]] = []
    while let batch = original.nextBatch() { rest.append(batch.indices) }
    var resumedRest: [[Int]] = []
    while let batch = resumed.nextBatch() { resumedRest.append(batch.indices) }
    XCTAssertEqual(rest.count, 2)
    XCTAssertEqual(rest, resumedRest)
    XCTAssertEqual(collectEpoch(original).map(\.images), collectEpoch(resumed).map(\.images))
  }

  func testRestoreRejectsAStateFromAnotherLoader() {
    let data = tinyDataset(count: 7)
    let state = BatchLoader(dataset: data, batchSize: 2, augment: false, seed: 1).epochState
    let smaller = BatchLoader(
      dataset: data, indices: [0, 1, 2], batchSize: 2, augment: false, seed: 1)
    assertThrows(DataError.self, try smaller.restore(state)) { error in
      XCTAssertEqual(
        error, .stateMismatch(problem: "it was saved for 7 samples, this loader has 3"))
    }
    let otherBatch = BatchLoader(dataset: data, batchSize: 3, augment: false, seed: 1)
    assertThrows(DataError.self, try otherBatch.restore(state)) { error in
      XCTAssertTrue(error.description.contains("batch size 2"), error.description)
    }
  }
}
