// The two roofs of a roofline on this machine, measured the way the engine works: every thread
// of ``Engine/threadCount`` runs its own single-threaded sgemm (as the convolutions do), and
// streams its own share of a large array through one affine pass (as the element-wise kernels
// do). A step's ``OperationCounts`` against these tell whether it is bound by arithmetic or by
// memory, and how far below either roof it runs.

import Foundation

/// Measured peak arithmetic and memory rates of this machine for the engine's threads.
public struct MachinePeaks: Sendable, Equatable, Codable {
  /// Floating-point operations per second of square sgemm products, all threads together.
  public var matrixProductFLOPS: Double
  /// Bytes read and written per second by a streaming element-wise pass, all threads together.
  public var memoryBytesPerSecond: Double

  /// - Parameters: see the properties.
  public init(matrixProductFLOPS: Double, memoryBytesPerSecond: Double) {
    self.matrixProductFLOPS = matrixProductFLOPS
    self.memoryBytesPerSecond = memoryBytesPerSecond
  }

  /// The FLOPs per byte at which the two roofs meet: work of lower arithmetic intensity cannot
  /// reach the sgemm peak even with every byte at full bandwidth.
  public var ridgeIntensity: Double { matrixProductFLOPS / memoryBytesPerSecond }

  /// The fastest `counts` could run under the roofline model: the larger of its FLOPs at the
  /// sgemm peak and its bytes at the bandwidth, in seconds.
  public func roofSeconds(_ counts: OperationCounts) -> Double {
    max(counts.flops / matrixProductFLOPS, counts.bytes / memoryBytesPerSecond)
  }

  /// Measures both roofs on ``Engine/threadCount`` threads: the best of `trials` timings of
  /// `size`³ products (each thread its own) and of passes over `arrayBytes` of input.
  /// - Precondition: size ≥ 16, arrayBytes ≥ 1 MiB, trials ≥ 1.
  public static func measure(size: Int = 512, arrayBytes: Int = 256 << 20, trials: Int = 3) -> MachinePeaks {
    precondition(size >= 16 && arrayBytes >= 1 << 20 && trials >= 1, "MachinePeaks.measure: sizes too small")
    return MachinePeaks(
      matrixProductFLOPS: measureMatrixProducts(size: size, trials: trials),
      memoryBytesPerSecond: measureBandwidth(arrayBytes: arrayBytes, trials: trials))
  }

  private static func measureMatrixProducts(size n: Int, trials: Int) -> Double {
    let threads = Engine.threadCount
    let a = Storage(count: threads * 3 * n * n, zeroed: false)
    for i in 0..<(threads * 3 * n * n) { a.pointer[i] = Float(i % 7) * 0.125 }
    // Enough products per thread for about 0.2 s at 100 GFLOP/s per core.
    let repeats = max(1, 10_000_000_000 / (n * n * n))
    var best = 0.0
    for _ in 0...trials {  // the first round warms up OpenBLAS and the caches
      let start = Date()
      WorkerPool.shared.run(threads) { t in
        let base = a.pointer + t * 3 * n * n
        for _ in 0..<repeats {
          sgemm(
            transA: false, transB: false, m: n, n: n, k: n, alpha: 1, a: base, lda: n,
            b: base + n * n, ldb: n, beta: 0, c: base + 2 * n * n, ldc: n)
        }
      }
      let seconds = Date().timeIntervalSince(start)
      best = max(best, 2 * Double(n * n * n) * Double(repeats * threads) / seconds)
    }
    return best
  }

  private static func measureBandwidth(arrayBytes: Int, trials: Int) -> Double {
    let count = arrayBytes / MemoryLayout<Float>.size
    let x = Storage(count: count, zeroed: true)
    let y = Storage(count: count, zeroed: true)
    let chunks = Engine.threadCount
    var best = 0.0
    for _ in 0...trials {  // the first pass faults the pages in
      let start = Date()
      WorkerPool.shared.run(chunks) { chunk in
        let lo = count * chunk / chunks, hi = count * (chunk + 1) / chunks
        affine(hi - lo, x.pointer + lo, 1.5, 0.5, y.pointer + lo)
      }
      let seconds = Date().timeIntervalSince(start)
      best = max(best, 2 * Double(count * MemoryLayout<Float>.size) / seconds)
    }
    return best
  }
}
