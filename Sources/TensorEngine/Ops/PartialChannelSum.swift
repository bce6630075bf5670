// The node sum of a PC-DARTS cell with its edges' partial-channel merges fused in.
// Legend: N batch, C node channels, P = C/K processed channels per edge, H×W the edge input,
// s ∈ {1, 2} the edge stride, H′×W′ = H/s × W/s the node plane.
//
// Written naively, each edge e materialises shuffle(concat(processedₑ, bypassₑ)), a C-channel
// tensor that the β-weighted node sum must keep for ∂/∂βₑ; at K = 4 these edge outputs were
// the largest activation left that does not shrink with K. Here the node is accumulated straight
// from the processed channels (P) and from the edge inputs, which are kept once per node instead
// of once per edge; bypass values are recomputed in the backward pass.

import _CKernels

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
  precondition(!processed.isEmpty && groups >= 1, "partialChannelSum: needs edges and groups ≥ 1")
  let p = processed[0].shape[1]
  // Output channel o holds concatenated channel ci = (o mod K)·P + ⌊o / K⌋ (ShuffleNet's
  // shuffle): processed plane ci below P, input channel ci from P on.
  let map = (0..<p * groups).map { o -> Int in
    let ci = (o % groups) * p + o / groups
    return ci < p ? ci : p + ci
  }
  return partialChannelSum(
    processed: processed, inputs: inputs, strides: strides, weights: weights, indices: indices,
    sources: Array(repeating: map, count: processed.count))
}

/// node = Σₑ weights[indices[e]] · mergeₑ, where mergeₑ keeps every channel in place: channel
/// `processedChannels[e][j]` is processed[e]'s channel j, and every other channel o bypasses
/// from inputs[e][:, o] (its 2×2 max pool for stride 2). This is the merge of randomly sampled
/// partial channels: each edge's subset goes through the candidates and comes back where it was.
///
/// - Parameters:
///   - processedChannels: per edge, the P distinct input channels its candidates processed, in
///     the order of processed[e]'s channels.
///   - the others: as ``partialChannelSum(processed:inputs:strides:weights:indices:groups:)``.
/// - Returns: (N, C, H′, W′).
public func partialChannelSum(
  processed: [Tensor], inputs: [Tensor], strides: [Int], weights: Tensor, indices: [Int],
  processedChannels: [[Int]]
) -> Tensor {
  precondition(
    !processed.isEmpty && processedChannels.count == processed.count,
    "partialChannelSum: needs one channel list per processed tensor (\(processed.count))")
  let (p, c) = (processed[0].shape[1], inputs.first.map { $0.shape[1] } ?? 0)
  let sources = processedChannels.map { channels -> [Int] in
    precondition(
      channels.count == p && Set(channels).count == p && channels.allSatisfy { $0 >= 0 && $0 < c },
      "partialChannelSum: \(channels) must be \(p) distinct channels of \(c)")
    var map = (0..<c).map { p + $0 }
    for (j, channel) in channels.enumerated() { map[channel] = j }
    return map
  }
  return partialChannelSum(
    processed: processed, inputs: inputs, strides: strides, weights: weights, indices: indices, sources: sources)
}

