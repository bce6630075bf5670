// Depthwise convolution kernels (see ckernels.h).
//
// Two paths. On AVX2+FMA processors, stride 1 and 2 with k ≤ 7 use the phase-split kernels
// below: every access becomes a unit-stride correlation of a scratch plane with a table of tap
// offsets, register-blocked over eight output vectors. Everything else (other strides, larger
// kernels, processors without AVX2) uses the generic kernels on a zero-padded plane, which the
// compiler vectorises.
#include "dispatch.h"

// ---- Generic kernels on a zero-padded plane xpad (row stride wp) ----

INLINE void dw_forward(float *restrict out, const float *restrict xpad, const float *restrict taps,
                       float bias, int k, int s, int d, int wp, int oh, int ow) {
  for (int r = 0; r < oh; r++) {
    float *restrict orow = out + r * ow;
    for (int q = 0; q < ow; q++) orow[q] = bias;
    for (int ki = 0; ki < k; ki++) {
      const float *restrict xrow = xpad + (r * s + ki * d) * wp;
      for (int kj = 0; kj < k; kj++) {
        const float t = taps[ki * k + kj];
        const float *restrict xr = xrow + kj * d;
        if (s == 1) {
          for (int q = 0; q < ow; q++) orow[q] += t * xr[q];
        } else {
          for (int q = 0; q < ow; q++) orow[q] += t * xr[q * s];
        }
      }
    }
  }
}

// dxpad += the taps scattered back and dtaps += Σ g · x, each when not NULL.
INLINE void dw_backward(float *restrict dxpad, float *restrict dtaps, const float *restrict g,
                        const float *restrict xpad, const float *restrict taps, int k, int s,
                        int d, int wp, int oh, int ow) {
  for (int ki = 0; ki < k; ki++) {
    for (int kj = 0; kj < k; kj++) {
      const float t = taps[ki * k + kj];
      float dt = 0;
      for (int r = 0; r < oh; r++) {
        const float *restrict grow = g + r * ow;
        const int offset = (r * s + ki * d) * wp + kj * d;
        if (dtaps) dt += dot8(grow, xpad + offset, ow, s);
        if (dxpad) {
          float *restrict dr = dxpad + offset;
          if (s == 1) {
            for (int q = 0; q < ow; q++) dr[q] += t * grow[q];
          } else {
            for (int q = 0; q < ow; q++) dr[q * s] += t * grow[q];
          }
        }
      }
      if (dtaps) dtaps[ki * k + kj] += dt;
    }
  }
}

DISPATCH(dw_forward,
         (float *out, const float *xpad, const float *taps, float bias, int k, int s, int d, int wp, int oh, int ow),
         (out, xpad, taps, bias, k, s, d, wp, oh, ow))
DISPATCH(dw_backward,
         (float *dxpad, float *dtaps, const float *g, const float *xpad, const float *taps, int k, int s, int d, int wp, int oh, int ow),
         (dxpad, dtaps, g, xpad, taps, k, s, d, wp, oh, ow))

// ---- Geometry shared by both paths ----

static int out_extent(int n, pcd_depthwise_geometry g) {
  return (n + 2 * g.padding - g.dilation * (g.k - 1) - 1) / g.stride + 1;
}

// The phase-split path has stride s = 1 or 2, so it divides by s with shifts by sh = s − 1
// (exact for the negative multiples of s it meets too): on small planes, integer divisions in
// the per-plane set-up cost as much as the convolution.

/// How many of the indices 0..<n are ≡ phase (mod 1 << sh).
static int phase_count(int n, int phase, int sh) { return (n - phase + sh) >> sh; }

/// The sizes one plane's phase-split kernels work with. The input gradient reads the output
/// gradient from a zero-padded copy (gpad) with `lead` zero rows (columns) before it and
/// `extent` rows (columns) in all, enough for every gather of every phase (see
/// `input_gradient_phases`).
typedef struct {
  int oh, ow, lead_r, lead_c, hg, wg;
} phase_plan;

static void gradient_pad(int n, int out, pcd_depthwise_geometry g, int *lead, int *extent) {
  const int sh = g.stride - 1, p = g.padding, before = (g.k - 1) * g.dilation - p;
  *lead = before > 0 ? (before + sh) >> sh : 0;
  int reach = out;
  for (int phase = 0; phase <= sh; phase++) {
    const int r = phase_count(n, phase, sh) + ((phase + p) >> sh);
    if (r > reach) reach = r;
  }
  *extent = *lead + reach;
}

static phase_plan plan_of(pcd_depthwise_geometry g) {
  phase_plan plan = {out_extent(g.h, g), out_extent(g.w, g), 0, 0, 0, 0};
  gradient_pad(g.h, plan.oh, g, &plan.lead_r, &plan.hg);
  gradient_pad(g.w, plan.ow, g, &plan.lead_c, &plan.wg);
  return plan;
}

static int use_phases(pcd_depthwise_geometry g) {
#if HAVE_AVX2_BUILD
  return (g.stride == 1 || g.stride == 2) && g.k <= 7 && pcd_use_avx2();
#else
  (void)g;
  return 0;
#endif
}

long pcd_depthwise_scratch_count(pcd_depthwise_geometry g) {
  const long planes = (long)(g.h + 2 * g.padding) * (g.w + 2 * g.padding);
  if (!use_phases(g)) return 2 * planes;  // xpad and dxpad
  const phase_plan plan = plan_of(g);
  // The split x, the padded output gradient and (stride 2) the input gradient's phase planes.
  return planes + (long)plan.hg * plan.wg + (g.stride == 2 ? (long)g.h * g.w : 0);
}

// ---- Generic path ----

/// relu(v) as torch.relu and pcd_relu_forward compute it: negatives become 0; NaN and −0 stay.
static inline float relu_of(float v) { return v < 0 ? 0 : v; }

static void pad_copy(float *restrict xpad, const float *restrict x, int relu, pcd_depthwise_geometry g) {
  const int wp = g.w + 2 * g.padding;
  for (int r = 0; r < g.h; r++) {
    float *restrict dst = xpad + (r + g.padding) * wp + g.padding;
    if (relu)
      for (int q = 0; q < g.w; q++) dst[q] = relu_of(x[r * g.w + q]);
    else
      for (int q = 0; q < g.w; q++) dst[q] = x[r * g.w + q];
  }
}

