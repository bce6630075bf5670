// The product of a convolution's forward pass, computed the same way at every output position
// (matmul.h). Dimension letters: M output channels, K inputs per output (channels × taps), N
// output positions; w is M × K, b is K × N (input planes, or im2col columns), out is M × N, all
// row-major and dense.
//
// Why not sgemm: OpenBLAS rounds the same dot product differently at different positions (its
// kernels block and order the k loop by where a position falls in a tile). Identical windows, such
// as the constant background of an image, then give outputs an ulp apart, so max-pool windows
// and ReLUs that tie exactly in exact arithmetic (and in PyTorch's float64 convolutions) are
// decided by rounding noise: the architecture gradients jumped by up to 6e-4 relative on
// Fashion-MNIST (TrainedNetworkPrecisionTests). Here every output is
// 0 + w[0]·b[0] + w[1]·b[1] + … in k order, each step one fused multiply-add (AVX2 build) or
// one multiply and one add (portable build, contraction off), whichever lane or tail computes it.
#include "dispatch.h"
#include "matmul.h"

#include <stdlib.h>

#pragma clang fp contract(off)

INLINE void matmul_rows(float *restrict out, const float *restrict w, const float *restrict b,
                        long m, long k, long n) {
  for (long i = 0; i < m; i++) {
    float *restrict o = out + i * n;
    for (long p = 0; p < n; p++) o[p] = 0;
    for (long q = 0; q < k; q++) {
      const float wq = w[i * k + q];
      const float *restrict row = b + q * n;
      for (long p = 0; p < n; p++) o[p] = o[p] + wq * row[p];
    }
  }
}

#if HAVE_AVX2_BUILD
// Panels of up to 128 positions: their k rows of b are first copied into a contiguous panel (the
// rows of b lie n floats apart, often a multiple of 4 KiB, and would contend for the same L1
// sets; read in runs of eight cache lines, they stream), then tiles of six output rows × 16
// positions accumulate over it in twelve registers, each k step two loads of the panel and six
// broadcast weights. Leftover positions go 8 at a time and then singly with scalar FMAs; every
// path takes the same k order.
#define ROWS 6

