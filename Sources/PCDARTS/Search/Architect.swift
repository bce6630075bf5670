// Bi-level optimisation of the architecture (DARTS §2.3, architect.py): the architecture
// parameters descend the validation loss, the weights the training loss.

import Foundation
import NeuralNetwork
import TensorEngine

/// The hyper-parameters of the architecture step; defaults are the paper's.
public struct ArchitectSettings: Codable, Equatable, Sendable {
  /// Adam's learning rate for α and β (`--arch-lr`).
  public var learningRate: Float = 6e-4
  /// Adam's β₁ (0.5 in DARTS, not PyTorch's default 0.9).
  public var beta1: Float = 0.5
  /// Adam's β₂.
  public var beta2: Float = 0.999
  /// L2 weight decay of α and β (`--arch-weight-decay`).
  public var weightDecay: Float = 1e-3
  /// Second-order (unrolled) step when true, first-order otherwise.
  public var unrolled = false
  /// Settings with the paper's β₁ = 0.5 and β₂ = 0.999.
  public init(learningRate: Float = 6e-4, weightDecay: Float = 1e-3, unrolled: Bool = false) {
    (self.learningRate, self.weightDecay, self.unrolled) = (learningRate, weightDecay, unrolled)
  }
}

/// What the bi-level optimisation needs of a model: two groups of parameters, the state its
/// forward passes update, and a loss. ``SearchNetwork`` is one; a tool can search over its own.
public protocol BilevelSearchModel: AnyObject {
  /// The weights w, trained on the search-train split.
  var weights: [Tensor] { get }
  /// The architecture parameters (α, β), trained on the search-validation split.
  var architectureParameters: [Tensor] { get }
  /// State that forward passes change as a side effect (batch-norm running statistics).
  var statisticBuffers: [Tensor] { get }
  /// The mean loss on a batch, recorded for backward.
  func loss(_ batch: LabeledBatch) -> Tensor
}

extension SearchNetwork: BilevelSearchModel {
  /// Every module parameter (α and β are not among them).
  public var weights: [Tensor] { parameters() }
  /// `alphas_normal`, `alphas_reduce`, `betas_normal`, `betas_reduce`.
  public var architectureParameters: [Tensor] { arch.all }
  /// Every module buffer: the batch norms' running statistics and counters.
  public var statisticBuffers: [Tensor] { namedBuffers().map(\.1) }
  /// The mean cross-entropy of the batch, recorded for backward.
  public func loss(_ batch: LabeledBatch) -> Tensor { loss(batch.images, labels: batch.labels) }
}

/// Updates α and β with Adam on the validation loss, first- or second-order.
public final class Architect {
  /// The model whose architecture parameters this updates.
  public let network: BilevelSearchModel
  /// Adam over (alphas_normal, alphas_reduce, betas_normal, betas_reduce).
  public let optimizer: Adam
  /// Learning rate, decay and order; ``optimizer`` keeps the values it was created with.
  public var settings: ArchitectSettings
  /// The ranks whose gradients every backward of the step sums (one process by default).
  public let dataParallel: DataParallel

  /// An architect with an Adam over `network.architectureParameters`.
  /// - Parameter dataParallel: the ranks sharing each batch (each passes its own rows).
  public init(
    network: BilevelSearchModel, settings: ArchitectSettings = ArchitectSettings(),
    dataParallel: DataParallel = DataParallel()
  ) {
    self.network = network
    self.settings = settings
    self.dataParallel = dataParallel
    optimizer = Adam(
      parameters: network.architectureParameters, learningRate: settings.learningRate,
      beta1: settings.beta1, beta2: settings.beta2, weightDecay: settings.weightDecay)
  }

  /// One architecture update. When the validation loss is not finite, no update is applied
  /// (Adam's moments keep their values) and the loss is returned for the caller to report.
  ///
  /// - Parameters:
  ///   - train: a search-train batch (used by the second-order step only).
  ///   - valid: a search-validation batch.
  ///   - weightOptimizer: the weights' SGD, whose learning rate ξ, momentum buffers and weight
  ///     decay define the virtual step of the second-order approximation.
  /// - Returns: the validation loss (at w for first order, at w′ for second order).
  @discardableResult
  public func step(train: LabeledBatch, valid: LabeledBatch, weightOptimizer: SGD) -> Float {
    optimizer.zeroGrad()
    let loss: Float
    if settings.unrolled {
      loss = unrolledGradients(train: train, valid: valid, weightOptimizer: weightOptimizer)
    } else {
      loss = onlyArchitecture { lossAndBackward(valid, reducing: network.architectureParameters) }
    }
    if loss.isFinite { optimizer.step() }
    return loss
  }

