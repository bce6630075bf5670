// Ops that move values without arithmetic: concatenation, slicing, shuffling, reshaping.
// Legend: N batch, C channels, H×W plane (HW = H·W). Channel ops copy whole planes.

/// Concatenates (Nᵢ = N, Cᵢ, H, W) tensors along the channel axis, like `torch.cat(xs, dim=1)`.
/// - Returns: (N, ΣCᵢ, H, W).
/// - Precondition: all inputs agree on N, H and W.
public func concatChannels(_ xs: [Tensor]) -> Tensor {
  precondition(!xs.isEmpty, "concatChannels: needs at least one tensor")
  for x in xs {
    checkNCHW(x, "concatChannels")
    precondition(
      x.shape[0] == xs[0].shape[0] && x.shape[2...] == xs[0].shape[2...],
      "concatChannels: shapes \(xs[0].shape) and \(x.shape) differ outside the channel axis")
  }
  let (n, hw) = (xs[0].shape[0], xs[0].shape[2] * xs[0].shape[3])
  let channels = xs.map { $0.shape[1] }
  let total = channels.reduce(0, +)
  let out = Tensor.uninitialized([n, total, xs[0].shape[2], xs[0].shape[3]])
  OperationCounter.add("concatChannels", flops: 0, elements: 2 * out.count)
  copyChannelBlocks(n: n, hw: hw, total: total, channels: channels) { t, s, into in
    into.update(from: xs[t].pointer + s * channels[t] * hw, count: channels[t] * hw)
  } destination: { s, offset in
    out.pointer + (s * total + offset) * hw
  }
  let shapes = xs.map(\.shape)
  return record(out, inputs: xs) { g in
    let grads = shapes.map { Tensor.uninitialized($0) }
    OperationCounter.add("concatChannels backward", flops: 0, elements: 2 * g.count)
    copyChannelBlocks(n: n, hw: hw, total: total, channels: channels) { t, s, from in
      grads[t].pointer.advanced(by: s * channels[t] * hw).update(from: from, count: channels[t] * hw)
    } destination: { s, offset in
      g.pointer + (s * total + offset) * hw
    }
    return grads
  }
}

/// Visits, for every sample and input block, the matching span of the concatenated tensor.
private func copyChannelBlocks(
  n: Int, hw: Int, total: Int, channels: [Int],
  _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void,
  destination: (Int, Int) -> UnsafeMutablePointer<Float>
) {
  parallelFor(n) { s in
    var offset = 0
    for t in channels.indices {
      body(t, s, destination(s, offset))
      offset += channels[t]
    }
  }
}

/// Channels `range` of (N, C, H, W), like `x[:, range]` in PyTorch (a copy).
/// - Returns: (N, range.count, H, W).
/// - Precondition: `range` is a non-empty range of x's channels.
public func sliceChannels(_ x: Tensor, _ range: Range<Int>) -> Tensor {
  checkNCHW(x, "sliceChannels")
  precondition(
    range.lowerBound >= 0 && range.upperBound <= x.shape[1] && !range.isEmpty,
    "sliceChannels: range \(range) is outside the \(x.shape[1]) channels of \(x.shape)")
  return gatherChannels(x, runs: [range])
}

/// Channels `indices` of (N, C, H, W) in that order, like `x[:, indices]` in PyTorch (a copy).
/// - Returns: (N, indices.count, H, W).
/// - Precondition: the indices are distinct channels of x, at least one.
public func gatherChannels(_ x: Tensor, _ indices: [Int]) -> Tensor {
  checkNCHW(x, "gatherChannels")
  precondition(
    !indices.isEmpty && indices.allSatisfy { $0 >= 0 && $0 < x.shape[1] } && Set(indices).count == indices.count,
    "gatherChannels: \(indices) must be distinct channels of \(x.shape)")
  // Consecutive channels are copied as one block.
  var runs: [Range<Int>] = []
  for i in indices {
    if let last = runs.last, last.upperBound == i {
      runs[runs.count - 1] = last.lowerBound..<i + 1
    } else {
      runs.append(i..<i + 1)
    }
  }
  return gatherChannels(x, runs: runs)
}

/// The channel blocks `runs` of x, concatenated; both ops above are this one.
private func gatherChannels(_ x: Tensor, runs: [Range<Int>]) -> Tensor {
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  let k = runs.reduce(0) { $0 + $1.count }
  let out = Tensor.uninitialized([n, k, x.shape[2], x.shape[3]])
  OperationCounter.add("gatherChannels", flops: 0, elements: 2 * out.count)
  parallelFor(n) { s in
    var at = out.pointer + s * k * hw
    for run in runs {
      at.update(from: x.pointer + (s * c + run.lowerBound) * hw, count: run.count * hw)
      at += run.count * hw
    }
  }
  return record(out, inputs: [x]) { [target = x.gradientAccumulator] g in
    // Usually x already has a gradient from its other readers: add the gathered channels into
    // it; else write them into a fresh gradient that is zero elsewhere.
    guard let (dx, isFresh) = target?.buffer() else { return [nil] }
    OperationCounter.add(
      "gatherChannels backward", flops: isFresh ? 0 : g.count, elements: isFresh ? dx.count + g.count : 3 * g.count)
    parallelFor(n) { s in
      if isFresh { (dx.pointer + s * c * hw).update(repeating: 0, count: c * hw) }
      var from = g.pointer + s * k * hw
      for run in runs {
        let to = dx.pointer + (s * c + run.lowerBound) * hw
        if isFresh { to.update(from: from, count: run.count * hw) } else { axpy(run.count * hw, 1, from, to) }
        from += run.count * hw
      }
    }
    return [nil]
  }
}

