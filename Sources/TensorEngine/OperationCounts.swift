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
public struct OperationCounts: Sendable, Equatable {
  /// Floating-point operations.
  public var flops: Double
  /// Bytes read and written.
  public var bytes: Double

  /// - Parameters: see the type's description.
  public init(flops: Double = 0, bytes: Double = 0) {
    self.flops = flops
    self.bytes = bytes
  }

  /// FLOPs per byte moved: above the machine's ratio of peak FLOP/s to memory bandwidth the work
  /// can be compute-bound, below it it is bandwidth-bound.
  public var arithmeticIntensity: Double { bytes > 0 ? flops / bytes : 0 }
}

/// Counts ``OperationCounts`` of the engine's ops.
public enum OperationCounter {
  /// Nesting depth of ``counting(_:)``; the ops check it before they add anything.
  private static let depth = Atomic<Int>(0)
  private static let flops = Atomic<Int>(0)
  private static let elements = Atomic<Int>(0)

  /// Runs `body` and returns its result with what the engine's ops computed and moved while it
  /// ran, on every thread (counts nest: an inner count does not reset an outer one).
  public static func counting<T>(_ body: () throws -> T) rethrows -> (result: T, counts: OperationCounts) {
    let (f0, e0) = (flops.load(ordering: .relaxed), elements.load(ordering: .relaxed))
    depth.add(1, ordering: .relaxed)
    defer { depth.subtract(1, ordering: .relaxed) }
    let result = try body()
    let counts = OperationCounts(
      flops: Double(flops.load(ordering: .relaxed) - f0),
      bytes: Double(elements.load(ordering: .relaxed) - e0) * Double(MemoryLayout<Float>.size))
    return (result, counts)
  }

  /// Adds an op's floating-point operations and the float elements it read and wrote, when a
  /// count is running (a relaxed atomic load otherwise). The engine's ops call it in their forward
  /// pass and in their backward closures; an op defined outside the engine (with
  /// ``record(_:inputs:backward:)``) calls it the same way to be counted.
  @inline(__always) public static func add(flops f: Int, elements e: Int) {
    guard depth.load(ordering: .relaxed) > 0 else { return }
    flops.add(f, ordering: .relaxed)
    elements.add(e, ordering: .relaxed)
  }
}
