// Data parallelism (PyTorch's DistributedDataParallel, over any ``ProcessGroup``): every rank
// holds the whole model, takes its own rows of every global batch, and after each backward the
// ranks sum their gradients in a few large all-reduce calls, so that every rank applies the same
// update and the parameters stay identical. A single process is the group of one, for which
// every call here returns at once: the loops have one code path.
//
// The scaling that makes the sum the global batch's gradient: each rank seeds its backward with
// its share of the global batch, nᵣ/n, so the summed gradient is that of the global batch's mean
// loss (with per-rank batch norms, the mean of the ranks' gradients weighted by their rows; with
// synchronised batch norms, exactly the gradient of one process on the whole batch).

import Foundation
import NeuralNetwork
import TensorEngine

/// The rows of a global batch one rank takes.
public struct BatchShard: Equatable, Sendable {
  /// This rank's rows, as positions in the global batch.
  public var rows: Range<Int>
  /// The global batch's size, n.
  public var globalCount: Int

  /// The rows `rank` of `ranks` takes of a global batch of `count`: contiguous, in rank order,
  /// their sizes differing by at most one.
  public init(rank: Int, of ranks: Int, count: Int) {
    precondition(ranks >= 1 && (0..<ranks).contains(rank), "BatchShard: rank \(rank) is outside 0..<\(ranks)")
    rows = (rank * count / ranks)..<((rank + 1) * count / ranks)
    globalCount = count
  }

  /// The whole batch of `count` rows (a single process).
  public static func whole(_ count: Int) -> BatchShard { BatchShard(rank: 0, of: 1, count: count) }

  /// nᵣ/n: the weight of this rank's mean loss in the global batch's mean loss.
  public var share: Float { Float(rows.count) / Float(max(globalCount, 1)) }
}

/// What the collective calls of a ``DataParallel`` cost so far.
public struct CollectiveTraffic: Equatable, Sendable {
  /// All-reduce and broadcast calls.
  public var calls = 0
  /// Bytes each rank contributed to them.
  public var bytes = 0
  /// Wall time spent in them (waiting for slower ranks included).
  public var seconds = 0.0
}

/// The ranks of a ``ProcessGroup`` training one model on shards of each batch.
public final class DataParallel {
  /// The ranks; every collective call made through it (the synchronised batch norms' included)
  /// is counted in ``traffic``.
  public var group: ProcessGroup { counted }
  /// The largest gradient bucket, in elements: gradients are copied into buckets of at most this
  /// size and each bucket is summed with one all-reduce call (PyTorch's `bucket_cap_mb`, 25 MiB).
  public let bucketElements: Int
  /// The collective calls so far (zero in a single process, which makes none).
  public var traffic: CollectiveTraffic { counted.traffic }
  private let counted: CountedGroup

  /// - Parameters:
  ///   - group: the ranks (``SingleProcess/shared`` for one process).
  ///   - bucketMiB: the gradient bucket's size.
  public init(group: ProcessGroup = SingleProcess.shared, bucketMiB: Double = 25) {
    counted = CountedGroup(group)
    bucketElements = max(1, Int(bucketMiB * 1_048_576) / MemoryLayout<Float>.size)
  }

  /// This process's rank and the number of ranks.
  public var rank: Int { group.rank }
  /// The number of ranks.
  public var size: Int { group.size }
  /// Whether more than one rank takes part.
  public var isDistributed: Bool { group.size > 1 }

  /// The rows this rank takes of a global batch of `count`.
  public func shard(of count: Int) -> BatchShard { BatchShard(rank: rank, of: size, count: count) }

