// Element-wise ops and weighted sums. Shapes are arbitrary unless stated; element-wise loops run
// in per-core chunks once a tensor is large enough to pay for the dispatch.

import _CKernels

private let elementwiseChunk = 1 << 15

/// max(x, 0), element-wise.
public func relu(_ x: Tensor) -> Tensor {
  let out = Tensor.uninitialized(x.shape)
  let (src, dst) = (x.pointer, out.pointer)
  OperationCounter.add("relu", flops: x.count, elements: 2 * x.count)
  parallelChunks(x.count, minChunk: elementwiseChunk) { lo, hi in
    pcd_relu_forward(dst + lo, src + lo, hi - lo)
  }
  // The output's sign is the mask; keep its storage rather than the input's (the next op, a
  // convolution, saves the output anyway).
  let saved = out.storage
  // The gradient goes straight into x's: DARTS's edge input feeds the pools and the skip as well
  // as this ReLU, so a separate dx would cost a write and then a read-add-write pass.
  let target = x.gradientAccumulator
  return record(out, inputs: [x]) { g in
    guard let (dx, isFresh) = target?.buffer() else { return [nil] }
    let (gp, mp, dp) = (g.pointer, saved.pointer, dx.pointer)
    OperationCounter.add("relu backward", flops: dx.count, elements: (isFresh ? 3 : 4) * dx.count)
    parallelChunks(dx.count, minChunk: elementwiseChunk) { lo, hi in
      if isFresh {
        pcd_relu_backward(dp + lo, gp + lo, mp + lo, hi - lo)
      } else {
        pcd_relu_backward_add(dp + lo, gp + lo, mp + lo, hi - lo)
      }
    }
    return [nil]
  }
}

/// a + b, element-wise.
/// - Precondition: equal shapes.
public func add(_ a: Tensor, _ b: Tensor) -> Tensor {
  checkSameShape(a, b, "add")
  let out = Tensor.uninitialized(a.shape)
  let (pa, pb, po) = (a.pointer, b.pointer, out.pointer)
  OperationCounter.add("add", flops: a.count, elements: 3 * a.count)
  parallelChunks(a.count, minChunk: elementwiseChunk) { lo, hi in
    for i in lo..<hi { po[i] = pa[i] + pb[i] }
  }
  return record(out, inputs: [a, b]) { g in [g, g] }
}

/// The element-wise sum of a non-empty list of equally shaped tensors.
public func sum(_ xs: [Tensor]) -> Tensor {
  precondition(!xs.isEmpty, "sum: needs at least one tensor")
  for x in xs.dropFirst() { checkSameShape(xs[0], x, "sum") }
  let out = xs[0].copy()
  OperationCounter.add("sum", flops: 0, elements: 2 * out.count)
  for x in xs.dropFirst() { addInPlace(out, x, countedAs: "sum") }
  let terms = xs.count
  return record(out, inputs: xs) { g in Array(repeating: g, count: terms) }
}

/// Σₜ xs[t][n] · sampleScales[t][n] for each sample n: the node sum of a trained DARTS cell
/// with drop-path (DARTS model.py, after FractalNet, Larsson et al. 2017), where each path's
/// sample is dropped (factor 0) or kept and scaled by 1/keep-probability, fused so that no
/// scaled path is written.
///
/// - Parameters:
///   - xs: non-empty list of equally shaped (N, …) tensors.
///   - sampleScales: per term, N factors, or `nil` for a term added as it is.
/// - Returns: a tensor of the terms' shape.
/// - Precondition: one entry of `sampleScales` per term, each with one factor per sample.
public func sum(_ xs: [Tensor], sampleScales: [[Float]?]) -> Tensor {
  precondition(!xs.isEmpty, "sum(_:sampleScales:): needs at least one tensor")
  precondition(
    sampleScales.count == xs.count, "sum(_:sampleScales:): \(sampleScales.count) scale lists for \(xs.count) terms")
  for x in xs.dropFirst() { checkSameShape(xs[0], x, "sum(_:sampleScales:)") }
  let samples = xs[0].shape.first ?? 1
  for case let scales? in sampleScales {
    precondition(
      scales.count == samples, "sum(_:sampleScales:): \(scales.count) factors for \(samples) samples of \(xs[0].shape)")
  }
  let plane = xs[0].count / max(samples, 1)
  let out = Tensor.uninitialized(xs[0].shape)
  let po = out.pointer
  let pointers = xs.map(\.pointer)
  OperationCounter.add(
    "sum(sampleScales:)", flops: (2 * xs.count - 1) * out.count, elements: (xs.count + 1) * out.count)
  // Per sample: Σₜ fₜ·xₜ in one pass over the output plane. A dropped path still multiplies
  // (by 0), so a NaN in it shows in the sum as it does in PyTorch's x.div_(keep).mul_(mask).
  parallelChunks(samples, minChunk: max(1, elementwiseChunk / max(plane, 1))) { lo, hi in
    for n in lo..<hi {
      let o = po + n * plane
      for (t, p) in pointers.enumerated() {
        let f = sampleScales[t]?[n] ?? 1
        let x = p + n * plane
        if t == 0 {
          for i in 0..<plane { o[i] = x[i] * f }
        } else {
          for i in 0..<plane { o[i] += x[i] * f }
        }
      }
    }
  }
  return record(out, inputs: xs) { g in
    sampleScales.map { scales in
      guard let scales else { return g }
      let dx = Tensor.uninitialized(g.shape)
      let (gp, dp) = (g.pointer, dx.pointer)
      OperationCounter.add("sum(sampleScales:) backward", flops: dx.count, elements: 2 * dx.count)
      parallelChunks(samples, minChunk: max(1, elementwiseChunk / max(plane, 1))) { lo, hi in
        for n in lo..<hi {
          let f = scales[n]
          for i in n * plane..<(n + 1) * plane { dp[i] = gp[i] * f }
        }
      }
      return dx
    }
  }
}

