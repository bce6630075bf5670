// The engine's process-wide settings, in one place: how many threads its loops use, how many
// threads OpenBLAS uses, and whether freed tensor memory stays on the heap. Each has a default
// that the engine applies the first time it needs it; set them before the work they affect
// (from one thread, with no engine work running) to change them.

import COpenBLAS
import Foundation
import Synchronization
import _CKernels

/// Process-wide settings of the tensor engine.
public enum Engine {
  /// The largest ``threadCount`` accepted.
  public static let maximumThreadCount = 256

  /// The default ``threadCount``: one thread per active core.
  public static let defaultThreadCount = max(1, min(ProcessInfo.processInfo.activeProcessorCount, maximumThreadCount))

  private static let threads = Atomic<Int>(defaultThreadCount)

  /// The number of threads the engine's loops run on: the calling thread plus `threadCount − 1`
  /// workers of the engine's own pool. Loops are split into at most this many chunks and partial
  /// sums are combined in chunk order, so results are identical from run to run for a given
  /// thread count (and may differ in the last bits between counts).
  ///
  /// Under MPI or beside other busy processes, one thread per rank or per free core is usual.
  /// - Precondition: 1 ≤ value ≤ ``maximumThreadCount``; no engine work is running.
  public static var threadCount: Int {
    get { threads.load(ordering: .relaxed) }
    set {
      precondition(
        (1...maximumThreadCount).contains(newValue),
        "Engine.threadCount: \(newValue) is outside 1...\(maximumThreadCount)")
      WorkerPool.shared.setActiveWorkers(newValue - 1)
      threads.store(newValue, ordering: .relaxed)
    }
  }

  // MARK: - OpenBLAS

  nonisolated(unsafe) private static var blasThreads: Int?

  /// The threads OpenBLAS uses inside one `sgemm`; 1 unless set. The engine already runs
  /// convolutions' matrix products in parallel over samples, and a second pool of spinning BLAS
  /// threads would compete with its own for the same cores, so raise it only with
  /// ``threadCount`` = 1.
  /// - Precondition: value ≥ 1.
  public static var blasThreadCount: Int {
    get { blasThreads ?? 1 }
    set {
      precondition(newValue >= 1, "Engine.blasThreadCount: \(newValue) must be at least 1")
      blasThreads = newValue
      openblas_set_num_threads(Int32(newValue))
    }
  }

  /// The kernel set OpenBLAS runs its products with, as OpenBLAS names it (`"Haswell"`,
  /// `"SkylakeX"`, …).
  ///
  /// Debian's OpenBLAS (0.3.21) holds kernels for every x86 core and picks one at load time from
  /// the processor's family and model numbers; a model newer than it knows can get Prescott's SSE3
  /// kernels (on one of this project's VMs, an Intel model 207 with AVX-512), whatever the
  /// processor's feature flags say. At 09167a5, whose convolutions' backward products were still
  /// sgemm, a training step of the evaluation network ran at 0.58× its speed with Haswell's
  /// AVX2 + FMA kernels (`bench --train --batch 32 --iters 2`, two rounds: 15.0 and 15.7 against
  /// 26.6 and 26.4 images/s); now only the linear layers multiply with sgemm. So before the first
  /// product, where the processor runs AVX2 + FMA and OpenBLAS chose a core without them, the
  /// engine switches it to Haswell's. It changes nothing where `OPENBLAS_CORETYPE` is set (the
  /// user's choice, which OpenBLAS applies itself) or the library was built for a single core.
  ///
  /// It does not move an AVX2 core to an AVX-512 one: where OpenBLAS chose a core with AVX2, its
  /// choice stands (`OPENBLAS_CORETYPE=SkylakeX` gave 27.6 and 28.2 images/s in that step,
  /// 1.05×; set it where that matters).
  public static var blasCoreName: String {
    applyDefaultBLASSettings()
    return String(cString: openblas_get_corename())
  }

  private static let defaultBLASSettings: Void = {
    selectBLASCore()
    if blasThreads == nil { openblas_set_num_threads(1) }
  }()

  /// OpenBLAS's x86 cores with AVX2 + FMA kernels, lowercased.
  private static let vectorCores: Set<String> = ["haswell", "zen", "skylakex", "cooperlake", "sapphirerapids"]

