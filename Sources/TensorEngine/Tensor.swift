// Dimension legend used across the engine:
//   N batch, C channels, H height, W width, K kernel size, O output features.
// Every tensor is Float32, contiguous, row-major; image tensors are (N, C, H, W).

import Foundation

/// The memory behind a tensor: a contiguous, owned buffer of `Float`s.
///
/// Every allocation is counted by ``MemoryStats`` and uncounted when the buffer dies, so the
/// figures reflect exactly the tensor bytes alive at a moment.
public final class Storage: @unchecked Sendable {
  /// The first element.
  public let pointer: UnsafeMutablePointer<Float>
  /// The number of elements.
  public let count: Int
  /// What the bytes are attributed to (``MemoryStats/attributing(to:_:)``), as an index.
  private let tag: Int

  /// Allocates `count` elements, zeroed when `zeroed` is true.
  init(count: Int, zeroed: Bool) {
    precondition(count >= 0, "Storage: negative element count \(count)")
    Engine.applyDefaultAllocatorSettings()
    self.count = count
    pointer = UnsafeMutablePointer<Float>.allocate(capacity: max(count, 1))
    if zeroed { pointer.initialize(repeating: 0, count: count) }
    tag = MemoryStats.allocated(bytes: count * MemoryLayout<Float>.stride)
  }

  deinit {
    pointer.deallocate()
    MemoryStats.released(bytes: count * MemoryLayout<Float>.stride, tag: tag)
  }

  /// The elements as a buffer pointer.
  @inline(__always) public var buffer: UnsafeMutableBufferPointer<Float> {
    UnsafeMutableBufferPointer(start: pointer, count: count)
  }
}

/// Live and peak bytes of tensor storage, process wide.
///
/// Tests check that a forward+backward pass returns ``liveBytes`` to where it started (nothing
/// leaked, every saved activation released); a ``MemoryMeasurement`` gives the peak of a stretch
/// of work without disturbing any other measurement.
///
/// Every buffer is also attributed to what was running when it was allocated (``attributing(to:_:)``:
/// a search network names its stem, preprocessing, each candidate operation, node sums; autograd
/// names the backward pass), so a measurement can tell which tensors make its peak.
public enum MemoryStats {
  private static let lock = NSLock()
  nonisolated(unsafe) private static var live = 0
  nonisolated(unsafe) private static var peak = 0
  /// The measurements running now; each allocation raises their peaks.
  nonisolated(unsafe) private static var measurements: [MemoryMeasurement] = []
  /// Attribution names by index (0: none given) and the live bytes of each.
  nonisolated(unsafe) private static var tagNames = [unattributed]
  nonisolated(unsafe) private static var tagIndex = [unattributed: 0]
  nonisolated(unsafe) private static var liveByTag = [0]
  /// The attribution of allocations now (process wide: the worker threads of an op allocate on
  /// behalf of the thread that runs it).
  nonisolated(unsafe) private static var currentTag = 0

  /// The name of bytes allocated outside every ``attributing(to:_:)``: weights, gradients,
  /// optimizer state, batches.
  public static let unattributed = "other (weights, gradients, optimizer state, data)"

  static func allocated(bytes: Int) -> Int {
    lock.lock()
    defer { lock.unlock() }
    live += bytes
    liveByTag[currentTag] += bytes
    if live > peak { peak = live }
    for m in measurements where live > m.peak {
      m.peak = live
      if m.recordsBreakdown { m.peakByTag = liveByTag }
    }
    return currentTag
  }

  static func released(bytes: Int, tag: Int) {
    lock.lock()
    live -= bytes
    liveByTag[tag] -= bytes
    lock.unlock()
  }

  /// Runs `body` with the tensor buffers it allocates attributed to `name` (the innermost name
  /// wins when calls nest), for ``MemoryMeasurement/peakBreakdown``.
  public static func attributing<T>(to name: String, _ body: () throws -> T) rethrows -> T {
    lock.lock()
    let previous = currentTag
    if let index = tagIndex[name] {
      currentTag = index
    } else {
      currentTag = tagNames.count
      tagIndex[name] = currentTag
      tagNames.append(name)
      liveByTag.append(0)
    }
    lock.unlock()
    defer {
      lock.lock()
      currentTag = previous
      lock.unlock()
    }
    return try body()
  }

  fileprivate static func names(_ byTag: [Int]) -> [(name: String, bytes: Int)] {
    lock.lock()
    defer { lock.unlock() }
    return zip(tagNames, byTag).map { ($0, $1) }
  }

