// Max and average pooling kernels on padded planes (see ckernels.h).
//
// Every path gives the results of a plain scalar loop bit for bit: a window's max or sum is
// taken in row-major tap order (the first tap starts the sum; strict `>` keeps the first
// maximum — PyTorch's rule for ties — and keeps a NaN only in the first tap), and an input's
// gradient adds its outputs' contributions in row-major output order, starting from 0, as a
// scatter from each output in turn would.
//
// The backward gathers: each input sums the (scaled) output gradients of the windows that
// cover it, read from a padded copy of the plane's g — for max pooling only those whose
// winning tap it is, read from a plane of tap codes. No read-modify-write of dx, and the
// stride-1 and stride-2 gathers vectorise like the forward.
#include "dispatch.h"

// ---- One window, one output: the portable reference, also the tails of the AVX2 paths ----

/// The max, or the plain sum, of the k × k window at x (row stride wp).
INLINE float window_pool(const float *restrict x, bool is_max, int k, int wp) {
  float acc = x[0];
  for (int i = 0; i < k; i++)
    for (int j = (i == 0 ? 1 : 0); j < k; j++) {
      const float v = x[i * wp + j];
      if (is_max) acc = acc < v ? v : acc;
      else acc += v;
    }
  return acc;
}

/// The tap i·k + j of the window's first maximum in row-major order.
INLINE int window_argmax(const float *restrict x, int k, int wp) {
  int at = 0;
  float best = x[0];
  for (int i = 0; i < k; i++)
    for (int j = 0; j < k; j++)
      if (x[i * wp + j] > best) {
        best = x[i * wp + j];
        at = i * k + j;
      }
  return at;
}

/// The gradient of the input at padded position (Y, X): output (R, Q) sees it as its tap
/// (Y − sR, X − sQ), so the taps ≡ Y, X (mod s) taken from the last to the first visit the
/// outputs in row-major order. gpad and codepad have row stride wg and a border of e (whose g
/// are 0 and codes −1, so the outputs past the plane's edge add nothing).
INLINE float gather_at(const float *restrict codepad, const float *restrict gpad, bool is_max,
                       int k, int s, int e, int wg, int Y, int X) {
  float acc = 0;
  for (int i = k - 1; i >= 0; i--) {
    if ((Y - i) % s != 0) continue;
    const int row = ((Y - i) / s + e) * wg + e;
    for (int j = k - 1; j >= 0; j--) {
      if ((X - j) % s != 0) continue;
      const int o = row + (X - j) / s;
      if (!is_max) acc += gpad[o];
      else acc += codepad[o] == (float)(i * k + j) ? gpad[o] : 0.0f;
    }
  }
  return acc;
}

// ---- Portable bodies (any stride) ----

INLINE void pool_forward(float *restrict out, const float *restrict xpad, const float *restrict scale,
                         bool is_max, int k, int s, int wp, int oh, int ow) {
  for (int r = 0; r < oh; r++) {
    float *restrict orow = out + r * ow;
    const float *restrict first = xpad + r * s * wp;
    for (int q = 0; q < ow; q++) orow[q] = first[q * s];
    for (int i = 0; i < k; i++) {
      const float *restrict xrow = xpad + (r * s + i) * wp;
      for (int j = (i == 0 ? 1 : 0); j < k; j++) {
        const float *restrict xr = xrow + j;
        if (is_max) {
          if (s == 1) {
            for (int q = 0; q < ow; q++) orow[q] = orow[q] < xr[q] ? xr[q] : orow[q];
          } else {
            for (int q = 0; q < ow; q++) orow[q] = orow[q] < xr[q * s] ? xr[q * s] : orow[q];
          }
        } else {
          if (s == 1) {
            for (int q = 0; q < ow; q++) orow[q] += xr[q];
          } else {
            for (int q = 0; q < ow; q++) orow[q] += xr[q * s];
          }
        }
      }
    }
    if (!is_max && scale) {
      const float *restrict sc = scale + r * ow;
      for (int q = 0; q < ow; q++) orow[q] *= sc[q];
    }
  }
}

