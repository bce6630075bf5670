// The engine's single entry point to OpenBLAS.

import COpenBLAS

/// Row-major single-precision matrix product `C = alpha · op(A) · op(B) + beta · C`, where
/// `op(A)` is (M, K), `op(B)` is (K, N) and `C` is (M, N); `lda`, `ldb`, `ldc` are the row
/// strides of the stored matrices.
@inline(__always)
func sgemm(
  transA: Bool, transB: Bool, m: Int, n: Int, k: Int,
  alpha: Float, a: UnsafePointer<Float>, lda: Int,
  b: UnsafePointer<Float>, ldb: Int,
  beta: Float, c: UnsafeMutablePointer<Float>, ldc: Int
) {
  Engine.applyDefaultBLASSettings()
  cblas_sgemm(
    CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
