// The settings of a search run. Defaults are the paper's CIFAR-10 search (the official
// PC-DARTS train_search.py), except lr-min, which the paper anneals to 0.

import Foundation
import NeuralNetwork
import TensorEngine

/// Everything that determines a search run; two runs with equal settings (and data) produce the
/// same genotype.
public struct SearchSettings: RunSettings {
  /// The super-net's shape (`classes` is replaced by the dataset's).
  public var network = NetworkConfig()
  /// Images per batch, for both splits.
  public var batchSize = 256
  /// Initial learning rate of the weights' SGD (`--lr`).
  public var learningRate: Float = 0.1
  /// Final learning rate of the cosine schedule (`--lr-min`).
  public var learningRateMin: Float = 0
  /// SGD momentum.
  public var momentum: Float = 0.9
  /// SGD's L2 weight decay.
  public var weightDecay: Float = 3e-4
  /// Epochs of the whole search; the cosine schedule spans them.
  public var epochs = 50
  /// Epochs of weight training before architecture updates start.
  public var warmupEpochs = 15
  /// Maximum L2 norm of the weights' gradient (`--grad-clip`).
  public var gradClip: Float = 5
  /// The share of the training set used as search-train; the rest is search-validation.
  public var trainPortion = 0.5
  /// The architecture step's settings.
  public var architect = ArchitectSettings()
  /// Seeds every random choice: weights, α, β, split, order and augmentation.
  public var seed: UInt64 = 2
  /// Use only the first `subset` training images (quick runs); `nil` = all.
  public var subset: Int?
  /// An architecture step on the 1st weight step of each epoch and every `archUpdateEvery`-th
  /// after it (1 = every step, the paper's schedule).
  public var archUpdateEvery = 1
  /// At most this many `skip_connect` edges in the derived normal cell (P-DARTS's cap), recorded
  /// beside the raw genotype; `nil` = no cap (the paper).
  public var maxSkipConnect: Int?
  /// Data-parallel: normalise each batch norm's input over the global batch, the union of the
  /// ranks' rows (`--sync-bn`), rather than over each rank's rows (DistributedDataParallel's
  /// default). Nothing changes in a single process.
  public var syncBatchNorm = false
  /// Epochs of linear learning-rate warm-up: epoch e < N uses `learningRate` · (e + 1) / N instead
  /// of the cosine schedule's value, as train_search_imagenet.py does (N = 5) for batches over 256.
  /// 0 (the CIFAR setting) = none.
  public var learningRateWarmupEpochs = 0

  /// The paper's CIFAR-10 settings.
  public init() {}

  private enum CodingKeys: String, CodingKey {
    case network, batchSize, learningRate, learningRateMin, momentum, weightDecay, epochs, warmupEpochs
    case gradClip, trainPortion, architect, seed, subset, archUpdateEvery, maxSkipConnect, syncBatchNorm
    case learningRateWarmupEpochs
  }

