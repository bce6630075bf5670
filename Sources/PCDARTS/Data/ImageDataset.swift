// Image datasets for the search: a common in-memory form, the loader errors, loading by name and
// the search-time train/validation split.
//
// Dimension legend: N images, C = 3 channels (R, G, B planes), H × W pixels (32 × 32 for CIFAR).
import Foundation
import NeuralNetwork
import TensorEngine

/// A labelled set of H × W RGB images, all of one size, held as raw bytes, with the constants that
/// normalise it.
///
/// Every dataset is brought to one layout when it is loaded, (3, H, W) bytes per image, so the
/// search code handles one form: CIFAR is (3, 32, 32) as it is stored, Fashion-MNIST is padded
/// from 28×28 and repeated on the three channels, an image folder is resized and centre-cropped
/// to its `--image-size`.
public struct ImageDataset: Sendable {
  /// Channels per image (R, G, B planes).
  public static let channels = 3
  /// The side of CIFAR's images, and of every dataset unless it says otherwise.
  public static let cifarSide = 32

  /// Image height H in pixels.
  public let height: Int
  /// Image width W in pixels.
  public let width: Int
  /// Bytes per image: C × H × W (3072 for CIFAR).
  public var imageSize: Int { ImageDataset.channels * height * width }

  /// Pixels, shape (N, C, H, W) flattened, each image CHW with planes R, G, B in row-major order;
  /// empty when the images are decoded per batch from ``files``.
  public var images: [UInt8]
  /// The image files of a dataset decoded per batch (the ImageNet setting), or `nil` when the
  /// pixels are held in ``images``.
  public var files: ImageFiles?
  /// Class labels, shape (N), each in `0..<classCount`.
  public var labels: [Int32]
  /// Number of classes the labels range over.
  public var classCount: Int
  /// The classes' names by label (an image folder's class folders), or empty.
  public var classNames: [String] = []
  /// A short name for logs, such as `cifar10-train`.
  public var name: String
  /// Per-channel mean of the pixel values scaled to [0, 1], shape (C); used by `Normalize`.
  public var mean: [Float]
  /// Per-channel standard deviation of the pixel values scaled to [0, 1], shape (C).
  public var std: [Float]

  /// Notes on data that is usable but not what the official files hold (fewer records, say),
  /// one line each naming the file; the commands print them as warnings.
  public var warnings: [String] = []

  /// Number of images, N.
  public var count: Int { labels.count }

  /// Wraps images and labels that are already in the (N, 3, H, W) byte layout.
  ///
  /// - Parameters:
  ///   - name: A short name for logs.
  ///   - images: Pixels, shape (N, 3, H, W) flattened.
  ///   - labels: Labels, shape (N), each in `0..<classCount`.
  ///   - classCount: Number of classes.
  ///   - mean: Per-channel mean, shape (3).
  ///   - std: Per-channel standard deviation, shape (3), all positive.
  ///   - height: H, the image height in pixels.
  ///   - width: W, the image width in pixels.
  /// - Precondition: `images.count == labels.count * 3 * height * width`, `mean` and `std` have
  ///   3 entries, every `std` entry is positive, `height` and `width` are positive.
  public init(
    name: String, images: [UInt8], labels: [Int32], classCount: Int, mean: [Float], std: [Float],
    height: Int = ImageDataset.cifarSide, width: Int = ImageDataset.cifarSide
  ) {
    precondition(height > 0 && width > 0, "ImageDataset \(name): image size \(height) × \(width) must be positive")
    let size = ImageDataset.channels * height * width
    precondition(
      images.count == labels.count * size,
      "ImageDataset \(name): \(images.count) pixel bytes for \(labels.count) labels; "
        + "expected labels.count × 3 × \(height) × \(width) = \(labels.count * size)")
    precondition(
      mean.count == ImageDataset.channels && std.count == ImageDataset.channels,
      "ImageDataset \(name): mean and std need 3 entries (R, G, B), got \(mean.count) and \(std.count)"
    )
    precondition(
      std.allSatisfy { $0 > 0 }, "ImageDataset \(name): std must be positive, got \(std)")
    (self.height, self.width) = (height, width)
    self.name = name
    self.images = images
    self.labels = labels
    self.classCount = classCount
    self.mean = mean
    self.std = std
  }

