// One iteration of the bi-level search (the loop body of the official train_search.py's
// train()): an architecture step on a search-validation batch, then a weight step on a
// search-train batch. The search run and the benchmark both run exactly this.

import Foundation
import NeuralNetwork
import TensorEngine

/// What one iteration (a search's, or a training step) measured.
public struct IterationResult: Sendable {
  /// The weight step's training loss and the number of its batch's correct predictions.
  public var trainLoss: Float, correct: Int
  /// The architecture step's validation loss, when it ran (never in a training step).
  public var validLoss: Float?
  /// Wall time of the weight step's forward and backward passes.
  public var forwardSeconds: Double, backwardSeconds: Double
}

/// The super-net, its two optimizers and the iteration that updates them.
public final class SearchIteration {
  /// The settings the network and the optimizers were built with.
  public let settings: SearchSettings
  /// The super-net.
  public let network: SearchNetwork
  /// The architecture step (Adam on α and β).
  public let architect: Architect
  /// SGD with momentum over the network's weights; set its learning rate per epoch.
  public let weightOptimizer: SGD
  /// The ranks sharing each batch (one process by default).
  public let dataParallel: DataParallel

  /// Builds the network from `settings.seed` and both optimizers from `settings`.
  /// - Parameter dataParallel: the ranks sharing each batch; every rank builds the same network.
  /// - Throws: ``SearchError/invalidSetting(_:_:)`` for settings that cannot work.
  public init(settings: SearchSettings, space: SearchSpace = .darts, dataParallel: DataParallel = DataParallel()) throws
  {
    try settings.validate()
    self.settings = settings
    self.dataParallel = dataParallel
    var rng = SeededGenerator(seed: settings.seed)
    network = try SearchNetwork(config: settings.network, space: space, rng: &rng)
    if settings.syncBatchNorm { network.synchronizeBatchNorm(over: dataParallel.group) }
    architect = Architect(network: network, settings: settings.architect, dataParallel: dataParallel)
    weightOptimizer = SGD(
      parameters: network.parameters(), learningRate: settings.learningRate,
      momentum: settings.momentum, weightDecay: settings.weightDecay)
  }

  /// One iteration: the architecture step when `valid` is given, then the weight step (α and β
  /// frozen, gradients clipped to ``SearchSettings/gradClip``). Data-parallel, each rank passes
  /// its rows of the same global batches, and the results are the global batches'.
  ///
  /// - Parameters:
  ///   - train: a search-train batch.
  ///   - valid: a search-validation batch, or `nil` during the warm-up epochs.
  ///   - epoch, step: where the iteration is (0-based epoch, 1-based step), for errors.
  /// - Throws: ``SearchError/nonFiniteLoss(_:)`` when a loss is NaN or infinite; no update is
  ///   applied from that loss (an architecture step's leaves the weights untouched too).
  @discardableResult
  public func run(train: LabeledBatch, valid: LabeledBatch?, epoch: Int, step: Int) throws -> IterationResult {
    var validLoss: Float?
    if let valid {
      let loss = architect.step(train: train, valid: valid, weightOptimizer: weightOptimizer)
      guard loss.isFinite else {
        throw SearchError.nonFiniteLoss(NonFiniteLoss(phase: .architectureStep, epoch: epoch, step: step, loss: loss))
      }
      validLoss = loss
    }
    weightOptimizer.zeroGrad()
    return try network.withFrozenArchitecture {
      let forwardStart = Date()
      let (loss, correct): (Tensor, Int) = {
        // The logits die here: backward needs only what the loss recorded.
        let logits = network(train.images)
        return (crossEntropy(logits, labels: train.labels), correctPredictions(logits, train.labels))
      }()
      let backwardStart = Date()
      loss.backward(shareOf: train.shard)
      let backwardEnd = Date()
      let sums = dataParallel.allReduceGradients(
        network.parameters(), scalars: [Double(loss.item) * Double(train.shard.rows.count), Double(correct)])
      let trainLoss = Float(sums[0] / Double(train.shard.globalCount))
      guard trainLoss.isFinite else {
        throw SearchError.nonFiniteLoss(NonFiniteLoss(phase: .weightStep, epoch: epoch, step: step, loss: trainLoss))
      }
      clipGradientNorm(network.parameters(), maxNorm: settings.gradClip)
      weightOptimizer.step()
      return IterationResult(
        trainLoss: trainLoss, correct: Int(sums[1]), validLoss: validLoss,
        forwardSeconds: backwardStart.timeIntervalSince(forwardStart),
        backwardSeconds: backwardEnd.timeIntervalSince(backwardStart))
    }
  }
}
