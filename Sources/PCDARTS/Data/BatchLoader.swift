// Mini-batches for the search: seeded reshuffles per epoch, the reference augmentation, a
// background thread that prepares the next batch, and a state that resumes exactly.
//
// Dimension legend: N images in a batch, C = 3 channels, H × W pixels (32 × 32 for CIFAR).
//
// Determinism: the loader's generator is only touched on the calling thread, once per epoch, to
// draw that epoch's seed. The permutation and every batch's augmentation come from generators
// seeded from (epoch seed, batch index), so a batch's content is a pure function of the state:
// prefetching cannot change it, and restoring a saved state reproduces the following batches.
import Dispatch
import Foundation
import NeuralNetwork
import TensorEngine

/// One mini-batch, normalised and ready for the network.
public struct Batch: Sendable {
  /// Pixels, shape (N, C, H, W) flattened, each value `(pixel / 255 − mean[c]) / std[c]`.
  public var images: [Float]
  /// Labels, shape (N).
  public var labels: [Int32]
  /// Number of images, N (the last batch of an epoch may be smaller than the batch size).
  public var count: Int
  /// Image height H and width W in pixels.
  public var height: Int, width: Int
  /// Positions in the dataset of the images, shape (N); for logs and tests.
  public var indices: [Int]
  /// The rows of the global batch these are (all of them unless the loader is sharded).
  public var shard: BatchShard
}

/// The random choices of the reference training transform for one image:
/// `RandomCrop(size, padding=4)` (size 32 for CIFAR) then `RandomHorizontalFlip(p=0.5)`, and for training a genotype
/// DARTS's `Cutout(16)` after normalising.
public struct AugmentationDraw: Equatable, Sendable {
  /// Top row of the crop in the zero-padded 40×40 image, in `0...2 × padding`.
  public var top: Int
  /// Left column of the crop in the padded image, in `0...2 × padding`.
  public var left: Int
  /// Whether the crop is mirrored left to right.
  public var flip: Bool
  /// The cutout: the centre (row, column) of a `length`×`length` square, clipped to the image,
  /// whose pixels are set to 0 after normalising (DARTS utils.py `Cutout`); `nil` for none.
  public var cutout: Cutout?

  /// A cutout square (DeVries and Taylor 2017, as DARTS's utils.py applies it).
  public struct Cutout: Equatable, Sendable {
    /// The centre, in 0..<H and 0..<W.
    public var row: Int, column: Int
    /// The side of the square before clipping.
    public var length: Int
    /// A square of side `length` centred at (`row`, `column`).
    public init(row: Int, column: Int, length: Int) { (self.row, self.column, self.length) = (row, column, length) }
  }

  /// A draw with the given crop offsets, flip and cutout.
  ///
  /// - Parameters:
  ///   - top: Crop row in the padded image; `padding` means no shift.
  ///   - left: Crop column in the padded image; `padding` means no shift.
  ///   - flip: Mirror left to right.
  ///   - cutout: The square zeroed after normalising, or `nil`.
  public init(top: Int, left: Int, flip: Bool, cutout: Cutout? = nil) {
    self.top = top
    self.left = left
    self.flip = flip
    self.cutout = cutout
  }

  /// Draws in torchvision's order: crop row, crop column (each uniform over the
  /// `2 × padding + 1` positions), then a flip with probability 0.5; then, with a cutout, its
  /// centre row and column (each uniform over the H and W positions, as `np.random.randint(h)`).
  ///
  /// - Parameters:
  ///   - padding: Zero pixels added on each side before cropping (4 in the reference).
  ///   - cutoutLength: The cutout's side, or `nil` for none.
  ///   - height, width: The image size H × W the cutout's centre is drawn in.
  ///   - rng: The generator; it advances by three draws, five with a cutout.
  public static func random(
    padding: Int, cutoutLength: Int? = nil, height: Int = ImageDataset.cifarSide,
    width: Int = ImageDataset.cifarSide, using rng: inout SeededGenerator
  ) -> AugmentationDraw {
    let top = rng.nextInt(below: 2 * padding + 1)
    let left = rng.nextInt(below: 2 * padding + 1)
    let flip = rng.nextUniform() < 0.5
    let cutout = cutoutLength.map { length in
      let row = rng.nextInt(below: height)
      return Cutout(row: row, column: rng.nextInt(below: width), length: length)
    }
    return AugmentationDraw(top: top, left: left, flip: flip, cutout: cutout)
  }
}