  /// Bytes of tensor storage alive now.
  public static var liveBytes: Int {
    lock.lock()
    defer { lock.unlock() }
    return live
  }

  /// The largest value of ``liveBytes`` since the process started.
  public static var peakBytes: Int {
    lock.lock()
    defer { lock.unlock() }
    return peak
  }

  /// Runs `body` and returns its result with the peak of tensor bytes while it ran.
  public static func measure<T>(_ body: () throws -> T) rethrows -> (result: T, peak: MemoryMeasurement) {
    let measurement = MemoryMeasurement()
    defer { measurement.stop() }
    return (try body(), measurement)
  }

  fileprivate static func start(_ m: MemoryMeasurement) -> Int {
    lock.lock()
    defer { lock.unlock() }
    m.peak = live
    if m.recordsBreakdown { m.peakByTag = liveByTag }
    measurements.append(m)
    return live
  }

  fileprivate static func stop(_ m: MemoryMeasurement) {
    lock.lock()
    measurements.removeAll { $0 === m }
    lock.unlock()
  }

  fileprivate static func read(_ m: MemoryMeasurement) -> Int {
    lock.lock()
    defer { lock.unlock() }
    return m.peak
  }

  fileprivate static func readBreakdown(_ m: MemoryMeasurement) -> [Int] {
    lock.lock()
    defer { lock.unlock() }
    return m.peakByTag
  }
}

/// The peak of tensor bytes from the moment it is created until ``stop()``: measurements nest and
/// overlap freely (an epoch's inside a benchmark's, say), none resets another.
public final class MemoryMeasurement: @unchecked Sendable {
  /// Live bytes when the measurement started.
  public private(set) var startBytes = 0
  /// Guarded by MemoryStats' lock.
  fileprivate var peak = 0
  /// The live bytes per attribution at the peak (guarded by MemoryStats' lock).
  fileprivate var peakByTag: [Int] = []
  /// Whether ``peakBreakdown`` is kept (a copy of a few counters at every new peak).
  fileprivate let recordsBreakdown: Bool
  private var running = true

  /// Starts measuring now; with `breakdown`, also what the live bytes at the peak were
  /// attributed to (``peakBreakdown``).
  public init(breakdown: Bool = false) {
    recordsBreakdown = breakdown
    startBytes = MemoryStats.start(self)
  }

  /// With `breakdown`: the live bytes at the peak per attribution (``MemoryStats/attributing(to:_:)``),
  /// largest first, zeros left out; they add up to ``peakBytes``.
  public var peakBreakdown: [(name: String, bytes: Int)] {
    MemoryStats.names(MemoryStats.readBreakdown(self)).filter { $0.bytes != 0 }.sorted { $0.bytes > $1.bytes }
  }

  deinit { if running { MemoryStats.stop(self) } }

  /// The largest number of live tensor bytes since the start (until ``stop()``, if called).
  public var peakBytes: Int { MemoryStats.read(self) }

  /// ``peakBytes`` minus ``startBytes``: what the measured work added at its peak.
  public var growthBytes: Int { peakBytes - startBytes }

  /// Ends the measurement; the figures keep their values.
  public func stop() {
    guard running else { return }
    running = false
    MemoryStats.stop(self)
  }
}

/// An n-dimensional Float32 array that records the operations applied to it, so that
/// ``backward()`` can compute gradients by reverse-mode automatic differentiation.
///
/// Operations are free functions (``conv2d(_:weight:bias:stride:padding:dilation:groups:)``,
/// ``relu(_:)``, …). A tensor that ``requiresGrad`` and was not produced by an operation is a
/// leaf; its gradient accumulates in ``grad``.
public final class Tensor: @unchecked Sendable {
  /// The extent of every dimension, outermost first.
  public let shape: [Int]
  /// The elements, row-major.
  public let storage: Storage
  /// Whether gradients flow to (or through) this tensor. Settable on leaves, to freeze or
  /// unfreeze a parameter (a frozen parameter costs its ops no gradient work).
  public var requiresGrad: Bool {
    willSet {
      precondition(node == nil, "requiresGrad: only a leaf tensor can be frozen or unfrozen")
    }
  }
  /// The accumulated gradient of a leaf after ``backward()``; `nil` before any.
  public var grad: Tensor?
  /// The operation that produced this tensor, while its graph is alive.
  var node: GradNode?

  /// Creates a tensor over existing storage.
  init(shape: [Int], storage: Storage, requiresGrad: Bool = false) {
    precondition(
      shape.reduce(1, *) == storage.count,
      "Tensor: shape \(shape) needs \(shape.reduce(1, *)) elements, storage has \(storage.count)")
    self.shape = shape
    self.storage = storage
    self.requiresGrad = requiresGrad
  }

