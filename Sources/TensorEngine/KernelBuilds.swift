// The C kernels come in an AVX2 + FMA build and a portable one (see `_CKernels/dispatch.h`); a
// processor runs the first it can. Tests check the kernels in every build this machine can run,
// so the portable build (the only one on other processors) is not left untested on x86.

import _CKernels

/// Runs `body` once per kernel build this processor can run — `"avx2"` where available, then
/// `"portable"` — with that build forced, and restores the automatic choice afterwards.
func forEachKernelBuild(_ body: (String) -> Void) {
  let avx2 = pcd_set_portable_only(0) != 0
  if avx2 { body("avx2") }
  pcd_set_portable_only(1)
  defer { pcd_set_portable_only(0) }
  body("portable")
}

/// Runs `body` with the banded stride-1 3 × 3 depthwise forward switched on or off, and restores
/// the setting afterwards. Both give the same bits; tests compare them.
func withBandedDepthwise<T>(_ on: Bool, _ body: () -> T) -> T {
  let was = pcd_depthwise_set_banded(on ? 1 : 0)
  defer { pcd_depthwise_set_banded(was) }
  return body()
}
