// Depthwise convolution kernels on zero-padded planes (see ckernels.h).
#include "dispatch.h"

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

INLINE float dot8(const float *restrict a, const float *restrict b, int n, int sb) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int q = 0;
  if (sb == 1) {
    for (; q + 8 <= n; q += 8)
      for (int l = 0; l < 8; l++) acc[l] += a[q + l] * b[q + l];
  } else {
    for (; q + 8 <= n; q += 8)
      for (int l = 0; l < 8; l++) acc[l] += a[q + l] * b[(q + l) * sb];
  }
  float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; q < n; q++) total += a[q] * b[q * sb];
  return total;
}

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
        dt += dot8(grow, xpad + offset, ow, s);
        if (dxpad) {
          float *restrict dr = dxpad + offset;
          if (s == 1) {
            for (int q = 0; q < ow; q++) dr[q] += t * grow[q];
          } else {
            for (int q = 0; q < ow; q++) dr[q * s] += t * grow[q];
          }
        }
      }
      dtaps[ki * k + kj] += dt;
    }
  }
}

// ---- Hand-vectorised AVX2 paths for stride 1 (the bulk of DARTS's depthwise work) ----

#if HAVE_AVX2_BUILD
// Stride 1: each output row is built in registers over all k² taps, 32 columns (four vectors)
// at a time so that every broadcast tap feeds four FMAs, then 8 columns, then single columns.
__attribute__((target("avx2,fma"))) static void dw_forward_s1_avx2(
    float *restrict out, const float *restrict xpad, const float *restrict taps, float bias, int k,
    int d, int wp, int oh, int ow) {
  const int vec = ow & ~7;
  for (int r = 0; r < oh; r++) {
    float *restrict orow = out + r * ow;
    int q = 0;
    for (; q + 32 <= vec; q += 32) {
      __m256 a0 = _mm256_set1_ps(bias), a1 = a0, a2 = a0, a3 = a0;
      for (int ki = 0; ki < k; ki++) {
        const float *xr = xpad + (r + ki * d) * wp + q;
        for (int kj = 0; kj < k; kj++) {
          const __m256 t = _mm256_broadcast_ss(taps + ki * k + kj);
          const float *p = xr + kj * d;
          a0 = _mm256_fmadd_ps(t, _mm256_loadu_ps(p), a0);
          a1 = _mm256_fmadd_ps(t, _mm256_loadu_ps(p + 8), a1);
          a2 = _mm256_fmadd_ps(t, _mm256_loadu_ps(p + 16), a2);
          a3 = _mm256_fmadd_ps(t, _mm256_loadu_ps(p + 24), a3);
        }
      }
      _mm256_storeu_ps(orow + q, a0);
      _mm256_storeu_ps(orow + q + 8, a1);
      _mm256_storeu_ps(orow + q + 16, a2);
      _mm256_storeu_ps(orow + q + 24, a3);
    }
    for (; q < vec; q += 8) {
      __m256 acc = _mm256_set1_ps(bias);
      for (int ki = 0; ki < k; ki++) {
        const float *xr = xpad + (r + ki * d) * wp + q;
        for (int kj = 0; kj < k; kj++)
          acc = _mm256_fmadd_ps(_mm256_broadcast_ss(taps + ki * k + kj), _mm256_loadu_ps(xr + kj * d), acc);
      }
      _mm256_storeu_ps(orow + q, acc);
    }
    for (; q < ow; q++) {
      float acc = bias;
      for (int ki = 0; ki < k; ki++)
        for (int kj = 0; kj < k; kj++) acc += taps[ki * k + kj] * xpad[(r + ki * d) * wp + q + kj * d];
      orow[q] = acc;
    }
  }
}