static void forward_generic(float *out, const float *xpad, const float *taps, float bias,
                            pcd_depthwise_geometry g) {
  dw_forward_any(out, xpad, taps, bias, g.k, g.stride, g.dilation, g.w + 2 * g.padding,
                 out_extent(g.h, g), out_extent(g.w, g));
}

static void backward_generic(float *dx, float *dtaps, const float *gout, const float *xpad,
                             const float *taps, pcd_depthwise_geometry g, float *scratch) {
  const int wp = g.w + 2 * g.padding, planes = (g.h + 2 * g.padding) * wp;
  float *dxpad = scratch + planes;
  if (dx)
    for (int i = 0; i < planes; i++) dxpad[i] = 0;
  dw_backward_any(dx ? dxpad : NULL, dtaps, gout, xpad, taps, g.k, g.stride,
                  g.dilation, wp, out_extent(g.h, g), out_extent(g.w, g));
  if (dx)
    for (int r = 0; r < g.h; r++)
      for (int q = 0; q < g.w; q++) dx[r * g.w + q] = dxpad[(r + g.padding) * wp + g.padding + q];
}

// ---- Phase-split AVX2 path (stride 1 and 2) ----
//
// Stride 2 reads x at every other column. Splitting each zero-padded row of x into its even and
// odd columns, [x[0], x[2], …, x[1], x[3], …], makes tap (ki, kj) read a contiguous run: output
// column q, padded column 2q + kj·d, sits at index q + ⌊kj·d/2⌋ of the (kj·d mod 2) half. The
// tap gradients are then unit-stride dot products on the same split plane. The input gradient is
// gathered rather than scattered: an input element of row phase i mod 2 and column phase j mod 2
// receives only the taps whose (ki·d + p, kj·d + p) match that parity, so each of the four phases
// is a small unit-stride correlation of the padded output gradient, written to a phase plane and
// interleaved into dx once. Stride 1 is the same with one phase (the split is a plain padded copy,
// and the input gradient is the forward with flipped taps).

/// Whether the stride-1 3 × 3 and 5 × 5 forwards use their banded kernels (the same bits as correlate; tests
/// switch it off to compare).
static int banded = 1;

int pcd_depthwise_set_banded(int on) {
  const int was = banded;
  banded = on;
  return was;
}

#if HAVE_AVX2_BUILD
#define TILE 4  // output vectors per register block (6 or 8 spill their row pointers: slower)

// Rows are short, and memmove's per-call cost is comparable to the convolution of a row, so the
// functions that copy rows forbid clang to turn their copy loops into memcpy calls.
#define NO_MEMCPY __attribute__((no_builtin("memcpy")))

/// relu of 8 floats as relu_of: lanes below zero become 0 (an ordered comparison, false for NaN).
AVX2 static inline __m256 relu8(__m256 v) {
  return _mm256_blendv_ps(v, _mm256_setzero_ps(), _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ));
}

/// dst[0..<n] = src[0..<n], or its relu with `relu` (a constant once inlined).
AVX2 NO_MEMCPY INLINE void copy_row(float *restrict dst, const float *restrict src, int n, const int relu) {
  static const int lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  int q = 0;
  for (; q + 8 <= n; q += 8) {
    const __m256 v = _mm256_loadu_ps(src + q);
    _mm256_storeu_ps(dst + q, relu ? relu8(v) : v);
  }
  if (q < n) {
    const __m256i mask = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (n - q)));
    const __m256 v = _mm256_maskload_ps(src + q, mask);
    _mm256_maskstore_ps(dst + q, mask, relu ? relu8(v) : v);
  }
}

/// Writes x (relu(x) when `relu`) into the interior of the split padded plane (row stride wp; the border, never
/// written, stays zero). Stride 2 with an even dilation reads only even padded rows, so the odd
/// ones are skipped.
AVX2 NO_MEMCPY static void split_x(float *restrict xs, const float *restrict x, int relu,
                                   pcd_depthwise_geometry g) {
  const int p = g.padding, wp = g.w + 2 * p;
  for (int r = 0; r < g.h; r++) {
    const int R = r + p;
    const float *restrict src = x + r * g.w;
    float *restrict row = xs + R * wp;
    if (g.stride == 1) {
      if (relu) copy_row(row + p, src, g.w, 1);
      else copy_row(row + p, src, g.w, 0);
      continue;
    }
    if (g.dilation % 2 == 0 && R % 2 == 1) continue;
    // Padded column j + p goes to half (j + p) mod 2 at index ⌊(j + p)/2⌋; the second half starts
    // at ⌈wp/2⌉.
    float *restrict half[2] = {row, row + (wp + 1) / 2};
    float *restrict even_dst = half[p & 1] + p / 2;             // x[j], j even
    float *restrict odd_dst = half[(p + 1) & 1] + (p + 1) / 2;  // x[j], j odd
    int j = 0;
    for (; j + 16 <= g.w; j += 16) {
      __m256 a = _mm256_loadu_ps(src + j), b = _mm256_loadu_ps(src + j + 8);
      if (relu) a = relu8(a), b = relu8(b);
      // shuffle_ps picks within 128-bit lanes; permute4x64 puts the lanes back in order.
      const __m256 ev = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0))), _MM_SHUFFLE(3, 1, 2, 0)));
      const __m256 od = _mm256_castpd_ps(_mm256_permute4x64_pd(
          _mm256_castps_pd(_mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1))), _MM_SHUFFLE(3, 1, 2, 0)));
      _mm256_storeu_ps(even_dst + j / 2, ev);
      _mm256_storeu_ps(odd_dst + j / 2, od);
    }
    for (; j < g.w; j++) (j % 2 ? odd_dst : even_dst)[j / 2] = relu ? relu_of(src[j]) : src[j];
  }
}

/// off[ki·k + kj] = where tap (ki, kj) of output (0, 0) reads the split plane.
static void split_offsets(int *off, pcd_depthwise_geometry g) {
  const int sh = g.stride - 1, wp = g.w + 2 * g.padding, second = (wp + 1) / 2;
  for (int ki = 0; ki < g.k; ki++)
    for (int kj = 0; kj < g.k; kj++) {
      const int c = kj * g.dilation;
      off[ki * g.k + kj] = ki * g.dilation * wp + (c & sh ? second : 0) + (c >> sh);
    }
}

