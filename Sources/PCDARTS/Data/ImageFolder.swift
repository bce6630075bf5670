// Folders of JPEG and PNG files, one folder per class (torchvision's `ImageFolder` layout),
// decoded, resized and centre-cropped to one square size when loaded.
//
// Dimension legend: N images, C = 3 channels, S = the image size (height = width).
//
// What torchvision does and this loader reproduces, bit for bit on the pixels: classes are the
// sub-folders in sorted order; an image is opened with Pillow and converted to RGB; `Resize(S)`
// scales its shorter side to S (the longer one to ⌊S · long / short⌋) with Pillow's antialiased
// bilinear filter; `CenterCrop(S)` keeps the middle S × S. The pixels are kept as bytes, so the
// training augmentation (random crop with padding, flip, cutout) runs on them as on CIFAR's.
import Dispatch
import Foundation
import TensorEngine
import _CImageCodecs

/// How an image folder is read.
public struct ImageFolderOptions: Equatable, Sendable {
  /// S: each image is resized (shorter side) and centre-cropped to S × S.
  public var imageSize = ImageDataset.cifarSide
  /// Leave out files that are not JPEG or PNG images, or that fail to decode, listing them as
  /// warnings; without it the first such file stops the loading with its name.
  public var skipBadFiles = false
  /// Per-channel mean and standard deviation of the pixels scaled to [0, 1], shape (3) each; `nil`
  /// computes them from the training images (see ``loadImageFolder(from:train:options:)``).
  public var mean: [Float]?, std: [Float]?
  /// The threads that decode; 0 uses every core.
  public var threads = 0
  /// Keep only the file names and decode each batch's images when it is made, with the ImageNet
  /// setting's transforms (see ``ImageDataset/init(name:files:labels:classCount:mean:std:imageSize:)``)
  /// instead of decoding every image once, resized and centre-cropped, when loading: for images too
  /// many to hold at `imageSize`.
  public var decodePerBatch = false
  /// With `decodePerBatch`: the shorter side of the evaluation transform's resize (256 for 224);
  /// 0 means ⌊imageSize · 256 / 224⌋.
  public var evaluationResize = 0
  /// With `decodePerBatch`: the colour jitter of training batches (``ColorJitter/imageNet`` for
  /// train_imagenet.py), or `nil`.
  public var colorJitter: ColorJitter?
  /// With `decodePerBatch` and no `mean`/`std`: the statistics come from this many training images
  /// (a seeded sample), resized and centre-cropped.
  public var statisticsSample = 2000

  /// Options with the given image size and bad-file policy.
  public init(
    imageSize: Int = ImageDataset.cifarSide, skipBadFiles: Bool = false, mean: [Float]? = nil, std: [Float]? = nil
  ) {
    (self.imageSize, self.skipBadFiles, self.mean, self.std) = (imageSize, skipBadFiles, mean, std)
  }
}

/// The file name endings read as images (any case).
public let imageFileExtensions: Set<String> = ["jpg", "jpeg", "png"]

