// The product of a convolution's forward pass with the same rounding at every output position.
// Not API: the Swift engine is the only caller.
#ifndef PCDARTS_MATMUL_H
#define PCDARTS_MATMUL_H

/// out (m × n) = w (m × k) · b (k × n), row-major and dense. Every out[i][p] is the sum
/// 0 + Σ_q w[i][q]·b[q][p] taken in q order with the same operations for every p, so that equal
/// columns of b give bitwise equal columns of out (sgemm does not promise that).
void pcd_matmul_rows(float *out, const float *w, const float *b, long m, long k, long n);

#endif