/// out[r·ostride + q] = bias + Σ_t taps[t] · src[r·rstep + off[t] + q] for r < rows, q < cols.
/// Output vectors are taken TILE at a time in row-major order (across rows when rows are
/// narrow), so each broadcast tap feeds TILE independent FMAs.
AVX2 static void correlate(float *restrict out, int ostride, const float *restrict src, int rstep,
                           const int *restrict off, const float *restrict taps, int nt, float bias,
                           int rows, int cols) {
  const int blocks = cols / 8, total = rows * blocks;
  int r = 0, b = 0;  // the next vector: row r, block b
  int v = 0;
  for (; v + TILE <= total; v += TILE) {
    const float *base[TILE];
    float *dst[TILE];
    for (int j = 0; j < TILE; j++) {
      base[j] = src + r * rstep + 8 * b;
      dst[j] = out + r * ostride + 8 * b;
      if (++b == blocks) b = 0, r++;
    }
    __m256 acc[TILE];
    for (int j = 0; j < TILE; j++) acc[j] = _mm256_set1_ps(bias);
    for (int t = 0; t < nt; t++) {
      const __m256 tv = _mm256_broadcast_ss(taps + t);
      const int o = off[t];
      for (int j = 0; j < TILE; j++) acc[j] = _mm256_fmadd_ps(tv, _mm256_loadu_ps(base[j] + o), acc[j]);
    }
    for (int j = 0; j < TILE; j++) _mm256_storeu_ps(dst[j], acc[j]);
  }
  for (; v < total; v++) {
    const float *base = src + r * rstep + 8 * b;
    __m256 acc = _mm256_set1_ps(bias);
    for (int t = 0; t < nt; t++)
      acc = _mm256_fmadd_ps(_mm256_broadcast_ss(taps + t), _mm256_loadu_ps(base + off[t]), acc);
    _mm256_storeu_ps(out + r * ostride + 8 * b, acc);
    if (++b == blocks) b = 0, r++;
  }
  for (int rr = 0; rr < rows; rr++)
    for (int q = 8 * blocks; q < cols; q++) {
      float acc = bias;
      for (int t = 0; t < nt; t++) acc += taps[t] * src[rr * rstep + off[t] + q];
      out[rr * ostride + q] = acc;
    }
}

// Stride 1 reads a k × k grid of taps spaced d apart, so output rows r … r + R − 1 share input
// rows: for each kernel column, the R + (k − 1)·d input vectors of a column block are loaded once
// and each feeds up to k output rows (in correlate, every tap reloads its vector for every output
// vector: about twice the loads, and the loads, not the FMAs, were the limit). The sum runs over
// kernel columns, then rows (kj outer), each step one FMA, at every position alike: the vector
// blocks, the masked last block of a row and the leftover rows take the same order.
//
// Only the stride-1 input gradient uses it. The forward keeps correlate's order (kernel rows
// outer), which the banded loads cannot keep: with the columns outer, the architecture gradients
// of the trained K = 1 network of TrainedNetworkPrecisionTests jumped (6e-4 and 2e-4 against
// float64) on two of its three inputs where PyTorch float32 jumps on none, so some ReLU or pool
// decision there depends on the order of the depthwise sum (not found yet). Banded tap gradients
// in another order (5190229, 1.1-1.4x per plane) were taken out for a like reason: with them the
// second-order α/β gradient of two synchronised ranks moved 2.2e-3 from one process's
// (DistributedTests allows 5e-5). The AVX-512 build's banded tap gradients (tap_band512) keep
// tap_group's order instead, and so its bits.

/// Rows r0 … r0 + R − 1 (out and src point at row r0), columns q … q + 7 under `mask` (all lanes
/// for a full block).
AVX2 INLINE void grid_block(float *restrict out, int ostride, const float *restrict src, int rstep,
                            const float *restrict taps, const int k, const int d, const int R,
                            __m256i mask, const int masked) {
  __m256 acc[8];
  for (int j = 0; j < R; j++) acc[j] = _mm256_setzero_ps();
  for (int kj = 0; kj < k; kj++) {
    const float *col = src + kj * d;
    __m256 in[8 + 4 * 2];  // R + (k − 1)·d ≤ 16 input rows
    for (int e = 0; e < R + (k - 1) * d; e++)
      in[e] = masked ? _mm256_maskload_ps(col + e * rstep, mask) : _mm256_loadu_ps(col + e * rstep);
    for (int ki = 0; ki < k; ki++) {
      const __m256 t = _mm256_broadcast_ss(taps + ki * k + kj);
      for (int j = 0; j < R; j++) acc[j] = _mm256_fmadd_ps(t, in[j + ki * d], acc[j]);
    }
  }
  for (int j = 0; j < R; j++) {
    if (masked) _mm256_maskstore_ps(out + j * ostride, mask, acc[j]);
    else _mm256_storeu_ps(out + j * ostride, acc[j]);
  }
}

/// One band of R output rows (out and src at its first row): full column blocks, then the masked
/// last one.
AVX2 INLINE void grid_band(float *restrict out, int ostride, const float *restrict src, int rstep,
                           const float *restrict taps, const int k, const int d, const int R,
                           int cols, __m256i mask) {
  const int full = cols & ~7;
  const __m256i all = _mm256_set1_epi32(-1);
  for (int q = 0; q < full; q += 8) grid_block(out + q, ostride, src + q, rstep, taps, k, d, R, all, 0);
  if (full < cols) grid_block(out + full, ostride, src + full, rstep, taps, k, d, R, mask, 1);
}

/// out[r·ostride + q] = Σ_kj Σ_ki taps[ki·k + kj] · src[(r + ki·d)·rstep + kj·d + q] for
/// r < rows, q < cols: bands of R rows, then one band of the 1 to R − 1 rows left (k, d and the
/// band heights constants once inlined).
AVX2 INLINE void grid_rows(float *restrict out, int ostride, const float *restrict src, int rstep,
                           const float *restrict taps, const int k, const int d, const int R,
                           int rows, int cols) {
  static const int lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i mask = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (cols & 7)));
  int r = 0;
  for (; r + R <= rows; r += R) grid_band(out + r * ostride, ostride, src + r * rstep, rstep, taps, k, d, R, cols, mask);
  float *o = out + r * ostride;
  const float *x = src + r * rstep;
  switch (rows - r) {
    case 3: grid_band(o, ostride, x, rstep, taps, k, d, 3, cols, mask); break;
    case 2: grid_band(o, ostride, x, rstep, taps, k, d, 2, cols, mask); break;
    case 1: grid_band(o, ostride, x, rstep, taps, k, d, 1, cols, mask); break;
    default: break;
  }
}