/// The node sum with, per edge and output channel o, `sources[e][o]`: j < P for processed[e]'s
/// channel j, P + i for input channel i (bypassed). Each input channel is the source of at most
/// one output channel per edge.
private func partialChannelSum(
  processed: [Tensor], inputs: [Tensor], strides: [Int], weights: Tensor, indices: [Int], sources: [[Int]]
) -> Tensor {
  let edges = processed.count
  precondition(
    edges > 0 && inputs.count == edges && strides.count == edges && indices.count == edges,
    "partialChannelSum: needs one input, stride and index per processed tensor (\(edges))")
  precondition(
    weights.rank == 1 && indices.allSatisfy { $0 >= 0 && $0 < weights.count },
    "partialChannelSum: indices \(indices) must lie in the \(weights.count) weights")
  let (n, p, oh, ow) = (processed[0].shape[0], processed[0].shape[1], processed[0].shape[2], processed[0].shape[3])
  let c = sources[0].count
  for e in 0..<edges {
    let (x, y, s) = (inputs[e], processed[e], strides[e])
    precondition(
      y.shape == [n, p, oh, ow], "partialChannelSum: processed \(e) is \(y.shape), expected \([n, p, oh, ow])")
    precondition(
      (s == 1 || s == 2) && x.shape == [n, c, oh * s, ow * s],
      "partialChannelSum: input \(e) is \(x.shape), expected \([n, c, oh * s, ow * s]) for stride \(s)")
  }
  let ohw = oh * ow
  // sourceOf[e · C + o]: the source of output channel o on edge e, flattened for the hot loops.
  let sourceOf = sources.flatMap { $0 }
  let out = Tensor.uninitialized([n, c, oh, ow])
  let w = weights.pointer
  let edgeWeights = indices.map { w[$0] }
  let pooled = strides.map { $0 == 2 }
  let chunk = max(1, 4096 / max(ohw, 1))
  // Per edge: its processed planes and its bypass planes (4 input values per output for stride
  // 2, with 3 comparisons); then one multiply-add per edge and output value.
  let nodeCount = n * c * ohw
  let edgeReads = strides.reduce(0) { $0 + n * p * ohw + n * (c - p) * ohw * $1 * $1 }
  let poolFlops = strides.reduce(0) { $0 + ($1 == 2 ? 3 * n * (c - p) * ohw : 0) }
  OperationCounter.add("partialChannelSum", flops: 2 * edges * nodeCount + poolFlops, elements: nodeCount + edgeReads)
  parallelChunks(n * c, minChunk: chunk) { lo, hi in
    let planes = EdgePlanes(processed: processed, inputs: inputs, pooled: pooled, sourceOf: sourceOf)
    for plane in lo..<hi {
      planes.gather(plane / c, plane % c)
      pcd_combine(out.pointer + plane * ohw, planes.sources, edgeWeights, Int32(edges), 0, ohw)
    }
  }
  let needsWeightGradient = weights.requiresGrad
  return record(out, inputs: processed + inputs + [weights]) { g in
    let dprocessed = processed.map { $0.requiresGrad ? Tensor.uninitialized($0.shape) : nil }
    // An input's bypass planes are added into its gradient when other readers (every later
    // node reads a node) have already put theirs there; otherwise they are written exactly once
    // into the fresh buffer (a stride-2 plane by the max-pool adjoint, which writes its whole
    // input plane), whose processed channels, which reach the candidate operations instead, are
    // zeroed.
    let buffers = inputs.map { $0.gradientAccumulator?.buffer() }
    for (e, buffer) in buffers.enumerated() {
      guard case let (d, true)? = buffer else { continue }
      let planeSize = d.shape[2] * d.shape[3]
      let bypassed = Set(sources[e].filter { $0 >= p }.map { $0 - p })
      for sample in 0..<n {
        for channel in 0..<c where !bypassed.contains(channel) {
          (d.pointer + (sample * c + channel) * planeSize).update(repeating: 0, count: planeSize)
        }
      }
    }
    let targets = buffers.map { $0?.buffer }
    let added = buffers.map { $0.map { !$0.isFresh } ?? false }
    // g once; for β the edges' planes again (as in the forward); then per edge, its processed
    // planes' gradients and its bypass planes' (read first where another reader's are there,
    // through the max-pool adjoint, which reads the input, for stride 2).
    var backwardFlops = needsWeightGradient ? 2 * edges * nodeCount + poolFlops : 0
    var backwardElements = nodeCount + (needsWeightGradient ? edgeReads : 0)
    for e in 0..<edges {
      let s = strides[e]
      if dprocessed[e] != nil {
        (backwardFlops, backwardElements) = (backwardFlops + n * p * ohw, backwardElements + n * p * ohw)
      }
      guard targets[e] != nil else { continue }
      let bypass = n * (c - p) * ohw
      backwardFlops += bypass * (s == 2 ? 5 : 1) + (added[e] ? bypass * s * s : 0)
      backwardElements += bypass * s * s * ((added[e] ? 2 : 1) + (s == 2 ? 1 : 0))
    }
    OperationCounter.add("partialChannelSum backward", flops: backwardFlops, elements: backwardElements)
    // ∂/∂wₑ = ⟨g, edge output e⟩, summed per plane then over planes in a fixed order.
    var planeDots = [Double](repeating: 0, count: n * c * edges)
    planeDots.withUnsafeMutableBufferPointer { dots in
      parallelChunks(n * c, minChunk: chunk, scratch: 5 * ohw) { lo, hi, scratch in
        let planes = EdgePlanes(processed: processed, inputs: inputs, pooled: pooled, sourceOf: sourceOf)
        let (scaled, unpooled) = (scratch, scratch + ohw)  // ohw and 4·ohw values
        var sums = [Double](repeating: 0, count: edges + 1)
        for plane in lo..<hi {
          let (sample, o) = (plane / c, plane % c)
          let gp = g.pointer + plane * ohw
          if needsWeightGradient {
            planes.gather(sample, o)
            for e in 0...edges { sums[e] = 0 }
            pcd_sum_and_dots(gp, planes.sources, Int32(edges), ohw, &sums)
            for e in 0..<edges { dots[plane * edges + e] = sums[1 + e] }
          }
          for e in 0..<edges {
            let source = sourceOf[e * c + o]
            if source < p {
              if let d = dprocessed[e] { affine(ohw, gp, edgeWeights[e], 0, d.pointer + (sample * p + source) * ohw) }
              continue
            }
            guard let d = targets[e] else { continue }
            let ci = source - p
            let s = strides[e]
            let at = (sample * c + ci) * ohw * s * s
            switch (s, added[e]) {
            case (1, false): affine(ohw, gp, edgeWeights[e], 0, d.pointer + at)
            case (1, true): axpy(ohw, edgeWeights[e], gp, d.pointer + at)
            default:
              affine(ohw, gp, edgeWeights[e], 0, scaled)
              let into = added[e] ? unpooled : d.pointer + at
              planes.pools[e]!.backward(scaled, x: inputs[e].pointer + at, into: into)
              if added[e] { axpy(4 * ohw, 1, unpooled, d.pointer + at) }
            }
          }
        }
      }
    }
    let dweights = Tensor(zeros: weights.shape)
    for plane in 0..<(n * c) {
      for e in 0..<edges { dweights.pointer[indices[e]] += Float(planeDots[plane * edges + e]) }
    }
    // The inputs' gradients are in their accumulators already.
    return dprocessed + inputs.map { _ in nil } + [dweights]
  }
}