  /// First-order: ∇_α L_val(w, α).
  @discardableResult
  public func firstOrderGradients(valid: LabeledBatch) -> Float {
    optimizer.zeroGrad()
    return onlyArchitecture { lossAndBackward(valid, reducing: network.architectureParameters) }
  }

  /// Second-order (DARTS eq. 7–8), leaving ∇_α in the architecture parameters' `grad`:
  /// w′ = w − ξ(μ·buf + ∇_w L_train(w) + wd·w);
  /// ∇_α L_val(w′) − ξ · (∇_α L_train(w⁺) − ∇_α L_train(w⁻)) / 2r,
  /// with w± = w ± r·∇_w′ L_val(w′) and r = 0.01 / ‖∇_w′ L_val(w′)‖.
  /// The weights and batch-norm statistics are restored afterwards.
  @discardableResult
  public func unrolledGradients(train: LabeledBatch, valid: LabeledBatch, weightOptimizer: SGD) -> Float {
    let weights = network.weights
    precondition(
      weights.count == weightOptimizer.parameters.count,
      "Architect: the weight optimizer must hold the network's \(weights.count) parameters")
    let xi = weightOptimizer.learningRate
    let saved = weights.map { $0.copy() }
    optimizer.zeroGrad()

    // ∇_w L_train(w), arch frozen.
    for w in weights { w.zeroGrad() }
    let trainGrads: [Tensor] = onlyWeights {
      lossAndBackward(train, reducing: weights)
      return weights.map { $0.grad ?? Tensor(zeros: $0.shape) }
    }
    // w′ = w − ξ(μ·buf + g + wd·w): the step SGD would take, not committed to it.
    withNoGrad { weightOptimizer.step(gradients: trainGrads, updatingState: false) }
    // ∇_α and ∇_w′ of L_val(w′). The official code evaluates w′ in a fresh copy of the model,
    // so the batch-norm statistics that this forward updates are put back afterwards.
    let buffers = network.statisticBuffers.map { ($0, $0.copy()) }
    for w in weights { w.zeroGrad() }
    let validLoss = lossAndBackward(valid, reducing: network.architectureParameters + weights)
    for (buffer, copy) in buffers { buffer.assign(copy) }
    let dalpha = network.architectureParameters.map { $0.grad!.copy() }
    let vector = weights.map { $0.grad ?? Tensor(zeros: $0.shape) }
    for w in weights { w.zeroGrad() }
    for (w, original) in zip(weights, saved) { w.assign(original) }

    // Finite-difference Hessian-vector product ∇²_{α,w} L_train · v.
    var squared = 0.0
    for v in vector { for j in 0..<v.count { squared += Double(v.pointer[j]) * Double(v.pointer[j]) } }
    let r = Float(0.01 / squared.squareRoot())
    func archGradient(at sign: Float) -> [Tensor] {
      withNoGrad {
        for (w, v) in zip(weights, vector) { for j in 0..<w.count { w.pointer[j] += sign * r * v.pointer[j] } }
      }
      optimizer.zeroGrad()
      onlyArchitecture { _ = lossAndBackward(train, reducing: network.architectureParameters) }
      return network.architectureParameters.map { $0.grad!.copy() }
    }
    let plus = archGradient(at: 1)
    let minus = archGradient(at: -2)
    for (w, original) in zip(weights, saved) { w.assign(original) }
    for (i, p) in network.architectureParameters.enumerated() {
      let g = Tensor(zeros: p.shape)
      for j in 0..<p.count {
        let implicit = (plus[i].pointer[j] - minus[i].pointer[j]) / (2 * r)
        g.pointer[j] = dalpha[i].pointer[j] - xi * implicit
      }
      p.grad = g
    }
    return validLoss
  }

  /// Forward and backward of a batch's loss, then the gradients of `tensors` summed over the
  /// ranks; returns the global batch's loss.
  @discardableResult
  private func lossAndBackward(_ batch: LabeledBatch, reducing tensors: [Tensor]) -> Float {
    let loss = network.loss(batch)
    loss.backward(shareOf: batch.shard)
    let sum = dataParallel.allReduceGradients(tensors, scalars: [Double(loss.item) * Double(batch.shard.rows.count)])
    return Float(sum[0] / Double(batch.shard.globalCount))
  }

  /// Runs `body` with the weights frozen, so backward computes only ∇_α (no weight gradients).
  private func onlyArchitecture<T>(_ body: () -> T) -> T {
    setTrainable(network.weights, false)
    defer { setTrainable(network.weights, true) }
    return body()
  }

  /// Runs `body` with the architecture frozen.
  private func onlyWeights<T>(_ body: () -> T) -> T {
    setTrainable(network.architectureParameters, false)
    defer { setTrainable(network.architectureParameters, true) }
    return body()
  }

  private func setTrainable(_ tensors: [Tensor], _ on: Bool) {
    for t in tensors { t.requiresGrad = on }
  }
}
