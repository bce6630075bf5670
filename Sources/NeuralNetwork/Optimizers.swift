// Optimisers with PyTorch's exact update rules (torch.optim docs), the cosine schedule and
// gradient-norm clipping. Updates run outside autograd, in place on the parameters' storage.

import Foundation
import TensorEngine

/// Stochastic gradient descent with momentum and L2 weight decay, like `torch.optim.SGD`
/// (dampening 0, no Nesterov): d = g + wd·p; buf = μ·buf + d (buf = d on the first step);
/// p −= lr·buf.
public final class SGD {
  /// The tensors updated, in a fixed order (the order of ``momentumBuffers``).
  public let parameters: [Tensor]
  /// The step size (set per epoch by a schedule).
  public var learningRate: Float
  /// μ, the momentum factor.
  public var momentum: Float
  /// The L2 penalty added to each gradient (wd·p).
  public var weightDecay: Float
  /// One buffer per parameter once it has taken a step (PyTorch's `momentum_buffer`).
  public var momentumBuffers: [Tensor?]

  /// SGD over `parameters` (updated in place).
  public init(parameters: [Tensor], learningRate: Float, momentum: Float = 0, weightDecay: Float = 0) {
    self.parameters = parameters
    self.learningRate = learningRate
    self.momentum = momentum
    self.weightDecay = weightDecay
    momentumBuffers = Array(repeating: nil, count: parameters.count)
  }

  /// Applies one update to every parameter that has a gradient.
  public func step() { step(gradients: parameters.map(\.grad)) }

  /// Applies one update with `gradients` in place of the parameters' own.
  ///
  /// With `updatingState` false the momentum buffers are left as they are: the parameters move
  /// exactly as ``step()`` would move them, without committing the step to the optimizer. That
  /// is the virtual step of DARTS's second-order gradient, w′ = w − lr·(μ·buf + g + wd·w), so a
  /// change of this update rule changes the virtual step with it.
  ///
  /// - Parameters:
  ///   - gradients: one per parameter, in ``parameters`` order; `nil` skips the parameter.
  ///   - updatingState: whether to update the momentum buffers (and create missing ones).
  /// - Precondition: one gradient per parameter, each of its parameter's shape.
  public func step(gradients: [Tensor?], updatingState: Bool = true) {
    precondition(
      gradients.count == parameters.count,
      "SGD.step: \(gradients.count) gradients for \(parameters.count) parameters")
    let (wd, mu, lr) = (weightDecay, momentum, learningRate)
    for (i, (p, g)) in zip(parameters, gradients).enumerated() {
      guard let g else { continue }
      precondition(g.shape == p.shape, "SGD.step: gradient \(g.shape) for parameter \(p.shape)")
      let (pp, gp, n) = (p.pointer, g.pointer, p.count)
      if mu == 0 {
        for j in 0..<n { pp[j] -= lr * (gp[j] + wd * pp[j]) }
        continue
      }
      // buf ← μ·buf + d (buf ← d on the first step), d = g + wd·p; p ← p − lr·buf.
      let buffer = momentumBuffers[i]
      if !updatingState {
        let bp = buffer?.pointer
        for j in 0..<n { pp[j] -= lr * ((bp.map { mu * $0[j] } ?? 0) + gp[j] + wd * pp[j]) }
      } else if let buffer {
        let bp = buffer.pointer
        for j in 0..<n {
          bp[j] = mu * bp[j] + (gp[j] + wd * pp[j])
          pp[j] -= lr * bp[j]
        }
      } else {
        let created = Tensor(zeros: p.shape)
        let bp = created.pointer
        for j in 0..<n {
          bp[j] = gp[j] + wd * pp[j]
          pp[j] -= lr * bp[j]
        }
        momentumBuffers[i] = created
      }
    }
  }

