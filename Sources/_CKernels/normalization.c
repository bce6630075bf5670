// Kernels of batch normalisation and of a mixed op's normalised weighted sum (normalization.h).
// Partial sums are kept in eight float lanes within a plane (at most a few thousand values) and
// returned in double, where the Swift side accumulates across planes.
#include "dispatch.h"
#include "normalization.h"

INLINE void plane_moments(const float *restrict x, long n, double *mean, double *m2) {
  const float mu = sum8(x, n) / (float)n;
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  long i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) {
      const float d = x[i + l] - mu;
      acc[l] += d * d;
    }
  float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; i++) total += (x[i] - mu) * (x[i] - mu);
  // Deviations are taken from mu, the mean rounded to float; the exact mean m would lower the
  // sum by n·(m − mu)², far below float resolution.
  *mean = mu;
  *m2 = total;
}

INLINE void sum_and_dots(const float *restrict g, const float *const *xs, int terms, long n,
                         double *sums) {
  sums[0] += sum8(g, n);
  for (int t = 0; t < terms; t++) sums[1 + t] += dot8(g, xs[t], n, 1);
}

INLINE void combine(float *restrict out, const float *const *xs, const float *a, int terms,
                    float b, long n) {
  const float *restrict x0 = xs[0];
  const float a0 = a[0];
  for (long i = 0; i < n; i++) out[i] = b + a0 * x0[i];
  for (int t = 1; t < terms; t++) {
    const float *restrict x = xs[t];
    const float at = a[t];
    for (long i = 0; i < n; i++) out[i] += at * x[i];
  }
}

INLINE void affine_relu(float *restrict out, const float *restrict x, float a, float b, long n) {
  for (long i = 0; i < n; i++) {
    const float y = a * x[i] + b;
    out[i] = y < 0 ? 0 : y;  // NaN propagates, as torch.relu does
  }
}

INLINE void masked_sum_and_dot(const float *restrict g, const float *restrict r,
                               const float *restrict x, long n, double *sums) {
  float sg = 0, sgx = 0;
  for (long i = 0; i < n; i++) {
    const float gm = r[i] <= 0 ? 0 : g[i];
    sg += gm;
    sgx += gm * x[i];
  }
  sums[0] += sg;
  sums[1] += sgx;
}

INLINE void masked_linear_combination(float *restrict dx, const float *restrict g,
                                      const float *restrict r, const float *restrict x, float a,
                                      float b, float c, long n) {
  for (long i = 0; i < n; i++) dx[i] = a * (r[i] <= 0 ? 0 : g[i]) + b * x[i] + c;
}

#if HAVE_AVX2_BUILD
// The mask is a compare of r with zero, and-ed into g; two accumulators per sum.
AVX2 static void masked_sum_and_dot_simd(const float *restrict g, const float *restrict r,
                                         const float *restrict x, long n, double *sums) {
  const long vec = n & ~7L;
  const __m256 zero = _mm256_setzero_ps();
  __m256 sg = zero, sgx = zero;
  for (long i = 0; i < vec; i += 8) {
    // Not r ≤ 0, so that a NaN passes its gradient as in the portable build (and torch).
    const __m256 keep = _mm256_cmp_ps(_mm256_loadu_ps(r + i), zero, _CMP_NLE_UQ);
    const __m256 gm = _mm256_and_ps(keep, _mm256_loadu_ps(g + i));
    sg = _mm256_add_ps(sg, gm);
    sgx = _mm256_fmadd_ps(gm, _mm256_loadu_ps(x + i), sgx);
  }
  double tail[2] = {0, 0};
  masked_sum_and_dot(g + vec, r + vec, x + vec, n - vec, tail);
  sums[0] += hsum256(sg) + tail[0];
  sums[1] += hsum256(sgx) + tail[1];
}

// Two passes over a plane that stays in L1; two accumulators per pass hide the add latency.
AVX2 static void plane_moments_simd(const float *restrict x, long n, double *mean, double *m2) {
  const long vec = n & ~15L;
  __m256 s0 = _mm256_setzero_ps(), s1 = s0;
  for (long i = 0; i < vec; i += 16) {
    s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
    s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
  }
  float total = hsum256(_mm256_add_ps(s0, s1));
  for (long i = vec; i < n; i++) total += x[i];
  const float mu = total / (float)n;
  const __m256 m = _mm256_set1_ps(mu);
  __m256 q0 = _mm256_setzero_ps(), q1 = q0;
  for (long i = 0; i < vec; i += 16) {
    const __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), m);
    const __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), m);
    q0 = _mm256_fmadd_ps(d0, d0, q0);
    q1 = _mm256_fmadd_ps(d1, d1, q1);
  }
  float squares = hsum256(_mm256_add_ps(q0, q1));
  for (long i = vec; i < n; i++) squares += (x[i] - mu) * (x[i] - mu);
  *mean = mu;
  *m2 = squares;
}