/// grid_rows for DARTS's four stride-1 geometries: bands of 4 rows (3 for k = 5, d = 2, whose 11
/// input rows fill the 16 vector registers with the accumulators and a tap); 0 for any other
/// (k, d).
AVX2 static int correlate_grid(float *out, int ostride, const float *src, int rstep, const float *taps,
                               int k, int d, int rows, int cols) {
  if (k == 3 && d == 1) grid_rows(out, ostride, src, rstep, taps, 3, 1, 4, rows, cols);
  else if (k == 5 && d == 1) grid_rows(out, ostride, src, rstep, taps, 5, 1, 4, rows, cols);
  else if (k == 3 && d == 2) grid_rows(out, ostride, src, rstep, taps, 3, 2, 4, rows, cols);
  else if (k == 5 && d == 2) grid_rows(out, ostride, src, rstep, taps, 5, 2, 3, rows, cols);
  else return 0;
  return 1;
}

// ---- The stride-1 3 × 3 forward in bands, in correlate's own order ----
//
// The loads of a 3 × 3 forward can be shared between output rows without changing a single
// rounding: every output receives exactly the products correlate gives it, one FMA each, in the
// same order; only the loop nest differs. Input rows e go outer, and each vector loaded at row e
// feeds every output row j of the band that reads it (e = j + ki·d): for one output, e ascending
// is ki ascending, with kj inside, which is correlate's tap order. (The banded kernels above sum
// kernel columns first, and the architecture gradients depend on that order, see there.) With
// the nine taps held in registers, a band of four rows loads each of its 4 + 2d input rows three
// times (kj = 0, 1, 2) for 36 FMAs, where correlate loads a vector per FMA: 1.1 to 3.4 times
// faster per plane in cache, split included. A 5 × 5 kernel's 25 taps fit only in AVX-512's 32
// registers (band_block512); the AVX2 build keeps correlate for it. DepthwiseKernelTests compares
// the banded kernels with correlate bit for bit.

/// Bands of R output rows of a 3 × 3 correlation at dilation d, the nine taps held in registers:
/// per column block, the R + 2d input rows are loaded once each (three vectors, kj = 0, 1, 2) for
/// the up to three output rows that read them. Leftover columns go in a masked block (every lane
/// the same FMAs as correlate's scalar tail).
AVX2 INLINE void band3_block(float *restrict out, int ostride, const float *restrict src, int rstep,
                             const __m256 t[9], float bias, const int d, const int R, __m256i mask,
                             const int masked) {
  __m256 acc[4];
  for (int j = 0; j < R; j++) acc[j] = _mm256_set1_ps(bias);
#pragma clang loop unroll(full)
  for (int e = 0; e < R + 2 * d; e++) {
#pragma clang loop unroll(full)
    for (int kj = 0; kj < 3; kj++) {
      const float *at = src + e * rstep + kj * d;
      const __m256 v = masked ? _mm256_maskload_ps(at, mask) : _mm256_loadu_ps(at);
#pragma clang loop unroll(full)
      for (int ki = 0; ki < 3; ki++) {
        const int j = e - ki * d;
        if (j >= 0 && j < R) acc[j] = _mm256_fmadd_ps(t[ki * 3 + kj], v, acc[j]);
      }
    }
  }
  for (int j = 0; j < R; j++) {
    if (masked) _mm256_maskstore_ps(out + j * ostride, mask, acc[j]);
    else _mm256_storeu_ps(out + j * ostride, acc[j]);
  }
}

AVX2 INLINE void band3_rows(float *restrict out, int ostride, const float *restrict src, int rstep,
                            const __m256 t[9], float bias, const int d, const int R, int cols,
                            __m256i mask) {
  const int full = cols & ~7;
  for (int q = 0; q < full; q += 8) band3_block(out + q, ostride, src + q, rstep, t, bias, d, R, mask, 0);
  if (full < cols) band3_block(out + full, ostride, src + full, rstep, t, bias, d, R, mask, 1);
}

/// out[r·ostride + q] = bias + Σ_ki Σ_kj taps[ki·3 + kj] · src[(r + ki·d)·rstep + kj·d + q] for
/// r < rows, q < cols, bit for bit as correlate computes it (bands of four rows, then the rest).
AVX2 INLINE void correlate3_dilated(float *restrict out, int ostride, const float *restrict src, int rstep,
                                   const float *restrict taps, float bias, const int d, int rows, int cols) {
  static const int lanes[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i mask = _mm256_loadu_si256((const __m256i *)(lanes + 8 - (cols & 7)));
  __m256 t[9];
  for (int i = 0; i < 9; i++) t[i] = _mm256_broadcast_ss(taps + i);
  int r = 0;
  for (; r + 4 <= rows; r += 4) band3_rows(out + r * ostride, ostride, src + r * rstep, rstep, t, bias, d, 4, cols, mask);
  float *o = out + r * ostride;
  const float *x = src + r * rstep;
  switch (rows - r) {
    case 3: band3_rows(o, ostride, x, rstep, t, bias, d, 3, cols, mask); break;
    case 2: band3_rows(o, ostride, x, rstep, t, bias, d, 2, cols, mask); break;
    case 1: band3_rows(o, ostride, x, rstep, t, bias, d, 1, cols, mask); break;
    default: break;
  }
}

/// correlate3_dilated with the dilation (1 or 2, DARTS's) a constant; 0 for any other.
AVX2 static int correlate3_banded(float *out, int ostride, const float *src, int rstep, const float *taps,
                                  float bias, int d, int rows, int cols) {
  if (d == 1) correlate3_dilated(out, ostride, src, rstep, taps, bias, 1, rows, cols);
  else if (d == 2) correlate3_dilated(out, ostride, src, rstep, taps, bias, 2, rows, cols);
  else return 0;
  return 1;
}

/// dtaps[t] += Σ_{r, q} g[r·cols + q] · src[r·rstep + off[t] + q] for a group of T ≤ 10 taps:
/// each 8-column block of g is loaded once for T accumulators. Inlined with T constant so the
/// accumulators stay in registers.
AVX2 INLINE void tap_group(float *restrict dtaps, const float *restrict g, const float *restrict src,
                           int rstep, const int *restrict off, const int T, int rows, int cols) {
  const int vec = cols & ~7;
  __m256 acc[10];
  float tail[10];
  for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps(), tail[t] = 0;
  for (int r = 0; r < rows; r++) {
    const float *grow = g + r * cols, *xr = src + r * rstep;
    for (int q = 0; q < vec; q += 8) {
      const __m256 gv = _mm256_loadu_ps(grow + q);
      for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(xr + off[t] + q), acc[t]);
    }
    for (int q = vec; q < cols; q++)
      for (int t = 0; t < T; t++) tail[t] += grow[q] * xr[off[t] + q];
  }
  for (int t = 0; t < T; t++) dtaps[t] += hsum256(acc[t]) + tail[t];
}

