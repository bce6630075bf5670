// A batch as tensors: what the network, the architect and the search loop consume.

import NeuralNetwork
import TensorEngine

/// A batch of images and labels. `images` is (N, 3, H, W).
public struct LabeledBatch {
  /// (N, 3, H, W).
  public var images: Tensor
  /// (N), class indices.
  public var labels: [Int32]
  /// A batch of images and their labels.
  /// - Precondition: `images` is (N, C, H, W) with N = `labels.count`.
  public init(images: Tensor, labels: [Int32]) {
    precondition(
      images.rank == 4 && images.shape[0] == labels.count,
      "LabeledBatch: images \(images.shape) need one label per sample, got \(labels.count)")
    (self.images, self.labels) = (images, labels)
  }

  /// The tensor form of a batch from a ``BatchLoader``: images (N, 3, 32, 32), labels (N).
  ///
  /// - Parameter batch: normalised (and possibly augmented) pixels and their labels.
  public init(_ batch: Batch) {
    self.init(
      images: Tensor(
        shape: [batch.count, ImageDataset.channels, ImageDataset.height, ImageDataset.width],
        data: batch.images),
      labels: batch.labels)
  }
}