/// sums[0] += Σ g (when `withSum`) and sums[1 + t] += ⟨g, xs[t]⟩ for t < T ≤ 8, g loaded once
/// per 8 values for all of them. Inlined with T and withSum constant, so that the accumulators
/// stay in registers (with a variable count they lived in memory).
AVX2 INLINE void sum_and_dots_group(const float *restrict g, const float *const *xs, const int T,
                                    const int withSum, long n, double *sums) {
  const long vec = n & ~7L;
  __m256 sg = _mm256_setzero_ps(), acc[8];
  for (int t = 0; t < T; t++) acc[t] = _mm256_setzero_ps();
  for (long i = 0; i < vec; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    if (withSum) sg = _mm256_add_ps(sg, gv);
    for (int t = 0; t < T; t++) acc[t] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(xs[t] + i), acc[t]);
  }
  float tg = 0, tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (long i = vec; i < n; i++) {
    tg += g[i];
    for (int t = 0; t < T; t++) tail[t] += g[i] * xs[t][i];
  }
  if (withSum) sums[0] += hsum256(sg) + tg;
  for (int t = 0; t < T; t++) sums[1 + t] += hsum256(acc[t]) + tail[t];
}

// Groups of up to eight terms (DARTS's seven candidates in one pass over g), the first with the
// sum. Each sum and dot product has its own accumulator whatever the grouping, so the grouping
// does not change a bit.
AVX2 static void sum_and_dots_simd(const float *restrict g, const float *const *xs, int terms,
                                   long n, double *sums) {
  int first = 0;
  do {
    const int count = terms - first < 8 ? terms - first : 8;
    double *out = sums + first;  // the group's dot products start at out[1]
    switch (count * 2 + (first == 0)) {
#define GROUP(t) \
  case 2 * t + 1: sum_and_dots_group(g, xs + first, t, 1, n, out); break; \
  case 2 * t: sum_and_dots_group(g, xs + first, t, 0, n, out); break;
      GROUP(1) GROUP(2) GROUP(3) GROUP(4) GROUP(5) GROUP(6) GROUP(7) GROUP(8)
#undef GROUP
      default:  // no terms: the sum alone
        sum_and_dots_group(g, xs, 0, 1, n, sums);
        break;
    }
    first += 8;
  } while (first < terms);
}

// Each block of 32 outputs is built in registers over all terms and stored once.
AVX2 static void combine_simd(float *restrict out, const float *const *xs, const float *a,
                              int terms, float b, long n) {
  const long vec = n & ~31L;
  for (long i = 0; i < vec; i += 32) {
    __m256 o0 = _mm256_set1_ps(b), o1 = o0, o2 = o0, o3 = o0;
    for (int t = 0; t < terms; t++) {
      const __m256 at = _mm256_broadcast_ss(a + t);
      const float *x = xs[t] + i;
      o0 = _mm256_fmadd_ps(at, _mm256_loadu_ps(x), o0);
      o1 = _mm256_fmadd_ps(at, _mm256_loadu_ps(x + 8), o1);
      o2 = _mm256_fmadd_ps(at, _mm256_loadu_ps(x + 16), o2);
      o3 = _mm256_fmadd_ps(at, _mm256_loadu_ps(x + 24), o3);
    }
    _mm256_storeu_ps(out + i, o0);
    _mm256_storeu_ps(out + i + 8, o1);
    _mm256_storeu_ps(out + i + 16, o2);
    _mm256_storeu_ps(out + i + 24, o3);
  }
  for (long i = vec; i < n; i++) {
    float o = b;
    for (int t = 0; t < terms; t++) o += a[t] * xs[t][i];
    out[i] = o;
  }
}
#endif


DISPATCH(affine_relu, (float *out, const float *x, float a, float b, long n), (out, x, a, b, n))
DISPATCH(masked_linear_combination,
         (float *dx, const float *g, const float *r, const float *x, float a, float b, float c, long n),
         (dx, g, r, x, a, b, c, n))
DISPATCH_SIMD(masked_sum_and_dot, (const float *g, const float *r, const float *x, long n, double *sums),
              (g, r, x, n, sums))
DISPATCH_SIMD(plane_moments, (const float *x, long n, double *mean, double *m2), (x, n, mean, m2))
DISPATCH_SIMD(sum_and_dots, (const float *g, const float *const *xs, int terms, long n, double *sums),
              (g, xs, terms, n, sums))
DISPATCH_SIMD(combine, (float *out, const float *const *xs, const float *a, int terms, float b, long n),
              (out, xs, a, terms, b, n))

void pcd_affine_relu(float *out, const float *x, float a, float b, long n) {
  affine_relu_any(out, x, a, b, n);
}

void pcd_masked_sum_and_dot(const float *g, const float *r, const float *x, long n, double *sums) {
  masked_sum_and_dot_any(g, r, x, n, sums);
}

void pcd_masked_linear_combination(float *dx, const float *g, const float *r, const float *x,
                                   float a, float b, float c, long n) {
  masked_linear_combination_any(dx, g, r, x, a, b, c, n);
}

void pcd_plane_moments(const float *x, long n, double *mean, double *m2) {
  plane_moments_any(x, n, mean, m2);
}

void pcd_sum_and_dots(const float *g, const float *const *xs, int terms, long n, double *sums) {
  sum_and_dots_any(g, xs, terms, n, sums);
}

void pcd_combine(float *out, const float *const *xs, const float *a, int terms, float b, long n) {
  combine_any(out, xs, a, terms, b, n);
}