// Stride 1, tap gradients: for one kernel row ki, the k taps' Σ g·x accumulate in k vector
// registers while each 8-column block of g is loaded once; reduced once per tap at the end.
// Instantiated with k as a compile-time constant (3, 5) so the accumulators stay in registers.
__attribute__((target("avx2,fma"), always_inline)) static inline void dw_taps_s1_body(
    float *restrict dtaps, const float *restrict g, const float *restrict xpad, const int k, int d,
    int wp, int oh, int ow) {
  const int vec = ow & ~7;
  for (int ki = 0; ki < k; ki++) {
    __m256 acc[7];
    float tail[7];
    for (int kj = 0; kj < k; kj++) {
      acc[kj] = _mm256_setzero_ps();
      tail[kj] = 0;
    }
    for (int r = 0; r < oh; r++) {
      const float *grow = g + r * ow;
      const float *xr = xpad + (r + ki * d) * wp;
      for (int q = 0; q < vec; q += 8) {
        const __m256 gv = _mm256_loadu_ps(grow + q);
        for (int kj = 0; kj < k; kj++) acc[kj] = _mm256_fmadd_ps(gv, _mm256_loadu_ps(xr + q + kj * d), acc[kj]);
      }
      for (int q = vec; q < ow; q++)
        for (int kj = 0; kj < k; kj++) tail[kj] += grow[q] * xr[q + kj * d];
    }
    for (int kj = 0; kj < k; kj++) dtaps[ki * k + kj] += hsum256(acc[kj]) + tail[kj];
  }
}

__attribute__((target("avx2,fma"))) static void dw_taps_s1_avx2(
    float *restrict dtaps, const float *restrict g, const float *restrict xpad, int k, int d, int wp,
    int oh, int ow) {
  switch (k) {
    case 3: dw_taps_s1_body(dtaps, g, xpad, 3, d, wp, oh, ow); break;
    case 5: dw_taps_s1_body(dtaps, g, xpad, 5, d, wp, oh, ow); break;
    default: dw_taps_s1_body(dtaps, g, xpad, k, d, wp, oh, ow); break;
  }
}
#endif

DISPATCH(dw_forward,
         (float *out, const float *xpad, const float *taps, float bias, int k, int s, int d, int wp, int oh, int ow),
         (out, xpad, taps, bias, k, s, d, wp, oh, ow))
DISPATCH(dw_backward,
         (float *dxpad, float *dtaps, const float *g, const float *xpad, const float *taps, int k, int s, int d, int wp, int oh, int ow),
         (dxpad, dtaps, g, xpad, taps, k, s, d, wp, oh, ow))

void pcd_depthwise_forward(float *out, const float *xpad, const float *taps, float bias, int k,
                           int stride, int dilation, int wp, int oh, int ow) {
#if HAVE_AVX2_BUILD
  if (stride == 1 && pcd_use_avx2()) {
    dw_forward_s1_avx2(out, xpad, taps, bias, k, dilation, wp, oh, ow);
    return;
  }
#endif
  dw_forward_any(out, xpad, taps, bias, k, stride, dilation, wp, oh, ow);
}

void pcd_depthwise_backward(float *dxpad, float *dtaps, const float *g, const float *xpad,
                            const float *taps, int k, int stride, int dilation, int wp, int oh,
                            int ow) {
#if HAVE_AVX2_BUILD
  // Stride 1 with the input gradient computed separately (pcd_depthwise_backward_input).
  if (stride == 1 && !dxpad && k <= 7 && pcd_use_avx2()) {
    dw_taps_s1_avx2(dtaps, g, xpad, k, dilation, wp, oh, ow);
    return;
  }
#endif
  dw_backward_any(dxpad, dtaps, g, xpad, taps, k, stride, dilation, wp, oh, ow);
}

void pcd_depthwise_backward_input(float *dx, const float *gpad, const float *taps, int k,
                                  int dilation, int wpg, int h, int w) {
  // dx[i][j] = Σ t[k−1−a][k−1−b] · gpad[i + a·d][j + b·d]: the forward kernel with the taps
  // flipped, on g padded by (k−1)·d − p.
  float flipped[49];
  for (int t = 0; t < k * k; t++) flipped[t] = taps[k * k - 1 - t];
  pcd_depthwise_forward(dx, gpad, flipped, 0.0f, k, 1, dilation, wpg, h, w);
}
