// Implements: train.device, train.precision and train.deterministic (see device.h).
#include "trainer/device.h"

#include <ATen/autocast_mode.h>
#include <dlfcn.h>
#include <torch/version.h>

#include <algorithm>
#include <cctype>

#if GANTRY_TORCH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

// LibTorch 2.4 replaced the per-device autocast functions with ones that take the device type.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define GANTRY_AUTOCAST_BY_DEVICE_TYPE 1
#endif

namespace gantry {

#ifdef GANTRY_AUTOCAST_BY_DEVICE_TYPE
bool autocast_enabled(c10::DeviceType t) { return at::autocast::is_autocast_enabled(t); }
#else
bool autocast_enabled(c10::DeviceType t) {
  return t == c10::kCUDA ? at::autocast::is_enabled() : at::autocast::is_cpu_enabled();
}
#endif

std::optional<std::pair<int64_t, int64_t>> device_memory_bytes(torch::Device device) {
#if GANTRY_TORCH_CUDA
  if (device.is_cuda()) {
    // The statistics' type moved namespace in LibTorch 2.x (c10::CachingDeviceAllocator); its
    // fields, and index 0 for the aggregate over pools, did not.
    const auto stats = c10::cuda::CUDACachingAllocator::getDeviceStats(device.index());
    return std::make_pair(static_cast<int64_t>(stats.allocated_bytes[0].current),
                          static_cast<int64_t>(stats.allocated_bytes[0].peak));
  }
#else
  (void)device;
#endif
  return std::nullopt;
}

bool cpu_has_onednn_bf16() {
#if defined(__x86_64__) || defined(__i386__)
  static const bool has = __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                          __builtin_cpu_supports("avx512dq");
  return has;
#else
  return false;
#endif
}

std::string openblas_core() {
  // Looked up at run time: LibTorch links libblas.so.3, which OpenBLAS is only when installed so.
  using CoreName = char* (*)();
  const auto name = reinterpret_cast<CoreName>(dlsym(RTLD_DEFAULT, "openblas_get_corename"));
  const char* core = name ? name() : nullptr;
  return core ? core : "";
}

std::string blas_kernel_warning(const std::string& core, bool cpu_has_avx2_fma, bool cpu_has_avx512) {
  if (core.empty() || !cpu_has_avx2_fma) return "";
  std::string lower = core;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  // OpenBLAS's x86 kernel sets with AVX2 and FMA (0.3.21 names; later ones add to the list).
  for (const char* fits : {"haswell", "zen", "skylakex", "cooperlake", "sapphirerapids", "excavator"})
    if (lower == fits) return "";
  const std::string suggested = cpu_has_avx512 ? "SkylakeX" : "Haswell";
  return "OpenBLAS, LibTorch's BLAS here, runs its " + core + " kernels on this CPU, which has AVX2 and FMA" +
         (cpu_has_avx512 ? " and AVX-512" : "") +
         ": it did not recognise the CPU, and LibTorch's matrix products outside oneDNN run several times slower "
         "than they could. Set OPENBLAS_CORETYPE=" + suggested + " in every rank's environment";
}

std::string blas_kernel_warning() {
#if defined(__x86_64__) || defined(__i386__)
  const bool avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return blas_kernel_warning(openblas_core(), avx2_fma, cpu_has_onednn_bf16() && __builtin_cpu_supports("avx512f"));
#else
  return "";
#endif
}

namespace {

#ifdef GANTRY_AUTOCAST_BY_DEVICE_TYPE
void set_autocast(c10::DeviceType t, bool on) { at::autocast::set_autocast_enabled(t, on); }
at::ScalarType autocast_dtype(c10::DeviceType t) { return at::autocast::get_autocast_dtype(t); }
void set_autocast_dtype(c10::DeviceType t, at::ScalarType d) { at::autocast::set_autocast_dtype(t, d); }
#else
void set_autocast(c10::DeviceType t, bool on) {
  if (t == c10::kCUDA) at::autocast::set_enabled(on);
  else at::autocast::set_cpu_enabled(on);
}
at::ScalarType autocast_dtype(c10::DeviceType t) {
  return t == c10::kCUDA ? at::autocast::get_autocast_gpu_dtype() : at::autocast::get_autocast_cpu_dtype();
}
void set_autocast_dtype(c10::DeviceType t, at::ScalarType d) {
  if (t == c10::kCUDA) at::autocast::set_autocast_gpu_dtype(d);
  else at::autocast::set_autocast_cpu_dtype(d);
}
#endif

}  // namespace

torch::Device resolve_device(const Config& config, int local_rank) {
  const std::string& want = config.train.device;
  if (want == "cpu") return torch::kCPU;
  const bool cuda = torch::cuda::is_available();
  if (!cuda) {
    if (want == "auto") return torch::kCPU;
    throw ConfigError("config error: " + config.where("train.device") +
                      ": train.device: cuda, but no CUDA device is usable here (" +
                      (torch::cuda::device_count() == 0 && !at::hasCUDA()
                           ? std::string("this LibTorch was built without CUDA")
                           : std::string("no GPU is visible to this process")) +
                      "); use train.device: auto or cpu, or build against a CUDA LibTorch");
  }
  const int gpus = static_cast<int>(torch::cuda::device_count());
  return torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(local_rank % gpus));
}

void configure_backends(const Config& config) {
  auto& context = at::globalContext();
  context.setBenchmarkCuDNN(!config.train.deterministic);
  context.setDeterministicCuDNN(config.train.deterministic);
}

AutocastGuard::AutocastGuard(torch::Device device, bool enabled)
    : type_(device.type()), enabled_(enabled), previous_(false), previous_dtype_(at::kBFloat16) {
  if (!enabled_) return;
  previous_ = autocast_enabled(type_);
  previous_dtype_ = autocast_dtype(type_);
  set_autocast_dtype(type_, at::kBFloat16);
  set_autocast(type_, true);
  at::autocast::increment_nesting();
}

AutocastGuard::~AutocastGuard() {
  if (!enabled_) return;
  // Leaving the outermost autocast region frees the bf16 copies of the weights cached inside it.
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  set_autocast(type_, previous_);
  set_autocast_dtype(type_, previous_dtype_);
}

}  // namespace gantry