  /// Sums the gradients of `tensors` over the ranks, in buckets of at most ``bucketElements``,
  /// and `scalars` (loss sums, counts) with them; returns the summed scalars. A tensor without a
  /// gradient counts as zeros (and gets the sum). Every rank must pass the same tensors.
  @discardableResult
  public func allReduceGradients(_ tensors: [Tensor], scalars: [Double] = []) -> [Double] {
    guard isDistributed else { return scalars }
    var bucket: [Tensor] = []
    var filled = 0
    func flush() {
      guard !bucket.isEmpty else { return }
      let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: filled)
      defer { buffer.deallocate() }
      var offset = 0
      for t in bucket {
        if let g = t.grad {
          (buffer.baseAddress! + offset).update(from: g.pointer, count: t.count)
        } else {
          (buffer.baseAddress! + offset).update(repeating: 0, count: t.count)
        }
        offset += t.count
      }
      group.allReduceSum(buffer)
      offset = 0
      for t in bucket {
        if t.grad == nil { t.grad = Tensor(zeros: t.shape) }
        t.grad!.pointer.update(from: buffer.baseAddress! + offset, count: t.count)
        offset += t.count
      }
      (bucket, filled) = ([], 0)
    }
    for t in tensors {
      if filled + t.count > bucketElements { flush() }
      bucket.append(t)
      filled += t.count
    }
    flush()
    return scalars.isEmpty ? [] : allReduce(scalars)
  }

  /// `values` summed over the ranks.
  public func allReduce(_ values: [Double]) -> [Double] {
    guard isDistributed else { return values }
    return group.allReduceSum(values)
  }

  /// Gives every rank rank 0's values of `tensors` (batch-norm running statistics, which each
  /// rank updates from its own rows; DistributedDataParallel broadcasts them the same way).
  public func broadcastFromFirstRank(_ tensors: [Tensor]) {
    guard isDistributed else { return }
    let count = tensors.reduce(0) { $0 + $1.count }
    let buffer = UnsafeMutableBufferPointer<Float>.allocate(capacity: count)
    defer { buffer.deallocate() }
    var offset = 0
    for t in tensors {
      (buffer.baseAddress! + offset).update(from: t.pointer, count: t.count)
      offset += t.count
    }
    group.broadcast(UnsafeMutableRawBufferPointer(buffer), root: 0)
    offset = 0
    for t in tensors {
      t.pointer.update(from: buffer.baseAddress! + offset, count: t.count)
      offset += t.count
    }
  }

  /// Gives every rank rank 0's words (a generator's state).
  public func broadcastFromFirstRank(_ words: [UInt64]) -> [UInt64] {
    guard isDistributed else { return words }
    var copy = words
    copy.withUnsafeMutableBytes { group.broadcast($0, root: 0) }
    return copy
  }

  /// Checks that `tensors` hold the same bits on every rank (a 64-bit hash of them, rank 0's
  /// broadcast and compared), as a run does after every epoch.
  /// - Throws: ``SearchError/ranksDiverged(_:)`` naming the ranks that differ from rank 0.
  public func checkIdentical(_ tensors: [Tensor], what: String) throws {
    guard isDistributed else { return }
    let mine = checksum(tensors)
    let first = broadcastFromFirstRank([mine])[0]
    var differs = [Double](repeating: 0, count: size)
    differs[rank] = first == mine ? 0 : 1
    let ranks = allReduce(differs).enumerated().filter { $0.element != 0 }.map(\.offset)
    guard ranks.isEmpty else {
      throw SearchError.ranksDiverged(
        "the \(what) of rank\(ranks.count > 1 ? "s" : "") \(ranks.map(String.init).joined(separator: ", ")) "
          + "differ from rank 0's; the MPI library returned different sums to different ranks")
    }
  }

}

/// A group that counts the calls, bytes and time of every collective call it passes on.
private final class CountedGroup: ProcessGroup {
  let base: ProcessGroup
  var traffic = CollectiveTraffic()
  init(_ base: ProcessGroup) { self.base = base }
  var rank: Int { base.rank }
  var size: Int { base.size }
  func allReduceSum(_ values: UnsafeMutableBufferPointer<Float>) {
    counting(values.count * MemoryLayout<Float>.size) { base.allReduceSum(values) }
  }
  func allReduceSum(_ values: UnsafeMutableBufferPointer<Double>) {
    counting(values.count * MemoryLayout<Double>.size) { base.allReduceSum(values) }
  }
  func broadcast(_ bytes: UnsafeMutableRawBufferPointer, root: Int) {
    counting(bytes.count) { base.broadcast(bytes, root: root) }
  }
  private func counting(_ bytes: Int, _ call: () -> Void) {
    guard base.size > 1 else { return call() }
    let start = Date()
    call()
    traffic.calls += 1
    traffic.bytes += bytes
    traffic.seconds += Date().timeIntervalSince(start)
  }
}

/// FNV-1a over the bits of every element of `tensors`, in order.
func checksum(_ tensors: [Tensor]) -> UInt64 {
  var hash: UInt64 = 0xcbf2_9ce4_8422_2325
  for t in tensors {
    for i in 0..<t.count {
      hash = (hash ^ UInt64(t.pointer[i].bitPattern)) &* 0x0000_0100_0000_01B3
    }
  }
  return hash
}

extension Tensor {
  /// Backward from this rank's mean loss over the rows of `shard`, seeded with the shard's share
  /// nᵣ/n of the global batch, so that the ranks' gradients sum to the global batch's (1 in a
  /// single process: plain `backward()`).
  public func backward(shareOf shard: BatchShard) {
    backward(gradient: Tensor(repeating: shard.share, shape: shape))
  }
}