/// Fills the interiors of the gather planes: g (times scale, when given) and, for max pooling
/// (xpad not NULL), each output's winning tap.
INLINE void backward_planes(float *restrict codepad, float *restrict gpad, const float *restrict g,
                            const float *restrict scale, const float *restrict xpad, int k, int s,
                            int e, int wp, int wg, int oh, int ow) {
  for (int r = 0; r < oh; r++) {
    float *restrict grow = gpad + (r + e) * wg + e;
    // Two loops, not `scale ? … : 1`: compilers turn that into masked loads from NULL, which
    // fault and are replayed in microcode on every call.
    if (scale) {
      for (int q = 0; q < ow; q++) grow[q] = g[r * ow + q] * scale[r * ow + q];
    } else {
      for (int q = 0; q < ow; q++) grow[q] = g[r * ow + q];
    }
    if (xpad) {
      float *restrict crow = codepad + (r + e) * wg + e;
      for (int q = 0; q < ow; q++) crow[q] = (float)window_argmax(xpad + r * s * wp + q * s, k, wp);
    }
  }
}

INLINE void backward_gather(float *restrict dx, const float *restrict codepad, const float *restrict gpad,
                            bool is_max, int k, int s, int p, int e, int wg, int h, int w) {
  for (int y = 0; y < h; y++)
    for (int x = 0; x < w; x++)
      dx[y * w + x] = gather_at(codepad, gpad, is_max, k, s, e, wg, y + p, x + p);
}

DISPATCH(pool_forward,
         (float *out, const float *xpad, const float *scale, bool is_max, int k, int s, int wp, int oh, int ow),
         (out, xpad, scale, is_max, k, s, wp, oh, ow))
DISPATCH(backward_planes,
         (float *codepad, float *gpad, const float *g, const float *scale, const float *xpad, int k, int s, int e, int wp, int wg, int oh, int ow),
         (codepad, gpad, g, scale, xpad, k, s, e, wp, wg, oh, ow))
DISPATCH(backward_gather,
         (float *dx, const float *codepad, const float *gpad, bool is_max, int k, int s, int p, int e, int wg, int h, int w),
         (dx, codepad, gpad, is_max, k, s, p, e, wg, h, w))

// ---- Hand-vectorised AVX2 paths for strides 1 and 2 (DARTS's pools) ----
//
// Each 8-column block of outputs is reduced over all k² taps in registers; the bodies take k
// as a parameter and are instantiated with constant k (see WITH_K), so that the tap loops
// unroll. Columns past the last full block go through the one-window functions above.

#if HAVE_AVX2_BUILD
/// The instantiations of an AVX2 body: k = 3 (DARTS's pools) and k = 2 (PC-DARTS's bypass)
/// unrolled, any other k generic.
#define WITH_K(k, call_k)                                    \
  do {                                                       \
    if ((k) == 3) { const int K = 3; call_k; }               \
    else if ((k) == 2) { const int K = 2; call_k; }          \
    else { const int K = (k); call_k; }                      \
  } while (0)

/// Max as the scalar loops take it: v if v > acc, else acc (so an initial NaN stays, later
/// ones are skipped, and of equal zeros the first stays).
#define MAX_AFTER(acc, v) _mm256_max_ps((v), (acc))

/// The code blend of a running arg-max: tap where v beats the maximum so far (strict `>`).
#define CODE_AFTER(code, best, v, tap) \
  _mm256_blendv_ps((code), _mm256_set1_ps((float)(tap)), _mm256_cmp_ps((v), (best), _CMP_GT_OQ))

/// Stride 2 takes even and odd columns by shuffling two loads of 8: the results come out in
/// the column order 0 1 4 5 2 3 6 7, which element-wise maxima, sums and blends keep, so one
/// permute per block restores it.
AVX2 static inline __m256 even_lanes(__m256 lo, __m256 hi) { return _mm256_shuffle_ps(lo, hi, 0x88); }
AVX2 static inline __m256 odd_lanes(__m256 lo, __m256 hi) { return _mm256_shuffle_ps(lo, hi, 0xDD); }
AVX2 static inline __m256 unshuffle(__m256 v) {
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8));
}

/// The number of stride-2 output columns taken in 8-blocks: a block at q loads the input columns
/// 2q + 2m … 2q + 2m + 15 for m ≤ (k − 1)/2, which must stay inside the padded row.
static inline int s2_vector_columns(int k, int wp, int ow) {
  int vec = 0;
  while (vec + 8 <= ow && 2 * vec + 2 * ((k - 1) / 2) + 16 <= wp) vec += 8;
  return vec;
}

