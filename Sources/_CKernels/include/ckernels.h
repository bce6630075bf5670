// Direct CPU kernels for the planes of depthwise convolutions and pooling windows.
//
// Each entry point works on one (H, W) plane through a padded scratch plane (the depthwise
// kernels fill theirs; the pools take one the caller filled), so the loops carry no bounds
// checks and vectorise. On processors with AVX2 and FMA an AVX2 build runs (chosen once at run
// time); elsewhere a portable build. Not API: the Swift engine is the only caller.
#ifndef PCDARTS_CKERNELS_H
#define PCDARTS_CKERNELS_H

#include <stdbool.h>

/// One depthwise plane's convolution: k × k taps at the given stride and dilation, zero padding
/// on every side, an h × w input and oh × ow output (PyTorch's output size).
typedef struct {
  int k, stride, dilation, padding, h, w;
} pcd_depthwise_geometry;

/// The floats of scratch the depthwise entry points need for geometry g. Zero it once and reuse
/// it for every plane of that geometry on one thread (the kernels keep its padding zero).
long pcd_depthwise_scratch_count(pcd_depthwise_geometry g);

/// out (oh × ow) = bias + Σ taps[ki][kj] · x[r·s + ki·d − p][q·s + kj·d − p], x (h × w) being
/// zero outside; taps is k × k.
void pcd_depthwise_forward(float *out, const float *x, const float *taps, float bias,
                           pcd_depthwise_geometry g, float *scratch);

/// The adjoint, from the output gradient gout (oh × ow): dx (h × w) is written and dtaps (k × k)
/// accumulated, each when not NULL.
void pcd_depthwise_backward(float *dx, float *dtaps, const float *gout, const float *x,
                            const float *taps, pcd_depthwise_geometry g, float *scratch);

/// The same in two steps, for a caller that runs both passes on one plane (a recomputing
/// backward): pcd_depthwise_split writes x, or relu(x) as pcd_relu_forward computes it when
/// `relu` is nonzero, into a plane of pcd_depthwise_split_count floats, zeroed once, whose border
/// it keeps zero (the zero-padded plane; at stride 2 with its even and odd columns side by side),
/// and the _split entry points read the input from there. Their scratch is
/// pcd_depthwise_scratch_count floats as above, zeroed once.
long pcd_depthwise_split_count(pcd_depthwise_geometry g);
void pcd_depthwise_split(float *split, const float *x, int relu, pcd_depthwise_geometry g);
void pcd_depthwise_forward_split(float *out, const float *split, const float *taps, float bias,
                                 pcd_depthwise_geometry g);
void pcd_depthwise_backward_split(float *dx, float *dtaps, const float *gout, const float *split,
                                  const float *taps, pcd_depthwise_geometry g, float *scratch);

/// Switches the banded stride-1 3 × 3 and 5 × 5 depthwise forwards on or off (on by default) and returns the
/// previous setting. Both settings give the same bits; tests compare them.
int pcd_depthwise_set_banded(int on);

/// Max (is_max) or sum over k × k windows of xpad (row stride wp) at stride s:
/// out[r][q] = max/Σ xpad[r·s + i][q·s + j] in row-major tap order (a max keeps a NaN only from
/// the first tap); a sum is then multiplied by scale[r·ow + q] (1/count) when scale is not NULL.
void pcd_pool_forward(float *out, const float *xpad, const float *scale, bool is_max, int k,
                      int stride, int wp, int oh, int ow);

/// The pooling adjoint, written (not accumulated) into dx (h × w; padding p): each input sums,
/// in row-major output order, the g[r][q] of the windows covering it — times scale[r·ow + q]
/// (scale may be NULL) for sums (xpad NULL); for max pooling (xpad, the −∞-padded input of row
/// stride w + 2p) only of the windows whose first maximum in row-major order it is.
/// codepad and gpad are scratch planes of (oh + 2e) × (ow + 2e), e = pcd_pool_gather_border,
/// whose borders the caller has set to −1 and 0 (codepad is unused for sums); the kernel
/// writes their interiors.
void pcd_pool_backward(float *dx, float *codepad, float *gpad, const float *g, const float *scale,
                       const float *xpad, int k, int stride, int padding, int h, int w);

/// The border e = ⌈(k − 1 − p) / s⌉ of pcd_pool_backward's scratch planes: how far past the
/// output plane the windows covering an input reach.
int pcd_pool_gather_border(int k, int stride, int padding);

/// y += a·x, element-wise (a·x rounded, then the sum: no fused multiply-add).
void pcd_axpy(float *y, const float *x, float a, long n);

/// y = x·a + b, element-wise (the product rounded, then the sum).
void pcd_affine(float *y, const float *x, float a, float b, long n);

/// out = a·x + b·y + c, element-wise, rounded as ((a·x + b·y) + c) with each product rounded.
void pcd_linear_combination(float *out, const float *x, const float *y, float a, float b, float c, long n);

/// y = max(x, 0), element-wise.
void pcd_relu_forward(float *y, const float *x, long n);

/// dx = g where y > 0, else 0 (y is the ReLU output).
void pcd_relu_backward(float *dx, const float *g, const float *y, long n);

/// dx += g where y > 0 (the ReLU's gradient added into one that other readers wrote).
void pcd_relu_backward_add(float *dx, const float *g, const float *y, long n);

/// The widest vector instruction set this processor runs (and its OS saves the registers of):
/// 2 = AVX-512 F, BW, VL, DQ and CD besides AVX2 + FMA, 1 = AVX2 + FMA, 0 = neither (or not x86).
/// The kernels run the build of that level (dispatch.h).
int pcd_cpu_vector_level(void);

/// For tests: caps the build every kernel runs at `level` (0 portable, 1 AVX2, 2 AVX-512; −1
/// lifts the cap), so that one machine checks each build it can run. Returns
/// pcd_cpu_vector_level().
int pcd_set_kernel_level(int level);

/// A processor hint for spin-wait loops (PAUSE on x86).
static inline void pcd_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

#endif
