// Implements: GemmLinear, nn::Linear whose fp32 products on the CPU run through oneDNN's sgemm
// where gantry is built with it (CMake: GANTRY_ONEDNN_GEMM, on where libdnnl.so.2 sits beside
// LibTorch, as Debian's LibTorch links it). The MLPs' layers. Measured on the MLP GAN's products
// at batch 256 (bench/RESULTS.md): 1.01-1.16x LibTorch's GEMM where OpenBLAS runs kernels made for
// the CPU, 5.4-5.7x where it fell back to its SSE3 ones.
#pragma once

#include <torch/torch.h>

namespace gantry {

// The same parameters as nn::Linear, so checkpoints are unchanged. Elsewhere (CUDA, autocast,
// other dtypes, empty batches, other builds) it is nn::Linear. Not clone()-able as itself: the
// clone would be a plain nn::Linear (nothing in gantry clones modules).
struct GemmLinearImpl : torch::nn::LinearImpl {
  GemmLinearImpl(int64_t in, int64_t out) : torch::nn::LinearImpl(torch::nn::LinearOptions(in, out)) {}
  torch::Tensor forward(const torch::Tensor& x);
};
TORCH_MODULE(GemmLinear);

// Whether GemmLinear's fp32 CPU products run through oneDNN in this build.
bool gemm_linear_uses_onednn();

}  // namespace gantry
