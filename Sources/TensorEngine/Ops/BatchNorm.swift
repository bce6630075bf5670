// Batch normalisation over (N, H, W) per channel. Legend: N batch, C channels, H×W plane,
// M = N·H·W values per channel.
//
// PyTorch semantics (torch.nn.BatchNorm2d doc): in training, normalise with the batch mean and
// the biased variance, and update running_mean/var with momentum using the *unbiased* variance
// M/(M−1)·var; in evaluation, normalise with the running statistics. Statistics are accumulated
// in Double, one channel per task, so the result does not depend on how work is split.
//
// Synchronised batch norm (torch.nn.SyncBatchNorm): with a ``BatchNormState/group`` of several
// ranks, the batch is the union of the ranks' batches. The forward adds up the per-channel
// moments across the ranks, the backward the per-channel sums Σg and Σg·x̂, so that each rank's
// input gradient is the one a single process would compute on the whole batch. The affine
// parameters' gradients stay per rank (the training loop sums them with every other gradient).

import _CKernels

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
  /// The ranks whose batches are normalised as one batch in training (a synchronised batch
  /// norm), or `nil` for this process's batch alone. Every rank must run the same layers in the
  /// same order.
  public var group: ProcessGroup?

  /// - Parameters:
  ///   - runningMean, runningVar: (C) buffers updated in place in training mode.
  ///   - group: the ranks whose batches are normalised together, or `nil`.
  public init(
    runningMean: Tensor, runningVar: Tensor, momentum: Float = 0.1, eps: Float = 1e-5, group: ProcessGroup? = nil
  ) {
    self.runningMean = runningMean
    self.runningVar = runningVar
    self.momentum = momentum
    self.eps = eps
    self.group = group
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
  let (out, stats) = normalizedForward(
    x, weight: weight, bias: bias, state: state,
    training: training, "batchNorm2d", flopsPerElement: 2
  ) { dst, src, scale, shift, count in
    affine(count, src, scale, shift, dst)
  }
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let m = stats.count
  let inputs = [x] + (weight.map { [$0, bias!] } ?? [])
  // A non-affine output is x̂ itself: keep the output's storage (which the next op saves anyway)
  // instead of the input, so the input can be freed.
  let saved = weight == nil ? out.storage : x.storage
  let (shape, needsDx, group) = (x.shape, x.requiresGrad, training ? state.group : nil)
  let (mean, invStd) = (stats.mean, stats.invStd)
  return record(out, inputs: inputs) { [weight] g in
    let dx = needsDx ? Tensor.uninitialized(shape) : nil
    let dw = weight.map { _ in Tensor(zeros: [c]) }
    let db = weight.map { _ in Tensor(zeros: [c]) }
    // x̂ = saved (non-affine: the output) or (saved − μ)/σ (affine: the input), so
    // Σ g·x̂ = Σ g·saved, or (Σ g·saved − μ Σ g)/σ.
    let affineInput = weight != nil
    // Σ g and Σ g·saved (2 reads, 2 operations per element), then dx = a·g + b·saved + c (4).
    OperationCounter.add(
      "batchNorm2d backward",
      flops: g.count * (2 + (dx == nil ? 0 : 4)), elements: g.count * (2 + (dx == nil ? 0 : 3)))
    func sumGX(_ ch: Int, _ sums: UnsafePointer<Double>) -> Double {
      affineInput ? (sums[1] - Double(mean.pointer[ch]) * sums[0]) * Double(invStd.pointer[ch]) : sums[1]
    }
    channelSums(
      c, width: 2, group: group,
      accumulate: { ch, sums in  // Σ g, Σ g·saved
        for s in 0..<n {
          let offset = (s * c + ch) * hw
          var term: UnsafePointer<Float>? = UnsafePointer(saved.pointer + offset)
          pcd_sum_and_dots(g.pointer + offset, &term, 1, hw, sums)
        }
        dw?.pointer[ch] = Float(sumGX(ch, sums))
        db?.pointer[ch] = Float(sums[0])
      },
      apply: { ch, sums in
        guard let dx else { return }
        let mu = mean.pointer[ch], inv = invStd.pointer[ch]
        let scale = (weight?.pointer[ch] ?? 1) * inv
        if training {
          let (a, b, c0) = inputGradientCoefficients(
            scale: scale, meanG: Float(sums[0] / Double(m)), meanGX: Float(sumGX(ch, sums) / Double(m)),
            xhatScale: affineInput ? inv : 1, xhatShift: affineInput ? -mu * inv : 0)
          for s in 0..<n {
            let offset = (s * c + ch) * hw
            linearCombination(hw, a, g.pointer + offset, b, saved.pointer + offset, c0, dx.pointer + offset)
          }
        } else {
          for s in 0..<n {
            affine(hw, g.pointer + (s * c + ch) * hw, scale, 0, dx.pointer + (s * c + ch) * hw)
          }
        }
      })
    return [dx] + (weight == nil ? [] : [dw, db])
  }
}