  /// Clears every parameter's gradient.
  public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// Adam with L2 weight decay added to the gradient, like `torch.optim.Adam` (not AdamW):
/// g += wd·p; m = β₁m + (1−β₁)g; v = β₂v + (1−β₂)g²; p −= lr/(1−β₁ᵗ) · m / (√v/√(1−β₂ᵗ) + ε).
public final class Adam {
  /// The tensors updated, in the order of the moment buffers.
  public let parameters: [Tensor]
  /// The step size.
  public var learningRate: Float
  /// The decay rates of the first and second moments.
  public var beta1: Float, beta2: Float
  /// Added to the denominator for stability.
  public var epsilon: Float
  /// The L2 penalty added to each gradient (wd·p).
  public var weightDecay: Float
  /// Steps taken (t).
  public var stepCount = 0
  /// First and second moments, one per parameter (PyTorch's `exp_avg`, `exp_avg_sq`).
  public var firstMoments: [Tensor], secondMoments: [Tensor]

  /// Adam over `parameters` (updated in place).
  public init(
    parameters: [Tensor], learningRate: Float, beta1: Float = 0.9, beta2: Float = 0.999,
    epsilon: Float = 1e-8, weightDecay: Float = 0
  ) {
    self.parameters = parameters
    self.learningRate = learningRate
    (self.beta1, self.beta2, self.epsilon, self.weightDecay) = (beta1, beta2, epsilon, weightDecay)
    firstMoments = parameters.map { Tensor(zeros: $0.shape) }
    secondMoments = parameters.map { Tensor(zeros: $0.shape) }
  }

  /// Applies one update to every parameter that has a gradient.
  public func step() {
    stepCount += 1
    let t = Double(stepCount)
    let correction1 = Float(1 - pow(Double(beta1), t))
    let correction2Root = Float((1 - pow(Double(beta2), t)).squareRoot())
    let stepSize = learningRate / correction1
    for (i, p) in parameters.enumerated() {
      guard let g = p.grad else { continue }
      let (pp, gp, mp, vp) = (p.pointer, g.pointer, firstMoments[i].pointer, secondMoments[i].pointer)
      for j in 0..<p.count {
        let grad = gp[j] + weightDecay * pp[j]
        mp[j] = beta1 * mp[j] + (1 - beta1) * grad
        vp[j] = beta2 * vp[j] + (1 - beta2) * grad * grad
        pp[j] -= stepSize * mp[j] / (vp[j].squareRoot() / correction2Root + epsilon)
      }
    }
  }

  /// Clears every parameter's gradient.
  public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// The learning rate of cosine annealing (`torch.optim.lr_scheduler.CosineAnnealingLR`) in
/// epoch `epoch` of `totalEpochs`: η_min + (η₀ − η_min)·(1 + cos(π·epoch/T))/2.
public func cosineAnnealingLearningRate(
  epoch: Int, totalEpochs: Int, initial: Float, minimum: Float
) -> Float {
  precondition(totalEpochs > 0, "cosineAnnealingLearningRate: totalEpochs must be positive")
  let cosine = (1 + cos(Double.pi * Double(epoch) / Double(totalEpochs))) / 2
  return Float(Double(minimum) + Double(initial - minimum) * cosine)
}

/// Scales the gradients of `parameters` so that their joint L2 norm is at most `maxNorm`, like
/// `torch.nn.utils.clip_grad_norm_` (factor maxNorm / (norm + 1e-6), applied only when < 1).
/// - Returns: the norm before clipping.
@discardableResult
public func clipGradientNorm(_ parameters: [Tensor], maxNorm: Float) -> Float {
  var total = 0.0
  for p in parameters {
    guard let g = p.grad else { continue }
    var part: Double = 0
    for j in 0..<g.count { part += Double(g.pointer[j]) * Double(g.pointer[j]) }
    total += part
  }
  let norm = total.squareRoot()
  let factor = Double(maxNorm) / (norm + 1e-6)
  if factor < 1 {
    for p in parameters {
      guard let g = p.grad else { continue }
      for j in 0..<g.count { g.pointer[j] *= Float(factor) }
    }
  }
  return Float(norm)
}
