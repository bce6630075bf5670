// What the engine's kernels compute and move, for roofline figures: each op adds its floating-
// point operations and the bytes of the tensors it reads and writes while a count is running.
// The counts follow the shapes, not the hardware, so they are the same on every machine.

import Synchronization

/// The arithmetic and memory traffic of a stretch of engine work.
///
/// - ``flops``: 2 per multiply-add of a convolution or matrix product (the usual convention), and
///   for the other kernels the arithmetic operations of their formula per element (a ReLU 1, an
///   affine map 2, a batch norm's statistics 3 per input element).
/// - ``bytes``: each op's reads of its input tensors and writes of its outputs (4 bytes per
///   element), counted once per op, as if no tensor stayed in cache from one op to the next: the
///   compulsory traffic of an engine that runs op by op. Scratch buffers that stay in a core's
///   cache (im2col columns, padded planes) are not counted.
public struct OperationCounts: Sendable, Equatable, Codable {
  /// Floating-point operations.
  public var flops: Double
  /// Bytes read and written.
  public var bytes: Double
  /// The same figures per op (`conv2d`, `conv2d backward`, `batchNormReLU`, …), as the ops name
  /// themselves in ``OperationCounter/add(_:flops:elements:)``; they add up to the totals.
  public var byOperation: [String: OperationCounts]

  /// - Parameters: see the type's description.
  public init(flops: Double = 0, bytes: Double = 0, byOperation: [String: OperationCounts] = [:]) {
    self.flops = flops
    self.bytes = bytes
    self.byOperation = byOperation
  }

  /// FLOPs per byte moved: above the machine's ratio of peak FLOP/s to memory bandwidth the work
  /// can be compute-bound, below it it is bandwidth-bound.
  public var arithmeticIntensity: Double { bytes > 0 ? flops / bytes : 0 }

  /// The counts of two stretches of work together.
  public static func + (a: OperationCounts, b: OperationCounts) -> OperationCounts {
    OperationCounts(
      flops: a.flops + b.flops, bytes: a.bytes + b.bytes,
      byOperation: a.byOperation.merging(b.byOperation) { $0 + $1 })
  }

  /// Every figure divided by `n`: the counts per step of `n` equal steps.
  public func divided(by n: Double) -> OperationCounts {
    OperationCounts(flops: flops / n, bytes: bytes / n, byOperation: byOperation.mapValues { $0.divided(by: n) })
  }
}

/// Counts ``OperationCounts`` of the engine's ops.
public enum OperationCounter {
  /// Nesting depth of ``counting(_:)``; the ops check it before they add anything.
  private static let depth = Atomic<Int>(0)
  /// Running totals per op name: FLOPs and float elements.
  private static let totals = Mutex<[String: (flops: Int, elements: Int)]>([:])

  /// Runs `body` and returns its result with what the engine's ops computed and moved while it
  /// ran, on every thread (counts nest: an inner count does not reset an outer one).
  public static func counting<T>(_ body: () throws -> T) rethrows -> (result: T, counts: OperationCounts) {
    let before = totals.withLock { $0 }
    depth.add(1, ordering: .relaxed)
    defer { depth.subtract(1, ordering: .relaxed) }
    let result = try body()
    let after = totals.withLock { $0 }
    var counts = OperationCounts()
    for (name, total) in after {
      let earlier = before[name] ?? (0, 0)
      let (f, e) = (total.flops - earlier.flops, total.elements - earlier.elements)
      guard f != 0 || e != 0 else { continue }
      let op = OperationCounts(flops: Double(f), bytes: Double(e) * Double(MemoryLayout<Float>.size))
      counts.byOperation[name] = op
      counts.flops += op.flops
      counts.bytes += op.bytes
    }
    return (result, counts)
  }

  /// Adds the floating-point operations of the op `name` and the float elements it read and
  /// wrote, when a count is running (a relaxed atomic load otherwise). The engine's ops call it in
  /// their forward pass and in their backward closures (named `<op> backward`); an op defined
  /// outside the engine (with ``record(_:inputs:backward:)``) calls it the same way to be counted.
  @inline(__always) public static func add(_ name: String, flops f: Int, elements e: Int) {
    guard depth.load(ordering: .relaxed) > 0 else { return }
    totals.withLock {
      let total = $0[name] ?? (0, 0)
      $0[name] = (total.flops + f, total.elements + e)
    }
  }
}
