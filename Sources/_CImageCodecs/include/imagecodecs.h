// Decoding JPEG and PNG files to 8-bit RGB, and Pillow's bilinear resize. Not API: the Swift
// image-folder loader is the only caller.
//
// Pixels are interleaved RGB, row-major: byte (y · width + x) · 3 + c, as Pillow's
// `Image.convert('RGB')` holds them.
#ifndef PCDARTS_IMAGECODECS_H
#define PCDARTS_IMAGECODECS_H

#include <stddef.h>
#include <stdint.h>

/// A decoded image, or why it could not be decoded.
typedef struct {
  /// Width and height in pixels (0 after a failure).
  int width, height;
  /// width × height × 3 bytes from malloc (NULL after a failure); release with pcd_image_free.
  uint8_t *pixels;
  /// After a failure: what went wrong, in the decoder's words.
  char message[256];
} pcd_image;

/// The file formats pcd_decode_image recognises by their first bytes.
typedef enum { PCD_FORMAT_UNKNOWN = 0, PCD_FORMAT_JPEG = 1, PCD_FORMAT_PNG = 2 } pcd_format;

/// The format whose signature `data` starts with.
pcd_format pcd_image_format(const uint8_t *data, size_t size);

/// Decodes a JPEG or PNG held in memory into RGB as Pillow's `convert('RGB')` does: greyscale
/// replicated on the three channels, palettes looked up, alpha dropped (not composited),
/// 16-bit samples cut to their high byte. A JPEG decoder warning (corrupt or truncated data)
/// counts as a failure, as Pillow raises on a truncated file.
/// Returns 0, or -1 with `out->message` set and nothing to free.
int pcd_decode_image(const uint8_t *data, size_t size, pcd_image *out);

/// Frees the pixels of a decoded image (a no-op after a failure).
void pcd_image_free(pcd_image *image);

/// Pillow's `Image.resize((out_w, out_h), BILINEAR, box=(x0, y0, x1, y1))` of 8-bit interleaved
/// pixels, bit for bit: the antialiasing triangle filter widened by the scale when shrinking,
/// coefficients in 22-bit fixed point, a horizontal pass into 8-bit rows, then a vertical pass.
/// `in` is in_h rows of in_w pixels of `channels` bytes, rows `in_stride` bytes apart; the box
/// (in input pixels) is the region resampled, (0, 0, in_w, in_h) for the whole image.
/// `scratch` holds at least out_w × in_h × channels bytes. Returns 0, or -1 on allocation failure.
int pcd_resize_bilinear(uint8_t *out, const uint8_t *in, uint8_t *scratch, int in_w, int in_h, long in_stride,
                        int out_w, int out_h, int channels, float x0, float y0, float x1, float y1);

#endif