/// Loads the training or validation images of an image folder.
///
/// Layout: `path/train/<class>/…` and `path/val/<class>/…`, or, for the training images only, a
/// single `path/<class>/…` (the search splits it with its train portion). Files are found in
/// the class folders and their sub-folders, in sorted path order; class indices follow the sorted
/// class-folder names, as torchvision's `ImageFolder` numbers them.
///
/// The mean and standard deviation are `options.mean`/`options.std` when given; otherwise, for
/// the training images, computed from them (population statistics over every pixel of the
/// resized and cropped images); for the validation images, computed from the training folder when
/// there is one, else from the validation images with a warning.
///
/// - Parameters:
///   - path: The folder.
///   - train: The training images (`train/`, or the folder itself), or the validation ones (`val/`).
///   - options: Image size, bad-file policy, normalisation.
/// - Returns: Images of shape (N, 3, S, S).
/// - Throws: ``DataError`` naming the folder or file: a missing folder, fewer than two classes, an
///   empty class, a file that is not a readable JPEG or PNG (unless `skipBadFiles`).
public func loadImageFolder(from path: String, train: Bool, options: ImageFolderOptions = ImageFolderOptions())
  throws -> ImageDataset
{
  guard (1...4096).contains(options.imageSize) else {
    throw DataError.badFolder(
      folder: path, problem: "image size \(options.imageSize) is outside 1...4096; choose a size such as 32 or 224")
  }
  let root = try imageFolderRoot(path, train: train)
  let listing = try listImageFolder(root, skipBadFiles: options.skipBadFiles)
  if options.decodePerBatch { return try fileBackedFolder(path, root: root, listing: listing, train: train, options) }
  let size = options.imageSize
  let imageBytes = ImageDataset.channels * size * size
  var images = [UInt8](repeating: 0, count: listing.files.count * imageBytes)
  let failures = decodeImages(
    listing.files.map(\.path), size: size, threads: options.threads, into: &images)
  var warnings = listing.skipped
  var keep = Array(0..<listing.files.count)
  if !failures.isEmpty {
    guard options.skipBadFiles else {
      let (index, problem) = failures[0]
      throw DataError.badImage(file: listing.files[index].path, problem: problem)
    }
    let bad = Set(failures.map(\.index))
    keep = keep.filter { !bad.contains($0) }
    warnings += failures.map { "skipped '\(listing.files[$0.index].path)': \($0.problem)" }
  }
  let labels = listing.files.map(\.label)
  var dataset = ImageDataset(
    name: folderDatasetName(path, train: train, size: size), images: images,
    labels: labels, classCount: listing.classes.count, mean: [0, 0, 0], std: [1, 1, 1], height: size, width: size)
  if keep.count < listing.files.count { dataset = dataset.subset(keep) }
  let emptied = Set(0..<listing.classes.count).subtracting(dataset.labels.map { Int($0) })
  if let first = emptied.min() {
    throw DataError.badFolder(
      folder: root + "/" + listing.classes[first],
      problem: "no image of this class could be read; fix or remove its files, or remove the folder")
  }
  dataset.classNames = listing.classes
  let (mean, std): ([Float], [Float])
  if let given = options.mean, let givenStd = options.std {
    (mean, std) = (given, givenStd)
  } else if train || !isDirectory(path + "/train") {
    if !train {
      warnings.append("\(root): mean and std computed from the validation images (no \(path)/train folder)")
    }
    (mean, std) = pixelStatistics(dataset)
  } else {
    var trainOptions = options
    trainOptions.skipBadFiles = true  // the training folder's own load reports its bad files
    (mean, std) = pixelStatistics(try loadImageFolder(from: path, train: true, options: trainOptions))
  }
  guard mean.count == 3, std.count == 3, std.allSatisfy({ $0 > 0 }) else {
    throw DataError.badFolder(
      folder: root,
      problem: "mean \(mean) and std \(std) need three entries each and a positive std (a folder of one flat "
        + "colour has none); pass --mean and --std")
  }
  (dataset.mean, dataset.std) = (mean, std)
  dataset.warnings = warnings
  return dataset
}

/// A folder dataset's name for logs and checkpoints, such as `folder-flowers-train-32px`.
private func folderDatasetName(_ path: String, train: Bool, size: Int) -> String {
  "folder-\(URL(fileURLWithPath: path).lastPathComponent)-\(train ? "train" : "val")-\(size)px"
}

