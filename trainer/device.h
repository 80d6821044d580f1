// Implements: where a rank's models live and how they compute: train.device (auto | cpu | cuda,
// one GPU per local rank), train.precision (bf16 autocast around the forward passes; weights,
// optimizer state and losses stay fp32) and train.deterministic (cuDNN's algorithm choice). The
// autocast calls are the one place LibTorch 1.13 and 2.x spell differently.
#pragma once

#include <torch/torch.h>

#include <optional>
#include <string>
#include <utility>

#include "trainer/config.h"

namespace gantry {

// The device for train.device on the rank with this local rank. auto: cuda:(local_rank % GPUs)
// when CUDA is available, else the CPU. cuda without a usable GPU is a ConfigError naming the key.
torch::Device resolve_device(const Config& config, int local_rank);

// Sets cuDNN's flags for train.deterministic (benchmark mode only when it is false).
void configure_backends(const Config& config);

// Whether autocast is on for this device type now.
bool autocast_enabled(c10::DeviceType type);

// The CUDA caching allocator's bytes held by tensors on `device`, now and at their peak; nothing
// for other devices, or when LibTorch has no CUDA. A host-side read: no device sync.
std::optional<std::pair<int64_t, int64_t>> device_memory_bytes(torch::Device device);

// Whether this CPU runs bf16 convolutions and matrix products through oneDNN's bf16 kernels: the
// AVX-512 (BW, VL, DQ) that LibTorch's own check asks for. Without them LibTorch takes fallback
// kernels that are slower than fp32 and lose precision as they accumulate (a bf16 convolution came
// out 6 % off fp32 on an AVX2 Zen 1 EPYC; bench/RESULTS.md).
bool cpu_has_onednn_bf16();

// The kernels OpenBLAS chose for this CPU (its openblas_get_corename(), e.g. "Haswell"), when
// LibTorch's BLAS is OpenBLAS (Debian's LibTorch calls whatever libblas.so.3 is installed); ""
// for another BLAS.
std::string openblas_core();

// A warning when OpenBLAS runs kernels older than the CPU: on a CPU it does not recognise it falls
// back to its SSE3 "Prescott" kernels, and every LibTorch matrix product outside oneDNN then runs
// several times slower (3.7x on one such CPU, bench/RESULTS.md). Names the OPENBLAS_CORETYPE to
// set. "" when the kernels fit: an AVX2 kernel set on an AVX2 + FMA CPU (or any on an older one).
std::string blas_kernel_warning(const std::string& core, bool cpu_has_avx2_fma, bool cpu_has_avx512);
// The same for this process's OpenBLAS and CPU.
std::string blas_kernel_warning();

// While alive, forward passes on `device` run in bf16 where autocast's op lists allow (matmuls,
// convolutions) and in fp32 elsewhere. Nests; a disabled guard does nothing.
class AutocastGuard {
 public:
  AutocastGuard(torch::Device device, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType type_;
  bool enabled_;
  bool previous_;
  at::ScalarType previous_dtype_;
};

}  // namespace gantry
