// Implements: writing a batch of images in [-1, 1] as one PNG grid (libpng), atomically
// (a temporary file renamed into place), so a reader never sees half an image.
#pragma once

#include <torch/torch.h>

#include <string>

namespace gantry {

// images: [N, C, H, W] with C = 1 or 3, values in [-1, 1]. Fills `rows` x `cols` cells with a
// 2-pixel border; N must be at most rows * cols.
void write_image_grid(const torch::Tensor& images, int64_t rows, int64_t cols, const std::string& path);

}  // namespace gantry