/// The dataset of a folder decoded per batch: the files are checked by their signatures only (a
/// file corrupt inside stops the batch that meets it, naming it).
private func fileBackedFolder(
  _ path: String, root: String, listing: (classes: [String], files: [ListedFile], skipped: [String]), train: Bool,
  _ options: ImageFolderOptions
) throws -> ImageDataset {
  var warnings = listing.skipped
  var kept: [ListedFile] = []
  for file in listing.files {
    guard let handle = FileHandle(forReadingAtPath: file.path) else {
      throw DataError.unreadable(file: file.path, reason: String(cString: strerror(errno)))
    }
    let head = [UInt8](handle.readData(ofLength: 8))
    try? handle.close()
    guard pcd_image_format(head, head.count) == PCD_FORMAT_UNKNOWN else {
      kept.append(file)
      continue
    }
    let problem = "not a JPEG or PNG file (its first bytes are neither signature)"
    guard options.skipBadFiles else { throw DataError.badImage(file: file.path, problem: problem) }
    warnings.append("skipped '\(file.path)': \(problem)")
  }
  let size = options.imageSize
  let resize = options.evaluationResize > 0 ? options.evaluationResize : size * 256 / 224
  var dataset = ImageDataset(
    name: folderDatasetName(path, train: train, size: size),
    files: ImageFiles(paths: kept.map(\.path), evaluationResize: resize, colorJitter: options.colorJitter),
    labels: kept.map(\.label),
    classCount: listing.classes.count, mean: [0, 0, 0], std: [1, 1, 1], imageSize: size)
  dataset.classNames = listing.classes
  if let mean = options.mean, let std = options.std {
    (dataset.mean, dataset.std) = (mean, std)
  } else {
    // Statistics of a seeded sample, each image as evaluation batches see it.
    var order = Array(0..<dataset.count)
    var rng = SeededGenerator(seed: 0x57A7)
    seededShuffle(&order, using: &rng)
    let sample = Array(order.prefix(options.statisticsSample)).map { dataset.files!.paths[$0] }
    var pixels = [UInt8](repeating: 0, count: sample.count * 3 * size * size)
    _ = decodeImages(sample, size: size, threads: options.threads, into: &pixels, resize: resize)
    let decoded = ImageDataset(
      name: dataset.name, images: pixels, labels: [Int32](repeating: 0, count: sample.count), classCount: 1,
      mean: [0, 0, 0], std: [1, 1, 1], height: size, width: size)
    (dataset.mean, dataset.std) = pixelStatistics(decoded)
    warnings.append(
      "\(root): mean \(dataset.mean) and std \(dataset.std) estimated from \(sample.count) images; "
        + "pass --mean and --std to fix them")
  }
  dataset.warnings = warnings
  return dataset
}

/// Per-channel mean and population standard deviation of the pixels scaled to [0, 1], shape (3) each.
public func pixelStatistics(_ dataset: ImageDataset) -> (mean: [Float], std: [Float]) {
  let plane = dataset.height * dataset.width
  var sums = [Double](repeating: 0, count: 3), squares = [Double](repeating: 0, count: 3)
  dataset.images.withUnsafeBufferPointer { pixels in
    for n in 0..<dataset.count {
      for c in 0..<3 {
        var (sum, square) = (0, 0)  // exact in integers: at most 4096² · 255² per plane
        for v in pixels[(n * 3 + c) * plane..<(n * 3 + c + 1) * plane] {
          sum += Int(v)
          square += Int(v) * Int(v)
        }
        sums[c] += Double(sum)
        squares[c] += Double(square)
      }
    }
  }
  let count = Double(max(dataset.count * plane, 1))
  let mean = sums.map { $0 / count / 255 }
  let std = (0..<3).map { c in (max(squares[c] / count / 65025 - mean[c] * mean[c], 0)).squareRoot() }
  return (mean.map { Float($0) }, std.map { Float($0) })
}

// MARK: - Decoding one file

/// One image file decoded to RGB bytes, height × width × 3 interleaved (Pillow's `convert('RGB')`).
public struct DecodedImage: Equatable, Sendable {
  /// Width and height in pixels.
  public var width: Int, height: Int
  /// Pixels, shape (height, width, 3) flattened.
  public var pixels: [UInt8]

  /// Decodes a JPEG or PNG file's bytes.
  /// - Throws: ``DataError/badImage(file:problem:)`` naming `file` with the decoder's words.
  public init(decoding bytes: Data, file: String) throws {
    var image = pcd_image()
    let status = bytes.withUnsafeBytes { raw in
      pcd_decode_image(raw.bindMemory(to: UInt8.self).baseAddress, raw.count, &image)
    }
    guard status == 0 else {
      let message = withUnsafeBytes(of: image.message) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
      throw DataError.badImage(file: file, problem: message)
    }
    defer { pcd_image_free(&image) }
    (width, height) = (Int(image.width), Int(image.height))
    pixels = Array(UnsafeBufferPointer(start: image.pixels, count: width * height * 3))
  }

  /// The pixels of a given size.
  /// - Precondition: `pixels.count == width * height * 3`.
  public init(width: Int, height: Int, pixels: [UInt8]) {
    precondition(pixels.count == width * height * 3, "DecodedImage: \(pixels.count) bytes for \(width) × \(height) × 3")
    (self.width, self.height, self.pixels) = (width, height, pixels)
  }

