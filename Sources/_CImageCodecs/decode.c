// JPEG (libjpeg) and PNG (libpng) decoding to 8-bit RGB (see imagecodecs.h). Both libraries
// report fatal errors by longjmp, which Swift cannot catch: this file is where it lands.
#include "imagecodecs.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

static int fail(pcd_image *out, const char *format, ...) {
  va_list args;
  va_start(args, format);
  vsnprintf(out->message, sizeof out->message, format, args);
  va_end(args);
  free(out->pixels);
  out->pixels = NULL;
  out->width = out->height = 0;
  return -1;
}

pcd_format pcd_image_format(const uint8_t *data, size_t size) {
  static const uint8_t png_signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (size >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff) return PCD_FORMAT_JPEG;
  if (size >= 8 && memcmp(data, png_signature, 8) == 0) return PCD_FORMAT_PNG;
  return PCD_FORMAT_UNKNOWN;
}

// ---- JPEG ----

typedef struct {
  struct jpeg_error_mgr manager;
  jmp_buf escape;
  char first_warning[JMSG_LENGTH_MAX];
} jpeg_errors;

static void jpeg_error_exit(j_common_ptr cinfo) {
  longjmp(((jpeg_errors *)cinfo->err)->escape, 1);
}

/// Keeps the first warning (corrupt data) instead of printing it to stderr.
static void jpeg_emit_message(j_common_ptr cinfo, int level) {
  jpeg_errors *errors = (jpeg_errors *)cinfo->err;
  if (level >= 0) return;  // trace messages
  if (errors->manager.num_warnings++ == 0) errors->manager.format_message(cinfo, errors->first_warning);
}

static int decode_jpeg(const uint8_t *data, size_t size, pcd_image *out) {
  struct jpeg_decompress_struct cinfo;
  jpeg_errors errors;
  cinfo.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_error_exit;
  errors.manager.emit_message = jpeg_emit_message;
  errors.first_warning[0] = 0;
  if (setjmp(errors.escape)) {
    char message[JMSG_LENGTH_MAX];
    errors.manager.format_message((j_common_ptr)&cinfo, message);
    jpeg_destroy_decompress(&cinfo);
    return fail(out, "JPEG: %s", message);
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, data, (unsigned long)size);
  jpeg_read_header(&cinfo, TRUE);
  if (cinfo.jpeg_color_space != JCS_GRAYSCALE && cinfo.jpeg_color_space != JCS_YCbCr &&
      cinfo.jpeg_color_space != JCS_RGB) {
    jpeg_destroy_decompress(&cinfo);
    return fail(out, "JPEG colour space %d (CMYK or YCCK) is not supported; convert the file to RGB",
                (int)cinfo.jpeg_color_space);
  }
  cinfo.out_color_space = JCS_RGB;  // greyscale is replicated, as convert('RGB') does
  jpeg_start_decompress(&cinfo);
  const int width = (int)cinfo.output_width, height = (int)cinfo.output_height;
  out->pixels = malloc((size_t)width * height * 3);
  if (!out->pixels) {
    jpeg_destroy_decompress(&cinfo);
    return fail(out, "out of memory for a %d × %d image", width, height);
  }
  while (cinfo.output_scanline < cinfo.output_height) {
    JSAMPROW row = out->pixels + (size_t)cinfo.output_scanline * width * 3;
    jpeg_read_scanlines(&cinfo, &row, 1);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (errors.manager.num_warnings > 0) return fail(out, "corrupt JPEG data: %s", errors.first_warning);
  out->width = width;
  out->height = height;
  return 0;
}

// ---- PNG ----

typedef struct {
  const uint8_t *data;
  size_t size, at;
  char message[200];
} png_source;

static void png_read_memory(png_structp png, png_bytep target, size_t count) {
  png_source *source = png_get_io_ptr(png);
  if (count > source->size - source->at) png_error(png, "the file ends early (truncated)");
  memcpy(target, source->data + source->at, count);
  source->at += count;
}

static void png_error_handler(png_structp png, png_const_charp message) {
  png_source *source = png_get_error_ptr(png);
  snprintf(source->message, sizeof source->message, "%s", message);
  png_longjmp(png, 1);
}

static void png_ignore_warning(png_structp png, png_const_charp message) {
  (void)png;
  (void)message;
}

static int decode_png(const uint8_t *data, size_t size, pcd_image *out) {
  png_source source = {data, size, 0, {0}};
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &source, png_error_handler, png_ignore_warning);
  if (!png) return fail(out, "PNG: cannot create a reader");
  png_infop info = png_create_info_struct(png);
  png_bytep *rows = NULL;
  if (!info || setjmp(png_jmpbuf(png))) {
    free(rows);
    png_destroy_read_struct(&png, info ? &info : NULL, NULL);
    return fail(out, "PNG: %s", source.message[0] ? source.message : "cannot create a reader");
  }
  png_set_read_fn(png, &source, png_read_memory);
  png_read_info(png, info);
  const int color = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
  if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);  // no tRNS: alpha is dropped
  if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
  if (depth == 16) png_set_strip_16(png);
  if (color & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
  if (color == PNG_COLOR_TYPE_GRAY || color == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
  png_set_interlace_handling(png);
  png_read_update_info(png, info);
  const int width = (int)png_get_image_width(png, info), height = (int)png_get_image_height(png, info);
  if (png_get_rowbytes(png, info) != (size_t)width * 3) png_error(png, "unexpected row layout after conversion to RGB");
  out->pixels = malloc((size_t)width * height * 3);
  rows = malloc(sizeof(png_bytep) * (size_t)height);
  if (!out->pixels || !rows) png_error(png, "out of memory");
  for (int y = 0; y < height; y++) rows[y] = out->pixels + (size_t)y * width * 3;
  png_read_image(png, rows);
  png_read_end(png, NULL);
  free(rows);
  png_destroy_read_struct(&png, &info, NULL);
  out->width = width;
  out->height = height;
  return 0;
}

int pcd_decode_image(const uint8_t *data, size_t size, pcd_image *out) {
  out->width = out->height = 0;
  out->pixels = NULL;
  out->message[0] = 0;
  switch (pcd_image_format(data, size)) {
  case PCD_FORMAT_JPEG: return decode_jpeg(data, size, out);
  case PCD_FORMAT_PNG: return decode_png(data, size, out);
  default: return fail(out, "not a JPEG or PNG file (its first bytes are neither signature)");
  }
}

void pcd_image_free(pcd_image *image) {
  free(image->pixels);
  image->pixels = NULL;
}