/// `relu(batchNorm2d(x, …))` as one op, for the batch norm → ReLU inside DARTS's separable
/// convolutions (``Sequential`` fuses every batch norm directly followed by a ReLU).
///
/// The normalised tensor is never written: the forward produces the ReLU output in one pass
/// after the statistics, and the backward masks the gradient with the output's sign while it
/// computes the batch-norm sums, then writes the input gradient in one more pass. It keeps the
/// input and the output (which the next op, a convolution, keeps anyway), as the two separate
/// ops kept the normalised tensor and the output.
///
/// - Parameters: as ``batchNorm2d(_:weight:bias:state:training:)``.
/// - Returns: (N, C, H, W), non-negative.
public func batchNormReLU(
  _ x: Tensor, weight: Tensor?, bias: Tensor?, state: BatchNormState, training: Bool
) -> Tensor {
  let (out, stats) = normalizedForward(
    x, weight: weight, bias: bias, state: state,
    training: training, "batchNormReLU", flopsPerElement: 3
  ) { dst, src, scale, shift, count in
    pcd_affine_relu(dst, src, scale, shift, count)
  }
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let m = stats.count
  let inputs = [x] + (weight.map { [$0, bias!] } ?? [])
  let saved = out.storage
  let (mean, invStd, group) = (stats.mean, stats.invStd, training ? state.group : nil)
  return record(out, inputs: inputs) { [weight] g in
    let dx = x.requiresGrad ? Tensor.uninitialized(x.shape) : nil
    let dw = weight.map { _ in Tensor(zeros: [c]) }
    let db = weight.map { _ in Tensor(zeros: [c]) }
    // Σ gm and Σ gm·x with the mask from the output (3 reads), then dx (4 reads and writes).
    OperationCounter.add(
      "batchNormReLU backward",
      flops: g.count * (3 + (dx == nil ? 0 : 5)), elements: g.count * (3 + (dx == nil ? 0 : 4)))
    func sumGX(_ ch: Int, _ sums: UnsafePointer<Double>) -> Double {  // Σ gm·x̂
      (sums[1] - Double(mean.pointer[ch]) * sums[0]) * Double(invStd.pointer[ch])
    }
    channelSums(
      c, width: 2, group: group,
      accumulate: { ch, sums in
        // gm = g where the output is positive: the gradient reaching the batch norm's output.
        // sums: Σ gm, Σ gm·x.
        for s in 0..<n {
          let offset = (s * c + ch) * hw
          pcd_masked_sum_and_dot(g.pointer + offset, saved.pointer + offset, x.pointer + offset, hw, sums)
        }
        dw?.pointer[ch] = Float(sumGX(ch, sums))
        db?.pointer[ch] = Float(sums[0])
      },
      apply: { ch, sums in
        guard let dx else { return }
        let mu = mean.pointer[ch], inv = invStd.pointer[ch]
        let scale = (weight?.pointer[ch] ?? 1) * inv
        let (a, b, c0) =
          training
          ? inputGradientCoefficients(
            scale: scale, meanG: Float(sums[0] / Double(m)), meanGX: Float(sumGX(ch, sums) / Double(m)),
            xhatScale: inv, xhatShift: -mu * inv)
          : (scale, 0, 0)
        for s in 0..<n {
          let offset = (s * c + ch) * hw
          pcd_masked_linear_combination(
            dx.pointer + offset, g.pointer + offset, saved.pointer + offset,
            x.pointer + offset, a, b, c0, hw)
        }
      })
    return [dx] + (weight == nil ? [] : [dw, db])
  }
}