  /// torchvision's `Resize(size)` on a Pillow image: the shorter side becomes `size`, the longer
  /// ⌊size · long / short⌋, with Pillow's antialiased bilinear filter (bit for bit).
  public func resized(shorterSide size: Int) -> DecodedImage {
    let (short, long) = width <= height ? (width, height) : (height, width)
    let newLong = size * long / short
    let (newWidth, newHeight) = width <= height ? (size, newLong) : (newLong, size)
    return resized(width: newWidth, height: newHeight)
  }

  /// Pillow's `resize((width, height), BILINEAR)`, bit for bit.
  public func resized(width newWidth: Int, height newHeight: Int) -> DecodedImage {
    var out = [UInt8](repeating: 0, count: newWidth * newHeight * 3)
    var scratch = [UInt8](repeating: 0, count: newWidth * height * 3)
    let status = pixels.withUnsafeBufferPointer { source in
      pcd_resize_bilinear(
        &out, source.baseAddress, &scratch, Int32(width), Int32(height), width * 3, Int32(newWidth), Int32(newHeight),
        3, 0, 0, Float(width), Float(height))
    }
    precondition(status == 0, "DecodedImage.resized: out of memory for \(newWidth) × \(newHeight)")
    return DecodedImage(width: newWidth, height: newHeight, pixels: out)
  }

  /// torchvision's `CenterCrop(size)` of an image at least `size` on each side: the window starts
  /// at round((height − size) / 2), round((width − size) / 2), rounding halves to even as Python does.
  /// - Returns: The crop as planes, shape (3, size, size) flattened: the dataset's layout.
  /// - Precondition: `width >= size`, `height >= size`.
  public func centreCropPlanes(_ size: Int) -> [UInt8] {
    precondition(width >= size && height >= size, "centreCropPlanes: \(width) × \(height) is smaller than \(size)")
    let top = Int((Double(height - size) / 2).rounded(.toNearestOrEven))
    let left = Int((Double(width - size) / 2).rounded(.toNearestOrEven))
    var planes = [UInt8](repeating: 0, count: 3 * size * size)
    for y in 0..<size {
      for x in 0..<size {
        let from = ((top + y) * width + left + x) * 3
        for c in 0..<3 { planes[(c * size + y) * size + x] = pixels[from + c] }
      }
    }
    return planes
  }
}

// MARK: - Implementation

/// The folder whose sub-folders are the classes.
private func imageFolderRoot(_ path: String, train: Bool) throws -> String {
  guard isDirectory(path) else { throw DataError.missingData(dataset: .folder, path: path) }
  if train { return isDirectory(path + "/train") ? path + "/train" : path }
  guard isDirectory(path + "/val") else {
    throw DataError.badFolder(
      folder: path,
      problem: "there is no val/ folder to evaluate on; lay the images out as \(path)/train/<class>/… and "
        + "\(path)/val/<class>/… (the classes of both the same)")
  }
  return path + "/val"
}

/// An image file and its class index.
private struct ListedFile {
  var path: String
  var label: Int32
}

