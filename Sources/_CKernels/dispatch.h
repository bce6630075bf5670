// Shared by the kernel files: how each kernel body is instantiated three times, in functions
// compiled for AVX-512, for AVX2 + FMA and portably, and the run-time choice between them.
// Private to _CKernels.
//
// Every build gives the AVX2 build's bits: the compiler reassociates no sums (no fast-math), so
// an auto-vectorised body rounds the same at any width, and the hand-written AVX-512 kernels
// widen only loops whose every output takes its own products in a fixed order; the reductions
// across a vector's lanes (tap gradients, batch-norm sums) keep their AVX2 versions.
#ifndef PCDARTS_DISPATCH_H
#define PCDARTS_DISPATCH_H

#include "ckernels.h"

// The kernel bodies are written once, as always-inline functions; `restrict` and unit-stride
// inner loops let the compiler vectorise them, and dot products keep 8 independent partial sums
// so that no floating-point reassociation is needed.
#define INLINE static inline __attribute__((always_inline))

#if defined(__x86_64__) && (defined(__clang__) || defined(__GNUC__))
#define HAVE_AVX2_BUILD 1
#define AVX2 __attribute__((target("avx2,fma")))
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512cd,avx2,fma")))
#include <immintrin.h>
#else
#define HAVE_AVX2_BUILD 0
#endif

/// Σ x[i] for i < n, in eight partial sums.
INLINE float sum8(const float *restrict x, long n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  long i = 0;
  for (; i + 8 <= n; i += 8)
    for (int l = 0; l < 8; l++) acc[l] += x[i + l];
  float total = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; i++) total += x[i];
  return total;
}

/// Σ a[q]·b[q·sb] for q < n, in eight partial sums.
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

/// The build the kernels run: pcd_cpu_vector_level() unless a test capped it.
int pcd_kernel_level(void);
/// Whether the kernels run the AVX2 + FMA builds (or wider).
int pcd_use_avx2(void);
/// Whether the kernels run the AVX-512 builds.
int pcd_use_avx512(void);

#if HAVE_AVX2_BUILD
#define DISPATCH(name, params, args)                    \
  static AVX512 void name##_avx512 params { name args; } \
  static AVX2 void name##_avx2 params { name args; }    \
  static void name##_portable params { name args; }     \
  static void name##_any params {                       \
    switch (pcd_kernel_level()) {                       \
      case 2: name##_avx512 args; break;                \
      case 1: name##_avx2 args; break;                  \
      default: name##_portable args; break;             \
    }                                                   \
  }

/// For kernels with a hand-written AVX2 version `name##_simd`: `name##_any` runs it where AVX2
/// runs (the AVX-512 build included), else the portable body `name`.
#define DISPATCH_SIMD(name, params, args)               \
  static void name##_any params {                       \
    if (pcd_use_avx2()) name##_simd args; else name args; \
  }

/// For kernels with hand-written AVX-512 and AVX2 versions, `name##_simd512` and `name##_simd`.
#define DISPATCH_SIMD512(name, params, args)            \
  static void name##_any params {                       \
    switch (pcd_kernel_level()) {                       \
      case 2: name##_simd512 args; break;               \
      case 1: name##_simd args; break;                  \
      default: name args; break;                        \
    }                                                   \
  }

/// The sum of the eight lanes.
AVX2 static inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}
#else
#define DISPATCH(name, params, args)                    \
  static void name##_any params { name args; }
#define DISPATCH_SIMD(name, params, args) DISPATCH(name, params, args)
#define DISPATCH_SIMD512(name, params, args) DISPATCH(name, params, args)
#endif

#endif
