// Implements: PNG and JPEG decoding for the image-folder reader (see image_decode.h). libjpeg
// reports errors by longjmp: the JPEG functions keep every object with a destructor outside the
// setjmp region (the caller's vector, a plain FILE*).
#include "datasets/image_decode.h"

#include <csetjmp>
#include <cstdio>
#include <cstring>

#include <jpeglib.h>  // after <cstdio>: it uses FILE
#include <jerror.h>
#include <png.h>

namespace gantry::datasets {
namespace {

enum class Format { kPng, kJpeg, kOther };

Format sniff(const std::string& file, std::string& why) {
  unsigned char head[8] = {0};
  std::FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) {
    why = std::string("cannot open it: ") + std::strerror(errno);
    return Format::kOther;
  }
  const size_t n = std::fread(head, 1, sizeof head, f);
  std::fclose(f);
  static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  if (n == 8 && std::memcmp(head, kPng, 8) == 0) return Format::kPng;
  if (n >= 3 && head[0] == 0xff && head[1] == 0xd8 && head[2] == 0xff) return Format::kJpeg;
  why = "neither a PNG nor a JPEG file (by its first bytes)";
  return Format::kOther;
}

bool within_limit(int64_t width, int64_t height, std::string& why) {
  if (width <= 0 || height <= 0) {
    why = "its header gives a size of " + std::to_string(width) + "x" + std::to_string(height);
    return false;
  }
  if (width > kMaxImagePixels || height > kMaxImagePixels || width * height > kMaxImagePixels) {
    why = std::to_string(width) + "x" + std::to_string(height) + " pixels, more than the 64-megapixel limit";
    return false;
  }
  return true;
}

// Interleaved `from`-channel pixels (1 gray, 2 gray+alpha, 3 RGB, 4 RGBA) to `to` channels (1 or
// 3), in place: growing (gray to RGB) runs from the back, shrinking from the front.
void convert(std::vector<uint8_t>& pixels, int64_t count, int from, int to) {
  if (from == to) return;
  if (to > from) {
    pixels.resize(static_cast<size_t>(count * to));
    for (int64_t i = count - 1; i >= 0; --i) {
      const uint8_t v = pixels[static_cast<size_t>(i * from)];
      uint8_t* q = pixels.data() + i * to;
      q[0] = q[1] = q[2] = v;
    }
    return;
  }
  const bool color = from >= 3;
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* p = pixels.data() + i * from;
    uint8_t* q = pixels.data() + i * to;
    if (to == 1) {
      q[0] = color ? static_cast<uint8_t>((77 * p[0] + 150 * p[1] + 29 * p[2]) >> 8) : p[0];
    } else {
      const uint8_t r = p[0], g = p[1], b = p[2];  // read before writing: q may overlap p
      q[0] = r, q[1] = g, q[2] = b;
    }
  }
  pixels.resize(static_cast<size_t>(count * to));
}

bool png(const std::string& file, int channels, std::vector<uint8_t>* pixels, ImageSize& size, std::string& why) {
  png_image image;
  std::memset(&image, 0, sizeof image);
  image.version = PNG_IMAGE_VERSION;
  if (!png_image_begin_read_from_file(&image, file.c_str())) {
    why = std::string("PNG: ") + image.message;
    return false;
  }
  if (!within_limit(image.width, image.height, why)) {
    png_image_free(&image);
    return false;
  }
  size = {static_cast<int>(image.width), static_cast<int>(image.height)};
  if (!pixels) {  // the header was all we wanted
    png_image_free(&image);
    return true;
  }
  // With alpha kept, 8-bit output is sRGB and not premultiplied; the alpha is then dropped (a
  // GAN learns what is in the file). Colour is converted to gray here, with the same rounding as
  // for JPEG files.
  const bool color = image.format & PNG_FORMAT_FLAG_COLOR;
  const int from = color ? 4 : 2;
  image.format = color ? PNG_FORMAT_RGBA : PNG_FORMAT_GA;
  const int64_t count = static_cast<int64_t>(size.width) * size.height;
  pixels->resize(static_cast<size_t>(count * from));
  if (!png_image_finish_read(&image, nullptr, pixels->data(), 0, nullptr)) {
    why = std::string("PNG: ") + image.message;
    png_image_free(&image);
    return false;
  }
  convert(*pixels, count, from, channels);
  return true;
}

struct JpegErrors {
  jpeg_error_mgr manager;
  std::jmp_buf jump;
  char message[JMSG_LENGTH_MAX];
};

[[noreturn]] void jpeg_fail(j_common_ptr cinfo) {
  auto* errors = reinterpret_cast<JpegErrors*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, errors->message);
  std::longjmp(errors->jump, 1);
}

// Warnings are ignored, except a file that ends early: libjpeg would pad it with gray.
void jpeg_warning(j_common_ptr cinfo, int level) {
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) jpeg_fail(cinfo);
}

bool jpeg(const std::string& file, int channels, std::vector<uint8_t>* pixels, ImageSize& size, std::string& why) {
  std::FILE* f = std::fopen(file.c_str(), "rb");
  if (!f) {
    why = std::string("cannot open it: ") + std::strerror(errno);
    return false;
  }
  jpeg_decompress_struct cinfo;
  JpegErrors errors;
  cinfo.err = jpeg_std_error(&errors.manager);
  errors.manager.error_exit = jpeg_fail;
  errors.manager.emit_message = jpeg_warning;
  if (setjmp(errors.jump)) {
    jpeg_destroy_decompress(&cinfo);
    std::fclose(f);
    why = std::string("JPEG: ") + errors.message;
    return false;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_stdio_src(&cinfo, f);
  jpeg_read_header(&cinfo, TRUE);
  const bool ok = within_limit(cinfo.image_width, cinfo.image_height, why);
  if (ok) size = {static_cast<int>(cinfo.image_width), static_cast<int>(cinfo.image_height)};
  if (ok && pixels) {
    // libjpeg converts YCbCr and gray to RGB itself; CMYK files fail here with its message.
    const bool gray_in = cinfo.jpeg_color_space == JCS_GRAYSCALE;
    cinfo.out_color_space = gray_in ? JCS_GRAYSCALE : JCS_RGB;
    jpeg_start_decompress(&cinfo);
    const int from = static_cast<int>(cinfo.output_components);
    const size_t stride = static_cast<size_t>(cinfo.output_width) * from;
    pixels->resize(stride * cinfo.output_height);
    while (cinfo.output_scanline < cinfo.output_height) {
      JSAMPROW row = pixels->data() + stride * cinfo.output_scanline;
      jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    convert(*pixels, static_cast<int64_t>(size.width) * size.height, from, channels);
  }
  jpeg_destroy_decompress(&cinfo);
  std::fclose(f);
  return ok;
}

}  // namespace

bool probe_image(const std::string& file, ImageSize& size, std::string& why) {
  why.clear();
  switch (sniff(file, why)) {
    case Format::kPng: return png(file, 3, nullptr, size, why);
    case Format::kJpeg: return jpeg(file, 3, nullptr, size, why);
    default: return false;
  }
}

bool decode_image(const std::string& file, int channels, std::vector<uint8_t>& pixels, ImageSize& size,
                  std::string& why) {
  why.clear();
  switch (sniff(file, why)) {
    case Format::kPng: return png(file, channels, &pixels, size, why);
    case Format::kJpeg: return jpeg(file, channels, &pixels, size, why);
    default: return false;
  }
}

}  // namespace gantry::datasets
