// The settings of training a genotype from scratch. Defaults are the official PC-DARTS train.py
// with the flags its README gives (--auxiliary --cutout), which are the paper's evaluation.

import Foundation
import NeuralNetwork
import TensorEngine

/// Everything that determines a training run besides the genotype and the data.
public struct TrainingSettings: RunSettings {
  /// The network's shape (`classes` is replaced by the dataset's).
  public var network = EvaluationConfig()
  /// Images per batch.
  public var batchSize = 96
  /// Initial learning rate of SGD (`--lr`).
  public var learningRate: Float = 0.025
  /// Final learning rate of the cosine schedule (`--lr-min`).
  public var learningRateMin: Float = 0
  /// SGD momentum.
  public var momentum: Float = 0.9
  /// SGD's L2 weight decay (on every weight, the auxiliary head's included, as train.py).
  public var weightDecay: Float = 3e-4
  /// Epochs; the cosine schedule and the drop-path ramp span them.
  public var epochs = 600
  /// The weight of the auxiliary head's loss (used when ``EvaluationConfig/auxiliary`` is set).
  public var auxiliaryWeight: Float = 0.4
  /// ε of the label-smoothed cross-entropy of both losses (train_imagenet.py's 0.1); 0 = plain.
  public var labelSmoothing: Float = 0
  /// How the learning rate falls over the epochs: train.py's cosine annealing, or
  /// train_imagenet.py's linear decay.
  public var learningRateSchedule = LearningRateSchedule.cosine
  /// Epochs of linear warm-up: epoch e < N uses `learningRate` · (e + 1) / N (train_imagenet.py,
  /// N = 5, for batches over 256); 0 = none.
  public var learningRateWarmupEpochs = 0

  /// The learning-rate schedules of the official training scripts.
  public enum LearningRateSchedule: String, Codable, Sendable, CaseIterable {
    /// `CosineAnnealingLR` from `learningRate` to `learningRateMin` (train.py).
    case cosine
    /// train_imagenet.py's `adjust_lr`: `learningRate` · (E − 5 − e) / (E − 5) while more than 5
    /// epochs remain, then a smaller slope, `learningRate` · (E − e) / (5 · (E − 5)), to the end.
    case linear
  }
  /// The side of the cutout square of each training image, or `nil` for no cutout.
  public var cutoutLength: Int? = 16
  /// The drop-path probability of the last epoch; epoch e uses `dropPathProbability · e / epochs`.
  public var dropPathProbability: Float = 0.3
  /// Maximum L2 norm of the gradient (`--grad-clip`).
  public var gradClip: Float = 5
  /// Seeds every random choice: weights, order, augmentation, drop-path masks.
  public var seed: UInt64 = 0
  /// Use only the first `subset` training images (quick runs); `nil` = all.
  public var subset: Int?
  /// Evaluate on only the first `testSubset` test images (quick runs); `nil` = all.
  public var testSubset: Int?
  /// Data-parallel: batch norms normalise over the global batch (`--sync-bn`); see
  /// ``SearchSettings/syncBatchNorm``.
  public var syncBatchNorm = false

  /// The paper's CIFAR-10 evaluation settings.
  public init() {}

  private enum CodingKeys: String, CodingKey {
    case network, batchSize, learningRate, learningRateMin, momentum, weightDecay, epochs, auxiliaryWeight
    case cutoutLength, dropPathProbability, gradClip, seed, subset, testSubset, syncBatchNorm, labelSmoothing
    case learningRateSchedule, learningRateWarmupEpochs
  }