AVX2 INLINE void pool_forward_s1_body(float *restrict out, const float *restrict xpad,
                                      const float *restrict scale, const bool is_max, const int k,
                                      int wp, int oh, int ow) {
  const int vec = ow & ~7;
  for (int r = 0; r < oh; r++) {
    float *restrict orow = out + r * ow;
    const float *x0 = xpad + r * wp;
    for (int q = 0; q < vec; q += 8) {
      __m256 acc = _mm256_loadu_ps(x0 + q);
      for (int i = 0; i < k; i++)
        for (int j = (i == 0 ? 1 : 0); j < k; j++) {
          const __m256 v = _mm256_loadu_ps(x0 + i * wp + j + q);
          acc = is_max ? MAX_AFTER(acc, v) : _mm256_add_ps(acc, v);
        }
      if (!is_max && scale) acc = _mm256_mul_ps(acc, _mm256_loadu_ps(scale + r * ow + q));
      _mm256_storeu_ps(orow + q, acc);
    }
    for (int q = vec; q < ow; q++) {
      const float v = window_pool(x0 + q, is_max, k, wp);
      orow[q] = !is_max && scale ? v * scale[r * ow + q] : v;
    }
  }
}

AVX2 INLINE void pool_forward_s2_body(float *restrict out, const float *restrict xpad,
                                      const float *restrict scale, const bool is_max, const int k,
                                      int wp, int oh, int ow) {
  const int vec = s2_vector_columns(k, wp, ow);
  for (int r = 0; r < oh; r++) {
    float *restrict orow = out + r * ow;
    const float *x0 = xpad + 2 * r * wp;
    for (int q = 0; q < vec; q += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int i = 0; i < k; i++) {
        const float *xr = x0 + i * wp + 2 * q;
        for (int j = 0; j < k; j += 2) {
          const __m256 lo = _mm256_loadu_ps(xr + j), hi = _mm256_loadu_ps(xr + j + 8);
          const __m256 ev = even_lanes(lo, hi);
          if (i == 0 && j == 0) acc = ev;
          else acc = is_max ? MAX_AFTER(acc, ev) : _mm256_add_ps(acc, ev);
          if (j + 1 < k) {
            const __m256 od = odd_lanes(lo, hi);
            acc = is_max ? MAX_AFTER(acc, od) : _mm256_add_ps(acc, od);
          }
        }
      }
      acc = unshuffle(acc);
      if (!is_max && scale) acc = _mm256_mul_ps(acc, _mm256_loadu_ps(scale + r * ow + q));
      _mm256_storeu_ps(orow + q, acc);
    }
    for (int q = vec; q < ow; q++) {
      const float v = window_pool(x0 + 2 * q, is_max, k, wp);
      orow[q] = !is_max && scale ? v * scale[r * ow + q] : v;
    }
  }
}

AVX2 static void pool_forward_avx2_fast(float *out, const float *xpad, const float *scale, bool is_max,
                                        int k, int s, int wp, int oh, int ow) {
  if (s == 1) {
    if (is_max) WITH_K(k, pool_forward_s1_body(out, xpad, scale, true, K, wp, oh, ow));
    else WITH_K(k, pool_forward_s1_body(out, xpad, scale, false, K, wp, oh, ow));
  } else {
    if (is_max) WITH_K(k, pool_forward_s2_body(out, xpad, scale, true, K, wp, oh, ow));
    else WITH_K(k, pool_forward_s2_body(out, xpad, scale, false, K, wp, oh, ow));
  }
}

AVX2 INLINE void maxpool_codes_s1_body(float *restrict codepad, const float *restrict xpad, const int k,
                                       int e, int wp, int wg, int oh, int ow) {
  const int vec = ow & ~7;
  for (int r = 0; r < oh; r++) {
    float *restrict crow = codepad + (r + e) * wg + e;
    const float *x0 = xpad + r * wp;
    for (int q = 0; q < vec; q += 8) {
      __m256 best = _mm256_loadu_ps(x0 + q), code = _mm256_setzero_ps();
      for (int i = 0; i < k; i++)
        for (int j = (i == 0 ? 1 : 0); j < k; j++) {
          const __m256 v = _mm256_loadu_ps(x0 + i * wp + j + q);
          code = CODE_AFTER(code, best, v, i * k + j);
          best = MAX_AFTER(best, v);
        }
      _mm256_storeu_ps(crow + q, code);
    }
    for (int q = vec; q < ow; q++) crow[q] = (float)window_argmax(x0 + q, k, wp);
  }
}

