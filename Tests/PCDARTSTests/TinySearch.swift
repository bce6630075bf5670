// The smallest search the tests of this bundle run: a generated dataset and settings for it.

import PCDARTS
import TensorEngine

/// `count` random 32×32 images over 4 classes.
func tinyDataset(count: Int, seed: UInt64, name: String = "tiny") -> ImageDataset {
  var rng = SeededGenerator(seed: seed)
  let pixels = (0..<count * 3 * 32 * 32).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
  return ImageDataset(
    name: name, images: pixels, labels: (0..<count).map { Int32($0 % 4) }, classCount: 4,
    mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25])
}

/// The smallest network (3 cells of 4 channels, K = 2), batches of 3, no warm-up.
func tinySearchSettings(epochs: Int = 2, seed: UInt64) -> SearchSettings {
  var settings = SearchSettings()
  settings.network = NetworkConfig(initChannels: 4, layers: 3, partialChannels: 2)
  settings.batchSize = 3
  settings.epochs = epochs
  settings.warmupEpochs = 0
  settings.seed = seed
  return settings
}