  /// A dataset whose images are decoded from `files` when a batch is made, H = W = `imageSize`:
  /// training batches are `RandomResizedCrop(imageSize)` and a flip of each file, evaluation
  /// batches `Resize(files.evaluationResize)` then `CenterCrop(imageSize)` (the ImageNet setting).
  ///
  /// - Precondition: one label per file, `mean` and `std` of 3 entries, `std` positive.
  public init(
    name: String, files: ImageFiles, labels: [Int32], classCount: Int, mean: [Float], std: [Float], imageSize: Int
  ) {
    precondition(
      files.paths.count == labels.count, "ImageDataset \(name): \(files.paths.count) files for \(labels.count) labels")
    self.init(
      name: name, images: [], labels: [], classCount: classCount, mean: mean, std: std, height: imageSize,
      width: imageSize)
    self.labels = labels
    self.files = files
  }

  /// The images at `indices`, in that order, with the same classes and normalisation constants.
  ///
  /// - Parameter indices: Positions in `0..<count`; repeats are allowed.
  /// - Returns: A dataset with `indices.count` images.
  /// - Precondition: every index is in `0..<count`.
  public func subset(_ indices: [Int]) -> ImageDataset {
    if var files {
      for index in indices where index < 0 || index >= count {
        preconditionFailure("ImageDataset.subset: index \(index) is outside 0..<\(count) of \(name)")
      }
      files.paths = indices.map { files.paths[$0] }
      var subset = self
      subset.files = files
      subset.labels = indices.map { labels[$0] }
      return subset
    }
    let size = imageSize
    var newImages = [UInt8](repeating: 0, count: indices.count * size)
    var newLabels = [Int32](repeating: 0, count: indices.count)
    images.withUnsafeBufferPointer { source in
      newImages.withUnsafeMutableBufferPointer { target in
        for (k, index) in indices.enumerated() {
          precondition(
            index >= 0 && index < count,
            "ImageDataset.subset: index \(index) is outside 0..<\(count) of \(name)")
          let from = source.baseAddress! + index * size
          (target.baseAddress! + k * size).update(from: from, count: size)
          newLabels[k] = labels[index]
        }
      }
    }
    var subset = ImageDataset(
      name: name, images: newImages, labels: newLabels, classCount: classCount, mean: mean,
      std: std, height: height, width: width)
    subset.warnings = warnings
    return subset
  }
}

/// The files of a dataset decoded per batch, and the evaluation transform's resize.
public struct ImageFiles: Sendable {
  /// One path per image, shape (N).
  public var paths: [String]
  /// The shorter side evaluation batches are resized to before the centre crop (256 for 224).
  public var evaluationResize: Int

  /// The colour jitter training batches get after their crop and flip (train_imagenet.py's), or
  /// `nil` for none (the search's).
  public var colorJitter: ColorJitter?

  /// Files, the evaluation resize and the training batches' colour jitter.
  public init(paths: [String], evaluationResize: Int, colorJitter: ColorJitter? = nil) {
    (self.paths, self.evaluationResize, self.colorJitter) = (paths, evaluationResize, colorJitter)
  }
}

// MARK: - Errors