/// Per channel, `accumulate` fills `width` sums (zeroed first) and `apply` uses them. With a group
/// of several ranks the sums are added up across the ranks between the two (a synchronised batch
/// norm's backward); otherwise each channel runs both in one task, while its data is in cache.
private func channelSums(
  _ channels: Int, width: Int, group: ProcessGroup?,
  accumulate: (_ channel: Int, _ sums: UnsafeMutablePointer<Double>) -> Void,
  apply: (_ channel: Int, _ sums: UnsafePointer<Double>) -> Void
) {
  let all = UnsafeMutableBufferPointer<Double>.allocate(capacity: channels * width)
  all.initialize(repeating: 0)
  defer { all.deallocate() }
  let base = all.baseAddress!
  guard let group, group.size > 1 else {
    parallelFor(channels) { ch in
      accumulate(ch, base + ch * width)
      apply(ch, base + ch * width)
    }
    return
  }
  parallelFor(channels) { ch in accumulate(ch, base + ch * width) }
  group.allReduceSum(all)
  parallelFor(channels) { ch in apply(ch, base + ch * width) }
}

/// The forward shared by the batch-norm ops: checks the arguments, takes the statistics, and
/// has `apply(out, x, scale, shift, count)` map each (n, c) plane through the channel's affine
/// map γ/σ·x + (β − γμ/σ), which normalises, scales and shifts it.
private func normalizedForward(
  _ x: Tensor, weight: Tensor?, bias: Tensor?, state: BatchNormState, training: Bool, _ op: String,
  flopsPerElement: Int,
  _ apply: (UnsafeMutablePointer<Float>, UnsafePointer<Float>, Float, Float, Int) -> Void
) -> (out: Tensor, statistics: NormalizationStatistics) {
  checkBatchNormArguments(x, weight: weight, bias: bias, state: state, training: training, op)
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let out = Tensor.uninitialized(x.shape)
  OperationCounter.add(op, flops: flopsPerElement * x.count, elements: 2 * x.count)
  // The statistics call `apply` only while they run.
  let statistics = withoutActuallyEscaping(apply) { apply in
    normalizationStatistics(x, state: state, training: training) { ch, mean, invStd in
      let scale = invStd * (weight?.pointer[ch] ?? 1)
      let shift = (bias?.pointer[ch] ?? 0) - mean * scale
      for s in 0..<n {
        apply(out.pointer + (s * c + ch) * hw, x.pointer + (s * c + ch) * hw, scale, shift, hw)
      }
    }
  }
  return (out, statistics)
}

/// The preconditions shared by the batch-norm ops: x is (N, C, H, W), parameters and statistics
/// are (C), and training has more than one value per channel.
private func checkBatchNormArguments(
  _ x: Tensor, weight: Tensor?, bias: Tensor?, state: BatchNormState, training: Bool, _ op: String
) {
  checkNCHW(x, op)
  let c = x.shape[1]
  for (name, t) in [
    ("weight", weight), ("bias", bias), ("runningMean", state.runningMean),
    ("runningVar", state.runningVar),
  ] {
    if let t { precondition(t.shape == [c], "\(op): \(name) must be [\(c)] for input \(x.shape), got \(t.shape)") }
  }
  precondition((weight == nil) == (bias == nil), "\(op): weight and bias must both be given or both nil")
}

