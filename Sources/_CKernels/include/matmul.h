// The products of a convolution: the forward's (and the input gradient's) with the same rounding
// at every output position, and the weight gradient's.
// Not API: the Swift engine is the only caller.
#ifndef PCDARTS_MATMUL_H
#define PCDARTS_MATMUL_H

/// out (m × n) = w (m × k) · b (k × n), row-major and dense. Every out[i][p] is the sum
/// 0 + Σ_q w[i][q]·b[q][p] taken in q order with the same operations for every p, so that equal
/// columns of b give bitwise equal columns of out (sgemm does not promise that).
void pcd_matmul_rows(float *out, const float *w, const float *b, long m, long k, long n);

/// c (m × n, row stride ldc) += a (m × k) · b (n × k)ᵀ, a and b row-major and dense: each c[i][j]
/// gains the dot product of row i of a and row j of b over their k columns (a weight gradient's
/// sum over positions). The AVX-512 and AVX2 builds take every dot product in the same order (8
/// lanes of partial sums, reduced alike, then the last k mod 8 columns), so they give the same
/// bits.
void pcd_matmul_nt_add(float *c, const float *a, const float *b, long m, long n, long k, long ldc);

#endif