  /// Decodes settings; a field missing from the JSON (a checkpoint written before the field
  /// existed) keeps its default.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = TrainingSettings()
    network = try c.decode(.network, or: d.network)
    batchSize = try c.decode(.batchSize, or: d.batchSize)
    learningRate = try c.decode(.learningRate, or: d.learningRate)
    learningRateMin = try c.decode(.learningRateMin, or: d.learningRateMin)
    momentum = try c.decode(.momentum, or: d.momentum)
    weightDecay = try c.decode(.weightDecay, or: d.weightDecay)
    epochs = try c.decode(.epochs, or: d.epochs)
    auxiliaryWeight = try c.decode(.auxiliaryWeight, or: d.auxiliaryWeight)
    cutoutLength = try c.decodeIfPresent(Int.self, forKey: .cutoutLength)
    dropPathProbability = try c.decode(.dropPathProbability, or: d.dropPathProbability)
    gradClip = try c.decode(.gradClip, or: d.gradClip)
    seed = try c.decode(.seed, or: d.seed)
    subset = try c.decodeIfPresent(Int.self, forKey: .subset)
    testSubset = try c.decodeIfPresent(Int.self, forKey: .testSubset)
    syncBatchNorm = try c.decode(.syncBatchNorm, or: d.syncBatchNorm)
    labelSmoothing = try c.decode(.labelSmoothing, or: d.labelSmoothing)
    learningRateSchedule = try c.decode(.learningRateSchedule, or: d.learningRateSchedule)
    learningRateWarmupEpochs = try c.decode(.learningRateWarmupEpochs, or: d.learningRateWarmupEpochs)
  }

  /// The learning rate of epoch `epoch` (cosine annealing from `learningRate` to `learningRateMin`).
  public func learningRate(epoch: Int) -> Float {
    if epoch < learningRateWarmupEpochs { return learningRate * Float(epoch + 1) / Float(learningRateWarmupEpochs) }
    switch learningRateSchedule {
    case .cosine:
      return cosineAnnealingLearningRate(
        epoch: epoch, totalEpochs: epochs, initial: learningRate, minimum: learningRateMin)
    case .linear:
      let (e, total) = (Float(epoch), Float(epochs))
      return epochs - epoch > 5
        ? learningRate * (total - 5 - e) / (total - 5) : learningRate * (total - e) / ((total - 5) * 5)
    }
  }

  /// The drop-path probability of epoch `epoch` (0-based): the official linear ramp
  /// `drop_path_prob · epoch / epochs`, 0 in the first epoch.
  public func dropPathProbability(epoch: Int) -> Float {
    dropPathProbability * Float(epoch) / Float(epochs)
  }

  /// Checks every range; the one place where training settings are validated.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for the first problem, naming the setting by
  ///   its path (`learningRate`, `network.layers`), its value and the accepted values.
  public func validate() throws {
    func fail(_ setting: String, _ problem: String) throws { throw SearchError.invalidSetting(setting, problem) }
    try network.validate()
    if batchSize < 1 || batchSize > 65_536 { try fail("batchSize", "must lie in 1...65536, got \(batchSize)") }
    if !(learningRate > 0 && learningRate.isFinite) {
      try fail("learningRate", "must be positive, got \(learningRate)")
    }
    if !(learningRateMin >= 0 && learningRateMin <= learningRate) {
      try fail("learningRateMin", "must lie between 0 and learningRate (\(learningRate)), got \(learningRateMin)")
    }
    if !(momentum >= 0 && momentum < 1) { try fail("momentum", "must lie in [0, 1), got \(momentum)") }
    if !(weightDecay >= 0 && weightDecay.isFinite) { try fail("weightDecay", "must be ≥ 0, got \(weightDecay)") }
    if epochs < 1 || epochs > 100_000 { try fail("epochs", "must lie in 1...100000, got \(epochs)") }
    if !(auxiliaryWeight >= 0 && auxiliaryWeight.isFinite) {
      try fail("auxiliaryWeight", "must be ≥ 0, got \(auxiliaryWeight)")
    }
    if learningRateWarmupEpochs < 0 || learningRateWarmupEpochs > epochs {
      try fail("learningRateWarmupEpochs", "must lie in 0...epochs (\(epochs)), got \(learningRateWarmupEpochs)")
    }
    if learningRateSchedule == .linear && epochs <= 5 {
      try fail("learningRateSchedule", "the linear schedule needs more than 5 epochs, got \(epochs)")
    }
    if !(labelSmoothing >= 0 && labelSmoothing < 1) {
      try fail("labelSmoothing", "must lie in [0, 1), got \(labelSmoothing)")
    }
    if let length = cutoutLength, length < 1 || length > 64 {
      try fail("cutoutLength", "must lie in 1...64, got \(length)")
    }
    if !(dropPathProbability >= 0 && dropPathProbability < 1) {
      try fail("dropPathProbability", "must lie in [0, 1), got \(dropPathProbability)")
    }
    if !(gradClip > 0) { try fail("gradClip", "must be positive, got \(gradClip)") }
    if let subset, subset < 1 { try fail("subset", "must be at least 1 image, got \(subset)") }
    if let testSubset, testSubset < 1 { try fail("testSubset", "must be at least 1 image, got \(testSubset)") }
  }

  /// Checks that every batch of an epoch over `images` can be shared by `ranks` ranks: each rank
  /// needs a row, and the auxiliary head's batch norms, which see one value per image (its
  /// features are 1×1), need two images: on each rank, or in all with ``syncBatchNorm``.
  /// - Throws: ``SearchError/invalidConfiguration(_:)`` saying what to change.
  public func checkBatches(images: Int, ranks: Int) throws {
    let head = "the auxiliary head's batch norm, whose features are 1×1, needs two images"
    if network.auxiliary && !syncBatchNorm {
      try checkShards(
        images: images, batchSize: batchSize, ranks: ranks, rowsPerRank: 2, "training images", reason: head)
    } else {
      try checkShards(images: images, batchSize: batchSize, ranks: ranks, "training images")
      if network.auxiliary {
        try checkShards(images: images, batchSize: batchSize, ranks: 1, rowsPerRank: 2, "training images", reason: head)
      }
    }
  }

  /// The settings a resumed run may change: the schedules' ends and length, the regularisation
  /// and clipping. The network, the data, the seed, the batch and the momentum define the run.
  public static let changeableOnResume: Set<String> = [
    "learningRate", "learningRateMin", "weightDecay", "epochs", "gradClip", "dropPathProbability",
    "auxiliaryWeight", "syncBatchNorm", "labelSmoothing", "learningRateWarmupEpochs",
  ]
}