/// The sorted classes and every file under them; names non-image files (or lists them as
/// skipped with `skipBadFiles`).
private func listImageFolder(_ root: String, skipBadFiles: Bool) throws -> (
  classes: [String], files: [ListedFile], skipped: [String]
) {
  let manager = FileManager.default
  let entries: [String]
  do {
    entries = try manager.contentsOfDirectory(atPath: root)
  } catch {
    throw DataError.unreadable(file: root, reason: "cannot list the folder (\(error.localizedDescription))")
  }
  let byCodePoint: (String, String) -> Bool = { $0.unicodeScalars.lexicographicallyPrecedes($1.unicodeScalars) }
  let classes = entries.filter { isDirectory(root + "/" + $0) }.sorted(by: byCodePoint)
  let looseFiles = entries.filter { !isDirectory(root + "/" + $0) }.sorted(by: byCodePoint)
  guard classes.count >= 2 else {
    throw DataError.badFolder(
      folder: root,
      problem: classes.isEmpty
        ? "it holds no class folders; put each class's images in a folder of its own (\(root)/<class>/image.jpg)"
        : "it holds one class folder ('\(classes[0])'); a classifier needs at least two classes")
  }
  var skipped: [String] = []
  if let loose = looseFiles.first {
    let problem = "'\(root)/\(loose)' lies beside the class folders, not in one (\(looseFiles.count) such files)"
    guard skipBadFiles else {
      throw DataError.badFolder(folder: root, problem: problem + "; move it into its class's folder or away")
    }
    skipped.append("skipped \(looseFiles.count) files beside the class folders of \(root), first '\(loose)'")
  }
  var files: [ListedFile] = []
  for (label, name) in classes.enumerated() {
    let folder = root + "/" + name
    guard let walker = manager.enumerator(atPath: folder) else {
      throw DataError.unreadable(file: folder, reason: "cannot list the folder")
    }
    var found: [String] = []
    while let relative = walker.nextObject() as? String {
      let full = folder + "/" + relative
      guard !isDirectory(full) else { continue }
      let ending = URL(fileURLWithPath: relative).pathExtension.lowercased()
      guard imageFileExtensions.contains(ending) else {
        guard skipBadFiles else {
          throw DataError.badImage(
            file: full, problem: "it is not a .jpg, .jpeg or .png file; only JPEG and PNG images are read")
        }
        skipped.append("skipped '\(full)': not a .jpg, .jpeg or .png file")
        continue
      }
      found.append(relative)
    }
    guard !found.isEmpty else {
      throw DataError.badFolder(
        folder: folder, problem: "the class folder holds no .jpg, .jpeg or .png image; add images or remove it")
    }
    // Sorted by folder, then name: the order of torchvision's sorted os.walk.
    let sorted = found.map { (folder: ($0 as NSString).deletingLastPathComponent, path: $0) }.sorted {
      $0.folder != $1.folder ? byCodePoint($0.folder, $1.folder) : byCodePoint($0.path, $1.path)
    }
    files += sorted.map { ListedFile(path: folder + "/" + $0.path, label: Int32(label)) }
  }
  return (classes, files, skipped)
}

/// Decodes, resizes and centre-crops every file into its slot of `images` ((N, 3, S, S) bytes)
/// on `threads` threads; returns the files that failed, in file order, with the problem.
private func decodeImages(
  _ paths: [String], size: Int, threads: Int, into images: inout [UInt8], resize: Int? = nil
) -> [(index: Int, problem: String)] {
  let imageBytes = 3 * size * size
  let workers = max(1, min(threads > 0 ? threads : ProcessInfo.processInfo.activeProcessorCount, paths.count))
  let failures = FailureList()
  images.withUnsafeMutableBufferPointer { target in
    let base = UnsafeSendablePointer(target.baseAddress!)
    DispatchQueue.concurrentPerform(iterations: workers) { worker in
      var index = worker
      while index < paths.count {
        do {
          let bytes = try readDataFile(paths[index])
          let planes = try DecodedImage(decoding: bytes, file: paths[index])
            .resizedCentreCropPlanes(resize: resize ?? size, size: size)
          planes.withUnsafeBufferPointer {
            (base.pointer + index * imageBytes).update(from: $0.baseAddress!, count: imageBytes)
          }
        } catch let error as DataError {
          failures.append(index, error.problemText)
        } catch {
          failures.append(index, "\(error)")
        }
        index += workers
      }
    }
  }
  return failures.sorted
}

/// A raw pointer handed to decoding threads, each writing its own images' elements.
struct UnsafeSendablePointer<Element>: @unchecked Sendable {
  let pointer: UnsafeMutablePointer<Element>
  init(_ pointer: UnsafeMutablePointer<Element>) { self.pointer = pointer }
}

/// The failures the decoding threads report.
private final class FailureList: @unchecked Sendable {
  private let lock = NSLock()
  private var items: [(index: Int, problem: String)] = []
  func append(_ index: Int, _ problem: String) { lock.withLock { items.append((index, problem)) } }
  var sorted: [(index: Int, problem: String)] { lock.withLock { items.sorted { $0.index < $1.index } } }
}

extension DataError {
  /// The problem alone, for a list of skipped files.
  fileprivate var problemText: String {
    switch self {
    case .badImage(_, let problem): return problem
    case .unreadable(_, let reason): return reason
    case .emptyFile: return "the file is empty (0 bytes)"
    default: return description
    }
  }
}

