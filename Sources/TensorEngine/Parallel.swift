// Work splitting for the direct kernels.
//
// OpenBLAS is pinned to one thread (see `BLAS.swift`) and the engine spreads work across the
// cores itself, one chunk per core: the two thread pools never compete for the same cores, and
// small matrices (the 1/K-channel convolutions of PC-DARTS) are multiplied per sample in
// parallel instead of being split inside sgemm, where they are too small to scale.
//
// A search step runs thousands of small parallel loops (a 2-channel plane set at K = 8 takes
// tens of microseconds). Waking a sleeping Dispatch worker costs about as much, which showed up
// as 15% of a step in scheduler functions under perf. So the engine keeps its own workers, one
// per extra core, that spin briefly for the next loop before they sleep.

import Dispatch
import Foundation
import Synchronization
import _CKernels

/// Runs `body(lo, hi)` over a partition of `0..<count` into at most ``Engine/threadCount`` chunks; chunks
/// smaller than `minChunk` items are merged so that tiny loops stay on the calling thread.
@inline(__always)
public func parallelChunks(_ count: Int, minChunk: Int = 1, _ body: (Int, Int) -> Void) {
  guard count > 0 else { return }
  let chunks = chunkCount(count, minChunk: minChunk)
  if chunks == 1 {
    body(0, count)
    return
  }
  WorkerPool.shared.run(chunks) { chunk in
    let lo = count * chunk / chunks
    let hi = count * (chunk + 1) / chunks
    if lo < hi { body(lo, hi) }
  }
}

/// ``parallelChunks(_:minChunk:_:)`` with `scratch` floats of working memory for each chunk,
/// `body(lo, hi, scratch)`. The scratch of every chunk is allocated before any chunk runs, so
/// the tensor bytes a loop takes do not depend on which of its chunks happen to run at the same
/// time: peak memory measurements repeat exactly.
func parallelChunks(
  _ count: Int, minChunk: Int = 1, scratch: Int, zeroed: Bool = false,
  _ body: (Int, Int, UnsafeMutablePointer<Float>) -> Void
) {
  guard count > 0 else { return }
  let chunks = chunkCount(count, minChunk: minChunk)
  let storage = Storage(count: chunks * scratch, zeroed: zeroed)
  withExtendedLifetime(storage) {
    if chunks == 1 {
      body(0, count, storage.pointer)
      return
    }
    WorkerPool.shared.run(chunks) { chunk in
      let lo = count * chunk / chunks
      let hi = count * (chunk + 1) / chunks
      if lo < hi { body(lo, hi, storage.pointer + chunk * scratch) }
    }
  }
}

/// The number of chunks ``parallelChunks(_:minChunk:_:)`` splits `count` items into.
@inline(__always)
func chunkCount(_ count: Int, minChunk: Int) -> Int {
  min(Engine.threadCount, max(1, count / max(minChunk, 1)))
}

/// Persistent workers that share the chunks of a loop with the caller.
///
/// Chunks are claimed, not assigned: the caller and the workers take chunk numbers from one
/// atomic ticket until none is left, so a worker that the OS has descheduled (a busy machine)
/// never holds the caller up; the caller only waits for chunks a worker is actually running.
/// The ticket packs the loop's generation, its chunk count and the next chunk, so a worker that
/// wakes up late cannot claim a chunk of a loop that has moved on.
///
/// Slots for ``Engine/maximumThreadCount`` − 1 workers exist from the start; threads are started
/// when ``Engine/threadCount`` first asks for them, and workers beyond the active count sleep.
final class WorkerPool: @unchecked Sendable {
  static let shared: WorkerPool = {
    let pool = WorkerPool(capacity: Engine.maximumThreadCount - 1)
    pool.setActiveWorkers(Engine.threadCount - 1)
    return pool
  }()

  /// generation (bits 32…62) | chunk count (bits 16…31) | next chunk (bits 0…15).
  private let ticket = Atomic<Int>(0)
  /// Chunks finished in the current loop.
  private let finished = Atomic<Int>(0)
  /// Whether a worker is (about to go) asleep, per worker.
  private let sleeping: [Flag]
  private let wakeUp: [DispatchSemaphore]
  /// The current loop's body; stable while any of its chunks can still be claimed or running.
  nonisolated(unsafe) private var body: ((Int) -> Void)?
  /// One loop at a time; a nested or concurrent call runs serially instead.
  private let busy = Atomic<Bool>(false)
  /// Workers that take part in loops (the first `active` slots), and threads started so far.
  private let active = Atomic<Int>(0)
  nonisolated(unsafe) private var started = 0
  nonisolated(unsafe) private var generation = 0

