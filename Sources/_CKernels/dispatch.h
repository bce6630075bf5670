// Shared by the kernel files: how each kernel body is instantiated twice, in a function compiled
// for AVX2+FMA and in a portable one, and the run-time choice between them. Private to _CKernels.
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
#include <immintrin.h>
#else
#define HAVE_AVX2_BUILD 0
#endif

/// Whether this processor runs the AVX2+FMA builds (decided once).
int pcd_use_avx2(void);

#if HAVE_AVX2_BUILD
#define DISPATCH(name, params, args)                    \
  static AVX2 void name##_avx2 params { name args; }    \
  static void name##_portable params { name args; }     \
  static void name##_any params {                       \
    if (pcd_use_avx2()) name##_avx2 args; else name##_portable args; \
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
#endif

#endif