// MARK: - Decoding per batch (the ImageNet setting)

/// The random choices of torchvision's `RandomResizedCrop(S)` (scale (0.08, 1), ratio (3/4, 4/3))
/// and `RandomHorizontalFlip()` for one image: the crop box in the decoded image and the flip.
public struct ResizedCropDraw: Equatable, Sendable {
  /// The box: top row, left column, height and width in pixels of the decoded image.
  public var top: Int, left: Int, height: Int, width: Int
  /// Whether the crop is mirrored left to right.
  public var flip: Bool

  /// A box and a flip.
  public init(top: Int, left: Int, height: Int, width: Int, flip: Bool) {
    (self.top, self.left, self.height, self.width, self.flip) = (top, left, height, width, flip)
  }

  /// Draws as torchvision's `RandomResizedCrop.get_params` does (up to 10 tries of an area
  /// fraction uniform in `scale` and a log-uniform aspect ratio in `ratio`, then the centre crop
  /// of the clamped ratio), then a flip with probability 0.5.
  ///
  /// - Parameters:
  ///   - imageWidth, imageHeight: The decoded image's size.
  ///   - rng: The generator; it advances by 2 draws per try, 2 for the box's position, 1 for the flip.
  public static func random(
    imageWidth: Int, imageHeight: Int, scale: ClosedRange<Double> = 0.08...1,
    ratio: ClosedRange<Double> = 0.75...(4.0 / 3),
    using rng: inout SeededGenerator
  ) -> ResizedCropDraw {
    let area = Double(imageWidth * imageHeight)
    let logRatio = log(ratio.lowerBound)...log(ratio.upperBound)
    for _ in 0..<10 {
      let target = area * (scale.lowerBound + (scale.upperBound - scale.lowerBound) * Double(rng.nextUniform()))
      let aspect = exp(logRatio.lowerBound + (logRatio.upperBound - logRatio.lowerBound) * Double(rng.nextUniform()))
      let w = Int((target * aspect).squareRoot().rounded(.toNearestOrEven))
      let h = Int((target / aspect).squareRoot().rounded(.toNearestOrEven))
      if w > 0 && w <= imageWidth && h > 0 && h <= imageHeight {
        let top = rng.nextInt(below: imageHeight - h + 1)
        let left = rng.nextInt(below: imageWidth - w + 1)
        return ResizedCropDraw(top: top, left: left, height: h, width: w, flip: rng.nextUniform() < 0.5)
      }
    }
    var (w, h) = (imageWidth, imageHeight)
    let inRatio = Double(imageWidth) / Double(imageHeight)
    if inRatio < ratio.lowerBound {
      h = Int((Double(w) / ratio.lowerBound).rounded(.toNearestOrEven))
    } else if inRatio > ratio.upperBound {
      w = Int((Double(h) * ratio.upperBound).rounded(.toNearestOrEven))
    }
    return ResizedCropDraw(
      top: (imageHeight - h) / 2, left: (imageWidth - w) / 2, height: h, width: w, flip: rng.nextUniform() < 0.5)
  }
}

extension DecodedImage {
  /// torchvision's `resized_crop`: the box cut out, then resized to `size` × `size` with Pillow's
  /// bilinear filter (bit for bit), mirrored if `draw.flip`.
  /// - Returns: Planes, shape (3, size, size) flattened.
  /// - Precondition: the box lies inside the image.
  public func resizedCropPlanes(_ draw: ResizedCropDraw, size: Int) -> [UInt8] {
    precondition(
      draw.top >= 0 && draw.left >= 0 && draw.height > 0 && draw.width > 0 && draw.top + draw.height <= height
        && draw.left + draw.width <= width,
      "resizedCropPlanes: box \(draw) outside the \(width) × \(height) image")
    var out = [UInt8](repeating: 0, count: size * size * 3)
    var scratch = [UInt8](repeating: 0, count: size * draw.height * 3)
    let status = pixels.withUnsafeBufferPointer { source in
      pcd_resize_bilinear(
        &out, source.baseAddress! + (draw.top * width + draw.left) * 3, &scratch, Int32(draw.width),
        Int32(draw.height), width * 3, Int32(size), Int32(size), 3, 0, 0, Float(draw.width), Float(draw.height))
    }
    precondition(status == 0, "resizedCropPlanes: out of memory")
    let square = DecodedImage(width: size, height: size, pixels: out)
    let planes = square.centreCropPlanes(size)
    guard draw.flip else { return planes }
    var mirrored = planes
    for row in 0..<3 * size {
      for x in 0..<size { mirrored[row * size + x] = planes[row * size + size - 1 - x] }
    }
    return mirrored
  }