/// Crops, flips and normalises one (3, H, W) byte image into floats.
///
/// The image is treated as padded with `padding` zero pixels on every side (as
/// `transforms.RandomCrop(32, padding=4)` pads with 0), the H × W window at (`draw.top`,
/// `draw.left`) of the padded image is taken, mirrored if `draw.flip`, scaled by 1/255
/// (`ToTensor`) and normalised per channel (`Normalize(mean, std)`). A padding pixel therefore
/// becomes `(0 − mean[c]) / std[c]`.
///
/// - Parameters:
///   - image: Pixels of one image, shape (3, H, W) flattened.
///   - draw: Crop offsets and flip; `AugmentationDraw(top: padding, left: padding, flip: false)`
///     is the identity crop used for evaluation.
///   - padding: Zero pixels on each side of the virtual padded image.
///   - mean: Per-channel mean, shape (3).
///   - std: Per-channel standard deviation, shape (3).
///   - output: Destination, shape (3, H, W) flattened.
///   - height, width: The image size H × W (32 × 32 for CIFAR).
/// - Precondition: `image.count` and `output.count` are 3 × H × W, offsets in `0...2 × padding`.
public func transformImage(
  _ image: UnsafeBufferPointer<UInt8>, draw: AugmentationDraw, padding: Int, mean: [Float],
  std: [Float], into output: UnsafeMutableBufferPointer<Float>, height: Int = ImageDataset.cifarSide,
  width: Int = ImageDataset.cifarSide
) {
  let channels = ImageDataset.channels
  precondition(
    image.count == channels * height * width && output.count == channels * height * width,
    "transformImage: image and output need 3 × \(height) × \(width) = \(channels * height * width) values, "
      + "got \(image.count) and \(output.count)")
  precondition(
    (0...2 * padding).contains(draw.top) && (0...2 * padding).contains(draw.left),
    "transformImage: crop offsets (\(draw.top), \(draw.left)) must lie in 0...\(2 * padding)")
  let shiftY = draw.top - padding
  let shiftX = draw.left - padding
  for c in 0..<channels {
    let scale = 1 / (255 * std[c])
    let offset = -mean[c] / std[c]
    let plane = c * height * width
    for y in 0..<height {
      let sourceY = y + shiftY
      let rowInside = sourceY >= 0 && sourceY < height
      for x in 0..<width {
        let sourceX = (draw.flip ? width - 1 - x : x) + shiftX
        var value = offset  // a padding pixel: (0 − mean) / std
        if rowInside && sourceX >= 0 && sourceX < width {
          value = Float(image[plane + sourceY * width + sourceX]) * scale + offset
        }
        output[plane + y * width + x] = value
      }
    }
  }
  if let cut = draw.cutout {
    let (y0, y1) = (max(cut.row - cut.length / 2, 0), min(cut.row + cut.length / 2, height))
    let (x0, x1) = (max(cut.column - cut.length / 2, 0), min(cut.column + cut.length / 2, width))
    for c in 0..<channels {
      for y in y0..<max(y0, y1) {
        for x in x0..<max(x0, x1) { output[c * height * width + y * width + x] = 0 }
      }
    }
  }
}

