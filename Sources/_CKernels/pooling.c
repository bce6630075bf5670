// Max and average pooling kernels on padded planes (see ckernels.h).
#include "dispatch.h"

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

INLINE void maxpool_backward(float *restrict dxpad, const float *restrict g, const float *restrict xpad,
                             int k, int s, int wp, int oh, int ow) {
  for (int r = 0; r < oh; r++) {
    for (int q = 0; q < ow; q++) {
      const float *window = xpad + r * s * wp + q * s;
      int at = 0;
      float best = window[0];
      for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++)
          if (window[i * wp + j] > best) {
            best = window[i * wp + j];
            at = i * wp + j;
          }
      dxpad[r * s * wp + q * s + at] += g[r * ow + q];
    }
  }
}

INLINE void sumpool_backward(float *restrict dxpad, const float *restrict g, const float *restrict scale,
                             int k, int s, int wp, int oh, int ow) {
  for (int r = 0; r < oh; r++) {
    for (int q = 0; q < ow; q++) {
      const float share = g[r * ow + q] * (scale ? scale[r * ow + q] : 1.0f);
      float *window = dxpad + r * s * wp + q * s;
      for (int i = 0; i < k; i++)
        for (int j = 0; j < k; j++) window[i * wp + j] += share;
    }
  }
}

DISPATCH(pool_forward,
         (float *out, const float *xpad, const float *scale, bool is_max, int k, int s, int wp, int oh, int ow),
         (out, xpad, scale, is_max, k, s, wp, oh, ow))
DISPATCH(maxpool_backward,
         (float *dxpad, const float *g, const float *xpad, int k, int s, int wp, int oh, int ow),
         (dxpad, g, xpad, k, s, wp, oh, ow))
DISPATCH(sumpool_backward,
         (float *dxpad, const float *g, const float *scale, int k, int s, int wp, int oh, int ow),
         (dxpad, g, scale, k, s, wp, oh, ow))

void pcd_pool_forward(float *out, const float *xpad, const float *scale, bool is_max, int k,
                      int stride, int wp, int oh, int ow) {
  pool_forward_any(out, xpad, scale, is_max, k, stride, wp, oh, ow);
}

void pcd_maxpool_backward(float *dxpad, const float *g, const float *xpad, int k, int stride,
                          int wp, int oh, int ow) {
  maxpool_backward_any(dxpad, g, xpad, k, stride, wp, oh, ow);
}

void pcd_sumpool_backward(float *dxpad, const float *g, const float *scale, int k, int stride,
                          int wp, int oh, int ow) {
  sumpool_backward_any(dxpad, g, scale, k, stride, wp, oh, ow);
}