/// A problem with the dataset files on disk; the description names the file, the problem and
/// what to do about it.
public enum DataError: Error, CustomStringConvertible, Equatable {
  /// The data folder or a file in it does not exist.
  case missingData(dataset: DatasetName, path: String)
  /// A file could not be read (permissions, I/O error).
  case unreadable(file: String, reason: String)
  /// A data file of 0 bytes.
  case emptyFile(file: String)
  /// A record file whose size is not a whole number of records.
  case badFileSize(file: String, size: Int, recordSize: Int)
  /// A label outside the dataset's classes.
  case labelOutOfRange(file: String, record: Int, label: Int, classCount: Int)
  /// An IDX file whose magic number is not the expected one.
  case badMagic(file: String, found: UInt32, expected: UInt32)
  /// An IDX file whose header disagrees with its size or with the expected dimensions.
  case badHeader(file: String, problem: String)
  /// A gzip stream that zlib could not decompress.
  case decompressionFailed(file: String, reason: String)
  /// An images file and a labels file with different counts.
  case countMismatch(imagesFile: String, images: Int, labelsFile: String, labels: Int)
  /// A saved loader state that does not fit the loader it is restored into.
  case stateMismatch(problem: String)
  /// An image file that is not a JPEG or PNG, or that does not decode.
  case badImage(file: String, problem: String)
  /// An image folder laid out in a way that cannot be read as classes of images.
  case badFolder(folder: String, problem: String)

  /// A message naming the file, the problem and what to do.
  public var description: String {
    switch self {
    case .missingData(let dataset, let path):
      switch dataset {
      case .cifar10:
        return """
          CIFAR-10 data not found at '\(path)'. Download the "CIFAR-10 binary version" from \
          https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack it so that the folder \
          cifar-10-batches-bin holds data_batch_1.bin … data_batch_5.bin and test_batch.bin; pass \
          that folder or its parent as the data path (or set PCDARTS_DATA). To run with no \
          download, use the fashion-mnist dataset of Debian's dataset-fashion-mnist package \
          (apt install dataset-fashion-mnist).
          """
      case .cifar100:
        return """
          CIFAR-100 data not found at '\(path)'. Download the "CIFAR-100 binary version" from \
          https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and unpack it so that the \
          folder cifar-100-binary holds train.bin and test.bin; pass that folder or its parent \
          as the data path (or set PCDARTS_DATA). To run with no download, use the \
          fashion-mnist dataset of Debian's dataset-fashion-mnist package.
          """
      case .folder:
        return """
          Image folder '\(path)' not found. Pass a folder laid out as torchvision's ImageFolder: \
          PATH/train/<class>/*.jpg|png (and PATH/val/<class>/… to evaluate), or PATH/<class>/… \
          alone for a search; scripts/fashion_mnist_folder.py writes one from Debian's Fashion-MNIST.
          """
      case .fashionMNIST:
        return """
          Fashion-MNIST data not found at '\(path)'. Install Debian's dataset-fashion-mnist \
          package (apt install dataset-fashion-mnist), which puts train-images-idx3-ubyte.gz, \
          train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz in \
          /usr/share/datasets/fashion-mnist, or pass a folder holding those four files.
          """
      }
    case .unreadable(let file, let reason):
      return "Cannot read '\(file)': \(reason). Check that the file exists and is readable."
    case .emptyFile(let file):
      return "'\(file)' is empty (0 bytes): the download or the unpacking was cut short. Download and unpack it again."
    case .badFileSize(let file, let size, let recordSize):
      return """
        '\(file)' has \(size) bytes, which is not a whole number of \(recordSize)-byte records \
        (\(size / recordSize) records and \(size % recordSize) bytes left over); the file is \
        truncated or not in the binary format. Download and unpack it again.
        """
    case .labelOutOfRange(let file, let record, let label, let classCount):
      return """
        '\(file)' record \(record) has label \(label), outside 0..<\(classCount); the file is \
        corrupt or belongs to another dataset. Download and unpack it again.
        """
    case .badMagic(let file, let found, let expected):
      return """
        '\(file)' starts with magic number \(found), expected \(expected); it is not an IDX \
        \(expected == 2051 ? "images" : "labels") file. Check the file names or reinstall the data.
        """
    case .badHeader(let file, let problem):
      return "'\(file)': \(problem). The file is truncated or corrupt; reinstall the data."
    case .decompressionFailed(let file, let reason):
      return
        "Cannot decompress '\(file)' as gzip: \(reason). The file is corrupt; reinstall the data."
    case .countMismatch(let imagesFile, let images, let labelsFile, let labels):
      return """
        '\(imagesFile)' holds \(images) images but '\(labelsFile)' holds \(labels) labels; the \
        two files must come from the same release. Reinstall the data.
        """
    case .badImage(let file, let problem):
      return """
        Cannot read the image '\(file)': \(problem). Replace or remove the file, or skip such files \
        (search-cifar and train-cifar: --skip-bad-images, which lists each skipped file as a warning).
        """
    case .badFolder(let folder, let problem):
      return "Image folder '\(folder)': \(problem)."
    case .stateMismatch(let problem):
      return """
        Cannot restore the batch loader state: \(problem). Resume with the same dataset, split \
        and batch size as the run that saved it.
        """
    }
  }
}

