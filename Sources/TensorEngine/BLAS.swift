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
  _ = blasConfigured
  cblas_sgemm(
    CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
    Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
}

/// One OpenBLAS thread: the engine parallelises over samples and channels with Dispatch, and a
/// second pool of spinning BLAS threads would fight it for the same two cores.
private let blasConfigured: Void = {
  openblas_set_num_threads(1)
}()
