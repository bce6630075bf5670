// A batch as tensors: what the network, the architect and the search loop consume.

import NeuralNetwork
import TensorEngine

/// A batch of images and labels. `images` is (N, 3, H, W).
public struct LabeledBatch {
  /// (N, 3, H, W).
  public var images: Tensor
  /// (N), class indices.
  public var labels: [Int32]
  /// The rows of the global batch these are; the whole batch in a single process.
  public var shard: BatchShard
  /// A batch of images and their labels.
  /// - Parameter shard: which rows of a data-parallel step's global batch these are (`nil`: the
  ///   whole batch).
  /// - Precondition: `images` is (N, C, H, W) with N = `labels.count` = the shard's rows.
  public init(images: Tensor, labels: [Int32], shard: BatchShard? = nil) {
    precondition(
      images.rank == 4 && images.shape[0] == labels.count,
      "LabeledBatch: images \(images.shape) need one label per sample, got \(labels.count)")
    let shard = shard ?? .whole(labels.count)
    precondition(
      shard.rows.count == labels.count,
      "LabeledBatch: \(labels.count) samples for the \(shard.rows.count) rows of \(shard)")
    (self.images, self.labels, self.shard) = (images, labels, shard)
  }

  /// The tensor form of a batch from a ``BatchLoader``: images (N, 3, H, W), labels (N).
  ///
  /// - Parameter batch: normalised (and possibly augmented) pixels and their labels.
  public init(_ batch: Batch) {
    self.init(
      images: Tensor(
        shape: [batch.count, ImageDataset.channels, batch.height, batch.width],
        data: batch.images),
      labels: batch.labels, shard: batch.shard)
  }

  /// The rows of `shard` of this (whole) batch, for the rank that takes them.
  /// - Precondition: this batch is whole and has `shard.globalCount` samples.
  public func rows(of shard: BatchShard) -> LabeledBatch {
    precondition(
      self.shard == .whole(labels.count) && shard.globalCount == labels.count,
      "LabeledBatch.rows(of:): \(shard) of a batch of \(labels.count) (\(self.shard))")
    let size = images.count / max(labels.count, 1)
    let values = UnsafeBufferPointer(
      start: images.pointer + shard.rows.lowerBound * size, count: shard.rows.count * size)
    return LabeledBatch(
      images: Tensor(shape: [shard.rows.count] + images.shape.dropFirst(), data: Array(values)),
      labels: Array(labels[shard.rows]), shard: shard)
  }
}
