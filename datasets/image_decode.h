// Implements: decoding of untrusted PNG and JPEG files for the image-folder reader, with the
// libraries every serious image stack uses and OSS-Fuzz fuzzes: libpng (its simplified API) and
// libjpeg-turbo. The format comes from the file's signature, the size is checked against a
// pixel limit before anything is allocated, and every failure is a reason, never a crash.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace gantry::datasets {

// At most 64 megapixels (an 8192 x 8192 photo): a header cannot make us allocate gigabytes.
inline constexpr int64_t kMaxImagePixels = int64_t{1} << 26;

struct ImageSize {
  int width = 0;
  int height = 0;
};

// Reads the header only: true with the size when `file` is a PNG or JPEG within the limit, false
// with the reason otherwise.
bool probe_image(const std::string& file, ImageSize& size, std::string& why);

// Decodes `file` into `pixels`: height x width x channels bytes, interleaved, channels 1 or 3.
// Alpha is dropped; colour to gray is (77 R + 150 G + 29 B) >> 8, as stb and Pillow's "L" round it.
bool decode_image(const std::string& file, int channels, std::vector<uint8_t>& pixels, ImageSize& size,
                  std::string& why);

}  // namespace gantry::datasets