// MARK: - Loading by name

/// The datasets the search can run on; the raw values are the `--dataset` spellings.
public enum DatasetName: String, CaseIterable, Sendable {
  /// CIFAR-10, binary version: 50 000 training and 10 000 test images, 10 classes.
  case cifar10
  /// CIFAR-100, binary version, fine labels: 50 000 training and 10 000 test images, 100 classes.
  case cifar100
  /// Fashion-MNIST as Debian's dataset-fashion-mnist ships it: 60 000 + 10 000 images, 10 classes.
  case fashionMNIST = "fashion-mnist"
  /// A folder of JPEG and PNG files, one sub-folder per class (``loadImageFolder(from:train:options:)``).
  case folder
}

/// Loads the training or test part of a dataset.
///
/// - Parameters:
///   - name: Which dataset.
///   - path: For CIFAR, the folder `cifar-10-batches-bin` / `cifar-100-binary` or its parent;
///     for Fashion-MNIST, the folder holding the four `.gz` IDX files; for an image folder, the
///     folder (see ``loadImageFolder(from:train:options:)``).
///   - train: `true` for the training images, `false` for the test images.
///   - folder: How an image folder is read (ignored by the other datasets).
/// - Returns: Images of shape (N, 3, H, W) (32 × 32 but for image folders) with their labels and
///   normalisation constants.
/// - Throws: ``DataError`` naming the file and the problem.
public func loadDataset(
  _ name: DatasetName, from path: String, train: Bool, folder: ImageFolderOptions = ImageFolderOptions()
) throws -> ImageDataset {
  switch name {
  case .cifar10: return try loadCIFAR10(from: path, train: train)
  case .cifar100: return try loadCIFAR100(from: path, train: train)
  case .fashionMNIST: return try loadFashionMNIST(from: path, train: train)
  case .folder: return try loadImageFolder(from: path, train: train, options: folder)
  }
}

/// The data path used when none is given on the command line.
///
/// The environment variable `PCDARTS_DATA` if it is set and not empty; otherwise `./data` for
/// CIFAR-10 and CIFAR-100 (the folder that contains `cifar-10-batches-bin` or
/// `cifar-100-binary`) and `/usr/share/datasets/fashion-mnist` (where Debian's
/// dataset-fashion-mnist package installs it) for Fashion-MNIST, `./data/images` for an image
/// folder.
///
/// - Parameters:
///   - name: Which dataset.
///   - environment: The environment to consult; the process environment by default.
/// - Returns: A folder path to pass to ``loadDataset(_:from:train:)``.
public func defaultDataPath(
  for name: DatasetName, environment: [String: String] = ProcessInfo.processInfo.environment
) -> String {
  if let path = environment["PCDARTS_DATA"], !path.isEmpty { return path }
  switch name {
  case .cifar10, .cifar100: return "./data"
  case .fashionMNIST: return "/usr/share/datasets/fashion-mnist"
  case .folder: return "./data/images"
  }
}

// MARK: - Search split