/// Iterates a dataset in mini-batches, reshuffled each epoch, with optional augmentation and a
/// prepared-ahead next batch.
///
/// Two ways to consume it, sharing one state:
/// - ``nextBatch()`` walks one epoch and returns `nil` at its end (the call after that starts the
///   next, reshuffled epoch) — for the weight-training loop.
/// - ``nextCycling()`` never ends, crossing into reshuffled epochs as needed — for the
///   architecture step, which takes one validation batch per training step.
///
/// Batches are never dropped: the last batch of an epoch holds the remainder.
/// The loader is meant to be used from one thread; the prefetch runs on a private queue.
///
/// Sharded (data parallelism), rank r of R loaders over the same data and seed return rank r's
/// rows of the same global batches: every rank draws the augmentation of the whole batch and
/// transforms its own rows, so a batch's images do not depend on the number of ranks, and the
/// state (global) resumes with another number of ranks.
public final class BatchLoader {
  /// A snapshot from which the loader continues with exactly the same batches.
  public struct EpochState: Codable, Equatable, Sendable {
    /// Epoch of the next batch, counted from 0.
    public var epoch: Int
    /// Index within the epoch of the next batch; `batchesPerEpoch` when the epoch is used up.
    public var batchIndex: Int
    /// Seed of the current epoch's permutation and augmentation.
    public var epochSeed: UInt64
    /// State of the generator that draws the following epochs' seeds.
    public var rngState: [UInt64]
    /// Number of samples the loader iterates, to catch a restore into a different split.
    public var sampleCount: Int
    /// Batch size, to catch a restore with a different batch size.
    public var batchSize: Int
  }

  /// The dataset the indices refer to.
  public let dataset: ImageDataset
  /// Dataset positions iterated each epoch (for example one side of ``searchSplit(count:trainPortion:rng:)``).
  public let indices: [Int]
  /// Images per batch (the last batch of an epoch may be smaller).
  public let batchSize: Int
  /// Whether batches get the random crop and flip; normalisation is always applied.
  public let augment: Bool
  /// Zero pixels added on each side before the random crop (4, as in the reference).
  public let padding: Int
  /// The side of the cutout square of each augmented image, or `nil` for none.
  public let cutoutLength: Int?
  /// Whether the next batch is prepared on a background thread.
  public let prefetch: Bool
  /// This loader's rank and the number of ranks sharing each global batch (0 and 1: unsharded).
  public let rank: Int, ranks: Int

  /// Number of batches in one epoch: ⌈indices.count / batchSize⌉.
  public var batchesPerEpoch: Int { (indices.count + batchSize - 1) / batchSize }

  /// The current position; assign a saved value with ``restore(_:)``.
  public var epochState: EpochState {
    EpochState(
      epoch: epoch, batchIndex: batchIndex, epochSeed: epochSeed, rngState: rng.state,
      sampleCount: indices.count, batchSize: batchSize)
  }

  private var rng: SeededGenerator
  private var epoch = 0
  private var batchIndex = 0
  private var epochSeed: UInt64
  /// Permutations by epoch seed; holds at most the current and the next epoch's.
  private var permutations: [UInt64: [Int]] = [:]
  private var pending: PendingBatch?
  private let queue = DispatchQueue(label: "pcdarts.batchloader.prefetch")

