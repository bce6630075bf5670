// Reader for Fashion-MNIST in the gzip-compressed IDX files that Debian's dataset-fashion-mnist
// package installs in /usr/share/datasets/fashion-mnist, so the search can run with no download.
//
// IDX (http://yann.lecun.com/exdb/mnist/): a big-endian header — magic 2051 then count, rows,
// columns for images; magic 2049 then count for labels — followed by one byte per pixel or label.
// Images are 28×28 grey; they are padded to 32×32 and repeated on 3 channels so the CIFAR
// network runs on them unchanged.
import CZlib
import Foundation
import TensorEngine

/// Fashion-MNIST normalisation constants (grey mean and std over the training set), repeated on
/// the three channels.
let fashionMNISTMean: [Float] = [0.2860, 0.2860, 0.2860]
let fashionMNISTStd: [Float] = [0.3530, 0.3530, 0.3530]

/// Loads Fashion-MNIST from the four gzip IDX files.
///
/// - Parameters:
///   - path: The folder holding `train-images-idx3-ubyte.gz`, `train-labels-idx1-ubyte.gz`,
///     `t10k-images-idx3-ubyte.gz` and `t10k-labels-idx1-ubyte.gz`.
///   - train: `true` for the `train-` files (60 000 images), `false` for `t10k-` (10 000).
/// - Returns: Images of shape (N, 3, 32, 32): each 28×28 image with 2 zero pixels on every side,
///   the same on all 3 channels; 10 classes.
/// - Throws: ``DataError`` for a missing file, a corrupt gzip stream, a wrong magic number,
///   counts or dimensions that disagree, or a label ≥ 10.
public func loadFashionMNIST(from path: String, train: Bool) throws -> ImageDataset {
  let prefix = train ? "train" : "t10k"
  let folder = path.hasSuffix("/") && path.count > 1 ? String(path.dropLast()) : path
  let imagesFile = "\(folder)/\(prefix)-images-idx3-ubyte.gz"
  let labelsFile = "\(folder)/\(prefix)-labels-idx1-ubyte.gz"
  for file in [imagesFile, labelsFile] where !FileManager.default.fileExists(atPath: file) {
    throw DataError.missingData(dataset: .fashionMNIST, path: file)
  }
  let imageBytes = try gunzip(try readDataFile(imagesFile), file: imagesFile)
  let labelBytes = try gunzip(try readDataFile(labelsFile), file: labelsFile)
  var data = try fashionMNISTDataset(
    imageIDX: imageBytes, imagesFile: imagesFile, labelIDX: labelBytes, labelsFile: labelsFile,
    name: "fashion-mnist-\(prefix == "train" ? "train" : "test")")
  if let warning = recordCountWarning(file: imagesFile, records: data.count, official: train ? 60_000 : 10_000) {
    data.warnings.append(warning)
  }
  return data
}

/// Builds the dataset from decompressed IDX contents; the file names are for the error messages.
func fashionMNISTDataset(
  imageIDX: [UInt8], imagesFile: String, labelIDX: [UInt8], labelsFile: String, name: String
) throws -> ImageDataset {
  let side = 28
  let target = ImageDataset.cifarSide
  let pad = (target - side) / 2  // 2 pixels each side: 2 + 28 + 2 = 32

  let imageHeader = try idxHeader(imageIDX, file: imagesFile, magic: 2051, dimensions: 3)
  let (count, rows, columns) = (imageHeader[0], imageHeader[1], imageHeader[2])
  guard rows == side && columns == side else {
    throw DataError.badHeader(
      file: imagesFile, problem: "images are \(rows)×\(columns), expected 28×28")
  }
  let labelHeader = try idxHeader(labelIDX, file: labelsFile, magic: 2049, dimensions: 1)
  guard labelHeader[0] == count else {
    throw DataError.countMismatch(
      imagesFile: imagesFile, images: count, labelsFile: labelsFile, labels: labelHeader[0])
  }

  let imageStart = 16  // magic + 3 dimensions, 4 bytes each
  let labelStart = 8  // magic + 1 dimension
  let planeSize = target * target
  let imageSize = ImageDataset.channels * planeSize
  var images = [UInt8](repeating: 0, count: count * imageSize)
  var labels = [Int32](repeating: 0, count: count)
  for n in 0..<count {
    let label = Int(labelIDX[labelStart + n])
    guard label < 10 else {
      throw DataError.labelOutOfRange(file: labelsFile, record: n, label: label, classCount: 10)
    }
    labels[n] = Int32(label)
  }
  images.withUnsafeMutableBufferPointer { pixels in
    imageIDX.withUnsafeBufferPointer { source in
      for n in 0..<count {
        let image = pixels.baseAddress! + n * imageSize
        let grey = source.baseAddress! + imageStart + n * side * side
        for y in 0..<side {
          (image + (y + pad) * target + pad).update(from: grey + y * side, count: side)
        }
        // Channels G and B repeat the grey plane R.
        (image + planeSize).update(from: image, count: planeSize)
        (image + 2 * planeSize).update(from: image, count: planeSize)
      }
    }
  }
  return ImageDataset(
    name: name, images: images, labels: labels, classCount: 10, mean: fashionMNISTMean,
    std: fashionMNISTStd)
}