AVX2 static inline __attribute__((always_inline)) void accumulate_tile(
    __m256 acc[ROWS][2], const float *w, const float *panel, long rows, long k, long width) {
  for (long q = 0; q < k; q++) {
    const __m256 b0 = _mm256_load_ps(panel + q * width), b1 = _mm256_load_ps(panel + q * width + 8);
    for (long r = 0; r < rows; r++) {
      const __m256 wv = _mm256_broadcast_ss(w + r * k + q);
      acc[r][0] = _mm256_fmadd_ps(wv, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(wv, b1, acc[r][1]);
    }
  }
}

AVX2 static inline void matmul_tile(float *out, const float *w, const float *panel, long rows,
                                    long k, long n, long width) {
  __m256 acc[ROWS][2];
  for (long r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  // A constant row count for full tiles, so that the row loop unrolls into registers.
  if (rows == ROWS) accumulate_tile(acc, w, panel, ROWS, k, width);
  else accumulate_tile(acc, w, panel, rows, k, width);
  for (long r = 0; r < rows; r++) {
    _mm256_storeu_ps(out + r * n, acc[r][0]);
    _mm256_storeu_ps(out + r * n + 8, acc[r][1]);
  }
}

/// The panel of matmul_rows_simd and matmul_rows_simd512: this thread's, kept between calls (a
/// convolution calls once per sample): at most k × 128 floats per thread (295 KiB for k = 576),
/// working memory like the pools' padded planes, not counted as tensors.
static float *thread_panel(long floats) {
  static _Thread_local float *panel = NULL;
  static _Thread_local long panelFloats = 0;
  if (panelFloats < floats) {
    free(panel);
    panelFloats = floats;
    panel = aligned_alloc(64, (size_t)panelFloats * sizeof(float));
  }
  return panel;
}

AVX2 static void matmul_rows_simd(float *restrict out, const float *restrict w,
                                  const float *restrict b, long m, long k, long n) {
  float *restrict panel = thread_panel(k * 128);
  long p = 0;
  while (n - p >= 16) {
    const long width = n - p >= 128 ? 128 : (n - p) / 16 * 16;
    for (long q = 0; q < k; q++)
      for (long t = 0; t < width; t += 8)
        _mm256_store_ps(panel + q * width + t, _mm256_loadu_ps(b + q * n + p + t));
    for (long i = 0; i < m; i += ROWS)
      for (long t = 0; t < width; t += 16)
        matmul_tile(out + i * n + p + t, w + i * k, panel + t, m - i < ROWS ? m - i : ROWS, k, n, width);
    p += width;
  }
  for (; p + 8 <= n; p += 8)
    for (long i = 0; i < m; i++) {
      __m256 acc = _mm256_setzero_ps();
      for (long q = 0; q < k; q++)
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(w + i * k + q), _mm256_loadu_ps(b + q * n + p), acc);
      _mm256_storeu_ps(out + i * n + p, acc);
    }
  for (; p < n; p++)
    for (long i = 0; i < m; i++) {
      float acc = 0;
      for (long q = 0; q < k; q++) acc = __builtin_fmaf(w[i * k + q], b[q * n + p], acc);
      out[i * n + p] = acc;
    }
}
#undef ROWS

// The AVX-512 build: tiles of twelve output rows × 32 positions in 24 of the 32 registers, then
// 16 positions a row at a time, then the last 1 to 15 under a mask; the same k order, one FMA a
// step, so the same bits as the AVX2 build.
#define ROWS 12

AVX512 static inline __attribute__((always_inline)) void accumulate_tile512(
    __m512 acc[ROWS][2], const float *w, const float *panel, long rows, long k, long width) {
  for (long q = 0; q < k; q++) {
    const __m512 b0 = _mm512_load_ps(panel + q * width), b1 = _mm512_load_ps(panel + q * width + 16);
    for (long r = 0; r < rows; r++) {
      const __m512 wv = _mm512_set1_ps(w[r * k + q]);
      acc[r][0] = _mm512_fmadd_ps(wv, b0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(wv, b1, acc[r][1]);
    }
  }
}

AVX512 static inline void matmul_tile512(float *out, const float *w, const float *panel, long rows,
                                         long k, long n, long width) {
  __m512 acc[ROWS][2];
  for (long r = 0; r < ROWS; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  if (rows == ROWS) accumulate_tile512(acc, w, panel, ROWS, k, width);
  else accumulate_tile512(acc, w, panel, rows, k, width);
  for (long r = 0; r < rows; r++) {
    _mm512_storeu_ps(out + r * n, acc[r][0]);
    _mm512_storeu_ps(out + r * n + 16, acc[r][1]);
  }
}

/// out[i][p] for p in [p0, p0 + 16) under `mask`, each row's products in k order.
AVX512 static inline void matmul_columns512(float *restrict out, const float *restrict w,
                                            const float *restrict b, long m, long k, long n, long p0,
                                            __mmask16 mask) {
  for (long i = 0; i < m; i++) {
    __m512 acc = _mm512_setzero_ps();
    for (long q = 0; q < k; q++)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(w[i * k + q]), _mm512_maskz_loadu_ps(mask, b + q * n + p0), acc);
    _mm512_mask_storeu_ps(out + i * n + p0, mask, acc);
  }
}

AVX512 static void matmul_rows_simd512(float *restrict out, const float *restrict w,
                                       const float *restrict b, long m, long k, long n) {
  float *restrict panel = thread_panel(k * 128);
  long p = 0;
  while (n - p >= 32) {
    const long width = n - p >= 128 ? 128 : (n - p) / 32 * 32;
    for (long q = 0; q < k; q++)
      for (long t = 0; t < width; t += 16)
        _mm512_store_ps(panel + q * width + t, _mm512_loadu_ps(b + q * n + p + t));
    for (long i = 0; i < m; i += ROWS)
      for (long t = 0; t < width; t += 32)
        matmul_tile512(out + i * n + p + t, w + i * k, panel + t, m - i < ROWS ? m - i : ROWS, k, n, width);
    p += width;
  }
  for (; p < n; p += 16)
    matmul_columns512(out, w, b, m, k, n, p, n - p >= 16 ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - p)) - 1));
}
#undef ROWS
#endif

DISPATCH_SIMD512(matmul_rows, (float *out, const float *w, const float *b, long m, long k, long n),
              (out, w, b, m, k, n))

void pcd_matmul_rows(float *out, const float *w, const float *b, long m, long k, long n) {
  matmul_rows_any(out, w, b, m, k, n);
}