/// Σₜ weights[indices[t]] · normₜ(xs[t]), where normₜ is a non-affine batch norm with the
/// statistics `norms[t]` (see ``batchNorm2d(_:weight:bias:state:training:)``), or the identity
/// for a nil entry: the weighted sum of a mixed op with each candidate's final batch norm fused
/// in.
///
/// It equals `weightedSum` of the separately normalised terms, but no normalised term is ever
/// materialised: the forward builds the sum from the raw terms in one pass, and the backward
/// reads the output gradient once per plane for all terms' Σ g·xₜ, which give the weights'
/// gradients and the batch norms' input gradients together. The raw terms are kept for the
/// backward (the normalised ones never exist).
///
/// - Parameters:
///   - xs: non-empty list of (N, C, H, W) tensors of one shape.
///   - norms: per term, the statistics of its batch norm, or nil for none.
///   - training: batch statistics (updating the running ones) or running statistics.
///   - weights: rank-1 mixing weights; gradients flow into it.
///   - indices: per term, the position of its weight (default 0, 1, 2, …).
/// - Returns: (N, C, H, W).
/// - Precondition: one norm and one valid index per term; statistics of shape (C); training
///   needs more than one value per channel.
public func normalizedWeightedSum(
  _ xs: [Tensor], norms: [BatchNormState?], training: Bool, weights: Tensor, indices: [Int]? = nil
) -> Tensor {
  precondition(
    !xs.isEmpty && norms.count == xs.count,
    "normalizedWeightedSum: needs one norm (or nil) per term, got \(norms.count) for \(xs.count) terms")
  let idx = weightIndices(terms: xs.count, weights: weights, indices, "normalizedWeightedSum")
  checkNCHW(xs[0], "normalizedWeightedSum")
  for x in xs.dropFirst() { checkSameShape(xs[0], x, "normalizedWeightedSum") }
  let (n, c, hw) = (xs[0].shape[0], xs[0].shape[1], xs[0].shape[2] * xs[0].shape[3])
  for case let state? in norms {
    precondition(
      state.runningMean.shape == [c] && state.runningVar.shape == [c],
      "normalizedWeightedSum: running statistics must be [\(c)] for terms of shape \(xs[0].shape)")
  }

  let terms = xs.count
  // Per term t: its per-channel mean μₜ and 1/σₜ (μ = 0, 1/σ = 1 for an identity term), so that
  // term t contributes wₜ/σₜ · xₜ − wₜ μₜ/σₜ.
  let stats = zip(xs, norms).map { x, norm in norm.map { normalizationStatistics(x, state: $0, training: training) } }
  let w = weights.pointer
  @inline(__always) func meanAndInverse(_ t: Int, _ ch: Int) -> (Float, Float) {
    stats[t].map { ($0.mean.pointer[ch], $0.invStd.pointer[ch]) } ?? (0, 1)
  }
  let out = Tensor.uninitialized(xs[0].shape)
  OperationCounter.add("normalizedWeightedSum", flops: 2 * terms * out.count, elements: (terms + 1) * out.count)
  parallelChunks(n * c, minChunk: max(1, 4096 / max(hw, 1))) { lo, hi in
    var sources = [UnsafePointer<Float>?](repeating: nil, count: terms)
    var scales = [Float](repeating: 0, count: terms)
    for plane in lo..<hi {
      let ch = plane % c
      var shift: Float = 0
      for t in 0..<terms {
        let (mu, inv) = meanAndInverse(t, ch)
        scales[t] = w[idx[t]] * inv
        shift -= scales[t] * mu
        sources[t] = UnsafePointer(xs[t].pointer + plane * hw)
      }
      pcd_combine(out.pointer + plane * hw, sources, scales, Int32(terms), shift, hw)
    }
  }

  let normalized = norms.map { $0 != nil }
  let needsWeightGradient = weights.requiresGrad
  // Every term normalised with batch statistics shares the batch's count (all ranks' with a group).
  let m = stats.lazy.compactMap { $0?.count }.first ?? n * hw
  let group = training ? norms.lazy.compactMap { $0?.group }.first : nil
  // Each term's gradient goes straight into its buffer: an identity term is the edge input itself,
  // which other candidates and edges read too, so its w·g is added where their gradients are
  // instead of being written as a tensor for the graph to add.
  let targets = xs.map(\.gradientAccumulator)
  return record(out, inputs: xs + [weights]) { g in
    let dxs = targets.map { $0?.buffer() }
    // One pass over g and every term (Σ g, Σ g·xₜ), then per term with a gradient a·g + b·xₜ + c
    // (only a·g where b = c = 0: an identity term, or fixed statistics), written or added.
    var (flops, elements) = (1 + 2 * terms, 1 + terms)
    for t in 0..<terms {
      guard let (_, isFresh) = dxs[t] else { continue }
      let withStatistics = normalized[t] && training
      flops += (withStatistics ? 4 : 1) + (isFresh ? 0 : 1)
      elements += (withStatistics ? 2 : 1) + (isFresh ? 1 : 2)
    }
    OperationCounter.add("normalizedWeightedSum backward", flops: g.count * flops, elements: g.count * elements)
    // Per channel: this rank's Σ g·x̂ₜ for each term (x̂ₜ = xₜ for an identity term), for ∂/∂w.
    let sumGX = UnsafeMutableBufferPointer<Double>.allocate(capacity: c * terms)
    defer { sumGX.deallocate() }
    // x̂ = (x − μ)/σ, so Σ g·x̂ = (Σ g·x − μ Σ g)/σ. sums: Σ g, then Σ g·xₜ per term.
    func termSumGX(_ t: Int, _ ch: Int, _ sums: UnsafePointer<Double>) -> Double {
      let (mu, inv) = meanAndInverse(t, ch)
      return normalized[t] ? (sums[1 + t] - Double(mu) * sums[0]) * Double(inv) : sums[1 + t]
    }
    channelSums(
      c, width: terms + 1, group: group,
      accumulate: { ch, sums in
        var sources = [UnsafePointer<Float>?](repeating: nil, count: terms)
        for s in 0..<n {
          let plane = (s * c + ch) * hw
          for t in 0..<terms { sources[t] = UnsafePointer(xs[t].pointer + plane) }
          pcd_sum_and_dots(g.pointer + plane, sources, Int32(terms), hw, sums)
        }
        for t in 0..<terms { sumGX[ch * terms + t] = termSumGX(t, ch, sums) }
      },
      apply: { ch, sums in
        var added: [Float] = []  // a plane, for a term added with b or c ≠ 0 (a term read twice)
        for t in 0..<terms {
          guard let (dx, isFresh) = dxs[t] else { continue }
          let (mu, inv) = meanAndInverse(t, ch)
          // d(wₜ·normₜ(x))/dx: with batch statistics, the batch-norm gradient of wₜ·g; with fixed
          // statistics (or none) the affine map wₜ/σₜ·g.
          let scale = w[idx[t]] * inv
          let withStatistics = normalized[t] && training
          let (a, b, c0) =
            withStatistics
            ? inputGradientCoefficients(
              scale: scale, meanG: Float(sums[0] / Double(m)),
              meanGX: Float(termSumGX(t, ch, sums) / Double(m)), xhatScale: inv, xhatShift: -mu * inv)
            : (scale, 0, 0)
          if withStatistics && !isFresh && added.isEmpty { added = [Float](repeating: 0, count: hw) }
          for s in 0..<n {
            let plane = (s * c + ch) * hw
            let (gp, xp, dp) = (g.pointer + plane, xs[t].pointer + plane, dx.pointer + plane)
            switch (withStatistics, isFresh) {
            case (false, true): affine(hw, gp, a, 0, dp)
            case (false, false): axpy(hw, a, gp, dp)
            case (true, true): linearCombination(hw, a, gp, b, xp, c0, dp)
            case (true, false):
              added.withUnsafeMutableBufferPointer { sum in
                linearCombination(hw, a, gp, b, xp, c0, sum.baseAddress!)
                axpy(hw, 1, sum.baseAddress!, dp)
              }
            }
          }
        }
      })
    var dweights: Tensor?
    if needsWeightGradient {
      let dw = Tensor(zeros: weights.shape)
      for t in 0..<terms {
        // ∂/∂wₜ = Σ g·x̂ₜ, summed over channels in a fixed order.
        var total = 0.0
        for ch in 0..<c { total += sumGX[ch * terms + t] }
        dw.pointer[idx[t]] += Float(total)
      }
      dweights = dw
    }
    return [Tensor?](repeating: nil, count: terms) + [dweights]
  }
}