/// Checks an IDX header (magic number, and that the size matches the dimensions) and returns the
/// dimensions.
private func idxHeader(_ bytes: [UInt8], file: String, magic: UInt32, dimensions: Int) throws
  -> [Int]
{
  let headerSize = 4 * (1 + dimensions)
  func word(_ at: Int) -> UInt32 {
    bytes[at..<at + 4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
  }
  guard bytes.count >= headerSize else {
    throw DataError.badHeader(
      file: file,
      problem: "\(bytes.count) bytes after decompression, shorter than the "
        + "\(headerSize)-byte IDX header")
  }
  guard word(0) == magic else {
    throw DataError.badMagic(file: file, found: word(0), expected: magic)
  }
  let dims = (0..<dimensions).map { Int(word(4 + 4 * $0)) }
  let expected = headerSize + dims.reduce(1, *)
  guard bytes.count == expected else {
    throw DataError.badHeader(
      file: file,
      problem: "header dimensions \(dims) need \(expected) bytes, the file "
        + "decompresses to \(bytes.count)")
  }
  return dims
}

/// Decompresses a gzip (or zlib) stream with zlib.
///
/// - Parameters:
///   - compressed: The `.gz` file contents.
///   - file: The file name, for the error message.
/// - Returns: The decompressed bytes.
/// - Throws: ``DataError/decompressionFailed(file:reason:)`` with zlib's message.
func gunzip(_ compressed: Data, file: String) throws -> [UInt8] {
  var stream = z_stream()
  // windowBits 15 + 32: the largest window, and detect a gzip or zlib header automatically.
  var status = inflateInit2_(&stream, 15 + 32, zlibVersion(), Int32(MemoryLayout<z_stream>.size))
  guard status == Z_OK else {
    throw DataError.decompressionFailed(file: file, reason: "inflateInit2 returned \(status)")
  }
  defer { inflateEnd(&stream) }

  var output: [UInt8] = []
  // The gzip trailer stores the size modulo 2^32; it is only a capacity hint.
  if compressed.count >= 4 {
    let tail = compressed.suffix(4).reduce(0) { ($0 >> 8) | (Int($1) << 24) }
    output.reserveCapacity(min(tail, 1 << 30))
  }
  var chunk = [UInt8](repeating: 0, count: 1 << 20)
  try compressed.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
    let input = raw.bindMemory(to: Bytef.self)
    stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
    stream.avail_in = uInt(input.count)
    repeat {
      let produced = try chunk.withUnsafeMutableBufferPointer { out -> Int in
        stream.next_out = out.baseAddress
        stream.avail_out = uInt(out.count)
        status = inflate(&stream, Z_NO_FLUSH)
        guard status == Z_OK || status == Z_STREAM_END else {
          // Z_BUF_ERROR with all input consumed means the stream stopped before its end.
          if status == Z_BUF_ERROR && stream.avail_in == 0 {
            throw DataError.decompressionFailed(
              file: file, reason: "the stream ends early (truncated file)")
          }
          let message = stream.msg.map { String(cString: $0) } ?? "zlib status \(status)"
          throw DataError.decompressionFailed(file: file, reason: message)
        }
        return out.count - Int(stream.avail_out)
      }
      output.append(contentsOf: chunk[0..<produced])
    } while status != Z_STREAM_END
  }
  return output
}
