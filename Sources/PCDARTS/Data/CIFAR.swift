// Readers for the CIFAR-10 and CIFAR-100 "binary version" files
// (https://www.cs.toronto.edu/~kriz/cifar.html).
//
// A record is the label byte(s) followed by 3072 pixel bytes: the R, G and B planes of the
// 32×32 image, each row-major — already the (C, H, W) layout ImageDataset keeps, so a record's
// pixels are copied as they are.
import Foundation
import TensorEngine

/// CIFAR-10 normalisation constants, the ones the PC-DARTS reference `utils.py` uses.
let cifar10Mean: [Float] = [0.49139968, 0.48215827, 0.44653124]
let cifar10Std: [Float] = [0.24703233, 0.24348505, 0.26158768]
/// CIFAR-100 normalisation constants, as in the reference `utils.py`.
let cifar100Mean: [Float] = [0.5071, 0.4865, 0.4409]
let cifar100Std: [Float] = [0.2673, 0.2564, 0.2762]

/// Loads CIFAR-10 from its binary version.
///
/// - Parameters:
///   - path: The folder `cifar-10-batches-bin` or the folder that contains it.
///   - train: `true` reads `data_batch_1.bin` … `data_batch_5.bin` in order, `false` reads
///     `test_batch.bin`.
/// - Returns: Images of shape (N, 3, 32, 32), 10 classes, N = records in the files
///   (50 000 / 10 000 for the official files; any whole number of records is accepted).
/// - Throws: ``DataError/missingData(dataset:path:)`` if the folder or a file is missing,
///   ``DataError/badFileSize(file:size:recordSize:)`` for a partial record,
///   ``DataError/labelOutOfRange(file:record:label:classCount:)`` for a label ≥ 10.
public func loadCIFAR10(from path: String, train: Bool) throws -> ImageDataset {
  let folder = try resolveCIFARFolder(
    path, subfolder: "cifar-10-batches-bin", marker: "test_batch.bin", dataset: .cifar10)
  let files = train ? (1...5).map { "data_batch_\($0).bin" } : ["test_batch.bin"]
  let (images, labels, warnings) = try readCIFARRecords(
    files.map { folder + "/" + $0 }, labelBytes: 1, labelIndex: 0, classCount: 10,
    dataset: .cifar10, officialRecords: 10_000)
  var data = ImageDataset(
    name: "cifar10-\(train ? "train" : "test")", images: images, labels: labels, classCount: 10,
    mean: cifar10Mean, std: cifar10Std)
  data.warnings = warnings
  return data
}

/// Loads CIFAR-100 from its binary version, with the fine (100-class) labels.
///
/// - Parameters:
///   - path: The folder `cifar-100-binary` or the folder that contains it.
///   - train: `true` reads `train.bin`, `false` reads `test.bin`.
/// - Returns: Images of shape (N, 3, 32, 32), 100 classes.
/// - Throws: ``DataError`` as ``loadCIFAR10(from:train:)`` does, with labels checked against 100.
public func loadCIFAR100(from path: String, train: Bool) throws -> ImageDataset {
  let folder = try resolveCIFARFolder(
    path, subfolder: "cifar-100-binary", marker: "test.bin", dataset: .cifar100)
  // Records are (coarse label, fine label, pixels); the search uses the fine label.
  let (images, labels, warnings) = try readCIFARRecords(
    [folder + "/" + (train ? "train.bin" : "test.bin")], labelBytes: 2, labelIndex: 1,
    classCount: 100, dataset: .cifar100, officialRecords: train ? 50_000 : 10_000)
  var data = ImageDataset(
    name: "cifar100-\(train ? "train" : "test")", images: images, labels: labels, classCount: 100,
    mean: cifar100Mean, std: cifar100Std)
  data.warnings = warnings
  return data
}

/// The folder holding the `.bin` files: `path/subfolder` if it exists, else `path` itself when it
/// holds `marker` or is named `subfolder`.
private func resolveCIFARFolder(
  _ path: String, subfolder: String, marker: String, dataset: DatasetName
) throws -> String {
  let trimmed = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
  let nested = trimmed + "/" + subfolder
  if isDirectory(nested) { return nested }
  if isDirectory(trimmed)
    && (FileManager.default.fileExists(atPath: trimmed + "/" + marker)
      || (trimmed as NSString).lastPathComponent == subfolder)
  {
    return trimmed
  }
  throw DataError.missingData(dataset: dataset, path: path)
}

/// Reads the records of `files` in order into one (N, 3, 32, 32) byte array and N labels.
private func readCIFARRecords(
  _ files: [String], labelBytes: Int, labelIndex: Int, classCount: Int, dataset: DatasetName,
  officialRecords: Int
) throws -> (images: [UInt8], labels: [Int32], warnings: [String]) {
  let size = ImageDataset.channels * ImageDataset.cifarSide * ImageDataset.cifarSide
  let recordSize = labelBytes + size
  var contents: [Data] = []
  for file in files {
    guard FileManager.default.fileExists(atPath: file) else {
      throw DataError.missingData(dataset: dataset, path: file)
    }
    let data = try readDataFile(file)
    guard data.count % recordSize == 0 else {
      throw DataError.badFileSize(file: file, size: data.count, recordSize: recordSize)
    }
    contents.append(data)
  }
  let warnings = zip(files, contents).compactMap { file, data in
    recordCountWarning(file: file, records: data.count / recordSize, official: officialRecords)
  }
  let total = contents.reduce(0) { $0 + $1.count / recordSize }
  var images = [UInt8](repeating: 0, count: total * size)
  var labels = [Int32](repeating: 0, count: total)
  var n = 0
  try images.withUnsafeMutableBufferPointer { target in
    for (file, data) in zip(files, contents) {
      try data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
        let bytes = raw.bindMemory(to: UInt8.self)
        for record in 0..<(data.count / recordSize) {
          let start = record * recordSize
          let label = Int(bytes[start + labelIndex])
          guard label < classCount else {
            throw DataError.labelOutOfRange(
              file: file, record: record, label: label, classCount: classCount)
          }
          labels[n] = Int32(label)
          (target.baseAddress! + n * size).update(
            from: bytes.baseAddress! + start + labelBytes, count: size)
          n += 1
        }
      }
    }
  }
  return (images, labels, warnings)
}
