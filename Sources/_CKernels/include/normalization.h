// Per-plane kernels of batch normalisation and of the normalised weighted sum of a mixed op.
// One call covers one (H, W) plane of n values; the Swift side splits planes over the cores and
// combines per-plane results in a fixed order, so results do not depend on the split.
// Not API: the Swift engine is the only caller.
#ifndef PCDARTS_NORMALIZATION_H
#define PCDARTS_NORMALIZATION_H

/// The plane's mean and its sum of squared deviations Σ(x − mean)², the latter from a second
/// pass over the (cache-resident) plane rather than E[x²] − E[x]², which cancels badly.
void pcd_plane_moments(const float *x, long n, double *mean, double *m2);

/// sums[0] += Σ g[i] and sums[1 + t] += Σ g[i]·xs[t][i] for t < terms: g is read once for all
/// terms.
void pcd_sum_and_dots(const float *g, const float *const *xs, int terms, long n, double *sums);

/// out[i] = b + Σₜ a[t]·xs[t][i] for t < terms (terms ≥ 1), each input read once.
void pcd_combine(float *out, const float *const *xs, const float *a, int terms, float b, long n);

/// Batch norm then ReLU: out[i] = max(a·x[i] + b, 0).
void pcd_affine_relu(float *out, const float *x, float a, float b, long n);

/// With the ReLU's mask r[i] > 0 (r its output): sums[0] += Σ g[i] and sums[1] += Σ g[i]·x[i]
/// over the unmasked i.
void pcd_masked_sum_and_dot(const float *g, const float *r, const float *x, long n, double *sums);

/// dx[i] = a·(r[i] > 0 ? g[i] : 0) + b·x[i] + c.
void pcd_masked_linear_combination(float *dx, const float *g, const float *r, const float *x,
                                   float a, float b, float c, long n);

#endif