/// The per-channel statistics a batch norm normalises with, and the number of values per channel
/// they were taken over.
struct NormalizationStatistics {
  /// (C) mean and 1/√(variance + ε).
  let mean: Storage, invStd: Storage
  /// M: N·H·W, or the sum over the ranks' batches for a synchronised batch norm.
  let count: Int
}

/// The per-channel mean and 1/σ that normalise x (N, C, H, W): its batch statistics in training,
/// which also updates the running statistics, else the running statistics.
/// - Parameter forEachChannel: called once per channel with its mean and 1/σ, in parallel. With
///   this process's own batch statistics it runs right after the channel's statistics, while the
///   channel's planes (N·H·W floats: 384 KiB for the training network's first cells) are still in
///   the core's cache, so a forward reads x from memory once instead of twice.
/// - Precondition: training has more than one value per channel (over all ranks of a group).
///
/// One pass over memory: each (n, c) plane yields its mean and Σ(x − mean)² from the cache, and
/// the planes of a channel are merged with Chan et al.'s pairwise update in Double. With a group
/// of several ranks, the ranks' moments are then merged (one sum across the ranks).
func normalizationStatistics(
  _ x: Tensor, state: BatchNormState, training: Bool,
  forEachChannel body: ((_ channel: Int, _ mean: Float, _ invStd: Float) -> Void)? = nil
) -> NormalizationStatistics {
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let mean = Storage(count: c, zeroed: false)
  let invStd = Storage(count: c, zeroed: false)
  guard training else {
    for ch in 0..<c {
      mean.pointer[ch] = state.runningMean.pointer[ch]
      invStd.pointer[ch] = Float(1 / (Double(state.runningVar.pointer[ch]) + Double(state.eps)).squareRoot())
    }
    if let body { parallelFor(c) { ch in body(ch, mean.pointer[ch], invStd.pointer[ch]) } }
    return NormalizationStatistics(mean: mean, invStd: invStd, count: n * hw)
  }
  OperationCounter.add("batch-norm statistics", flops: 3 * x.count, elements: x.count)
  let k = Double(state.momentum)
  let rm = state.runningMean.pointer, rv = state.runningVar.pointer
  /// Stores channel ch's mean and 1/σ from its mean and Σ(x − mean)² over m values, and moves
  /// its running statistics.
  func finish(_ ch: Int, _ mu: Double, _ m2: Double, _ m: Int) {
    let variance = m2 / Double(m)
    rm[ch] = Float((1 - k) * Double(rm[ch]) + k * mu)
    rv[ch] = Float((1 - k) * Double(rv[ch]) + k * variance * Double(m) / Double(m - 1))
    mean.pointer[ch] = Float(mu)
    invStd.pointer[ch] = Float(1 / (variance + Double(state.eps)).squareRoot())
  }
  let synchronized = (state.group?.size ?? 1) > 1
  var m = n * hw
  if !synchronized { precondition(m > 1, "batch norm: training needs more than 1 value per channel, input \(x.shape)") }
  // moments[ch] = mean, moments[c + ch] = Σ(x − mean)² of the channel.
  let moments = UnsafeMutableBufferPointer<Double>.allocate(capacity: 2 * c)
  defer { moments.deallocate() }
  parallelFor(c) { ch in
    var (mu, m2) = (0.0, 0.0)
    for s in 0..<n {
      var (planeMean, planeM2) = (0.0, 0.0)
      pcd_plane_moments(x.pointer + (s * c + ch) * hw, hw, &planeMean, &planeM2)
      // Merge s planes of hw values with one more: the mean moves by δ·hw/total and the
      // squared deviations gain δ²·(s·hw)·hw/total.
      let (seen, total) = (Double(s * hw), Double((s + 1) * hw))
      let delta = planeMean - mu
      mu += delta * Double(hw) / total
      m2 += planeM2 + delta * delta * seen * Double(hw) / total
    }
    if synchronized {
      (moments[ch], moments[c + ch]) = (mu, m2)
    } else {
      finish(ch, mu, m2, m)
      body?(ch, mean.pointer[ch], invStd.pointer[ch])
    }
  }
  if synchronized, let group = state.group {
    m = mergeMoments(moments, channels: c, count: m, over: group)
    precondition(m > 1, "batch norm: training needs more than 1 value per channel, input \(x.shape)")
    for ch in 0..<c { finish(ch, moments[ch], moments[c + ch], m) }
    if let body { parallelFor(c) { ch in body(ch, mean.pointer[ch], invStd.pointer[ch]) } }
  }
  return NormalizationStatistics(mean: mean, invStd: invStd, count: m)
}

