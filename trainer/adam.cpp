// Implements: the fused Adam step (see adam.h).
#include "trainer/adam.h"

#include <ATen/Parallel.h>

#include <array>
#include <cmath>
#include <map>
#include <optional>
#include <vector>

namespace gantry {
namespace {

bool fusable(const torch::Tensor& p) {
  return p.device().is_cpu() && p.scalar_type() == torch::kFloat32 && p.is_contiguous() && p.grad().defined() &&
         p.grad().is_contiguous() && p.grad().scalar_type() == torch::kFloat32 && !p.grad().is_sparse();
}

// Whether some parameter cannot take the fused loop. Then the whole step goes through
// opt.step(), so that one step never mixes the two (opt.step() steps every parameter).
bool needs_libtorch_step(torch::optim::Adam& opt) {
  const auto& state = opt.state();
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    if (o.weight_decay() != 0 || o.amsgrad()) return true;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      const auto it = state.find(optimizer_state_key(state, p));
      if (!fusable(p) || it == state.end()) return true;
      const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
      if (!s.exp_avg().is_contiguous() || !s.exp_avg_sq().is_contiguous()) return true;
    }
  }
  return false;
}

// Whether every parameter with a gradient lives on one non-CPU device with float32 parameter,
// gradient and moments, has its state, and no group uses weight decay or AMSGrad: then the
// multi-tensor step applies.
bool multi_tensor_ok(torch::optim::Adam& opt) {
  const auto& state = opt.state();
  std::optional<torch::Device> device;
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    if (o.weight_decay() != 0 || o.amsgrad()) return false;
    for (const auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      if (p.device().is_cpu() || (device && p.device() != *device)) return false;
      device = p.device();
      if (p.scalar_type() != torch::kFloat32 || p.grad().scalar_type() != torch::kFloat32 || p.grad().is_sparse())
        return false;
      if (state.find(optimizer_state_key(state, p)) == state.end()) return false;
    }
  }
  return device.has_value();
}

}  // namespace

void multi_tensor_adam_step(torch::optim::Adam& opt) {
  auto& state = opt.state();
  torch::NoGradGuard no_grad;
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    // Parameters that have taken the same number of steps share the bias corrections (all of
    // them, unless one missed a gradient).
    std::map<int64_t, std::array<std::vector<torch::Tensor>, 4>> by_step;  // params, grads, m, v
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& s = static_cast<torch::optim::AdamParamState&>(*state.at(optimizer_state_key(state, p)));
      s.step(s.step() + 1);
      auto& lists = by_step[s.step()];
      lists[0].push_back(p);
      lists[1].push_back(p.grad());
      lists[2].push_back(s.exp_avg());
      lists[3].push_back(s.exp_avg_sq());
    }
    for (auto& [step, lists] : by_step) {
      auto& [params, grads, m, v] = lists;
      const double bias1 = 1 - std::pow(beta1, static_cast<double>(step));
      const double bias2 = 1 - std::pow(beta2, static_cast<double>(step));
      // LibTorch's Adam::step, op for op, each over the whole list at once.
      at::_foreach_mul_(m, beta1);
      at::_foreach_add_(m, grads, 1 - beta1);
      at::_foreach_mul_(v, beta2);
      at::_foreach_addcmul_(v, grads, grads, 1 - beta2);
      std::vector<torch::Tensor> denom = at::_foreach_sqrt(v);
      at::_foreach_div_(denom, std::sqrt(bias2));
      at::_foreach_add_(denom, o.eps());
      at::_foreach_addcdiv_(params, m, denom, -o.lr() / bias1);
    }
  }
}

bool DeviceAdam::applies(torch::optim::Adam& opt) {
  if (opt.param_groups().size() != 1) return false;
  const auto& group = opt.param_groups().front();
  const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
  if (o.weight_decay() != 0 || o.amsgrad() || group.params().empty()) return false;
  const torch::Device device = group.params().front().device();
  for (const auto& p : group.params())
    if (!p.is_cuda() || p.device() != device || p.scalar_type() != torch::kFloat32) return false;
  return true;
}