  /// A tensor of zeros.
  /// - Parameters:
  ///   - shape: the extent of each dimension.
  ///   - requiresGrad: whether this leaf collects gradients.
  public convenience init(zeros shape: [Int], requiresGrad: Bool = false) {
    Tensor.checkShape(shape)
    self.init(
      shape: shape, storage: Storage(count: shape.reduce(1, *), zeroed: true),
      requiresGrad: requiresGrad)
  }

  /// A tensor holding `data` in row-major order.
  /// - Precondition: `data.count` equals the product of `shape`.
  public convenience init(shape: [Int], data: [Float], requiresGrad: Bool = false) {
    Tensor.checkShape(shape)
    precondition(
      data.count == shape.reduce(1, *),
      "Tensor: shape \(shape) needs \(shape.reduce(1, *)) values, got \(data.count)")
    let storage = Storage(count: data.count, zeroed: false)
    data.withUnsafeBufferPointer { src in
      if let base = src.baseAddress { storage.pointer.initialize(from: base, count: data.count) }
    }
    self.init(shape: shape, storage: storage, requiresGrad: requiresGrad)
  }

  /// A tensor filled with `value`.
  public convenience init(repeating value: Float, shape: [Int], requiresGrad: Bool = false) {
    Tensor.checkShape(shape)
    let storage = Storage(count: shape.reduce(1, *), zeroed: false)
    storage.pointer.initialize(repeating: value, count: storage.count)
    self.init(shape: shape, storage: storage, requiresGrad: requiresGrad)
  }

  /// A scalar (rank-0) tensor.
  public convenience init(scalar: Float, requiresGrad: Bool = false) {
    self.init(shape: [], data: [scalar], requiresGrad: requiresGrad)
  }

  /// An uninitialised tensor for kernels that write every element.
  static func uninitialized(_ shape: [Int]) -> Tensor {
    Tensor(shape: shape, storage: Storage(count: shape.reduce(1, *), zeroed: false))
  }

  private static func checkShape(_ shape: [Int]) {
    precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in shape \(shape)")
  }

  /// The number of elements.
  @inline(__always) public var count: Int { storage.count }
  /// The number of dimensions.
  public var rank: Int { shape.count }
  /// The elements as a read-write pointer (no copy).
  @inline(__always) public var pointer: UnsafeMutablePointer<Float> { storage.pointer }
  /// A copy of the elements, row-major.
  public var scalars: [Float] { Array(storage.buffer) }

  /// The single element of a one-element tensor.
  /// - Precondition: the tensor has exactly one element.
  public var item: Float {
    precondition(count == 1, "Tensor.item: tensor of shape \(shape) has \(count) elements, not 1")
    return pointer[0]
  }

  /// A copy that shares no storage and no graph, like PyTorch's `detach().clone()`.
  public func copy(requiresGrad: Bool = false) -> Tensor {
    let out = Tensor.uninitialized(shape)
    out.pointer.update(from: pointer, count: count)
    out.requiresGrad = requiresGrad
    return out
  }

  /// A tensor sharing this one's storage but cut off from the graph.
  public func detached() -> Tensor { Tensor(shape: shape, storage: storage) }

  /// Overwrites the elements with `other`'s, in place, outside of autograd.
  /// - Precondition: both tensors have the same shape.
  public func assign(_ other: Tensor) {
    precondition(shape == other.shape, "assign: shape \(shape) differs from \(other.shape)")
    pointer.update(from: other.pointer, count: count)
  }

  /// Sets every element to `value`, in place, outside of autograd.
  public func fill(_ value: Float) {
    pointer.update(repeating: value, count: count)
  }
}

extension Tensor: CustomStringConvertible {
  /// The shape and the first eight values.
  public var description: String {
    let shown = scalars.prefix(8).map { String(format: "%.5g", $0) }.joined(separator: ", ")
    return "Tensor(shape: \(shape), [\(shown)\(count > 8 ? ", …" : "")])"
  }
}

/// A shape check shared by every op: fails naming the op and both shapes.
@inline(__always)
func checkSameShape(_ a: Tensor, _ b: Tensor, _ op: String) {
  precondition(a.shape == b.shape, "\(op): shapes \(a.shape) and \(b.shape) differ")
}

/// Fails unless `x` is a rank-4 (N, C, H, W) tensor.
@inline(__always)
func checkNCHW(_ x: Tensor, _ op: String) {
  precondition(x.rank == 4, "\(op): expects an (N, C, H, W) tensor, got shape \(x.shape)")
}