  private init(capacity: Int) {
    sleeping = (0..<capacity).map { _ in Flag() }
    wakeUp = (0..<capacity).map { _ in DispatchSemaphore(value: 0) }
  }

  /// Makes the first `count` workers take part in loops, starting threads as needed.
  func setActiveWorkers(_ count: Int) {
    precondition(count >= 0 && count <= sleeping.count, "WorkerPool: \(count) workers exceed \(sleeping.count)")
    // Wait for a running loop to end, then hold the pool while the workers change.
    while !busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged { sched_yield() }
    defer { busy.store(false, ordering: .releasing) }
    while started < count {
      let index = started
      let thread = Thread { [self] in work(index) }
      thread.stackSize = 1 << 20
      thread.start()
      started += 1
    }
    active.store(count, ordering: .releasing)
  }

  /// Runs `task(chunk)` for chunk in 0..<count, spread over the caller and the workers.
  func run(_ count: Int, _ task: (Int) -> Void) {
    let workers = active.load(ordering: .acquiring)
    guard workers > 0, count > 1, count < 1 << 16,
      busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    else {
      for chunk in 0..<count { task(chunk) }
      return
    }
    defer { busy.store(false, ordering: .releasing) }
    withoutActuallyEscaping(task) { task in
      body = task
      finished.store(0, ordering: .relaxed)
      generation = (generation + 1) & 0x7FFF_FFFF
      let myGeneration = generation
      ticket.store(myGeneration << 32 | count << 16, ordering: .releasing)
      for w in 0..<workers where sleeping[w].value.load(ordering: .sequentiallyConsistent) {
        wakeUp[w].signal()
      }
      while let chunk = claim(generation: myGeneration) {
        task(chunk)
        finished.add(1, ordering: .releasing)
      }
      var spins = 0
      while finished.load(ordering: .acquiring) < count {
        spins += 1
        if spins < 4_000 { spinPause() } else { sched_yield() }
      }
      body = nil
    }
  }

  /// Takes the next chunk of loop `generation`, or nil when none is left (or the loop is over).
  @inline(__always) private func claim(generation: Int) -> Int? {
    var current = ticket.load(ordering: .acquiring)
    while true {
      let (g, count, next) = (current >> 32, (current >> 16) & 0xFFFF, current & 0xFFFF)
      guard g == generation, next < count else { return nil }
      let (exchanged, original) = ticket.compareExchange(
        expected: current, desired: current + 1, ordering: .acquiringAndReleasing)
      if exchanged { return next }
      current = original
    }
  }

  private func work(_ index: Int) {
    var seen = 0
    while true {
      var spins = 0
      var current = ticket.load(ordering: .acquiring) >> 32
      while current == seen {
        spins += 1
        if spins < 20_000 {
          spinPause()
        } else {
          // Idle for a while (tens of µs): sleep until the next loop signals.
          sleeping[index].value.store(true, ordering: .sequentiallyConsistent)
          if ticket.load(ordering: .sequentiallyConsistent) >> 32 == seen { wakeUp[index].wait() }
          sleeping[index].value.store(false, ordering: .sequentiallyConsistent)
          spins = 0
        }
        current = ticket.load(ordering: .acquiring) >> 32
      }
      seen = current
      // A worker beyond the active count leaves the loop to the others and goes back to sleep.
      guard index < active.load(ordering: .acquiring) else { continue }
      while let chunk = claim(generation: current) {
        // A successful claim means the loop is still running, so `body` is its body.
        body!(chunk)
        finished.add(1, ordering: .releasing)
      }
    }
  }
}

/// An atomic Boolean in its own object, so that a list of them can be kept.
private final class Flag: Sendable {
  let value = Atomic<Bool>(false)
}

/// A hint to the processor that this is a spin-wait loop.
@inline(__always) private func spinPause() {
  pcd_spin_pause()
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
  let chunks = min(Engine.threadCount, max(1, count / max(minChunk, 1)))
  if chunks == 1 { return body(0, count) }
  var partial = [Double](repeating: 0, count: chunks)
  partial.withUnsafeMutableBufferPointer { part in
    WorkerPool.shared.run(chunks) { chunk in
      part[chunk] = body(count * chunk / chunks, count * (chunk + 1) / chunks)
    }
  }
  return partial.reduce(0, +)
}
