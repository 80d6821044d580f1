// Implements: GemmLinear (see gemm_linear.h).
#include "trainer/gemm_linear.h"

#include "gantry_build.h"
#include "trainer/device.h"

#if GANTRY_DNNL_SGEMM
// oneDNN's C API (dnnl.h ships only in libdnnl-dev): row-major C = alpha op(A) op(B) + beta C.
extern "C" int dnnl_sgemm(char transa, char transb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
#endif

namespace gantry {

#if GANTRY_DNNL_SGEMM
namespace {

// c = op(a) op(b) + beta c, row-major contiguous fp32 matrices; op is 'N' or 'T' (a's rows then
// are its columns).
void sgemm(char op_a, char op_b, const torch::Tensor& a, const torch::Tensor& b, float beta, torch::Tensor& c) {
  const int64_t m = c.size(0), n = c.size(1), k = op_a == 'N' ? a.size(1) : a.size(0);
  const int status = dnnl_sgemm(op_a, op_b, m, n, k, 1.f, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(),
                                b.size(1), beta, c.data_ptr<float>(), n);
  TORCH_CHECK(status == 0, "oneDNN's sgemm failed with status ", status);
}

// y = x W^T + b with oneDNN's sgemm, and its backward with two more: dx = dy W, dW = dy^T x (each
// only when needed: not dx for a network's first layer, not dW for the frozen D of G's update).
// A backward that must itself be differentiable (WGAN-GP's and R1's penalties take D's input
// gradient with create_graph) uses LibTorch's differentiable products instead.
struct OneDnnLinear : torch::autograd::Function<OneDnnLinear> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x, const torch::Tensor& w,
                               const torch::Tensor& b) {
    ctx->save_for_backward({x, w});
    // The bias in every row, then beta = 1 adds the product. A copy, never b.expand().contiguous():
    // for one row that is the bias's own storage, which the product would then overwrite.
    torch::Tensor y = torch::empty({x.size(0), w.size(0)}, x.options());
    y.copy_(b.expand_as(y));
    sgemm('N', 'T', x, w, 1.f, y);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor g = grads[0].contiguous();
    torch::Tensor dx, dw, db;
    const bool double_backward = torch::GradMode::is_enabled();  // the engine's create_graph
    if (ctx->needs_input_grad(0)) {
      if (double_backward) {
        dx = g.mm(w);
      } else {
        dx = torch::empty(x.sizes(), x.options());
        sgemm('N', 'N', g, w, 0.f, dx);
      }
    }
    if (ctx->needs_input_grad(1)) {
      if (double_backward) {
        dw = g.t().mm(x);
      } else {
        dw = torch::empty(w.sizes(), w.options());
        sgemm('T', 'N', g, x, 0.f, dw);
      }
    }
    if (ctx->needs_input_grad(2)) db = g.sum(0);
    return {dx, dw, db};
  }
};

}  // namespace
#endif

torch::Tensor GemmLinearImpl::forward(const torch::Tensor& x) {
#if GANTRY_DNNL_SGEMM
  const auto fp32 = torch::kFloat32;
  if (x.is_cpu() && x.dim() == 2 && x.size(0) > 0 && x.scalar_type() == fp32 && weight.scalar_type() == fp32 &&
      weight.is_contiguous() && bias.defined() && bias.scalar_type() == fp32 && !autocast_enabled(c10::kCPU))
    return OneDnnLinear::apply(x.contiguous(), weight, bias);
#endif
  return torch::nn::LinearImpl::forward(x);
}

bool gemm_linear_uses_onednn() { return GANTRY_DNNL_SGEMM != 0; }

}  // namespace gantry