AVX2 static void tap_sums(float *dtaps, const float *g, const float *src, int rstep,
                          const int *off, int nt, int rows, int cols) {
  // Groups of 9 (a 3×3 kernel in one pass) or 10; the remainders of 5×5 and 7×7 are 5 and 9.
  const int group = nt == 9 ? 9 : 10;
  for (int t0 = 0; t0 < nt; t0 += group) {
    const int T = nt - t0 < group ? nt - t0 : group;
    float *dt = dtaps + t0;
    const int *o = off + t0;
    switch (T) {
      case 10: tap_group(dt, g, src, rstep, o, 10, rows, cols); break;
      case 9: tap_group(dt, g, src, rstep, o, 9, rows, cols); break;
      case 5: tap_group(dt, g, src, rstep, o, 5, rows, cols); break;
      default: tap_group(dt, g, src, rstep, o, T, rows, cols); break;
    }
  }
}

// ---- The AVX-512 build of the correlations ----
//
// The same loops 16 columns wide: every output takes the products it takes in the AVX2 kernels,
// in the same order, one FMA each (the last 1 to 15 columns of a row under a mask, where the AVX2
// kernels take a masked or scalar tail), so the bits are the AVX2 build's (DepthwiseKernelTests
// compares them). Planes narrower than 16 columns stay with the AVX2 kernels, whose blocks of 8
// fill their vectors.

/// The mask of a row's last cols mod 16 columns (all 16 when that is 0).
AVX512 static inline __mmask16 tail_mask16(int cols) {
  const int rest = cols & 15;
  return rest ? (__mmask16)((1u << rest) - 1) : (__mmask16)0xFFFF;
}

/// correlate, 16 columns a vector: TILE full vectors at a time in row-major order, then each
/// row's masked tail.
AVX512 static void correlate512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                const int *restrict off, const float *restrict taps, int nt, float bias,
                                int rows, int cols) {
  if (cols < 16) {
    correlate(out, ostride, src, rstep, off, taps, nt, bias, rows, cols);
    return;
  }
  const int blocks = cols / 16, total = rows * blocks;
  int r = 0, b = 0;
  int v = 0;
  for (; v + TILE <= total; v += TILE) {
    const float *base[TILE];
    float *dst[TILE];
    for (int j = 0; j < TILE; j++) {
      base[j] = src + r * rstep + 16 * b;
      dst[j] = out + r * ostride + 16 * b;
      if (++b == blocks) b = 0, r++;
    }
    __m512 acc[TILE];
    for (int j = 0; j < TILE; j++) acc[j] = _mm512_set1_ps(bias);
    for (int t = 0; t < nt; t++) {
      const __m512 tv = _mm512_set1_ps(taps[t]);
      const int o = off[t];
      for (int j = 0; j < TILE; j++) acc[j] = _mm512_fmadd_ps(tv, _mm512_loadu_ps(base[j] + o), acc[j]);
    }
    for (int j = 0; j < TILE; j++) _mm512_storeu_ps(dst[j], acc[j]);
  }
  for (; v < total; v++) {
    const float *base = src + r * rstep + 16 * b;
    __m512 acc = _mm512_set1_ps(bias);
    for (int t = 0; t < nt; t++) acc = _mm512_fmadd_ps(_mm512_set1_ps(taps[t]), _mm512_loadu_ps(base + off[t]), acc);
    _mm512_storeu_ps(out + r * ostride + 16 * b, acc);
    if (++b == blocks) b = 0, r++;
  }
  if (cols % 16 == 0) return;
  const __mmask16 mask = tail_mask16(cols);
  for (int rr = 0; rr < rows; rr++) {
    const float *base = src + rr * rstep + 16 * blocks;
    __m512 acc = _mm512_set1_ps(bias);
    for (int t = 0; t < nt; t++)
      acc = _mm512_fmadd_ps(_mm512_set1_ps(taps[t]), _mm512_maskz_loadu_ps(mask, base + off[t]), acc);
    _mm512_mask_storeu_ps(out + rr * ostride + 16 * blocks, mask, acc);
  }
}

/// grid_block 16 columns wide (R + (k − 1)·d ≤ 16 input rows in registers).
AVX512 INLINE void grid_block512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                 const float *restrict taps, const int k, const int d, const int R,
                                 __mmask16 mask) {
  __m512 acc[8];
  for (int j = 0; j < R; j++) acc[j] = _mm512_setzero_ps();
  for (int kj = 0; kj < k; kj++) {
    const float *col = src + kj * d;
    __m512 in[16];
    for (int e = 0; e < R + (k - 1) * d; e++) in[e] = _mm512_maskz_loadu_ps(mask, col + e * rstep);
    for (int ki = 0; ki < k; ki++) {
      const __m512 t = _mm512_set1_ps(taps[ki * k + kj]);
      for (int j = 0; j < R; j++) acc[j] = _mm512_fmadd_ps(t, in[j + ki * d], acc[j]);
    }
  }
  for (int j = 0; j < R; j++) _mm512_mask_storeu_ps(out + j * ostride, mask, acc[j]);
}