/// Splits the training images into the search's weight-training and architecture-validation parts.
///
/// PC-DARTS searches on the training set only: the network weights learn from one part and the
/// architecture parameters from the other (`train_portion` in the reference `train_search.py`).
/// The indices are shuffled with `rng` first so that the split does not follow file order.
///
/// - Parameters:
///   - count: Number of images, N.
///   - trainPortion: Fraction in (0, 1) for the weight-training part; it gets
///     `floor(trainPortion × count)` indices.
///   - rng: The generator to shuffle with; it advances by the shuffle.
/// - Returns: Disjoint index lists that together cover `0..<count`.
/// - Precondition: both parts are non-empty.
public func searchSplit(count: Int, trainPortion: Double, rng: inout SeededGenerator) -> (
  train: [Int], valid: [Int]
) {
  let trainCount = Int((trainPortion * Double(count)).rounded(.down))
  precondition(
    trainCount > 0 && trainCount < count,
    "searchSplit: train portion \(trainPortion) of \(count) images leaves \(trainCount) for "
      + "training and \(count - trainCount) for validation; both must be non-empty, so choose a "
      + "portion strictly between 0 and 1 and at least 2 images")
  var indices = Array(0..<count)
  seededShuffle(&indices, using: &rng)
  return (Array(indices[..<trainCount]), Array(indices[trainCount...]))
}

/// Disjoint samples of every class, one per portion: of each class's n images (shuffled with
/// `rng`), the first ⌊portions[0] · n⌋ go to the first sample, the next ⌊portions[1] · n⌋ to the
/// second, and so on — the 10% and 2.5% per class that train_search_imagenet.py's data preparation
/// draws from ImageNet's training set.
///
/// - Parameters:
///   - labels: The class of each image, shape (N).
///   - portions: Shares in (0, 1) adding up to at most 1.
///   - rng: The generator; it advances by one shuffle per class.
/// - Returns: One list of indices per portion, classes in label order.
public func classBalancedSample(labels: [Int32], portions: [Double], rng: inout SeededGenerator) -> [[Int]] {
  precondition(
    portions.allSatisfy { $0 > 0 } && portions.reduce(0, +) <= 1,
    "classBalancedSample: portions \(portions) must be positive and add up to at most 1")
  var byClass: [Int32: [Int]] = [:]
  for (index, label) in labels.enumerated() { byClass[label, default: []].append(index) }
  var samples = [[Int]](repeating: [], count: portions.count)
  for label in byClass.keys.sorted() {
    var members = byClass[label]!
    seededShuffle(&members, using: &rng)
    var start = 0
    for (k, portion) in portions.enumerated() {
      let take = Int(portion * Double(members.count))
      samples[k] += members[start..<start + take]
      start += take
    }
  }
  return samples
}

/// Fisher–Yates shuffle drawing from `rng`, written out so that the order depends only on the
/// generator (the standard library's `shuffle(using:)` algorithm is not promised to stay fixed).
func seededShuffle(_ values: inout [Int], using rng: inout SeededGenerator) {
  var i = values.count - 1
  while i > 0 {
    let j = rng.nextInt(below: i + 1)
    values.swapAt(i, j)
    i -= 1
  }
}

// MARK: - File reading shared by the loaders

/// Reads a whole file, turning Foundation's error into a ``DataError`` that names the file.
func readDataFile(_ path: String) throws -> Data {
  guard !isDirectory(path) else { throw DataError.unreadable(file: path, reason: "it is a folder, not a file") }
  guard let data = FileManager.default.contents(atPath: path) else {
    let reason = access(path, R_OK) == 0 ? "reading it failed" : String(cString: strerror(errno))
    throw DataError.unreadable(file: path, reason: reason)
  }
  guard !data.isEmpty else { throw DataError.emptyFile(file: path) }
  return data
}

/// The warning for a data file that holds `records` records where the official one has `official`.
func recordCountWarning(file: String, records: Int, official: Int) -> String? {
  records == official
    ? nil : "\(file) holds \(records) records; the official file has \(official) (the data is used as it is)"
}

/// Whether `path` names an existing directory.
func isDirectory(_ path: String) -> Bool {
  var isDir: ObjCBool = false
  return FileManager.default.fileExists(atPath: path, isDirectory: &isDir) && isDir.boolValue
}
