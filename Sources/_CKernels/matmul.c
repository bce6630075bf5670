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

AVX2 static inline __attribute__((always_inline)) void tile_rows(
    float *out, const float *w, const float *panel, long rows, long k, long n, long width) {
  __m256 acc[ROWS][2];
  for (long r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  accumulate_tile(acc, w, panel, rows, k, width);
  for (long r = 0; r < rows; r++) {
    _mm256_storeu_ps(out + r * n, acc[r][0]);
    _mm256_storeu_ps(out + r * n + 8, acc[r][1]);
  }
}

/// A tile of `rows` ≤ ROWS rows, each count its own instance, so that the row loops unroll and
/// the accumulators stay in registers.
AVX2 static inline void matmul_tile(float *out, const float *w, const float *panel, long rows,
                                    long k, long n, long width) {
  switch (rows) {
#define TILE(r) case r: tile_rows(out, w, panel, r, k, n, width); break;
    TILE(1) TILE(2) TILE(3) TILE(4) TILE(5)
    default: tile_rows(out, w, panel, ROWS, k, n, width); break;
#undef TILE
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

AVX512 static inline __attribute__((always_inline)) void tile_rows512(
    float *out, const float *w, const float *panel, long rows, long k, long n, long width) {
  __m512 acc[ROWS][2];
  for (long r = 0; r < rows; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  accumulate_tile512(acc, w, panel, rows, k, width);
  for (long r = 0; r < rows; r++) {
    _mm512_storeu_ps(out + r * n, acc[r][0]);
    _mm512_storeu_ps(out + r * n + 16, acc[r][1]);
  }
}

/// A tile of `rows` ≤ ROWS rows, each count its own instance: with a constant count the row loops
/// unroll and the accumulators stay in registers (a variable count kept them in memory, and the
/// partial tiles are most tiles here: C/K = 4, 8 or 16 rows).
AVX512 static inline void matmul_tile512(float *out, const float *w, const float *panel, long rows,
                                         long k, long n, long width) {
  switch (rows) {
#define TILE(r) case r: tile_rows512(out, w, panel, r, k, n, width); break;
    TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6) TILE(7) TILE(8) TILE(9) TILE(10) TILE(11)
    default: tile_rows512(out, w, panel, ROWS, k, n, width); break;
#undef TILE
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
// instruction, the same bits. The partial tiles at the edges are instances of the same tile with
// fewer rows, their sizes constants, so that they too keep their accumulators in registers.

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

/// c[i + r][j + t] += dot(a_{i+r}, b_{j+t}) for r < R ≤ 3, t < T ≤ 3, one accumulator each.
/// Inlined with R and T constant (matmul_nt_add_simd's switch), so that the accumulators stay in
/// registers for the partial tiles too: at C/K = 4 channels every tile is one.
AVX2 INLINE void nt_tile(float *restrict c, const float *restrict a, const float *restrict b, long i,
                         long j, const int R, const int T, long k, long ldc) {
  const long k8 = k & ~7L;
  __m256 acc[3][3];
  for (int r = 0; r < R; r++)
    for (int t = 0; t < T; t++) acc[r][t] = _mm256_setzero_ps();
  for (long q = 0; q < k8; q += 8) {
    __m256 av[3];
    for (int r = 0; r < R; r++) av[r] = _mm256_loadu_ps(a + (i + r) * k + q);
    for (int t = 0; t < T; t++) {
      const __m256 bv = _mm256_loadu_ps(b + (j + t) * k + q);
      for (int r = 0; r < R; r++) acc[r][t] = _mm256_fmadd_ps(av[r], bv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int t = 0; t < T; t++)
      c[(i + r) * ldc + j + t] += dot_tail(hsum256(acc[r][t]), a + (i + r) * k, b + (j + t) * k, k8, k);
}

/// nt_tile with R and T taken as constants, each instance its own function (see nt_tile512_any).
#define NT(r, t) \
  AVX2 __attribute__((noinline)) static void nt_tile_##r##_##t(float *c, const float *a, const float *b, long i, \
      long j, long k, long ldc) { nt_tile(c, a, b, i, j, r, t, k, ldc); }
NT(1, 1) NT(1, 2) NT(1, 3) NT(2, 1) NT(2, 2) NT(2, 3) NT(3, 1) NT(3, 2) NT(3, 3)
#undef NT

AVX2 static void nt_tile_any(float *c, const float *a, const float *b, long i, long j, int R, int T, long k,
                             long ldc) {
  switch (R * 4 + T) {
#define NT(r, t) case r * 4 + t: nt_tile_##r##_##t(c, a, b, i, j, k, ldc); break;
    NT(1, 1) NT(1, 2) NT(1, 3) NT(2, 1) NT(2, 2) NT(2, 3) NT(3, 1) NT(3, 2) NT(3, 3)
#undef NT
    default: break;
  }
}

AVX2 static void matmul_nt_add_simd(float *restrict c, const float *restrict a, const float *restrict b,
                                    long m, long n, long k, long ldc) {
  for (long i = 0; i < m; i += 3)
    for (long j = 0; j < n; j += 3) nt_tile_any(c, a, b, i, j, m - i < 3 ? m - i : 3, n - j < 3 ? n - j : 3, k, ldc);
}

/// c[i + r][j + 2s + h] += dot(a_{i+r}, b_{j+2s+h}) for r < R ≤ 4, s < S ≤ 4, h < 2, from the
/// panel of b's 2S rows (matmul_nt_add_simd512): lanes 0–7 of acc[r][s] take row j + 2s, lanes
/// 8–15 row j + 2s + 1, each the eight lanes of nt_tile. Inlined with R and S constant.
AVX512 INLINE void nt_tile512(float *restrict c, const float *restrict a, const float *restrict b,
                              const float *restrict panel, long i, long j, const int R, const int S,
                              long k, long ldc) {
  const long k8 = k & ~7L;
  __m512 acc[4][4];
  for (int r = 0; r < R; r++)
    for (int t = 0; t < S; t++) acc[r][t] = _mm512_setzero_ps();
  for (long q = 0; q < k8; q += 8) {
    __m512 av[4];
    for (int r = 0; r < R; r++) av[r] = _mm512_broadcast_f32x8(_mm256_loadu_ps(a + (i + r) * k + q));
    for (int t = 0; t < S; t++) {
      const __m512 bv = _mm512_load_ps(panel + 2 * S * q + 16 * t);
      for (int r = 0; r < R; r++) acc[r][t] = _mm512_fmadd_ps(av[r], bv, acc[r][t]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int t = 0; t < S; t++) {
      const float *ar = a + (i + r) * k;
      float *cr = c + (i + r) * ldc + j + 2 * t;
      cr[0] += dot_tail(hsum256(_mm512_castps512_ps256(acc[r][t])), ar, b + (j + 2 * t) * k, k8, k);
      cr[1] += dot_tail(hsum256(_mm512_extractf32x8_ps(acc[r][t], 1)), ar, b + (j + 2 * t + 1) * k, k8, k);
    }
}

/// nt_tile512 with R and S taken as constants, each instance its own function: inlined side by
/// side into one switch, the sixteen instances spilled accumulators to the stack (4 × 4 × 1024:
/// 65 against 97 GFLOP/s).
#define NT(r, s) \
  AVX512 __attribute__((noinline)) static void nt_tile512_##r##_##s(float *c, const float *a, const float *b, \
      const float *panel, long i, long j, long k, long ldc) { nt_tile512(c, a, b, panel, i, j, r, s, k, ldc); }
NT(1, 1) NT(1, 2) NT(1, 3) NT(1, 4) NT(2, 1) NT(2, 2) NT(2, 3) NT(2, 4)
NT(3, 1) NT(3, 2) NT(3, 3) NT(3, 4) NT(4, 1) NT(4, 2) NT(4, 3) NT(4, 4)
#undef NT

AVX512 static void nt_tile512_any(float *c, const float *a, const float *b, const float *panel, long i,
                                  long j, int R, int S, long k, long ldc) {
  switch (R * 5 + S) {
#define NT(r, s) case r * 5 + s: nt_tile512_##r##_##s(c, a, b, panel, i, j, k, ldc); break;
    NT(1, 1) NT(1, 2) NT(1, 3) NT(1, 4) NT(2, 1) NT(2, 2) NT(2, 3) NT(2, 4)
    NT(3, 1) NT(3, 2) NT(3, 3) NT(3, 4) NT(4, 1) NT(4, 2) NT(4, 3) NT(4, 4)
#undef NT
    default: break;
  }
}

AVX512 static void matmul_nt_add_simd512(float *restrict c, const float *restrict a, const float *restrict b,
                                         long m, long n, long k, long ldc) {
  const long k8 = k & ~7L, pairs = n / 2;
  // Each tile's rows of b, interleaved into registers' order in this thread's panel: rows k
  // floats apart (often a multiple of 4 KiB) would contend for the same L1 sets.
  float *restrict panel = thread_panel(8 * k8);
  for (long s0 = 0; s0 < pairs; s0 += 4) {
    const int S = pairs - s0 < 4 ? (int)(pairs - s0) : 4;
    const long j = 2 * s0;
    // panel[2S·q + 16s + h·8 + l] = b[j + 2s + h][q + l]
    for (long q = 0; q < k8; q += 8)
      for (int t = 0; t < S; t++)
        _mm512_store_ps(panel + 2 * S * q + 16 * t,
                        _mm512_insertf32x8(_mm512_castps256_ps512(_mm256_loadu_ps(b + (j + 2 * t) * k + q)),
                                           _mm256_loadu_ps(b + (j + 2 * t + 1) * k + q), 1));
    for (long i = 0; i < m; i += 4) nt_tile512_any(c, a, b, panel, i, j, m - i < 4 ? (int)(m - i) : 4, S, k, ldc);
  }
  // An odd last row of b, with the AVX2 tiles.
  if (n % 2)
    for (long i = 0; i < m; i += 3) nt_tile_any(c, a, b, i, n - 1, m - i < 3 ? (int)(m - i) : 3, 1, k, ldc);
}
#endif

DISPATCH_SIMD512(matmul_nt_add, (float *c, const float *a, const float *b, long m, long n, long k, long ldc),
                 (c, a, b, m, n, k, ldc))

void pcd_matmul_nt_add(float *c, const float *a, const float *b, long m, long n, long k, long ldc) {
  matmul_nt_add_any(c, a, b, m, n, k, ldc);
}
