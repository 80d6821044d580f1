// Benchmark: the MLP GAN's matrix products (batch 256: D's forward over 512 rows, both backward
// products, G's forward) through LibTorch's at::mm (OpenBLAS here) against oneDNN's sgemm
// (libdnnl.so.2, which Debian's LibTorch links), 1 thread, best of 5 rounds of 50 calls each.
// Whether gantry's Linear layers would gain from oneDNN's GEMM: bench/RESULTS.md.
//   build/bench/gemm_backends
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <vector>

// oneDNN's C API (dnnl.h, not installed without libdnnl-dev): row-major C = op(A) op(B).
extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

namespace {

using Clock = std::chrono::steady_clock;

struct Shape {
  int64_t m, n, k;
  char trans_a, trans_b;  // 'N' or 'T'
  const char* what;
};

// The best seconds per call of `fn` over 5 rounds of 50 calls.
template <typename Fn>
double best_seconds(Fn&& fn) {
  double best = 1e30;
  for (int round = 0; round < 5; ++round) {
    const auto t0 = Clock::now();
    for (int i = 0; i < 50; ++i) fn();
    best = std::min(best, std::chrono::duration<double>(Clock::now() - t0).count() / 50);
  }
  return best;
}

}  // namespace

int main() {
  torch::set_num_threads(1);
  const std::vector<Shape> shapes = {
      {512, 512, 784, 'N', 'T', "D layer 1 forward"},  {512, 256, 512, 'N', 'T', "D layer 2 forward"},
      {512, 128, 256, 'N', 'T', "D layer 3 forward"},  {512, 784, 512, 'N', 'N', "D layer 1 input grad"},
      {512, 512, 256, 'N', 'N', "D layer 2 input grad"}, {512, 784, 512, 'T', 'N', "D layer 1 weight grad"},
      {256, 512, 512, 'T', 'N', "D layer 2 weight grad"}, {256, 256, 100, 'N', 'T', "G layer 1 forward"},
      {256, 512, 256, 'N', 'T', "G layer 2 forward"},  {256, 784, 512, 'N', 'T', "G layer 3 forward"},
  };
  double total_torch = 0, total_dnnl = 0;
  std::printf("%-22s %16s %14s %14s %10s\n", "product", "m x n x k", "at::mm GF/s", "oneDNN GF/s", "max diff");
  for (const auto& s : shapes) {
    const torch::Tensor a = s.trans_a == 'N' ? torch::randn({s.m, s.k}) : torch::randn({s.k, s.m});
    const torch::Tensor b = s.trans_b == 'N' ? torch::randn({s.k, s.n}) : torch::randn({s.n, s.k});
    const torch::Tensor op_a = s.trans_a == 'N' ? a : a.t(), op_b = s.trans_b == 'N' ? b : b.t();
    torch::Tensor c_torch = torch::empty({s.m, s.n}), c_dnnl = torch::empty({s.m, s.n});
    auto dnnl = [&] {
      dnnl_sgemm(s.trans_a, s.trans_b, s.m, s.n, s.k, 1.f, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(),
                 b.size(1), 0.f, c_dnnl.data_ptr<float>(), s.n);
    };
    const double t_torch = best_seconds([&] { at::mm_out(c_torch, op_a, op_b); });
    const double t_dnnl = best_seconds(dnnl);
    const double gflop = 2e-9 * static_cast<double>(s.m * s.n * s.k);
    char dims[32];
    std::snprintf(dims, sizeof dims, "%ld x %ld x %ld", static_cast<long>(s.m), static_cast<long>(s.n),
                  static_cast<long>(s.k));
    std::printf("%-22s %16s %14.1f %14.1f %10.1e\n", s.what, dims, gflop / t_torch, gflop / t_dnnl,
                (c_torch - c_dnnl).abs().max().item<double>());
    total_torch += t_torch;
    total_dnnl += t_dnnl;
  }
  std::printf("all ten: at::mm %.3f ms, oneDNN %.3f ms: oneDNN %.2fx as fast\n", 1e3 * total_torch, 1e3 * total_dnnl,
              total_torch / total_dnnl);
}
