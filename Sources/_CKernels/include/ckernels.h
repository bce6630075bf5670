// Direct CPU kernels for the planes of depthwise convolutions and pooling windows.
//
// Each entry point works on one (H, W) plane, copied by the caller into a zero- (or −∞-)
// padded scratch plane of (H + 2p) × (W + 2p), so the loops carry no bounds checks and
// vectorise. On processors with AVX2 and FMA an AVX2 build of the same code runs (chosen once
// at run time); elsewhere a portable build. Not API: the Swift engine is the only caller.
#ifndef PCDARTS_CKERNELS_H
#define PCDARTS_CKERNELS_H

#include <stdbool.h>

/// out (oh × ow) = Σ taps[ki][kj] · xpad[r·s + ki·d][q·s + kj·d]  (+ bias).
/// xpad has row stride wp; taps is k × k.
void pcd_depthwise_forward(float *out, const float *xpad, const float *taps, float bias,
                           int k, int stride, int dilation, int wp, int oh, int ow);

/// The adjoint: dxpad (row stride wp) += Σ taps · g scattered back (when dxpad is not NULL),
/// and dtaps[ki][kj] += Σ g[r][q] · xpad[r·s + ki·d][q·s + kj·d].
void pcd_depthwise_backward(float *dxpad, float *dtaps, const float *g, const float *xpad,
                            const float *taps, int k, int stride, int dilation, int wp, int oh,
                            int ow);

/// Stride-1 input gradient, written (not accumulated) into dx (h × w): the forward correlation
/// of gpad — g zero-padded by (k − 1)·d − p, row stride wpg — with the taps flipped. k ≤ 7.
void pcd_depthwise_backward_input(float *dx, const float *gpad, const float *taps, int k,
                                  int dilation, int wpg, int h, int w);

/// Max (is_max) or sum over k × k windows of xpad (row stride wp) at stride s:
/// out[r][q] = max/Σ xpad[r·s + i][q·s + j]; a sum is then multiplied by scale[r·ow + q]
/// (1/count) when scale is not NULL.
void pcd_pool_forward(float *out, const float *xpad, const float *scale, bool is_max, int k,
                      int stride, int wp, int oh, int ow);

/// Max-pool adjoint: routes g[r][q] to the first maximum of its window in row-major order,
/// adding into dxpad (row stride wp).
void pcd_maxpool_backward(float *dxpad, const float *g, const float *xpad, int k, int stride,
                          int wp, int oh, int ow);

/// Sum-pool adjoint: dxpad[window] += g[r][q] · scale[r·ow + q] (scale may be NULL).
void pcd_sumpool_backward(float *dxpad, const float *g, const float *scale, int k, int stride,
                          int wp, int oh, int ow);

/// y = max(x, 0), element-wise.
void pcd_relu_forward(float *y, const float *x, long n);

/// dx = g where y > 0, else 0 (y is the ReLU output).
void pcd_relu_backward(float *dx, const float *g, const float *y, long n);

/// A processor hint for spin-wait loops (PAUSE on x86).
static inline void pcd_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#endif