/// x · s for a constant s.
public func scale(_ x: Tensor, by s: Float) -> Tensor {
  let out = Tensor.uninitialized(x.shape)
  let (src, dst) = (x.pointer, out.pointer)
  OperationCounter.add("scale", flops: x.count, elements: 2 * x.count)
  parallelChunks(x.count, minChunk: elementwiseChunk) { lo, hi in
    for i in lo..<hi { dst[i] = src[i] * s }
  }
  return record(out, inputs: [x]) { g in [scale(g, by: s)] }
}

/// Σₜ weights[indices[t]] · xs[t]: the weighted sum at the heart of a mixed op (α-weights) and
/// of edge normalisation (β-weights), fused so that no w·x product is materialised.
///
/// - Parameters:
///   - xs: non-empty list of equally shaped tensors.
///   - weights: rank-1 tensor of mixing weights; gradients flow into it.
///   - indices: for each term, the position of its weight (default 0, 1, 2, …).
/// - Returns: a tensor of the terms' shape.
/// - Precondition: `indices` has one valid position per term.
public func weightedSum(_ xs: [Tensor], weights: Tensor, indices: [Int]? = nil) -> Tensor {
  precondition(!xs.isEmpty, "weightedSum: needs at least one term")
  let idx = weightIndices(terms: xs.count, weights: weights, indices, "weightedSum")
  for x in xs.dropFirst() { checkSameShape(xs[0], x, "weightedSum") }
  let out = Tensor(zeros: xs[0].shape)
  let count = out.count
  let w = weights.pointer
  let po = out.pointer
  // The zeroed output, then one multiply-add pass per term.
  OperationCounter.add("weightedSum", flops: 2 * xs.count * count, elements: (1 + 3 * xs.count) * count)
  parallelChunks(count, minChunk: elementwiseChunk) { lo, hi in
    for (t, x) in xs.enumerated() {
      axpy(hi - lo, w[idx[t]], x.pointer + lo, po + lo)
    }
  }
  let needsWeightGradient = weights.requiresGrad
  return record(out, inputs: xs + [weights]) { g in
    let dweights = Tensor(zeros: weights.shape)
    let gp = g.pointer
    var grads: [Tensor?] = []
    for (t, x) in xs.enumerated() {
      let wt = w[idx[t]]
      let px = x.pointer
      OperationCounter.add(
        "weightedSum backward",
        flops: (needsWeightGradient ? 2 : 0) * count + (x.requiresGrad ? count : 0),
        elements: (needsWeightGradient ? 2 : 0) * count + (x.requiresGrad ? 2 * count : 0))
      if needsWeightGradient {
        // ∂/∂w = ⟨g, x⟩, summed in Double over per-core partials for accuracy.
        let inner = parallelSum(count, minChunk: elementwiseChunk) { lo, hi in
          // Blocks of 4096 summed in Double keep the error independent of the tensor size.
          var total = 0.0
          var i = lo
          while i < hi {
            let len = min(4096, hi - i)
            total += Double(dot(len, gp + i, px + i))
            i += len
          }
          return total
        }
        dweights.pointer[idx[t]] += Float(inner)
      }
      if x.requiresGrad {
        let dx = Tensor.uninitialized(x.shape)
        let pd = dx.pointer
        parallelChunks(count, minChunk: elementwiseChunk) { lo, hi in
          affine(hi - lo, gp + lo, wt, 0, pd + lo)
        }
        grads.append(dx)
      } else {
        grads.append(nil)
      }
    }
    return grads + [dweights]
  }
}

/// The position in `weights` of each of `terms` terms (`indices`, or 0, 1, 2, … by default).
/// - Precondition: `weights` is rank 1 and there is one valid position per term.
func weightIndices(terms: Int, weights: Tensor, _ indices: [Int]?, _ op: String) -> [Int] {
  precondition(weights.rank == 1, "\(op): weights must be rank 1, got \(weights.shape)")
  let idx = indices ?? Array(0..<terms)
  precondition(
    idx.count == terms && idx.allSatisfy { $0 >= 0 && $0 < weights.count },
    "\(op): \(terms) terms need as many indices into \(weights.count) weights, got \(idx)")
  return idx
}

/// x · weights[index], a tensor scaled by one differentiable element of `weights`.
public func scale(_ x: Tensor, byElementOf weights: Tensor, at index: Int) -> Tensor {
  weightedSum([x], weights: weights, indices: [index])
}
