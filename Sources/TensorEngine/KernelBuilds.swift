// The C kernels come in an AVX-512 build, an AVX2 + FMA build and a portable one (see
// `_CKernels/dispatch.h`); a processor runs the widest it can. Tests check the kernels in every
// build this machine can run, so the narrower builds (the only ones on other processors) are not
// left untested here.

import _CKernels

/// The kernel builds by level (`pcd_set_kernel_level`).
let kernelBuildNames = ["portable", "avx2", "avx512"]

/// Runs `body` once per kernel build this processor can run, widest first (`"avx512"`, `"avx2"`,
/// `"portable"`), with that build forced, and restores the automatic choice afterwards.
func forEachKernelBuild(_ body: (String) -> Void) {
  let widest = pcd_set_kernel_level(-1)
  defer { pcd_set_kernel_level(-1) }
  for level in stride(from: widest, through: 0, by: -1) {
    pcd_set_kernel_level(Int32(level))
    body(kernelBuildNames[Int(level)])
  }
}

/// Runs `body` with the kernels capped at build `level` (0 portable, 1 AVX2, 2 AVX-512), and
/// restores the automatic choice afterwards; nil where this processor cannot run that build.
func withKernelBuild<T>(level: Int, _ body: () -> T) -> T? {
  let widest = Int(pcd_set_kernel_level(-1))
  guard level <= widest else { return nil }
  pcd_set_kernel_level(Int32(level))
  defer { pcd_set_kernel_level(-1) }
  return body()
}

/// Runs `body` with the banded stride-1 3 × 3 depthwise forward switched on or off, and restores
/// the setting afterwards. Both give the same bits; tests compare them.
func withBandedDepthwise<T>(_ on: Bool, _ body: () -> T) -> T {
  let was = pcd_depthwise_set_banded(on ? 1 : 0)
  defer { pcd_depthwise_set_banded(was) }
  return body()
}