AVX2 INLINE void maxpool_codes_s2_body(float *restrict codepad, const float *restrict xpad, const int k,
                                       int e, int wp, int wg, int oh, int ow) {
  const int vec = s2_vector_columns(k, wp, ow);
  for (int r = 0; r < oh; r++) {
    float *restrict crow = codepad + (r + e) * wg + e;
    const float *x0 = xpad + 2 * r * wp;
    for (int q = 0; q < vec; q += 8) {
      __m256 best = _mm256_setzero_ps(), code = _mm256_setzero_ps();
      for (int i = 0; i < k; i++) {
        const float *xr = x0 + i * wp + 2 * q;
        for (int j = 0; j < k; j += 2) {
          const __m256 lo = _mm256_loadu_ps(xr + j), hi = _mm256_loadu_ps(xr + j + 8);
          const __m256 ev = even_lanes(lo, hi);
          if (i == 0 && j == 0) {
            best = ev;
          } else {
            code = CODE_AFTER(code, best, ev, i * k + j);
            best = MAX_AFTER(best, ev);
          }
          if (j + 1 < k) {
            const __m256 od = odd_lanes(lo, hi);
            code = CODE_AFTER(code, best, od, i * k + j + 1);
            best = MAX_AFTER(best, od);
          }
        }
      }
      _mm256_storeu_ps(crow + q, unshuffle(code));
    }
    for (int q = vec; q < ow; q++) crow[q] = (float)window_argmax(x0 + 2 * q, k, wp);
  }
}

/// One gathered tap for 8 inputs: the g at o, kept where the code at o is the tap (max pooling).
AVX2 static inline __m256 gathered(const float *codepad, const float *gpad, int o, bool is_max, int tap) {
  const __m256 v = _mm256_loadu_ps(gpad + o);
  if (!is_max) return v;
  return _mm256_and_ps(_mm256_cmp_ps(_mm256_loadu_ps(codepad + o), _mm256_set1_ps((float)tap), _CMP_EQ_OQ), v);
}

/// Stride 1: the input (y, x) is tap (k−1−a, k−1−b) of the output at padded (y + a, x + b) of
/// the gather planes (e = k − 1 − p), a and b rising = outputs in row-major order.
AVX2 INLINE void gather_s1_body(float *restrict dx, const float *restrict codepad, const float *restrict gpad,
                                const bool is_max, const int k, int p, int wg, int h, int w) {
  const int vec = w & ~7;
  for (int y = 0; y < h; y++) {
    float *restrict drow = dx + y * w;
    for (int x = 0; x < vec; x += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int a = 0; a < k; a++)
        for (int b = 0; b < k; b++)
          acc = _mm256_add_ps(acc, gathered(codepad, gpad, (y + a) * wg + x + b, is_max,
                                            (k - 1 - a) * k + (k - 1 - b)));
      _mm256_storeu_ps(drow + x, acc);
    }
    for (int x = vec; x < w; x++) drow[x] = gather_at(codepad, gpad, is_max, k, 1, k - 1 - p, wg, y + p, x + p);
  }
}