  /// Decodes settings; a field missing from the JSON (a checkpoint written before the field
  /// existed) keeps its default, so older checkpoints still resume.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = SearchSettings()
    network = try c.decode(.network, or: d.network)
    batchSize = try c.decode(.batchSize, or: d.batchSize)
    learningRate = try c.decode(.learningRate, or: d.learningRate)
    learningRateMin = try c.decode(.learningRateMin, or: d.learningRateMin)
    momentum = try c.decode(.momentum, or: d.momentum)
    weightDecay = try c.decode(.weightDecay, or: d.weightDecay)
    epochs = try c.decode(.epochs, or: d.epochs)
    warmupEpochs = try c.decode(.warmupEpochs, or: d.warmupEpochs)
    gradClip = try c.decode(.gradClip, or: d.gradClip)
    trainPortion = try c.decode(.trainPortion, or: d.trainPortion)
    architect = try c.decode(.architect, or: d.architect)
    seed = try c.decode(.seed, or: d.seed)
    subset = try c.decodeIfPresent(Int.self, forKey: .subset)
    archUpdateEvery = try c.decode(.archUpdateEvery, or: d.archUpdateEvery)
    maxSkipConnect = try c.decodeIfPresent(Int.self, forKey: .maxSkipConnect)
    syncBatchNorm = try c.decode(.syncBatchNorm, or: d.syncBatchNorm)
    learningRateWarmupEpochs = try c.decode(.learningRateWarmupEpochs, or: d.learningRateWarmupEpochs)
  }

  /// Whether the architecture is updated at `step` (1-based) of `epoch`.
  public func updatesArchitecture(epoch: Int, step: Int) -> Bool {
    epoch >= warmupEpochs && (step - 1) % archUpdateEvery == 0
  }

  /// Checks every range; the one place where search settings are validated.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for the first problem, naming the setting by
  ///   its path (`learningRate`, `architect.weightDecay`, `network.layers`), its value and the
  ///   accepted values.
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
    if warmupEpochs < 0 || warmupEpochs > 100_000 {
      try fail("warmupEpochs", "must lie in 0...100000, got \(warmupEpochs)")
    }
    if !(gradClip > 0) { try fail("gradClip", "must be positive, got \(gradClip)") }
    if !(trainPortion > 0 && trainPortion < 1) {
      try fail("trainPortion", "must lie strictly between 0 and 1, got \(trainPortion)")
    }
    if !(architect.learningRate > 0 && architect.learningRate.isFinite) {
      try fail("architect.learningRate", "must be positive, got \(architect.learningRate)")
    }
    if !(architect.weightDecay >= 0 && architect.weightDecay.isFinite) {
      try fail("architect.weightDecay", "must be ≥ 0, got \(architect.weightDecay)")
    }
    if let subset, subset < 2 { try fail("subset", "must be at least 2 images, got \(subset)") }
    if archUpdateEvery < 1 || archUpdateEvery > 1_000_000 {
      try fail("archUpdateEvery", "must lie in 1...1000000, got \(archUpdateEvery)")
    }
    if let cap = maxSkipConnect, cap < 0 { try fail("maxSkipConnect", "must be ≥ 0, got \(cap)") }
    if learningRateWarmupEpochs < 0 || learningRateWarmupEpochs > epochs {
      try fail("learningRateWarmupEpochs", "must lie in 0...epochs (\(epochs)), got \(learningRateWarmupEpochs)")
    }
  }

  /// The weights' learning rate of `epoch`: the warm-up's while it lasts, then cosine annealing
  /// from `learningRate` to `learningRateMin` over all epochs.
  public func learningRate(epoch: Int) -> Float {
    if epoch < learningRateWarmupEpochs {
      return learningRate * Float(epoch + 1) / Float(learningRateWarmupEpochs)
    }
    return cosineAnnealingLearningRate(
      epoch: epoch, totalEpochs: epochs, initial: learningRate, minimum: learningRateMin)
  }

  /// The settings a resumed run may change (a lower learning rate after a divergence, more
  /// epochs): the schedules, the step sizes, the regularisation, clipping and what only the
  /// derived genotype reads. Every other setting defines the run — the network, the data and its
  /// split, the seed, the batch, the momentum, the order of the architecture step — and a
  /// checkpoint written with another value is refused. The number of ranks is not a setting: a
  /// run resumes on any number.
  public static let changeableOnResume: Set<String> = [
    "learningRate", "learningRateMin", "weightDecay", "architect.learningRate", "architect.weightDecay",
    "epochs", "warmupEpochs", "gradClip", "archUpdateEvery", "maxSkipConnect", "syncBatchNorm",
    "learningRateWarmupEpochs",
  ]
}

extension KeyedDecodingContainer {
  /// The value at `key`, or `fallback` when the key is missing (a field added after the JSON was
  /// written).
  func decode<T: Decodable>(_ key: Key, or fallback: T) throws -> T {
    try decodeIfPresent(T.self, forKey: key) ?? fallback
  }
}
