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
  // OpenBLAS implements beta = 0 as a scaling pass over C (its scalar beta kernel) before the
  // product adds into C; zeroing C with memset and adding into it (beta = 1, where OpenBLAS skips
  // that pass) gives the same bits (0 + x = x, and +0 for −0, as the scaled zero gives) in about
  // a fifth less time for the engine's input-gradient products (36 × 1024 from 36: 41 µs
  // instead of 50 µs, one thread).
  var beta = beta
  if beta == 0 {
    if ldc == n {
      c.update(repeating: 0, count: m * n)
    } else {
      for row in 0..<m { (c + row * ldc).update(repeating: 0, count: n) }
    }
    beta = 1
  }
  cblas_sgemm(
    CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}