/// Stride 2, 16 inputs of a row at a time: the padded columns X of one parity are the taps
/// j ≡ X (mod 2) of consecutive outputs, so each parity gathers 8 lanes with plain loads (the
/// first parity is that of the row's first column, X0 = x0 + p); the two are then interleaved.
AVX2 INLINE void gather_s2_body(float *restrict dx, const float *restrict codepad, const float *restrict gpad,
                                const bool is_max, const int k, int p, int e, int wg, int h, int w) {
  const int vec = w & ~15;
  const int parity[2] = {p & 1, 1 - (p & 1)};
  for (int y = 0; y < h; y++) {
    const int Y = y + p;
    float *restrict drow = dx + y * w;
    for (int x = 0; x < vec; x += 16) {
      const int X0 = x + p, first[2] = {X0 >> 1, (X0 + 1) >> 1};  // first output column, per parity
      __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int i = k - 1; i >= 0; i--) {
        if ((Y - i) & 1) continue;
        const int row = ((Y - i) / 2 + e) * wg + e;
        for (int v = 0; v < 2; v++)
          for (int j = k - 1; j >= 0; j--) {
            if ((j & 1) != parity[v]) continue;
            // Lane l is X = 2(first + l) + parity, the tap j of output column first + l − (j − parity)/2.
            const int o = row + first[v] - (j - parity[v]) / 2;
            acc[v] = _mm256_add_ps(acc[v], gathered(codepad, gpad, o, is_max, i * k + j));
          }
      }
      const __m256 lo = _mm256_unpacklo_ps(acc[0], acc[1]), hi = _mm256_unpackhi_ps(acc[0], acc[1]);
      _mm256_storeu_ps(drow + x, _mm256_permute2f128_ps(lo, hi, 0x20));
      _mm256_storeu_ps(drow + x + 8, _mm256_permute2f128_ps(lo, hi, 0x31));
    }
    for (int x = vec; x < w; x++) drow[x] = gather_at(codepad, gpad, is_max, k, 2, e, wg, Y, x + p);
  }
}

AVX2 static void pool_backward_avx2_fast(float *dx, float *codepad, float *gpad, const float *g,
                                         const float *scale, const float *xpad, int k, int s, int p,
                                         int e, int wp, int wg, int h, int w, int oh, int ow) {
  backward_planes_avx2(codepad, gpad, g, scale, NULL, k, s, e, wp, wg, oh, ow);
  if (s == 1) {
    if (xpad) {
      WITH_K(k, maxpool_codes_s1_body(codepad, xpad, K, e, wp, wg, oh, ow));
      WITH_K(k, gather_s1_body(dx, codepad, gpad, true, K, p, wg, h, w));
    } else {
      WITH_K(k, gather_s1_body(dx, codepad, gpad, false, K, p, wg, h, w));
    }
  } else {
    if (xpad) {
      WITH_K(k, maxpool_codes_s2_body(codepad, xpad, K, e, wp, wg, oh, ow));
      WITH_K(k, gather_s2_body(dx, codepad, gpad, true, K, p, e, wg, h, w));
    } else {
      WITH_K(k, gather_s2_body(dx, codepad, gpad, false, K, p, e, wg, h, w));
    }
  }
}
#endif

// ---- Entry points: the AVX2 paths where they apply, else the dispatched portable bodies ----

void pcd_pool_forward(float *out, const float *xpad, const float *scale, bool is_max, int k,
                      int stride, int wp, int oh, int ow) {
#if HAVE_AVX2_BUILD
  if ((stride == 1 || stride == 2) && pcd_use_avx2()) {
    pool_forward_avx2_fast(out, xpad, scale, is_max, k, stride, wp, oh, ow);
    return;
  }
#endif
  pool_forward_any(out, xpad, scale, is_max, k, stride, wp, oh, ow);
}

void pcd_pool_backward(float *dx, float *codepad, float *gpad, const float *g, const float *scale,
                       const float *xpad, int k, int stride, int padding, int h, int w) {
  const int p = padding, s = stride;
  const int oh = (h + 2 * p - k) / s + 1, ow = (w + 2 * p - k) / s + 1;
  const int e = pcd_pool_gather_border(k, s, p), wp = w + 2 * p, wg = ow + 2 * e;
#if HAVE_AVX2_BUILD
  if ((s == 1 || s == 2) && pcd_use_avx2()) {
    pool_backward_avx2_fast(dx, codepad, gpad, g, scale, xpad, k, s, p, e, wp, wg, h, w, oh, ow);
    return;
  }
#endif
  backward_planes_any(codepad, gpad, g, scale, xpad, k, s, e, wp, wg, oh, ow);
  backward_gather_any(dx, codepad, gpad, xpad != NULL, k, s, p, e, wg, h, w);
}

int pcd_pool_gather_border(int k, int stride, int padding) {
  return (k - 1 - padding + stride - 1) / stride;
}