/// One core's view of every edge's contribution to a node plane: the processed plane, the
/// input's bypass plane, or that plane's 2×2 max pool (computed into per-edge scratch).
private final class EdgePlanes {
  /// Per edge, its plane for the current node plane (what ``gather(_:_:)`` last pointed at).
  let sources: UnsafeMutablePointer<UnsafePointer<Float>?>
  /// Per edge, the pooling scratch of a stride-2 edge.
  let pools: [MaxPool2x2Scratch?]
  /// Per stride-2 edge, the pooled plane (working memory, not counted as tensors: see
  /// PaddedPlanes.swift).
  private let pooledPlanes: [PaddedPlane?]
  private let processed: [Tensor], inputs: [Tensor]
  /// The flattened source map of the node sum: j < P processed, P + i input channel i.
  private let sourceOf: [Int]
  /// P, C, and the node's plane size.
  private let p: Int, c: Int, planeSize: Int

  /// - Parameters: as the node sum's, with `pooled[e]` for a stride-2 edge and `sourceOf[e · C + o]`
  ///   the source of output channel o on edge e.
  init(processed: [Tensor], inputs: [Tensor], pooled: [Bool], sourceOf: [Int]) {
    (self.processed, self.inputs, self.sourceOf) = (processed, inputs, sourceOf)
    let (oh, ow) = (processed[0].shape[2], processed[0].shape[3])
    (p, c, planeSize) = (processed[0].shape[1], inputs[0].shape[1], oh * ow)
    pools = pooled.map { $0 ? MaxPool2x2Scratch(oh: oh, ow: ow) : nil }
    pooledPlanes = pooled.map { $0 ? PaddedPlane(h: oh, w: ow, pad: 0, fill: 0) : nil }
    sources = .allocate(capacity: processed.count)
    sources.initialize(repeating: nil, count: processed.count)
  }

  deinit { sources.deallocate() }

  /// Points ``sources`` at each edge's plane for output channel `o` of `sample`: a processed
  /// plane, or an input's bypass plane (pooled for stride 2).
  @inline(__always) func gather(_ sample: Int, _ o: Int) {
    for e in processed.indices {
      let source = sourceOf[e * c + o]
      let ci = source - p
      if source < p {
        sources[e] = UnsafePointer(processed[e].pointer + (sample * p + source) * planeSize)
      } else if let pool = pools[e], let pooled = pooledPlanes[e] {
        pool.forward(inputs[e].pointer + (sample * c + ci) * 4 * planeSize, into: pooled.pointer)
        sources[e] = UnsafePointer(pooled.pointer)
      } else {
        sources[e] = UnsafePointer(inputs[e].pointer + (sample * c + ci) * planeSize)
      }
    }
  }
}
