// Work splitting for the direct kernels.
//
// OpenBLAS is pinned to one thread (see `BLAS.swift`) and the engine spreads work across the
// cores itself with Dispatch, one chunk per core: the two thread pools never compete for the
// same cores, and small matrices (the 1/K-channel convolutions of PC-DARTS) are multiplied
// per sample in parallel instead of being split inside sgemm, where they are too small to
// scale.

import Dispatch
import Foundation

/// The number of chunks work is split into: one per active core.
public let engineThreadCount: Int = max(1, ProcessInfo.processInfo.activeProcessorCount)

/// Runs `body(lo, hi)` over a partition of `0..<count` into at most one chunk per core; chunks
/// smaller than `minChunk` items are merged so that tiny loops stay on the calling thread.
@inline(__always)
public func parallelChunks(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
  guard count > 0 else { return }
  let chunks = min(engineThreadCount, max(1, count / max(minChunk, 1)))
  if chunks == 1 {
    body(0, count)
    return
  }
  DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
    let lo = count * chunk / chunks
    let hi = count * (chunk + 1) / chunks
    if lo < hi { body(lo, hi) }
  }
}

/// Runs `body(i)` for every `i` in `0..<count`, spread over the cores in contiguous chunks.
@inline(__always)
public func parallelFor(_ count: Int, minChunk: Int = 1, _ body: (Int) -> Void) {
  parallelChunks(count, minChunk: minChunk) { lo, hi in
    for i in lo..<hi { body(i) }
  }
}

/// Sums `body(lo, hi)` over a partition of `0..<count` computed across the cores; partial sums
/// are combined in chunk order, so the result does not depend on scheduling.
public func parallelSum(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Double) -> Double {
  guard count > 0 else { return 0 }
  let chunks = min(engineThreadCount, max(1, count / max(minChunk, 1)))
  if chunks == 1 { return body(0, count) }
  var partial = [Double](repeating: 0, count: chunks)
  partial.withUnsafeMutableBufferPointer { part in
    DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
      part[chunk] = body(count * chunk / chunks, count * (chunk + 1) / chunks)
    }
  }
  return partial.reduce(0, +)
}