void DeviceAdam::step(const torch::Tensor& found_inf) {
  auto& state = opt_.state();
  auto& group = opt_.param_groups().front();
  const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
  torch::NoGradGuard no_grad;
  if (steps_.empty()) {
    for (const auto& p : group.params()) {
      const auto it = state.find(optimizer_state_key(state, p));
      const int64_t taken =
          it == state.end() ? 0 : static_cast<const torch::optim::AdamParamState&>(*it->second).step();
      steps_.push_back(torch::full({}, static_cast<double>(taken), p.options()));
    }
  }
  std::vector<torch::Tensor> params, grads, m, v, steps;
  for (size_t i = 0; i < group.params().size(); ++i) {
    auto& p = group.params()[i];
    if (!p.grad().defined()) continue;
    const auto key = optimizer_state_key(state, p);
    if (state.find(key) == state.end()) {  // the state Adam::step would create on a first step
      auto s = std::make_unique<torch::optim::AdamParamState>();
      s->step(0);
      s->exp_avg(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      s->exp_avg_sq(torch::zeros_like(p, torch::MemoryFormat::Preserve));
      state[key] = std::move(s);
    }
    auto& s = static_cast<torch::optim::AdamParamState&>(*state.at(key));
    params.push_back(p);
    grads.push_back(p.grad());
    m.push_back(s.exp_avg());
    v.push_back(s.exp_avg_sq());
    steps.push_back(steps_[i]);
  }
  if (params.empty()) return;
  at::_foreach_add_(steps, 1);
  at::_fused_adam_(params, grads, m, v, /*max_exp_avg_sqs=*/{}, steps, o.lr(), std::get<0>(o.betas()),
                   std::get<1>(o.betas()), /*weight_decay=*/0, o.eps(), /*amsgrad=*/false, /*maximize=*/false,
                   /*grad_scale=*/c10::nullopt, found_inf);
  at::_foreach_sub_(steps, std::vector<torch::Tensor>(steps.size(), found_inf));  // a skipped step does not count
}

void DeviceAdam::store_steps() {
  if (steps_.empty()) return;
  auto& state = opt_.state();
  const auto& params = opt_.param_groups().front().params();
  const torch::Tensor taken = torch::stack(steps_).cpu();
  for (size_t i = 0; i < params.size(); ++i) {
    const auto it = state.find(optimizer_state_key(state, params[i]));
    if (it != state.end())
      static_cast<torch::optim::AdamParamState&>(*it->second).step(static_cast<int64_t>(taken[i].item<float>()));
  }
}

AdamKernel adam_step(torch::optim::Adam& opt) {
  if (multi_tensor_ok(opt)) {
    multi_tensor_adam_step(opt);
    return AdamKernel::kMultiTensor;
  }
  if (needs_libtorch_step(opt)) {
    opt.step();
    return AdamKernel::kLibTorch;
  }
  auto& state = opt.state();
  torch::NoGradGuard no_grad;
  for (auto& group : opt.param_groups()) {
    const auto& o = static_cast<const torch::optim::AdamOptions&>(group.options());
    const double beta1 = std::get<0>(o.betas()), beta2 = std::get<1>(o.betas());
    for (auto& p : group.params()) {
      if (!p.grad().defined()) continue;
      auto& s = static_cast<torch::optim::AdamParamState&>(*state.at(optimizer_state_key(state, p)));
      s.step(s.step() + 1);
      const double bias1 = 1 - std::pow(beta1, static_cast<double>(s.step()));
      const double bias2 = 1 - std::pow(beta2, static_cast<double>(s.step()));
      const float b1 = static_cast<float>(beta1), b2 = static_cast<float>(beta2);
      const float one_minus_b1 = static_cast<float>(1 - beta1), one_minus_b2 = static_cast<float>(1 - beta2);
      const float step_size = static_cast<float>(o.lr() / bias1);
      const float inv_sqrt_bias2 = static_cast<float>(1 / std::sqrt(bias2));
      const float eps = static_cast<float>(o.eps());
      float* param_data = p.data_ptr<float>();
      const float* grad_data = p.grad().data_ptr<float>();
      float* m_data = s.exp_avg().data_ptr<float>();
      float* v_data = s.exp_avg_sq().data_ptr<float>();
      at::parallel_for(0, p.numel(), 16384, [=](int64_t begin, int64_t end) {
        // Four distinct buffers, and sqrt without errno (trainer/CMakeLists.txt): the loop vectorises.
        float* __restrict param = param_data;
        const float* __restrict grad = grad_data;
        float* __restrict m = m_data;
        float* __restrict v = v_data;
        for (int64_t i = begin; i < end; ++i) {
          const float g = grad[i];
          const float mi = m[i] * b1 + g * one_minus_b1;
          const float vi = v[i] * b2 + g * g * one_minus_b2;
          m[i] = mi;
          v[i] = vi;
          param[i] -= step_size * mi / (std::sqrt(vi) * inv_sqrt_bias2 + eps);
        }
      });
    }
  }
  return AdamKernel::kFusedCpu;
}

}  // namespace gantry
