// Padded scratch planes for the direct kernels of `_CKernels`: a plane is copied into the middle
// of a (H + 2p) × (W + 2p) buffer whose border holds the padding value, so the kernels' loops
// need no bounds checks. One scratch per core; the border is written once. A few KiB each, made
// by whichever chunks of a loop run at the same time: they are working memory, not tensors, and
// MemoryStats does not count them (so that peak tensor bytes repeat exactly between runs).

import _CKernels

/// A per-core padded copy of (H, W) planes.
final class PaddedPlane {
  let h: Int, w: Int, pad: Int
  var wp: Int { w + 2 * pad }
  /// (H + 2p) × (W + 2p) values.
  let pointer: UnsafeMutablePointer<Float>

  /// A scratch plane whose border (and interior, until `load`) is `fill`.
  init(h: Int, w: Int, pad: Int, fill: Float) {
    (self.h, self.w, self.pad) = (h, w, pad)
    let count = (h + 2 * pad) * (w + 2 * pad)
    pointer = .allocate(capacity: count)
    pointer.initialize(repeating: fill, count: count)
  }

  deinit { pointer.deallocate() }

  /// Copies an (H, W) plane into the interior.
  @inline(__always) func load(_ plane: UnsafePointer<Float>) {
    for r in 0..<h {
      (pointer + (r + pad) * wp + pad).update(from: plane + r * w, count: w)
    }
  }
}