AVX512 INLINE void grid_band512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                const float *restrict taps, const int k, const int d, const int R, int cols) {
  const int full = cols & ~15;
  for (int q = 0; q < full; q += 16) grid_block512(out + q, ostride, src + q, rstep, taps, k, d, R, 0xFFFF);
  if (full < cols) grid_block512(out + full, ostride, src + full, rstep, taps, k, d, R, tail_mask16(cols));
}

/// grid_rows 16 columns wide: bands of R rows, then bands of 4, 2 and 1 for the rest.
AVX512 INLINE void grid_rows512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                const float *restrict taps, const int k, const int d, const int R,
                                int rows, int cols) {
  int r = 0;
  for (; r + R <= rows; r += R) grid_band512(out + r * ostride, ostride, src + r * rstep, rstep, taps, k, d, R, cols);
  for (; r + 4 <= rows; r += 4) grid_band512(out + r * ostride, ostride, src + r * rstep, rstep, taps, k, d, 4, cols);
  for (; r + 2 <= rows; r += 2) grid_band512(out + r * ostride, ostride, src + r * rstep, rstep, taps, k, d, 2, cols);
  for (; r < rows; r++) grid_band512(out + r * ostride, ostride, src + r * rstep, rstep, taps, k, d, 1, cols);
}

/// correlate_grid 16 columns wide, with the 32 registers' taller bands: 8 rows (6 for k = 5,
/// d = 2, whose 14 input rows and 6 accumulators fill 20 registers).
AVX512 static int correlate_grid512(float *out, int ostride, const float *src, int rstep, const float *taps,
                                    int k, int d, int rows, int cols) {
  if (cols < 16) return correlate_grid(out, ostride, src, rstep, taps, k, d, rows, cols);
  if (k == 3 && d == 1) grid_rows512(out, ostride, src, rstep, taps, 3, 1, 8, rows, cols);
  else if (k == 5 && d == 1) grid_rows512(out, ostride, src, rstep, taps, 5, 1, 8, rows, cols);
  else if (k == 3 && d == 2) grid_rows512(out, ostride, src, rstep, taps, 3, 2, 8, rows, cols);
  else if (k == 5 && d == 2) grid_rows512(out, ostride, src, rstep, taps, 5, 2, 6, rows, cols);
  else return 0;
  return 1;
}

/// band3_block 16 columns wide for a k × k kernel (3 or 5): bands of up to 8 rows for 3 × 3, of up
/// to 4 for 5 × 5, whose 25 taps then live in registers beside the four accumulators and the
/// loaded vector (30 of the 32; the AVX2 build's 16 cannot hold them, so its 5 × 5 forward keeps
/// correlate). Each of the R + (k − 1)·d input rows is loaded k times (kj = 0 … k − 1) for up to
/// k output rows; for each output, e ascending is ki ascending with kj inside: correlate's order.
AVX512 INLINE void band_block512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                 const __m512 *t, float bias, const int k, const int d, const int R,
                                 __mmask16 mask) {
  __m512 acc[8];
  for (int j = 0; j < R; j++) acc[j] = _mm512_set1_ps(bias);
#pragma clang loop unroll(full)
  for (int e = 0; e < R + (k - 1) * d; e++) {
#pragma clang loop unroll(full)
    for (int kj = 0; kj < k; kj++) {
      const __m512 v = _mm512_maskz_loadu_ps(mask, src + e * rstep + kj * d);
#pragma clang loop unroll(full)
      for (int ki = 0; ki < k; ki++) {
        const int j = e - ki * d;
        if (j >= 0 && j < R) acc[j] = _mm512_fmadd_ps(t[ki * k + kj], v, acc[j]);
      }
    }
  }
  for (int j = 0; j < R; j++) _mm512_mask_storeu_ps(out + j * ostride, mask, acc[j]);
}

AVX512 INLINE void band_rows512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                const __m512 *t, float bias, const int k, const int d, const int R, int cols) {
  const int full = cols & ~15;
  for (int q = 0; q < full; q += 16) band_block512(out + q, ostride, src + q, rstep, t, bias, k, d, R, 0xFFFF);
  if (full < cols) band_block512(out + full, ostride, src + full, rstep, t, bias, k, d, R, tail_mask16(cols));
}

/// A stride-1 k × k correlation at dilation d in bands of `band` rows (8 or 4), then of 4, 2 and 1.
AVX512 INLINE void correlate_dilated512(float *restrict out, int ostride, const float *restrict src, int rstep,
                                       const float *restrict taps, float bias, const int k, const int d,
                                       const int band, int rows, int cols) {
  __m512 t[25];
  for (int i = 0; i < k * k; i++) t[i] = _mm512_set1_ps(taps[i]);
  int r = 0;
  for (; r + band <= rows; r += band)
    band_rows512(out + r * ostride, ostride, src + r * rstep, rstep, t, bias, k, d, band, cols);
  if (band > 4)
    for (; r + 4 <= rows; r += 4) band_rows512(out + r * ostride, ostride, src + r * rstep, rstep, t, bias, k, d, 4, cols);
  for (; r + 2 <= rows; r += 2) band_rows512(out + r * ostride, ostride, src + r * rstep, rstep, t, bias, k, d, 2, cols);
  for (; r < rows; r++) band_rows512(out + r * ostride, ostride, src + r * rstep, rstep, t, bias, k, d, 1, cols);
}

/// The banded stride-1 forward 16 columns wide, at dilation 1 or 2 (DARTS's); 0 for any other
/// geometry, which correlate runs. 3 × 3 in bands of 8 rows, planes narrower than 16 columns on the
/// AVX2 bands; 5 × 5 in bands of 4, narrower planes in masked blocks too: every lane takes
/// correlate's FMAs in correlate's order, its scalar tail's included (contracted to FMAs like these).
AVX512 static int correlate_banded512(float *out, int ostride, const float *src, int rstep, const float *taps,
                                      float bias, int k, int d, int rows, int cols) {
  if (k == 3 && cols < 16) return correlate3_banded(out, ostride, src, rstep, taps, bias, d, rows, cols);
  if (k == 3 && d == 1) correlate_dilated512(out, ostride, src, rstep, taps, bias, 3, 1, 8, rows, cols);
  else if (k == 3 && d == 2) correlate_dilated512(out, ostride, src, rstep, taps, bias, 3, 2, 8, rows, cols);
  else if (k == 5 && d == 1) correlate_dilated512(out, ostride, src, rstep, taps, bias, 5, 1, 4, rows, cols);
  else if (k == 5 && d == 2) correlate_dilated512(out, ostride, src, rstep, taps, bias, 5, 2, 4, rows, cols);
  else return 0;
  return 1;
}