  /// Creates a loader positioned at the first batch of epoch 0.
  ///
  /// - Parameters:
  ///   - dataset: The images.
  ///   - indices: Dataset positions to iterate; all of them when `nil`.
  ///   - batchSize: Images per batch.
  ///   - augment: Apply `RandomCrop(32, padding)` and `RandomHorizontalFlip()` before normalising.
  ///   - padding: Zero padding of the random crop.
  ///   - cutoutLength: With `augment`, also cut out a square of this side from each image.
  ///   - seed: Fixes every epoch's order and augmentation.
  ///   - prefetch: Prepare the next batch on a background thread; the batches are the same
  ///     either way.
  ///   - rank, ranks: Return only rank `rank`'s rows (``BatchShard``) of each global batch of
  ///     `batchSize`, shared by `ranks` ranks.
  /// - Precondition: `batchSize > 0`, at least one index, every index in `0..<dataset.count`,
  ///   `rank` in `0..<ranks`.
  public init(
    dataset: ImageDataset, indices: [Int]? = nil, batchSize: Int, augment: Bool,
    padding: Int = 4, cutoutLength: Int? = nil, seed: UInt64, prefetch: Bool = true, rank: Int = 0, ranks: Int = 1
  ) {
    let indices = indices ?? Array(0..<dataset.count)
    precondition(batchSize > 0, "BatchLoader: batch size must be positive, got \(batchSize)")
    precondition(!indices.isEmpty, "BatchLoader: no images to iterate in \(dataset.name)")
    precondition(padding >= 0, "BatchLoader: padding must be ≥ 0, got \(padding)")
    precondition(ranks >= 1 && (0..<ranks).contains(rank), "BatchLoader: rank \(rank) is outside 0..<\(ranks)")
    precondition((cutoutLength ?? 1) >= 1, "BatchLoader: cutout length must be ≥ 1, got \(cutoutLength ?? 0)")
    if let bad = indices.first(where: { $0 < 0 || $0 >= dataset.count }) {
      preconditionFailure(
        "BatchLoader: index \(bad) is outside 0..<\(dataset.count) of \(dataset.name)")
    }
    self.dataset = dataset
    self.indices = indices
    self.batchSize = batchSize
    self.augment = augment
    self.padding = padding
    self.cutoutLength = cutoutLength
    self.prefetch = prefetch
    (self.rank, self.ranks) = (rank, ranks)
    self.rng = SeededGenerator(seed: seed)
    self.epochSeed = rng.next()
    if prefetch { startPrefetch() }
  }

  /// Continues from a saved position, so the following batches equal those the saving loader
  /// would have produced.
  ///
  /// - Parameter state: A value of ``epochState`` from a loader over the same samples and batch size.
  /// - Throws: ``DataError/stateMismatch(problem:)`` if the sample count, batch size or position
  ///   does not fit this loader.
  public func restore(_ state: EpochState) throws {
    try check(state)
    epoch = state.epoch
    batchIndex = state.batchIndex
    epochSeed = state.epochSeed
    rng.state = state.rngState
    permutations = [:]
    pending = nil  // prepared for the old position; the key check would ignore it anyway
    if prefetch { startPrefetch() }
  }

  /// Checks that `state` fits this loader, without changing anything (see ``restore(_:)``).
  /// - Throws: ``DataError/stateMismatch(problem:)``.
  public func check(_ state: EpochState) throws {
    guard state.sampleCount == indices.count else {
      throw DataError.stateMismatch(
        problem: "it was saved for \(state.sampleCount) samples, this loader has \(indices.count)")
    }
    guard state.batchSize == batchSize else {
      throw DataError.stateMismatch(
        problem: "it was saved with batch size \(state.batchSize), this loader uses \(batchSize)")
    }
    guard state.rngState.count == 4, (0...batchesPerEpoch).contains(state.batchIndex),
      state.epoch >= 0
    else {
      throw DataError.stateMismatch(
        problem: "batch index \(state.batchIndex) (of \(batchesPerEpoch)), epoch \(state.epoch) "
          + "and \(state.rngState.count) generator words are not a valid position")
    }
  }

  /// The next batch of the current epoch, or `nil` once the epoch is used up; the call after a
  /// `nil` starts the next epoch with a new order.
  ///
  /// - Returns: A batch of `min(batchSize, remaining)` images, or `nil` at the end of an epoch.
  public func nextBatch() -> Batch? {
    if batchIndex == batchesPerEpoch {
      startNextEpoch()
      return nil
    }
    return takeBatch()
  }

  /// The next batch, starting a new reshuffled epoch whenever one is used up; never ends.
  ///
  /// - Returns: A batch of `min(batchSize, remaining in the epoch)` images.
  public func nextCycling() -> Batch {
    if batchIndex == batchesPerEpoch { startNextEpoch() }
    return takeBatch()
  }

  // MARK: - Implementation

  /// Identifies a batch: its epoch's seed and its index in that epoch.
  private struct BatchKey: Equatable {
    var epochSeed: UInt64
    var batchIndex: Int
  }

