// Pillow's bilinear resampling of 8-bit images (Resample.c of Pillow 9), reproduced bit for bit
// so that a folder of images gives the pixels torchvision's `Resize` gives (see imagecodecs.h).
#include "imagecodecs.h"

#include <math.h>
#include <stdlib.h>

enum { PRECISION_BITS = 32 - 8 - 2 };

static double triangle(double x) {
  x = fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

static uint8_t clip8(int value) {
  value >>= PRECISION_BITS;
  return value < 0 ? 0 : value > 255 ? 255 : (uint8_t)value;
}

/// For each output position its first input, its tap count and `ksize` fixed-point weights.
/// Returns ksize, or 0 on allocation failure.
static int coefficients(int in_size, double in0, double in1, int out_size, int **bounds_out, int **weights_out) {
  const double scale = (in1 - in0) / out_size;
  const double filter_scale = scale < 1.0 ? 1.0 : scale;
  const double support = filter_scale;  // the triangle's support is 1
  const double inverse = 1.0 / filter_scale;  // Pillow multiplies by the reciprocal
  const int ksize = (int)ceil(support) * 2 + 1;
  int *bounds = malloc(sizeof(int) * 2 * (size_t)out_size);
  int *weights = malloc(sizeof(int) * (size_t)out_size * ksize);
  double *k = malloc(sizeof(double) * (size_t)ksize);
  if (!bounds || !weights || !k) {
    free(bounds);
    free(weights);
    free(k);
    return 0;
  }
  for (int xx = 0; xx < out_size; xx++) {
    const double center = in0 + (xx + 0.5) * scale;
    int xmin = (int)(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    int xmax = (int)(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double total = 0;
    for (int x = 0; x < xmax; x++) total += k[x] = triangle((x + xmin - center + 0.5) * inverse);
    for (int x = 0; x < ksize; x++) {
      const double w = x < xmax ? (total != 0.0 ? k[x] / total : k[x]) : 0.0;
      weights[xx * ksize + x] = (int)(w < 0 ? -0.5 + w * (1 << PRECISION_BITS) : 0.5 + w * (1 << PRECISION_BITS));
    }
    bounds[2 * xx] = xmin;
    bounds[2 * xx + 1] = xmax;
  }
  free(k);
  *bounds_out = bounds;
  *weights_out = weights;
  return ksize;
}

int pcd_resize_bilinear(uint8_t *out, const uint8_t *in, uint8_t *scratch, int in_w, int in_h, long in_stride,
                        int out_w, int out_h, int channels, float x0, float y0, float x1, float y1) {
  int *xb, *xk, *yb, *yk;
  const int kx = coefficients(in_w, x0, x1, out_w, &xb, &xk);
  if (!kx) return -1;
  const int ky = coefficients(in_h, y0, y1, out_h, &yb, &yk);
  if (!ky) {
    free(xb);
    free(xk);
    return -1;
  }
  const int need_horizontal = out_w != in_w || x0 != 0 || x1 != out_w;
  const int need_vertical = out_h != in_h || y0 != 0 || y1 != out_h;
  // The horizontal pass covers only the rows the vertical pass reads, as Pillow's does.
  const int first = yb[0], last = yb[2 * out_h - 2] + yb[2 * out_h - 1];
  const uint8_t *rows = in;
  long row_stride = in_stride;
  int row_offset = 0;
  if (need_horizontal) {
    for (int yy = first; yy < last; yy++) {
      const uint8_t *source = in + yy * in_stride;
      uint8_t *target = scratch + (long)(yy - first) * out_w * channels;
      for (int xx = 0; xx < out_w; xx++) {
        const int xmin = xb[2 * xx], xmax = xb[2 * xx + 1];
        const int *k = xk + xx * kx;
        for (int c = 0; c < channels; c++) {
          int sum = 1 << (PRECISION_BITS - 1);
          for (int x = 0; x < xmax; x++) sum += source[(x + xmin) * channels + c] * k[x];
          target[xx * channels + c] = clip8(sum);
        }
      }
    }
    rows = scratch;
    row_stride = (long)out_w * channels;
    row_offset = first;
  }
  const int width = need_horizontal ? out_w : in_w;
  if (need_vertical) {
    for (int yy = 0; yy < out_h; yy++) {
      const int ymin = yb[2 * yy] - row_offset, ymax = yb[2 * yy + 1];
      const int *k = yk + yy * ky;
      for (int i = 0; i < width * channels; i++) {
        int sum = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < ymax; y++) sum += rows[(ymin + y) * row_stride + i] * k[y];
        out[(long)yy * width * channels + i] = clip8(sum);
      }
    }
  } else {
    for (int yy = 0; yy < out_h; yy++)
      for (int i = 0; i < width * channels; i++)
        out[(long)yy * width * channels + i] = rows[(long)(yy - row_offset) * row_stride + i];
  }
  free(xb);
  free(xk);
  free(yb);
  free(yk);
  return 0;
}