/// Replaces each rank's per-channel (mean, Σ(x − mean)²) of `count` values by those of the union
/// of the ranks' batches, with one all-reduce (a synchronised step makes one per batch norm, so
/// their latency is its cost): the sums of countᵣ·meanᵣ and of Σ(x − meanᵣ)² + countᵣ·meanᵣ²,
/// that is Σx and Σx², give mean = Σx / n and Σ(x − mean)² = Σx² − n·mean². In Double, the
/// cancellation loses about 1e-16·(1 + mean²/variance) relative, far below Float's resolution.
/// Returns the union's count.
private func mergeMoments(
  _ moments: UnsafeMutableBufferPointer<Double>, channels c: Int, count: Int, over group: ProcessGroup
) -> Int {
  let n = Double(count)
  var sums = (0..<c).map { n * moments[$0] } + (0..<c).map { moments[c + $0] + n * moments[$0] * moments[$0] } + [n]
  sums.withUnsafeMutableBufferPointer { group.allReduceSum($0) }
  let total = sums[2 * c]
  for ch in 0..<c {
    let mean = sums[ch] / total
    (moments[ch], moments[c + ch]) = (mean, max(sums[c + ch] - total * mean * mean, 0))
  }
  return Int(total.rounded())
}

/// The batch-norm input gradient in training, dx = scale·(g − mean(g) − x̂·mean(g·x̂)), as the
/// linear map a·g + b·saved + c of the gradient and a saved tensor with x̂ = xhatScale·saved +
/// xhatShift; `scale` is γ/σ (times any weight the output was multiplied by).
@inline(__always)
func inputGradientCoefficients(
  scale: Float, meanG: Float, meanGX: Float, xhatScale: Float, xhatShift: Float
) -> (a: Float, b: Float, c: Float) {
  (scale, -scale * meanGX * xhatScale, -scale * (meanG + meanGX * xhatShift))
}
