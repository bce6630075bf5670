// Throughput of the C kernels on one core, at the shapes of the PC-DARTS search (C/K = 4, 8 and
// 16 channels on 32 × 32, 16 × 16 and 8 × 8 planes), with every operand in cache: what each
// kernel can do when memory is not the limit, so that a kernel far below its neighbours stands
// out. Built and run by benchmarks/kernels.sh against the release build's objects.
//
// Each figure is the best of five timings of a loop of calls (0.1 to 0.2 GFLOP, or 10^8 values,
// per loop); a checksum of the outputs follows each line so that two builds can be compared for
// their bits too.
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "ckernels.h"
#include "matmul.h"
#include "normalization.h"

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

static double checksum(const float *x, long n) {
  double s = 0;
  for (long i = 0; i < n; i++) s += x[i] * (double)(i % 17 + 1);
  return s;
}

/// The best of five timings of `reps` calls of the statement, in seconds.
#define BEST(reps, stmt)                                   \
  ({                                                       \
    double best_ = 1e30;                                   \
    for (int round_ = 0; round_ < 5; round_++) {           \
      const double t0_ = now();                            \
      for (long i_ = 0; i_ < (reps); i_++) { stmt; }       \
      const double t_ = now() - t0_;                       \
      if (t_ < best_) best_ = t_;                          \
    }                                                      \
    best_;                                                 \
  })

int main(void) {
  enum { MAXN = 4096, MAXC = 64 };
  float *w = malloc(sizeof(float) * MAXC * MAXC), *b = malloc(sizeof(float) * MAXC * MAXN);
  float *out = malloc(sizeof(float) * MAXC * MAXN), *c = calloc(MAXC * MAXC, sizeof(float));
  for (int i = 0; i < MAXC * MAXC; i++) w[i] = (float)(i % 7 - 3) * 0.1f;
  for (int i = 0; i < MAXC * MAXN; i++) b[i] = (float)(i % 13 - 6) * 0.01f;

  printf("products (1 x 1 convolutions per sample): m outputs, k inputs, n positions\n");
  const long products[][3] = {{4, 4, 1024}, {8, 8, 256}, {16, 16, 64}, {16, 16, 1024}, {16, 64, 1024}, {32, 32, 1024}};
  for (int s = 0; s < 6; s++) {
    const long m = products[s][0], k = products[s][1], n = products[s][2];
    const double flops = 2.0 * m * k * n;
    const long reps = (long)(2e8 / flops) + 1;
    const double forward = BEST(reps, pcd_matmul_rows(out, w, b, m, k, n));
    // The weight gradient: c (m × k) += out (m × n) · b (k × n)ᵀ.
    const double weight = BEST(reps, pcd_matmul_nt_add(c, out, b, m, k, n, k));
    printf("  %3ld x %3ld x %4ld: forward %6.1f GFLOP/s, weight gradient %6.1f GFLOP/s   [%.9g %.9g]\n", m, k, n,
           flops * reps / forward / 1e9, flops * reps / weight / 1e9, checksum(out, m * n), checksum(c, m * k));
  }

  printf("mixed-op weighted sum backward: sum of g and its dot products with 7 terms\n");
  const float *terms[7];
  for (int t = 0; t < 7; t++) terms[t] = b + t * MAXN;
  for (long n = 1024; n >= 64; n /= 4) {
    double sums[8] = {0};
    const long reps = (long)(1e8 / (7.0 * n)) + 1;
    const double t = BEST(reps, pcd_sum_and_dots(out, terms, 7, n, sums));
    double once[8] = {0};
    pcd_sum_and_dots(out, terms, 7, n, once);
    printf("  %4ld values: %6.1f Gvalues/s   [%.9g]\n", n, 7.0 * n * reps / t / 1e9, once[0] + once[3] + once[7]);
  }

  printf("depthwise convolution per plane (k, stride, dilation, side): forward, tap and input gradients\n");
  const int geometries[][3] = {{3, 1, 1}, {5, 1, 1}, {3, 1, 2}, {5, 1, 2}, {3, 2, 1}, {5, 2, 1}};
  float taps[25], dtaps[25] = {0};
  for (int i = 0; i < 25; i++) taps[i] = (float)(i % 5 - 2) * 0.2f;
  for (int gi = 0; gi < 6; gi++)
    for (int side = 32; side >= 8; side /= 2) {
      const int k = geometries[gi][0], s = geometries[gi][1], d = geometries[gi][2];
      const pcd_depthwise_geometry g = {k, s, d, d * (k - 1) / 2, side, side};
      const int o = (side + 2 * g.padding - d * (k - 1) - 1) / s + 1;
      float *split = calloc(pcd_depthwise_split_count(g), sizeof(float));
      float *scratch = calloc(pcd_depthwise_scratch_count(g), sizeof(float));
      const double flops = 2.0 * k * k * o * o;
      const long reps = (long)(1e8 / flops) + 1;
      pcd_depthwise_split(split, b, 1, g);
      const double forward = BEST(reps, pcd_depthwise_forward_split(out, split, taps, 0, g));
      const double tap = BEST(reps, pcd_depthwise_backward_split(NULL, dtaps, b + MAXN, split, taps, g, scratch));
      const double input = BEST(reps, pcd_depthwise_backward_split(out + MAXN, NULL, b + MAXN, split, taps, g, scratch));
      printf("  k%d s%d d%d %2d x %-2d: forward %6.1f, taps %6.1f, input %6.1f GFLOP/s   [%.9g %.9g]\n", k, s, d,
             side, side, flops * reps / forward / 1e9, flops * reps / tap / 1e9, flops * reps / input / 1e9,
             checksum(out, o * o), checksum(out + MAXN, side * side));
      free(split);
      free(scratch);
    }
  return 0;
}
