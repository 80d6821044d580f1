// Implements: write_image_grid (see images.h).
#include "trainer/images.h"

#include <png.h>

#include <cstdio>
#include <filesystem>
#include <stdexcept>

namespace gantry {

void write_image_grid(const torch::Tensor& images, int64_t rows, int64_t cols, const std::string& path) {
  TORCH_CHECK(images.dim() == 4, "write_image_grid: expected [N, C, H, W]");
  const int64_t n = images.size(0), c = images.size(1), h = images.size(2), w = images.size(3);
  TORCH_CHECK(c == 1 || c == 3, "write_image_grid: 1 or 3 channels");
  TORCH_CHECK(n <= rows * cols, "write_image_grid: more images than cells");
  constexpr int64_t pad = 2;
  const int64_t gh = rows * (h + pad) + pad, gw = cols * (w + pad) + pad;

  // [N, H, W, C] bytes, then placed into the grid.
  const torch::Tensor bytes = ((images.detach().to(torch::kCPU, torch::kFloat32).clamp(-1, 1) + 1) * 127.5)
                                  .round().to(torch::kUInt8).permute({0, 2, 3, 1}).contiguous();
  std::vector<uint8_t> grid(static_cast<size_t>(gh * gw * c), 0);
  const uint8_t* src = bytes.data_ptr<uint8_t>();
  for (int64_t i = 0; i < n; ++i) {
    const int64_t top = pad + (i / cols) * (h + pad), left = pad + (i % cols) * (w + pad);
    for (int64_t y = 0; y < h; ++y)
      std::copy_n(src + ((i * h + y) * w) * c, w * c, grid.data() + ((top + y) * gw + left) * c);
  }

  const std::string tmp = path + ".tmp";
  FILE* fp = std::fopen(tmp.c_str(), "wb");
  if (!fp) throw std::runtime_error("cannot write " + tmp);
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, nullptr, nullptr, nullptr);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (!png || !info || setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    std::fclose(fp);
    std::remove(tmp.c_str());
    throw std::runtime_error("libpng failed writing " + path);
  }
  png_init_io(png, fp);
  png_set_IHDR(png, info, static_cast<png_uint_32>(gw), static_cast<png_uint_32>(gh), 8,
               c == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  for (int64_t y = 0; y < gh; ++y) png_write_row(png, grid.data() + y * gw * c);
  png_write_end(png, nullptr);
  png_destroy_write_struct(&png, &info);
  if (std::fclose(fp) != 0) throw std::runtime_error("cannot write " + tmp);
  std::filesystem::rename(tmp, path);
}

}  // namespace gantry