/// tap_group's sums of a stride-1 k × k kernel at dilation d, for the kernel rows ki0 ≤ ki < ki1 in
/// one pass: each padded input row is loaded once per kj, 8 columns a vector, for the output rows
/// of those kernel rows that read it, where tap_group loads it once per tap. Per tap the products
/// come in tap_group's order (output rows ascending, then the row's vectors; the scalar tail in its
/// own sum, contracted to FMAs alike), so the bits are the AVX2 build's. The vectors stay 8 wide:
/// 16-wide lanes would sum in another order. What the AVX-512 build adds is its 32 registers, for
/// up to 15 accumulators beside the loaded vectors.
AVX512 INLINE void tap_band512(float *restrict dtaps, const float *restrict g, const float *restrict src, int rstep,
                               const int k, const int d, const int ki0, const int ki1, int rows, int cols) {
  const int vec = cols & ~7;
  __m256 acc[15];
  float tail[15];
  for (int t = 0; t < (ki1 - ki0) * k; t++) acc[t] = _mm256_setzero_ps(), tail[t] = 0;
  for (int e = ki0 * d; e < rows + (ki1 - 1) * d; e++) {
    const float *restrict xr = src + e * rstep;
    for (int q = 0; q < vec; q += 8) {
      __m256 v[5];
#pragma clang loop unroll(full)
      for (int kj = 0; kj < k; kj++) v[kj] = _mm256_loadu_ps(xr + q + kj * d);
#pragma clang loop unroll(full)
      for (int ki = ki0; ki < ki1; ki++) {
        const int r = e - ki * d;
        if (r < 0 || r >= rows) continue;
        const __m256 gv = _mm256_loadu_ps(g + r * cols + q);
#pragma clang loop unroll(full)
        for (int kj = 0; kj < k; kj++) acc[(ki - ki0) * k + kj] = _mm256_fmadd_ps(gv, v[kj], acc[(ki - ki0) * k + kj]);
      }
    }
    for (int q = vec; q < cols; q++)
      for (int ki = ki0; ki < ki1; ki++) {
        const int r = e - ki * d;
        if (r < 0 || r >= rows) continue;
        for (int kj = 0; kj < k; kj++) tail[(ki - ki0) * k + kj] += g[r * cols + q] * xr[q + kj * d];
      }
  }
  for (int t = 0; t < (ki1 - ki0) * k; t++) dtaps[ki0 * k + t] += hsum256(acc[t]) + tail[t];
}

/// The banded stride-1 tap gradients at DARTS's kernels and dilations (a 5 × 5 kernel's rows in two
/// passes, 0–2 and 3–4); 0 for any other geometry, which tap_sums runs.
AVX512 static int tap_sums_banded512(float *dtaps, const float *g, const float *src, int rstep, int k, int d,
                                     int rows, int cols) {
  if (k == 3 && d == 1) tap_band512(dtaps, g, src, rstep, 3, 1, 0, 3, rows, cols);
  else if (k == 3 && d == 2) tap_band512(dtaps, g, src, rstep, 3, 2, 0, 3, rows, cols);
  else if (k == 5 && d == 1) {
    tap_band512(dtaps, g, src, rstep, 5, 1, 0, 3, rows, cols);
    tap_band512(dtaps, g, src, rstep, 5, 1, 3, 5, rows, cols);
  } else if (k == 5 && d == 2) {
    tap_band512(dtaps, g, src, rstep, 5, 2, 0, 3, rows, cols);
    tap_band512(dtaps, g, src, rstep, 5, 2, 3, 5, rows, cols);
  } else return 0;
  return 1;
}

/// The correlations of the build the kernels run.
static void correlate_any(float *out, int ostride, const float *src, int rstep, const int *off, const float *taps,
                          int nt, float bias, int rows, int cols) {
  if (pcd_use_avx512()) correlate512(out, ostride, src, rstep, off, taps, nt, bias, rows, cols);
  else correlate(out, ostride, src, rstep, off, taps, nt, bias, rows, cols);
}

static int correlate_grid_any(float *out, int ostride, const float *src, int rstep, const float *taps, int k, int d,
                              int rows, int cols) {
  return pcd_use_avx512() ? correlate_grid512(out, ostride, src, rstep, taps, k, d, rows, cols)
                          : correlate_grid(out, ostride, src, rstep, taps, k, d, rows, cols);
}

/// The banded stride-1 forward of the build the kernels run (the AVX2 build's for 3 × 3 only);
/// 0 where correlate runs instead.
static int correlate_banded_any(float *out, int ostride, const float *src, int rstep, const float *taps, float bias,
                                int k, int d, int rows, int cols) {
  if (pcd_use_avx512()) return correlate_banded512(out, ostride, src, rstep, taps, bias, k, d, rows, cols);
  return k == 3 ? correlate3_banded(out, ostride, src, rstep, taps, bias, d, rows, cols) : 0;
}

/// The tap gradients of the build the kernels run: banded at stride 1 in the AVX-512 build (the same
/// bits), tap_sums otherwise.
static void tap_sums_any(float *dtaps, const float *g, const float *src, pcd_depthwise_geometry geo, int rows,
                         int cols) {
  const int wp = geo.w + 2 * geo.padding;
  if (geo.stride == 1 && pcd_use_avx512() && tap_sums_banded512(dtaps, g, src, wp, geo.k, geo.dilation, rows, cols))
    return;
  int off[49];
  split_offsets(off, geo);
  tap_sums(dtaps, g, src, geo.stride * wp, off, geo.k * geo.k, rows, cols);
}