  /// A batch being prepared on the prefetch queue.
  private final class PendingBatch: @unchecked Sendable {
    let key: BatchKey
    // Written once on the queue before `done` is signalled, read only after waiting on it.
    var batch: Batch?
    let done = DispatchSemaphore(value: 0)
    init(key: BatchKey) { self.key = key }
    func wait() -> Batch {
      done.wait()
      done.signal()  // keep it readable if waited on again
      return batch!
    }
  }

  private func startNextEpoch() {
    epoch += 1
    batchIndex = 0
    epochSeed = rng.next()
  }

  /// Returns the batch at the current position (prefetched if it was) and prefetches the one after.
  private func takeBatch() -> Batch {
    let key = BatchKey(epochSeed: epochSeed, batchIndex: batchIndex)
    let batch: Batch
    if let pending, pending.key == key {
      batch = pending.wait()
    } else {
      batch = makeBatch(key)
    }
    pending = nil
    batchIndex += 1
    if prefetch { startPrefetch() }
    return batch
  }

  /// Starts preparing the batch at the current position (the next one returned) without changing
  /// the state: at an epoch's end the next epoch's seed is peeked from a copy of the generator.
  private func startPrefetch() {
    var key = BatchKey(epochSeed: epochSeed, batchIndex: batchIndex)
    if batchIndex == batchesPerEpoch {
      var peek = rng
      key = BatchKey(epochSeed: peek.next(), batchIndex: 0)
    }
    let job = PendingBatch(key: key)
    let plan = batchPlan(key)
    let (dataset, augment, padding, cutout) = (self.dataset, self.augment, self.padding, self.cutoutLength)
    let shard = BatchShard(rank: rank, of: ranks, count: plan.indices.count)
    queue.async {
      job.batch = BatchLoader.assemble(
        dataset: dataset, indices: plan.indices, shard: shard, augmentSeed: plan.augmentSeed, augment: augment,
        padding: padding, cutoutLength: cutout)
      job.done.signal()
    }
    pending = job
  }

  private func makeBatch(_ key: BatchKey) -> Batch {
    let plan = batchPlan(key)
    return BatchLoader.assemble(
      dataset: dataset, indices: plan.indices, shard: BatchShard(rank: rank, of: ranks, count: plan.indices.count),
      augmentSeed: plan.augmentSeed, augment: augment, padding: padding, cutoutLength: cutoutLength)
  }

  /// The dataset positions of a batch and the seed of its augmentation draws.
  private func batchPlan(_ key: BatchKey) -> (indices: [Int], augmentSeed: UInt64) {
    let order = permutation(for: key.epochSeed)
    let start = key.batchIndex * batchSize
    let end = min(start + batchSize, order.count)
    // A distinct, reproducible seed per batch; SeededGenerator's SplitMix64 seeding scrambles it.
    let augmentSeed = key.epochSeed ^ (UInt64(key.batchIndex + 1) &* 0xD1B5_4A32_D192_ED03)
    return (Array(order[start..<end]), augmentSeed)
  }

  private func permutation(for seed: UInt64) -> [Int] {
    if let cached = permutations[seed] { return cached }
    var order = indices
    var shuffler = SeededGenerator(seed: seed)
    seededShuffle(&order, using: &shuffler)
    // Only the current and the next epoch are ever needed.
    permutations = permutations.filter { $0.key == epochSeed }
    permutations[seed] = order
    return order
  }