  /// The evaluation transform of the ImageNet setting: `Resize(resize)` then `CenterCrop(size)`
  /// (256 and 224 in the official code). - Returns: Planes, shape (3, size, size) flattened.
  public func resizedCentreCropPlanes(resize: Int, size: Int) -> [UInt8] {
    resized(shorterSide: resize).centreCropPlanes(size)
  }
}

// MARK: - Colour jitter (the ImageNet evaluation's training transform)

/// torchvision's `ColorJitter(brightness, contrast, saturation, hue)` on a Pillow RGB image, bit
/// for bit: in a random order, brightness (blend with black), contrast (blend with the grey of the
/// image's mean luma), saturation (blend with the image's luma) and hue (a shift of Pillow's 8-bit
/// HSV hue), each by a factor drawn uniformly from [1 − v, 1 + v] ([−v, v] for the hue). Pillow's
/// blend computes `in1 + α·(in2 − in1)` in float and truncates (clamping when it extrapolates).
public struct ColorJitter: Equatable, Sendable {
  /// The strengths v; 0 leaves that adjustment out (and draws nothing for it).
  public var brightness: Float, contrast: Float, saturation: Float, hue: Float

  /// train_imagenet.py's `ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2)`.
  public static let imageNet = ColorJitter(brightness: 0.4, contrast: 0.4, saturation: 0.4, hue: 0.2)

  /// The strengths of each adjustment.
  /// - Precondition: brightness, contrast, saturation ≥ 0; hue in [0, 0.5].
  public init(brightness: Float, contrast: Float, saturation: Float, hue: Float) {
    precondition(
      brightness >= 0 && contrast >= 0 && saturation >= 0 && (0...0.5).contains(hue),
      "ColorJitter: strengths must be ≥ 0 and the hue's at most 0.5")
    (self.brightness, self.contrast, self.saturation, self.hue) = (brightness, contrast, saturation, hue)
  }

  /// One image's choices: the order of the four adjustments (0 brightness, 1 contrast,
  /// 2 saturation, 3 hue) and their factors (`nil` for a strength of 0).
  public struct Draw: Equatable, Sendable {
    public var order: [Int]
    public var brightness: Float?, contrast: Float?, saturation: Float?, hue: Float?
    /// Given choices.
    public init(order: [Int], brightness: Float?, contrast: Float?, saturation: Float?, hue: Float?) {
      (self.order, self.brightness, self.contrast, self.saturation, self.hue) =
        (order, brightness, contrast, saturation, hue)
    }
  }

  /// Draws as `ColorJitter.get_params`: a random order of the four, then each factor present.
  public func draw(using rng: inout SeededGenerator) -> Draw {
    var order = Array(0..<4)
    seededShuffle(&order, using: &rng)
    func factor(_ v: Float, around centre: Float) -> Float? {
      v == 0 ? nil : centre - v + 2 * v * rng.nextUniform()
    }
    let b = factor(brightness, around: 1), c = factor(contrast, around: 1), s = factor(saturation, around: 1)
    return Draw(order: order, brightness: b, contrast: c, saturation: s, hue: factor(hue, around: 0))
  }

  /// Applies `draw` to an RGB image held as planes, shape (3, H, W) flattened.
  public static func apply(_ draw: Draw, to planes: inout [UInt8]) {
    for step in draw.order {
      switch step {
      case 0: if let f = draw.brightness { blend(&planes, with: { _ in 0 }, alpha: f) }
      case 1:
        if let f = draw.contrast {
          let plane = planes.count / 3
          var total = 0
          for i in 0..<plane { total += luma(planes, i, plane) }
          let mean = UInt8(Int(Double(total) / Double(plane) + 0.5))
          blend(&planes, with: { _ in mean }, alpha: f)
        }
      case 2:
        if let f = draw.saturation {
          let plane = planes.count / 3
          let grey = (0..<plane).map { UInt8(luma(planes, $0, plane)) }
          blend(&planes, with: { grey[$0 % plane] }, alpha: f)
        }
      default: if let h = draw.hue { shiftHue(&planes, by: h) }
      }
    }
  }

