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

/// The panel of matmul_rows_simd, matmul_rows_simd512 and matmul_nt_add_simd512: this thread's,
/// kept between calls (a convolution calls once per sample and product): at most k × 128 floats
/// per thread (295 KiB for k = 576), working memory like the pools' padded planes, not counted as
/// tensors.
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

// ---- The weight gradient's product: c += a · bᵀ, dot products of rows ----
//
// Every c[i][j] gains dot(a_i, b_j): eight lanes of partial sums over the columns in steps of 8,
// one FMA each (lane l takes columns l, l + 8, …), reduced as hsum256 reduces, then the last
// k mod 8 columns with scalar FMAs. The AVX2 build tiles 3 rows of a × 3 rows of b in nine
// accumulators; the AVX-512 build puts two rows of b in each register (the same eight lanes per
// output, twice) and tiles 4 rows of a × 8 rows of b in sixteen: twice the products per
// instruction, the same bits.

INLINE void matmul_nt_add(float *restrict c, const float *restrict a, const float *restrict b, long m,
                          long n, long k, long ldc) {
  for (long i = 0; i < m; i++)
    for (long j = 0; j < n; j++) c[i * ldc + j] += dot8(a + i * k, b + j * k, (int)k, 1);
}

#if HAVE_AVX2_BUILD
/// The dot product's last k mod 8 columns, from column k8, after the lanes' sum.
AVX2 static inline float dot_tail(float total, const float *a, const float *b, long k8, long k) {
  for (long q = k8; q < k; q++) total = __builtin_fmaf(a[q], b[q], total);
  return total;
}

/// One output in the tiles' order.
AVX2 static inline float dot_single(const float *a, const float *b, long k) {
  const long k8 = k & ~7L;
  __m256 acc = _mm256_setzero_ps();
  for (long q = 0; q < k8; q += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + q), _mm256_loadu_ps(b + q), acc);
  return dot_tail(hsum256(acc), a, b, k8, k);
}

AVX2 static void matmul_nt_add_simd(float *restrict c, const float *restrict a, const float *restrict b,
                                    long m, long n, long k, long ldc) {
  const long k8 = k & ~7L, m3 = m - m % 3, n3 = n - n % 3;
  for (long i = 0; i < m3; i += 3)
    for (long j = 0; j < n3; j += 3) {
      __m256 acc[3][3];
      for (int r = 0; r < 3; r++)
        for (int s = 0; s < 3; s++) acc[r][s] = _mm256_setzero_ps();
      for (long q = 0; q < k8; q += 8) {
        const __m256 a0 = _mm256_loadu_ps(a + i * k + q), a1 = _mm256_loadu_ps(a + (i + 1) * k + q),
                     a2 = _mm256_loadu_ps(a + (i + 2) * k + q);
        for (int s = 0; s < 3; s++) {
          const __m256 bv = _mm256_loadu_ps(b + (j + s) * k + q);
          acc[0][s] = _mm256_fmadd_ps(a0, bv, acc[0][s]);
          acc[1][s] = _mm256_fmadd_ps(a1, bv, acc[1][s]);
          acc[2][s] = _mm256_fmadd_ps(a2, bv, acc[2][s]);
        }
      }
      for (int r = 0; r < 3; r++)
        for (int s = 0; s < 3; s++)
          c[(i + r) * ldc + j + s] += dot_tail(hsum256(acc[r][s]), a + (i + r) * k, b + (j + s) * k, k8, k);
    }
  for (long i = 0; i < m; i++)
    for (long j = i < m3 ? n3 : 0; j < n; j++) c[i * ldc + j] += dot_single(a + i * k, b + j * k, k);
}

AVX512 static void matmul_nt_add_simd512(float *restrict c, const float *restrict a, const float *restrict b,
                                         long m, long n, long k, long ldc) {
  const long k8 = k & ~7L, m4 = m & ~3L, n8 = n & ~7L;
  // Each tile's eight rows of b, interleaved into registers' order in this thread's panel: rows
  // k floats apart (often a multiple of 4 KiB) would contend for the same L1 sets.
  float *restrict panel = thread_panel(8 * k8);
  for (long j = 0; j < n8; j += 8) {
    // panel[8q + 16s + h·8 + l] = b[j + 2s + h][q + l]: acc[r][s]'s lanes 0–7 take row j + 2s, lanes
    // 8–15 row j + 2s + 1.
    for (long q = 0; q < k8; q += 8)
      for (int s = 0; s < 4; s++)
        _mm512_store_ps(panel + 8 * q + 16 * s,
                        _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b + (j + 2 * s) * k + q)),
                                           _mm256_loadu_ps(b + (j + 2 * s + 1) * k + q), 1));
    for (long i = 0; i < m4; i += 4) {
      __m512 acc[4][4];
      for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++) acc[r][s] = _mm512_setzero_ps();
      for (long q = 0; q < k8; q += 8) {
        __m512 av[4];
        for (int r = 0; r < 4; r++) av[r] = _mm512_broadcast_f32x8(_mm256_loadu_ps(a + (i + r) * k + q));
        for (int s = 0; s < 4; s++) {
          const __m512 bv = _mm512_load_ps(panel + 8 * q + 16 * s);
          for (int r = 0; r < 4; r++) acc[r][s] = _mm512_fmadd_ps(av[r], bv, acc[r][s]);
        }
      }
      for (int r = 0; r < 4; r++)
        for (int s = 0; s < 4; s++) {
          const float *ar = a + (i + r) * k;
          float *cr = c + (i + r) * ldc + j + 2 * s;
          cr[0] += dot_tail(hsum256(_mm512_castps512_ps256(acc[r][s])), ar, b + (j + 2 * s) * k, k8, k);
          cr[1] += dot_tail(hsum256(_mm512_extractf32x8_ps(acc[r][s], 1)), ar, b + (j + 2 * s + 1) * k, k8, k);
        }
    }
  }
  for (long i = 0; i < m; i++)
    for (long j = i < m4 ? n8 : 0; j < n; j++) c[i * ldc + j] += dot_single(a + i * k, b + j * k, k);
}
#endif

DISPATCH_SIMD512(matmul_nt_add, (float *c, const float *a, const float *b, long m, long n, long k, long ldc),
                 (c, a, b, m, n, k, ldc))

void pcd_matmul_nt_add(float *c, const float *a, const float *b, long m, long n, long k, long ldc) {
  matmul_nt_add_any(c, a, b, m, n, k, ldc);
}