/// dx (h × w) = the input gradient, gathered per phase from the padded output gradient.
AVX2 NO_MEMCPY static void input_gradient_phases(float *restrict dx, const float *restrict gout,
                                       const float *restrict taps, pcd_depthwise_geometry g,
                                       phase_plan plan, float *restrict gpad,
                                       float *restrict phases) {
  const int s = g.stride, sh = s - 1, p = g.padding, d = g.dilation, k = g.k;
  const int lr = plan.lead_r, lc = plan.lead_c, wg = plan.wg;
  for (int r = 0; r < plan.oh; r++) copy_row(gpad + (r + lr) * wg + lc, gout + r * plan.ow, plan.ow, 0);

  if (s == 1) {
    // dx[i][j] = Σ taps[ki][kj] · gpad[i + lr + p − ki·d][j + lc + p − kj·d]: the forward
    // correlation with the taps flipped, from row and column lr + p − (k − 1)·d ≥ 0.
    float flipped[49];
    for (int t = 0; t < k * k; t++) flipped[t] = taps[k * k - 1 - t];
    const int reach = (k - 1) * d;
    if (correlate_grid_any(dx, g.w, gpad + (lr + p - reach) * wg + lc + p - reach, wg, flipped, k, d, g.h, g.w))
      return;
  }
  // Input row i = s·i′ + φ (padded row i + p) takes tap row ki iff s divides φ + p − ki·d; it
  // then reads output row i′ + (φ + p − ki·d)/s. Columns likewise.
  const int n0w = phase_count(g.w, 0, sh);
  float *plane = phases;
  for (int pr = 0; pr < s; pr++) {
    const int rows = phase_count(g.h, pr, sh);
    for (int pc = 0; pc < s; pc++) {
      float t[49];
      int off[49], nt = 0;
      for (int ki = 0; ki < k; ki++) {
        const int a = pr + p - ki * d;
        if (a & sh) continue;
        for (int kj = 0; kj < k; kj++) {
          const int b = pc + p - kj * d;
          if (b & sh) continue;
          t[nt] = taps[ki * k + kj];
          off[nt++] = ((a >> sh) + lr) * wg + (b >> sh) + lc;
        }
      }
      // Stride 1 writes dx directly; stride 2 writes each row phase's two column phases side by
      // side in a w-wide row of the phase planes.
      float *dst = s == 1 ? dx : plane + (pc ? n0w : 0);
      correlate_any(dst, g.w, gpad, wg, off, t, nt, 0, rows, phase_count(g.w, pc, sh));
    }
    plane += rows * g.w;
  }
  if (s == 1) return;

  const float *row_phase[2] = {phases, phases + phase_count(g.h, 0, 1) * g.w};
  const int n1w = g.w - n0w;
  for (int i = 0; i < g.h; i++) {
    const float *even = row_phase[i % 2] + (i / 2) * g.w, *odd = even + n0w;
    float *restrict drow = dx + i * g.w;
    int j = 0;
    for (; j + 8 <= n1w; j += 8) {
      const __m256 e = _mm256_loadu_ps(even + j), o = _mm256_loadu_ps(odd + j);
      const __m256 lo = _mm256_unpacklo_ps(e, o), hi = _mm256_unpackhi_ps(e, o);
      _mm256_storeu_ps(drow + 2 * j, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(drow + 2 * j + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (int c = 2 * j; c < g.w; c++) drow[c] = (c % 2 ? odd : even)[c / 2];
  }
}

AVX2 NO_MEMCPY static void forward_phases(float *out, const float *xs, const float *taps, float bias,
                                          pcd_depthwise_geometry g) {
  const int oh = out_extent(g.h, g), ow = out_extent(g.w, g);
  if (g.stride == 1 && banded &&
      correlate_banded_any(out, ow, xs, g.w + 2 * g.padding, taps, bias, g.k, g.dilation, oh, ow))
    return;
  int off[49];
  split_offsets(off, g);
  correlate_any(out, ow, xs, g.stride * (g.w + 2 * g.padding), off, taps, g.k * g.k, bias, oh, ow);
}

AVX2 NO_MEMCPY static void backward_phases(float *dx, float *dtaps, const float *gout, const float *xs,
                                           const float *taps, pcd_depthwise_geometry g, float *scratch) {
  const int wp = g.w + 2 * g.padding;
  const phase_plan plan = plan_of(g);
  if (dtaps) tap_sums_any(dtaps, gout, xs, g, plan.oh, plan.ow);
  if (dx) {
    float *gpad = scratch + (g.h + 2 * g.padding) * wp;
    input_gradient_phases(dx, gout, taps, g, plan, gpad, gpad + plan.hg * plan.wg);
  }
}
#endif

// ---- Entry points ----

long pcd_depthwise_split_count(pcd_depthwise_geometry g) {
  return (long)(g.h + 2 * g.padding) * (g.w + 2 * g.padding);
}

void pcd_depthwise_split(float *split, const float *x, int relu, pcd_depthwise_geometry g) {
#if HAVE_AVX2_BUILD
  if (use_phases(g)) {
    split_x(split, x, relu, g);
    return;
  }
#endif
  pad_copy(split, x, relu, g);
}

void pcd_depthwise_forward_split(float *out, const float *split, const float *taps, float bias,
                                 pcd_depthwise_geometry g) {
#if HAVE_AVX2_BUILD
  if (use_phases(g)) {
    forward_phases(out, split, taps, bias, g);
    return;
  }
#endif
  forward_generic(out, split, taps, bias, g);
}

void pcd_depthwise_backward_split(float *dx, float *dtaps, const float *gout, const float *split,
                                  const float *taps, pcd_depthwise_geometry g, float *scratch) {
#if HAVE_AVX2_BUILD
  if (use_phases(g)) {
    backward_phases(dx, dtaps, gout, split, taps, g, scratch);
    return;
  }
#endif
  backward_generic(dx, dtaps, gout, split, taps, g, scratch);
}

// The split plane is the scratch's first pcd_depthwise_split_count floats, where the kernels
// above keep nothing else.
void pcd_depthwise_forward(float *out, const float *x, const float *taps, float bias,
                           pcd_depthwise_geometry g, float *scratch) {
  pcd_depthwise_split(scratch, x, 0, g);
  pcd_depthwise_forward_split(out, scratch, taps, bias, g);
}

void pcd_depthwise_backward(float *dx, float *dtaps, const float *gout, const float *x,
                            const float *taps, pcd_depthwise_geometry g, float *scratch) {
  if (dtaps) pcd_depthwise_split(scratch, x, 0, g);  // only the tap gradients read x
  pcd_depthwise_backward_split(dx, dtaps, gout, scratch, taps, g, scratch);
}