/// PC-DARTS's channel shuffle (from ShuffleNet): view the channels as (groups, C/groups),
/// transpose to (C/groups, groups) and flatten, so output channel j·groups + i is input channel
/// i·(C/groups) + j.
/// - Parameter x: (N, C, H, W).
/// - Returns: (N, C, H, W).
/// - Precondition: `groups` divides C.
public func channelShuffle(_ x: Tensor, groups: Int) -> Tensor {
  checkNCHW(x, "channelShuffle")
  let (n, c, hw) = (x.shape[0], x.shape[1], x.shape[2] * x.shape[3])
  precondition(
    groups >= 1 && c % groups == 0,
    "channelShuffle: groups \(groups) must divide the \(c) channels of \(x.shape)")
  let per = c / groups
  let out = Tensor.uninitialized(x.shape)
  OperationCounter.add("channelShuffle", flops: 0, elements: 2 * out.count)
  permuteChannels(from: x.pointer, to: out.pointer, n: n, c: c, hw: hw) { i in
    (i % per) * groups + i / per
  }
  let shape = x.shape
  return record(out, inputs: [x]) { g in
    let dx = Tensor.uninitialized(shape)
    OperationCounter.add("channelShuffle backward", flops: 0, elements: 2 * dx.count)
    permuteChannels(from: g.pointer, to: dx.pointer, n: n, c: c, hw: hw) { j in
      (j % groups) * per + j / groups
    }
    return [dx]
  }
}

/// Copies input channel i to output channel `destination(i)` for every sample.
private func permuteChannels(
  from src: UnsafeMutablePointer<Float>, to dst: UnsafeMutablePointer<Float>,
  n: Int, c: Int, hw: Int, destination: (Int) -> Int
) {
  parallelFor(n * c, minChunk: max(1, 4096 / max(hw, 1))) { plane in
    let (s, i) = (plane / c, plane % c)
    (dst + (s * c + destination(i)) * hw).update(from: src + plane * hw, count: hw)
  }
}

/// The spatial slice `x[:, :, top:, left:]` (FactorizedReduce's second path uses 1:, 1:).
/// - Returns: (N, C, H − top, W − left).
public func cropTopLeft(_ x: Tensor, top: Int, left: Int) -> Tensor {
  checkNCHW(x, "cropTopLeft")
  let (n, c, h, w) = (x.shape[0], x.shape[1], x.shape[2], x.shape[3])
  precondition(
    top >= 0 && left >= 0 && top < h && left < w,
    "cropTopLeft: offsets (\(top), \(left)) must lie inside the \(h)×\(w) planes of \(x.shape)")
  let (oh, ow) = (h - top, w - left)
  let out = Tensor.uninitialized([n, c, oh, ow])
  OperationCounter.add("cropTopLeft", flops: 0, elements: 2 * out.count)
  parallelFor(n * c, minChunk: 16) { plane in
    for r in 0..<oh {
      (out.pointer + (plane * oh + r) * ow).update(from: x.pointer + plane * h * w + (r + top) * w + left, count: ow)
    }
  }
  let shape = x.shape
  return record(out, inputs: [x]) { g in
    let dx = Tensor(zeros: shape)
    OperationCounter.add("cropTopLeft backward", flops: 0, elements: dx.count + 2 * g.count)
    parallelFor(n * c, minChunk: 16) { plane in
      for r in 0..<oh {
        (dx.pointer + plane * h * w + (r + top) * w + left).update(from: g.pointer + (plane * oh + r) * ow, count: ow)
      }
    }
    return [dx]
  }
}

/// DARTS's `Zero` op: zeros shaped like `x[:, :, ::stride, ::stride]`. No gradient flows back.
/// - Returns: (N, C, ⌈H/stride⌉, ⌈W/stride⌉).
public func zerosLike(_ x: Tensor, stride: Int) -> Tensor {
  checkNCHW(x, "zerosLike")
  precondition(stride >= 1, "zerosLike: stride must be ≥ 1, got \(stride)")
  let (h, w) = (x.shape[2], x.shape[3])
  return Tensor(zeros: [x.shape[0], x.shape[1], (h + stride - 1) / stride, (w + stride - 1) / stride])
}

/// The same values under a new shape (storage shared, no copy).
/// - Precondition: the element counts agree.
public func reshape(_ x: Tensor, _ shape: [Int]) -> Tensor {
  precondition(shape.reduce(1, *) == x.count, "reshape: cannot view \(x.shape) as \(shape)")
  let out = Tensor(shape: shape, storage: x.storage)
  let shape = x.shape
  return record(out, inputs: [x]) { g in [Tensor(shape: shape, storage: g.storage)] }
}