  /// Builds `shard`'s rows of the global batch `indices`; a pure function of its arguments, so it
  /// can run on any thread. The draws of the rows before the shard are made and discarded.
  private static func assemble(
    dataset: ImageDataset, indices global: [Int], shard: BatchShard, augmentSeed: UInt64, augment: Bool,
    padding: Int, cutoutLength: Int?
  ) -> Batch {
    if let files = dataset.files {
      return assembleFromFiles(
        dataset: dataset, files: files, indices: global, shard: shard, augmentSeed: augmentSeed, augment: augment)
    }
    let size = dataset.imageSize
    let indices = Array(global[shard.rows])
    var images = [Float](repeating: 0, count: indices.count * size)
    var labels = [Int32](repeating: 0, count: indices.count)
    var rng = SeededGenerator(seed: augmentSeed)
    let identity = AugmentationDraw(top: padding, left: padding, flip: false)
    if augment {
      for _ in 0..<shard.rows.lowerBound {
        _ = AugmentationDraw.random(
          padding: padding, cutoutLength: cutoutLength, height: dataset.height, width: dataset.width, using: &rng)
      }
    }
    dataset.images.withUnsafeBufferPointer { source in
      images.withUnsafeMutableBufferPointer { target in
        for (k, index) in indices.enumerated() {
          let draw =
            augment
            ? AugmentationDraw.random(
              padding: padding, cutoutLength: cutoutLength, height: dataset.height, width: dataset.width,
              using: &rng) : identity
          transformImage(
            UnsafeBufferPointer(rebasing: source[index * size..<(index + 1) * size]), draw: draw,
            padding: padding, mean: dataset.mean, std: dataset.std,
            into: UnsafeMutableBufferPointer(rebasing: target[k * size..<(k + 1) * size]), height: dataset.height,
            width: dataset.width)
          labels[k] = dataset.labels[index]
        }
      }
    }
    return Batch(
      images: images, labels: labels, count: indices.count, height: dataset.height, width: dataset.width,
      indices: indices, shard: shard)
  }

  /// ``assemble(dataset:indices:shard:augmentSeed:augment:padding:cutoutLength:)`` for a dataset
  /// decoded per batch. Each row's draws (a resized crop and a flip, which depend on its image's
  /// size, then the colour jitter) come from a generator seeded by the batch's seed and the row's
  /// place in the global batch, so a rank decodes its own rows only and a row's pixels do not
  /// depend on the number of ranks. The rows are decoded and transformed on every core.
  private static func assembleFromFiles(
    dataset: ImageDataset, files: ImageFiles, indices global: [Int], shard: BatchShard, augmentSeed: UInt64,
    augment: Bool
  ) -> Batch {
    let side = dataset.height
    let size = dataset.imageSize
    var images = [Float](repeating: 0, count: shard.rows.count * size)
    images.withUnsafeMutableBufferPointer { target in
      let base = UnsafeSendablePointer(target.baseAddress!)
      DispatchQueue.concurrentPerform(iterations: shard.rows.count) { k in
        let row = shard.rows.lowerBound + k
        let path = files.paths[global[row]]
        let image: DecodedImage
        do {
          image = try DecodedImage(decoding: try readDataFile(path), file: path)
        } catch {
          // Checked by signature when loaded; a file that fails here changed or is corrupt inside.
          fatalError(
            "cannot decode '\(path)' for a batch: \(error). Remove or replace the file and continue with --resume")
        }
        var planes: [UInt8]
        if augment {
          var rng = SeededGenerator(seed: augmentSeed ^ (UInt64(row + 1) &* 0x9E37_79B9_7F4A_7C15))
          let crop = ResizedCropDraw.random(imageWidth: image.width, imageHeight: image.height, using: &rng)
          planes = image.resizedCropPlanes(crop, size: side)
          if let jitter = files.colorJitter { ColorJitter.apply(jitter.draw(using: &rng), to: &planes) }
        } else {
          planes = image.resizedCentreCropPlanes(resize: files.evaluationResize, size: side)
        }
        planes.withUnsafeBufferPointer { source in
          transformImage(
            source, draw: AugmentationDraw(top: 0, left: 0, flip: false), padding: 0, mean: dataset.mean,
            std: dataset.std, into: UnsafeMutableBufferPointer(start: base.pointer + k * size, count: size),
            height: side, width: side)
        }
      }
    }
    let indices = Array(global[shard.rows])
    return Batch(
      images: images, labels: indices.map { dataset.labels[$0] }, count: indices.count, height: side, width: side,
      indices: indices, shard: shard)
  }
}