  /// Re-initialises OpenBLAS's kernel table with Haswell's where the processor runs AVX2 + FMA and
  /// OpenBLAS chose a core without them (see ``blasCoreName``).
  private static func selectBLASCore() {
    guard getenv("OPENBLAS_CORETYPE") == nil, pcd_cpu_vector_level() >= 1,
      !vectorCores.contains(String(cString: openblas_get_corename()).lowercased()),
      // Only a DYNAMIC_ARCH build has these; it reads OPENBLAS_CORETYPE when it initialises.
      let quit = dlsym(nil, "gotoblas_dynamic_quit"), let initialise = dlsym(nil, "gotoblas_dynamic_init")
    else { return }
    typealias Entry = @convention(c) () -> Void
    setenv("OPENBLAS_CORETYPE", "Haswell", 1)
    defer { unsetenv("OPENBLAS_CORETYPE") }  // child processes choose for themselves
    unsafeBitCast(quit, to: Entry.self)()
    unsafeBitCast(initialise, to: Entry.self)()
  }

  /// Applies the default ``blasThreadCount`` unless one was set; the first matrix product calls it.
  @inline(__always) static func applyDefaultBLASSettings() { _ = defaultBLASSettings }

  // MARK: - Recomputation

  /// Whether a depthwise convolution followed by a 1×1 one (the halves of DARTS's separable and
  /// dilated convolutions, in a `Sequential`) runs as
  /// ``depthwisePointwiseConv2d(_:depthwiseWeight:pointwiseWeight:stride:padding:dilation:reluInput:)``,
  /// which recomputes the depthwise output in the backward pass instead of keeping it. The values
  /// and gradients are the same bit for bit; the peak memory of a search step falls by about a
  /// quarter (a third at K = 1), and with each sample's depthwise planes kept in cache it is no
  /// slower for the CIFAR networks (docs/benchmarks.md), slower with the ImageNet stem (the
  /// recomputed depthwise pass is a larger share there). Off unless set; the commands choose.
  nonisolated(unsafe) public static var recomputesDepthwiseOutputs = false

  // MARK: - Allocator

  nonisolated(unsafe) private static var retainsFreed: Bool?

  /// Whether freed tensor buffers stay on glibc's heap (true unless set) instead of being
  /// returned to the system. A training step frees and reallocates the same activation sizes
  /// thousands of times, and every fresh mapping costs a page fault and a page clear per 4 KiB
  /// (a quarter of a K = 1 step's time under perf), so by default large blocks are never mmap'd
  /// (glibc's M_MMAP_MAX = 0) and the heap is never trimmed (M_TRIM_THRESHOLD = ∞). The peak RSS
  /// then stays the high-water mark of live tensors plus fragmentation. Set it to false to get
  /// glibc's defaults back (a long-lived process that trains once and then idles, say).
  public static var retainsFreedMemory: Bool {
    get { retainsFreed ?? true }
    set {
      retainsFreed = newValue
      configureAllocator(retainFreed: newValue)
    }
  }

  private static let defaultAllocatorSettings: Void = {
    if retainsFreed == nil { configureAllocator(retainFreed: true) }
  }()

  /// Applies the default ``retainsFreedMemory`` unless one was set; the first allocation calls it.
  @inline(__always) static func applyDefaultAllocatorSettings() { _ = defaultAllocatorSettings }

  private static func configureAllocator(retainFreed: Bool) {
    // <malloc.h>'s parameter numbers and glibc's defaults: M_MMAP_MAX = -4 (65,536 mappings),
    // M_TRIM_THRESHOLD = -1 (128 KiB). glibc takes the trim threshold as a size_t, so −1 is
    // SIZE_MAX: never trim. (Int32.max, 2 GiB, was not enough: a step whose activations peak above
    // 2 GiB frees more than that at the top of the heap after its backward pass, glibc gave it
    // back, and the next step faulted every page in again: 1.35 million faults and about a third of
    // the time of a training step at batch 96.)
    _ = glibcMallopt(-4, retainFreed ? 0 : 65_536)
    _ = glibcMallopt(-1, retainFreed ? -1 : 128 * 1024)
  }
}

/// glibc's `mallopt` (declared in <malloc.h>, which the Glibc module does not export).
@_silgen_name("mallopt")
private func glibcMallopt(_ parameter: Int32, _ value: Int32) -> Int32