/// Elements `range` along the first axis, like `x[range]` (a copy): rows of a matrix or a span of
/// a vector, e.g. one edge's α row or one node's β segment.
public func slice(_ x: Tensor, _ range: Range<Int>) -> Tensor {
  precondition(x.rank >= 1, "slice: needs rank ≥ 1, got a scalar")
  precondition(
    range.lowerBound >= 0 && range.upperBound <= x.shape[0] && !range.isEmpty,
    "slice: range \(range) is outside the first axis of \(x.shape)")
  let inner = x.count / max(x.shape[0], 1)
  let out = Tensor.uninitialized([range.count] + x.shape.dropFirst())
  out.pointer.update(from: x.pointer + range.lowerBound * inner, count: out.count)
  let shape = x.shape
  return record(out, inputs: [x]) { g in
    let dx = Tensor(zeros: shape)
    (dx.pointer + range.lowerBound * inner).update(from: g.pointer, count: g.count)
    return [dx]
  }
}

/// Concatenates tensors along the first axis (equal trailing shapes).
public func concatRows(_ xs: [Tensor]) -> Tensor {
  precondition(!xs.isEmpty, "concatRows: needs at least one tensor")
  let tail = Array(xs[0].shape.dropFirst())
  for x in xs {
    precondition(
      x.rank >= 1 && Array(x.shape.dropFirst()) == tail,
      "concatRows: shapes \(xs[0].shape) and \(x.shape) differ after the first axis")
  }
  let out = Tensor.uninitialized([xs.map { $0.shape[0] }.reduce(0, +)] + tail)
  var offset = 0
  for x in xs {
    (out.pointer + offset).update(from: x.pointer, count: x.count)
    offset += x.count
  }
  let shapes = xs.map(\.shape)
  return record(out, inputs: xs) { g in
    var offset = 0
    return shapes.map { shape in
      let dx = Tensor.uninitialized(shape)
      dx.pointer.update(from: g.pointer + offset, count: dx.count)
      offset += dx.count
      return dx
    }
  }
}

/// `channelShuffle(concatChannels([a, b[:, bChannels]]), groups:)` in one pass, without
/// materialising the slice or the concatenation: the partial-channel merge of a PC-DARTS edge
/// (processed channels `a`, bypass channels taken straight from the edge input `b`).
/// - Parameters:
///   - a: (N, Ca, H, W).
///   - b: (N, Cb, H, W); only `bChannels` are used.
/// - Returns: (N, Ca + bChannels.count, H, W).
/// - Precondition: `groups` divides the output channels; N, H, W agree.
public func shuffledConcat(_ a: Tensor, _ b: Tensor, bChannels: Range<Int>, groups: Int) -> Tensor {
  checkNCHW(a, "shuffledConcat")
  checkNCHW(b, "shuffledConcat")
  precondition(
    a.shape[0] == b.shape[0] && a.shape[2...] == b.shape[2...],
    "shuffledConcat: shapes \(a.shape) and \(b.shape) differ outside the channel axis")
  precondition(
    bChannels.lowerBound >= 0 && bChannels.upperBound <= b.shape[1],
    "shuffledConcat: channels \(bChannels) are outside the \(b.shape[1]) channels of \(b.shape)")
  let (n, ca, cb, hw) = (a.shape[0], a.shape[1], b.shape[1], a.shape[2] * a.shape[3])
  let c = ca + bChannels.count
  precondition(groups >= 1 && c % groups == 0, "shuffledConcat: groups \(groups) must divide \(c) channels")
  let per = c / groups
  // Output channel o holds concatenated channel (o mod groups)·per + ⌊o / groups⌋.
  let source = (0..<c).map { o in (o % groups) * per + o / groups }
  let out = Tensor.uninitialized([n, c, a.shape[2], a.shape[3]])
  OperationCounter.add("shuffledConcat", flops: 0, elements: 2 * out.count)
  let offset = bChannels.lowerBound
  parallelFor(n * c, minChunk: max(1, 4096 / max(hw, 1))) { plane in
    let (s, o) = (plane / c, plane % c)
    let ci = source[o]
    let src = ci < ca ? a.pointer + (s * ca + ci) * hw : b.pointer + (s * cb + offset + ci - ca) * hw
    (out.pointer + plane * hw).update(from: src, count: hw)
  }
  let (shapeA, shapeB) = (a.shape, b.shape)
  return record(out, inputs: [a, b]) { g in
    let da = Tensor.uninitialized(shapeA)
    let db = Tensor(zeros: shapeB)
    OperationCounter.add("shuffledConcat backward", flops: 0, elements: db.count + 2 * g.count)
    parallelFor(n * c, minChunk: max(1, 4096 / max(hw, 1))) { plane in
      let (s, o) = (plane / c, plane % c)
      let ci = source[o]
      let dst = ci < ca ? da.pointer + (s * ca + ci) * hw : db.pointer + (s * cb + offset + ci - ca) * hw
      dst.update(from: g.pointer + plane * hw, count: hw)
    }
    return [da, db]
  }
}
