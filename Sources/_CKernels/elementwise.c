// Element-wise kernels, and the run-time choice of the kernel builds (see dispatch.h).
#include "dispatch.h"

/// The widest build the kernels may run (tests lower it); -1: the processor's widest.
static int level_cap = -1;

int pcd_cpu_vector_level(void) {
#if HAVE_AVX2_BUILD
  static int cached = -1;
  if (cached < 0) {
    // __builtin_cpu_supports also checks that the OS saves the vector registers (XGETBV).
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                       __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
                       __builtin_cpu_supports("avx512cd");
    cached = avx2 ? (avx512 ? 2 : 1) : 0;
  }
  return cached;
#else
  return 0;
#endif
}

int pcd_kernel_level(void) {
  const int cpu = pcd_cpu_vector_level();
  return level_cap >= 0 && level_cap < cpu ? level_cap : cpu;
}

int pcd_use_avx2(void) { return pcd_kernel_level() >= 1; }

int pcd_use_avx512(void) { return pcd_kernel_level() >= 2; }

int pcd_set_kernel_level(int level) {
  level_cap = level;
  return pcd_cpu_vector_level();
}

INLINE void relu_forward(float *restrict y, const float *restrict x, long n) {
  // NaN propagates, as torch.relu does: the comparison is false for NaN, which is kept.
  for (long i = 0; i < n; i++) y[i] = x[i] < 0 ? 0 : x[i];
}

INLINE void relu_backward(float *restrict dx, const float *restrict g, const float *restrict y, long n) {
  for (long i = 0; i < n; i++) dx[i] = y[i] <= 0 ? 0 : g[i];  // torch's threshold_backward: NaN passes the gradient
}

// The same, added into a gradient that other readers of the input have already written.
INLINE void relu_backward_add(float *restrict dx, const float *restrict g, const float *restrict y, long n) {
  for (long i = 0; i < n; i++) dx[i] = dx[i] + (y[i] <= 0 ? 0 : g[i]);
}

// The affine maps round a·x, then each addition, in that order (no fused multiply-add): the
// order of the Swift SIMD loops they replaced, so the same bits, in the builds' widths (Swift's
// SIMD8 compiled to SSE pairs on the baseline x86-64 target).
INLINE void axpy(float *restrict y, const float *restrict x, float a, long n) {
#pragma clang fp contract(off)
  for (long i = 0; i < n; i++) y[i] = y[i] + a * x[i];
}

INLINE void affine(float *restrict y, const float *restrict x, float a, float b, long n) {
#pragma clang fp contract(off)
  for (long i = 0; i < n; i++) y[i] = x[i] * a + b;
}

INLINE void linear_combination(float *restrict out, const float *restrict x, const float *restrict y,
                               float a, float b, float c, long n) {
#pragma clang fp contract(off)
  for (long i = 0; i < n; i++) out[i] = a * x[i] + b * y[i] + c;
}

DISPATCH(axpy, (float *y, const float *x, float a, long n), (y, x, a, n))
DISPATCH(affine, (float *y, const float *x, float a, float b, long n), (y, x, a, b, n))
DISPATCH(linear_combination, (float *out, const float *x, const float *y, float a, float b, float c, long n),
         (out, x, y, a, b, c, n))

void pcd_axpy(float *y, const float *x, float a, long n) { axpy_any(y, x, a, n); }

void pcd_affine(float *y, const float *x, float a, float b, long n) { affine_any(y, x, a, b, n); }

void pcd_linear_combination(float *out, const float *x, const float *y, float a, float b, float c, long n) {
  linear_combination_any(out, x, y, a, b, c, n);
}

DISPATCH(relu_forward, (float *y, const float *x, long n), (y, x, n))
DISPATCH(relu_backward, (float *dx, const float *g, const float *y, long n), (dx, g, y, n))
DISPATCH(relu_backward_add, (float *dx, const float *g, const float *y, long n), (dx, g, y, n))

void pcd_relu_forward(float *y, const float *x, long n) { relu_forward_any(y, x, n); }

void pcd_relu_backward(float *dx, const float *g, const float *y, long n) { relu_backward_any(dx, g, y, n); }

void pcd_relu_backward_add(float *dx, const float *g, const float *y, long n) { relu_backward_add_any(dx, g, y, n); }
