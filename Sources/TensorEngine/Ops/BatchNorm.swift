// Batch normalisation over (N, H, W) per channel. Legend: N batch, C channels, H×W plane,
// M = N·H·W values per channel.
//
// PyTorch semantics (torch.nn.BatchNorm2d doc): in training, normalise with the batch mean and
// the biased variance, and update running_mean/var with momentum using the *unbiased* variance
// M/(M−1)·var; in evaluation, normalise with the running statistics. Statistics are computed in
// Double, one channel per task, so the result does not depend on how work is split.

/// The per-channel running statistics and hyper-parameters of a batch norm layer.
public struct BatchNormState {
  /// (C), updated in place in training mode.
  public let runningMean: Tensor
  /// (C), updated in place in training mode.
  public let runningVar: Tensor
  /// The weight of the newest batch in the running averages (PyTorch's `momentum`).
  public var momentum: Float
  /// Added to the variance before the square root.
  public var eps: Float

  /// - Parameters: runningMean, runningVar: (C) buffers updated in place in training mode.
  public init(runningMean: Tensor, runningVar: Tensor, momentum: Float = 0.1, eps: Float = 1e-5) {
    self.runningMean = runningMean
    self.runningVar = runningVar
    self.momentum = momentum
    self.eps = eps
  }
}

/// Batch normalisation of (N, C, H, W), like `torch.nn.functional.batch_norm`.
///
/// - Parameters:
///   - x: (N, C, H, W).
///   - weight, bias: the affine (C) scale and shift, or `nil` for a non-affine layer.
///   - state: running statistics, read in evaluation and updated in training.
///   - training: batch statistics (true) or running statistics (false).
/// - Returns: (N, C, H, W).
/// - Precondition: parameter and statistic shapes are (C); training needs more than one value per
///   channel.
public func batchNorm2d(
  _ x: Tensor, weight: Tensor?, bias: Tensor?, state: BatchNormState, training: Bool
) -> Tensor {
  checkNCHW(x, "batchNorm2d")
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  for (name, t) in [("weight", weight), ("bias", bias), ("runningMean", state.runningMean),
                    ("runningVar", state.runningVar)] {
    if let t { precondition(t.shape == [c], "batchNorm2d: \(name) must be [\(c)] for input \(x.shape), got \(t.shape)") }
  }
  precondition((weight == nil) == (bias == nil), "batchNorm2d: weight and bias must both be given or both nil")
  let m = n * hw
  precondition(!training || m > 1,
    "batchNorm2d: training needs more than 1 value per channel, input \(x.shape)")

  // Per channel: mean and 1/σ used to normalise.
  let mean = Storage(count: c, zeroed: false)
  let invStd = Storage(count: c, zeroed: false)
  let out = Tensor.uninitialized(x.shape)
  parallelFor(c) { ch in
    var mu: Double, variance: Double
    if training {
      // Two passes (mean, then squared deviations): one-pass E[x²] − E[x]² cancels badly.
      var total = 0.0
      for s in 0..<n { total += Double(sum(hw, x.pointer + (s * c + ch) * hw)) }
      mu = total / Double(m)
      var sq = 0.0
      for s in 0..<n { sq += Double(sumOfSquaredDeviations(hw, x.pointer + (s * c + ch) * hw, mean: Float(mu))) }
      variance = sq / Double(m)
      let rm = state.runningMean.pointer, rv = state.runningVar.pointer
      let k = Double(state.momentum)
      rm[ch] = Float((1 - k) * Double(rm[ch]) + k * mu)
      rv[ch] = Float((1 - k) * Double(rv[ch]) + k * variance * Double(m) / Double(m - 1))
    } else {
      mu = Double(state.runningMean.pointer[ch])
      variance = Double(state.runningVar.pointer[ch])
    }
    let inv = 1 / (variance + Double(state.eps)).squareRoot()
    mean.pointer[ch] = Float(mu)
    invStd.pointer[ch] = Float(inv)
    let scale = Float(inv) * (weight?.pointer[ch] ?? 1)
    let shift = (bias?.pointer[ch] ?? 0) - Float(mu) * scale
    for s in 0..<n {
      affine(hw, x.pointer + (s * c + ch) * hw, scale, shift, out.pointer + (s * c + ch) * hw)
    }
  }
  let inputs = [x] + (weight.map { [$0, bias!] } ?? [])
  // A non-affine output is x̂ itself: keep the output's storage (which the next op saves anyway)
  // instead of the input, so the input can be freed.
  let saved = weight == nil ? out.storage : x.storage
  let (shape, needsDx) = (x.shape, x.requiresGrad)
  return record(out, inputs: inputs) { [weight] g in
    let dx = needsDx ? Tensor.uninitialized(shape) : nil
    let dw = weight.map { _ in Tensor(zeros: [c]) }
    let db = weight.map { _ in Tensor(zeros: [c]) }
    parallelFor(c) { ch in
      let mu = mean.pointer[ch], inv = invStd.pointer[ch]
      let gamma = weight?.pointer[ch] ?? 1
      // x̂ = saved (non-affine: the output) or (saved − μ)/σ (affine: the input), so
      // Σ g·x̂ = Σ g·saved, or (Σ g·saved − μ Σ g)/σ.
      let affineInput = weight != nil
      @inline(__always) func xhat(_ v: Float) -> Float { affineInput ? (v - mu) * inv : v }
      var sumG = 0.0, sumGS = 0.0
      for s in 0..<n {
        let offset = (s * c + ch) * hw
        sumG += Double(sum(hw, g.pointer + offset))
        sumGS += Double(dot(hw, g.pointer + offset, saved.pointer + offset))
      }
      let sumGX = affineInput ? (sumGS - Double(mu) * sumG) * Double(inv) : sumGS
      dw?.pointer[ch] = Float(sumGX)
      db?.pointer[ch] = Float(sumG)
      guard let dx else { return }
      let scale = gamma * inv
      if training {
        // dx = γ/σ · (g − mean(g) − x̂ · mean(g·x̂))
        // As a linear map of g and the saved tensor: dx = a·g + b·saved + c.
        let meanG = Float(sumG / Double(m)), meanGX = Float(sumGX / Double(m))
        let xhatScale = affineInput ? inv : 1, xhatShift = affineInput ? -mu * inv : 0
        let (a, b, c0) = (scale, -scale * meanGX * xhatScale, -scale * (meanG + meanGX * xhatShift))
        for s in 0..<n {
          let offset = (s * c + ch) * hw
          linearCombination(hw, a, g.pointer + offset, b, saved.pointer + offset, c0, dx.pointer + offset)
        }
      } else {
        for s in 0..<n {
          affine(hw, g.pointer + (s * c + ch) * hw, scale, 0, dx.pointer + (s * c + ch) * hw)
        }
      }
    }
    return [dx] + (weight == nil ? [] : [dw, db])
  }
}
