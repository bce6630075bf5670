// The node sum of a PC-DARTS cell with its edges' partial-channel merges fused in.
// Legend: N batch, C node channels, P = C/K processed channels per edge, H×W the edge input,
// s ∈ {1, 2} the edge stride, H′×W′ = H/s × W/s the node plane.
//
// Written naively, each edge e materialises shuffle(concat(processedₑ, bypassₑ)), a C-channel
// tensor that the β-weighted node sum must keep for ∂/∂βₑ; at K = 4 these edge outputs were
// the largest activation left that does not shrink with K. Here the node is accumulated straight
// from the processed channels (P) and from the edge inputs, which are kept once per node instead
// of once per edge; bypass values are recomputed in the backward pass.

/// node = Σₑ weights[indices[e]] · shuffle(concat(processed[e], bypassₑ), groups),
/// where bypassₑ = inputs[e][:, P:] for stride 1 and its 2×2 max pool (stride 2) for stride 2.
///
/// - Parameters:
///   - processed: per edge, (N, P, H′, W′): the weighted sum of the candidate operations.
///   - inputs: per edge, (N, C, H, W) with H = s·H′: the edge input, whose channels P..<C bypass.
///   - strides: per edge, 1 or 2.
///   - weights: rank-1 edge weights (normalised β); gradients flow into it.
///   - indices: per edge, its position in `weights`.
///   - groups: K, the shuffle's group count (C = K·P).
/// - Returns: (N, C, H′, W′).
/// - Precondition: shapes as above, agreeing across edges.
public func partialChannelSum(
  processed: [Tensor], inputs: [Tensor], strides: [Int], weights: Tensor, indices: [Int], groups: Int
) -> Tensor {
  let edges = processed.count
  precondition(edges > 0 && inputs.count == edges && strides.count == edges && indices.count == edges,
    "partialChannelSum: needs one input, stride and index per processed tensor (\(edges))")
  precondition(weights.rank == 1 && indices.allSatisfy { $0 >= 0 && $0 < weights.count },
    "partialChannelSum: indices \(indices) must lie in the \(weights.count) weights")
  let (n, p, oh, ow) = (processed[0].shape[0], processed[0].shape[1], processed[0].shape[2], processed[0].shape[3])
  let c = p * groups
  for e in 0..<edges {
    let (x, y, s) = (inputs[e], processed[e], strides[e])
    precondition(y.shape == [n, p, oh, ow], "partialChannelSum: processed \(e) is \(y.shape), expected \([n, p, oh, ow])")
    precondition((s == 1 || s == 2) && x.shape == [n, c, oh * s, ow * s],
      "partialChannelSum: input \(e) is \(x.shape), expected \([n, c, oh * s, ow * s]) for stride \(s)")
  }
  let ohw = oh * ow
  // Output channel o holds concatenated channel (o mod K)·P + ⌊o / K⌋ (ShuffleNet's shuffle).
  let source = (0..<c).map { o in (o % groups) * p + o / groups }
  let out = Tensor(zeros: [n, c, oh, ow])
  let w = weights.pointer
  parallelFor(n * c, minChunk: max(1, 4096 / max(ohw, 1))) { plane in
    let (sample, o) = (plane / c, plane % c)
    let ci = source[o]
    let dst = out.pointer + plane * ohw
    for e in 0..<edges {
      let we = w[indices[e]]
      if ci < p {
        axpy(ohw, we, processed[e].pointer + (sample * p + ci) * ohw, dst)
      } else {
        let src = inputs[e].pointer + (sample * c + ci) * ohw * strides[e] * strides[e]
        if strides[e] == 1 {
          axpy(ohw, we, src, dst)
        } else {
          maxPool2x2Plane(src, width: ow * 2, oh: oh, ow: ow) { at, v in dst[at] += we * v }
        }
      }
    }
  }
  let needsWeightGradient = weights.requiresGrad
  return record(out, inputs: processed + inputs + [weights]) { g in
    let dprocessed = processed.map { $0.requiresGrad ? Tensor.uninitialized($0.shape) : nil }
    // A stride-1 input's bypass planes are each written exactly once below, so only its first P
    // channels need zeros; a stride-2 input receives scattered max-pool gradients (all zeros).
    let dinputs = zip(inputs, strides).map { x, s -> Tensor? in
      guard x.requiresGrad else { return nil }
      if s != 1 { return Tensor(zeros: x.shape) }
      let d = Tensor.uninitialized(x.shape)
      for sample in 0..<n { (d.pointer + sample * c * ohw).update(repeating: 0, count: p * ohw) }
      return d
    }
    // ∂/∂wₑ = ⟨g, edge output e⟩, summed per plane then over planes in a fixed order.
    var planeDots = [Double](repeating: 0, count: n * c * edges)
    planeDots.withUnsafeMutableBufferPointer { dots in
      parallelFor(n * c, minChunk: max(1, 4096 / max(ohw, 1))) { plane in
        let (sample, o) = (plane / c, plane % c)
        let ci = source[o]
        let gp = g.pointer + plane * ohw
        for e in 0..<edges {
          let we = w[indices[e]]
          if ci < p {
            let at = (sample * p + ci) * ohw
            if needsWeightGradient { dots[plane * edges + e] = Double(dot(ohw, gp, processed[e].pointer + at)) }
            if let d = dprocessed[e] { affine(ohw, gp, we, 0, d.pointer + at) }
          } else {
            let s = strides[e]
            let at = (sample * c + ci) * ohw * s * s
            let src = inputs[e].pointer + at
            if s == 1 {
              if needsWeightGradient { dots[plane * edges + e] = Double(dot(ohw, gp, src)) }
              if let d = dinputs[e] { affine(ohw, gp, we, 0, d.pointer + at) }
            } else {
              var total: Float = 0
              let dsrc = dinputs[e].map { $0.pointer + at }
              if needsWeightGradient {
                maxPool2x2Plane(src, width: ow * 2, oh: oh, ow: ow) { q, v in total += gp[q] * v }
              }
              if let dsrc {
                maxPool2x2ArgMax(src, width: ow * 2, oh: oh, ow: ow) { q, arg in dsrc[arg] += we * gp[q] }
              }
              dots[plane * edges + e] = Double(total)
            }
          }
        }
      }
    }
    let dweights = Tensor(zeros: weights.shape)
    for plane in 0..<(n * c) {
      for e in 0..<edges { dweights.pointer[indices[e]] += Float(planeDots[plane * edges + e]) }
    }
    return dprocessed + dinputs + [dweights]
  }
}

/// Visits the 2×2 stride-2 max of every output position of one plane (input row stride `width`).
@inline(__always)
private func maxPool2x2Plane(
  _ src: UnsafePointer<Float>, width: Int, oh: Int, ow: Int, _ visit: (Int, Float) -> Void
) {
  maxPool2x2ArgMax(src, width: width, oh: oh, ow: ow) { q, arg in visit(q, src[arg]) }
}

/// Visits, for every output position, the input offset of its 2×2 window's first maximum
/// (row-major order, as PyTorch's max pool).
@inline(__always)
private func maxPool2x2ArgMax(
  _ src: UnsafePointer<Float>, width: Int, oh: Int, ow: Int, _ visit: (Int, Int) -> Void
) {
  for r in 0..<oh {
    for q in 0..<ow {
      let top = 2 * r * width + 2 * q
      var arg = top
      if src[top + 1] > src[arg] { arg = top + 1 }
      if src[top + width] > src[arg] { arg = top + width }
      if src[top + width + 1] > src[arg] { arg = top + width + 1 }
      visit(r * ow + q, arg)
    }
  }
}