  /// Pillow's luma of pixel `i` (ITU-R 601-2 in 16-bit fixed point, rounded).
  private static func luma(_ planes: [UInt8], _ i: Int, _ plane: Int) -> Int {
    (Int(planes[i]) * 19595 + Int(planes[plane + i]) * 38470 + Int(planes[2 * plane + i]) * 7471 + 0x8000) >> 16
  }

  /// Pillow's `Image.blend(degenerate, image, alpha)`, `degenerate(k)` the first image's byte k.
  private static func blend(_ planes: inout [UInt8], with degenerate: (Int) -> UInt8, alpha: Float) {
    let interpolates = alpha >= 0 && alpha <= 1
    for k in planes.indices {
      let from = Int(degenerate(k))
      let value = Float(from) + alpha * Float(Int(planes[k]) - from)
      planes[k] = interpolates ? UInt8(value) : value <= 0 ? 0 : value >= 255 ? 255 : UInt8(value)
    }
  }

  /// torchvision's `adjust_hue` on Pillow: to 8-bit HSV, the hue byte plus ⌊h · 255⌋ (wrapping),
  /// back to RGB, with Pillow's conversions.
  private static func shiftHue(_ planes: inout [UInt8], by h: Float) {
    let shift = UInt8(truncatingIfNeeded: Int(Double(h) * 255))
    let plane = planes.count / 3
    for i in 0..<plane {
      let (r, g, b) = (planes[i], planes[plane + i], planes[2 * plane + i])
      var (hue, saturation, value) = rgbToHSV(r, g, b)
      hue &+= shift
      (planes[i], planes[plane + i], planes[2 * plane + i]) = hsvToRGB(hue, saturation, value)
    }
  }

  /// Pillow's RGB → HSV (colorsys's formulas in float, each channel scaled to a byte).
  static func rgbToHSV(_ r: UInt8, _ g: UInt8, _ b: UInt8) -> (UInt8, UInt8, UInt8) {
    let maxc = max(r, g, b), minc = min(r, g, b)
    guard maxc != minc else { return (0, 0, maxc) }
    let range = Float(maxc - minc)
    let s = range / Float(maxc)
    let rc = Float(maxc - r) / range, gc = Float(maxc - g) / range, bc = Float(maxc - b) / range
    let h: Float =
      r == maxc ? bc - gc : g == maxc ? Float(2.0 + Double(rc) - Double(bc)) : Float(4.0 + Double(gc) - Double(rc))
    let wrapped = Float(fmod(Double(h) / 6.0 + 1.0, 1.0))
    func byte(_ x: Double) -> UInt8 { UInt8(max(0, min(255, Int(x)))) }
    return (byte(Double(wrapped) * 255.0), byte(Double(s) * 255.0), maxc)
  }

  /// Pillow's HSV → RGB.
  static func hsvToRGB(_ h: UInt8, _ s: UInt8, _ v: UInt8) -> (UInt8, UInt8, UInt8) {
    guard s != 0 else { return (v, v, v) }
    let sector = Int(floor(Double(Float(h)) * 6.0 / 255.0))
    let f = Float(Double(Float(h)) * 6.0 / 255.0 - Double(Float(sector)))
    let fs = Float(Double(Float(s)) / 255.0)
    func byte(_ x: Double) -> UInt8 { UInt8(max(0, min(255, Int(x.rounded(.toNearestOrAwayFromZero))))) }
    let p = byte(Double(Float(v)) * (1.0 - Double(fs)))
    let q = byte(Double(Float(v)) * (1.0 - Double(fs * f)))
    let t = byte(Double(Float(v)) * (1.0 - Double(fs) * (1.0 - Double(f))))
    switch sector % 6 {
    case 0: return (v, t, p)
    case 1: return (q, v, p)
    case 2: return (p, v, t)
    case 3: return (p, q, v)
    case 4: return (t, p, v)
    default: return (v, p, q)
    }
  }
}
