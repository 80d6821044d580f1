// Tests: the fused Adam step against LibTorch's Adam::step, step by step, on parameters of
// uneven sizes (one without a gradient), including a parameter's first step (LibTorch's) and a
// state restored the way checkpoints restore it.
#include <gtest/gtest.h>

#include <limits>

#include "trainer/adam.h"

using namespace gantry;

namespace {

std::vector<torch::Tensor> make_params() {
  torch::manual_seed(3);
  std::vector<torch::Tensor> ps;
  for (int64_t n : {1, 17, 1000, 70000}) ps.push_back(torch::randn({n}).requires_grad_());
  ps.push_back(torch::randn({3, 5}).requires_grad_());  // gets no gradient
  return ps;
}

std::vector<torch::Tensor> clone(const std::vector<torch::Tensor>& ps) {
  std::vector<torch::Tensor> out;
  for (const auto& p : ps) out.push_back(p.detach().clone().requires_grad_());
  return out;
}

void set_grads(std::vector<torch::Tensor>& ps, int step) {
  for (size_t i = 0; i + 1 < ps.size(); ++i)
    ps[i].mutable_grad() = torch::sin(torch::arange(ps[i].numel(), torch::kFloat32) * (0.1 * (step + 1)) + static_cast<double>(i)).view_as(ps[i]);
}

}  // namespace

TEST(FusedAdam, MatchesLibTorchAdamStepByStep) {
  auto reference = make_params();
  auto fused = clone(reference);
  const auto options = torch::optim::AdamOptions(2e-3).betas(std::make_tuple(0.5, 0.999));
  torch::optim::Adam a(reference, options), b(fused, options);
  for (int step = 0; step < 20; ++step) {
    set_grads(reference, step);
    set_grads(fused, step);
    a.step();
    EXPECT_EQ(adam_step(b), step > 0 ? AdamKernel::kFusedCpu : AdamKernel::kLibTorch);  // the first: no state yet
    for (size_t i = 0; i < reference.size(); ++i) {
      // One multiply-add's rounding per term, relative to the update's size (lr = 2e-3).
      EXPECT_LT((reference[i] - fused[i]).abs().max().item<float>(), 2e-6) << "parameter " << i << ", step " << step;
    }
  }
  EXPECT_TRUE(torch::equal(reference.back(), fused.back()));  // no gradient: untouched
  const auto& sa = static_cast<torch::optim::AdamParamState&>(*a.state().at(optimizer_state_key(a.state(), reference[2])));
  const auto& sb = static_cast<torch::optim::AdamParamState&>(*b.state().at(optimizer_state_key(b.state(), fused[2])));
  EXPECT_EQ(sa.step(), 20);
  EXPECT_EQ(sb.step(), 20);
  EXPECT_TRUE(torch::allclose(sa.exp_avg(), sb.exp_avg(), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(sa.exp_avg_sq(), sb.exp_avg_sq(), 1e-5, 1e-9));
}

TEST(FusedAdam, WeightDecayGoesThroughLibTorch) {
  auto reference = make_params();
  auto fused = clone(reference);
  const auto options = torch::optim::AdamOptions(1e-2).weight_decay(0.1);
  torch::optim::Adam a(reference, options), b(fused, options);
  for (int step = 0; step < 3; ++step) {
    set_grads(reference, step);
    set_grads(fused, step);
    a.step();
    EXPECT_EQ(adam_step(b), AdamKernel::kLibTorch);
  }
  for (size_t i = 0; i < reference.size(); ++i) EXPECT_TRUE(torch::equal(reference[i], fused[i])) << i;
}

// The multi-tensor step runs LibTorch's ops in Adam::step's order, so on the CPU (one tensor at
// a time) it is bit-identical to it, state included.
TEST(MultiTensorAdam, IsLibTorchsAdamBitForBitOnTheCpu) {
  auto reference = make_params();
  auto multi = clone(reference);
  const auto options = torch::optim::AdamOptions(2e-3).betas(std::make_tuple(0.5, 0.999));
  torch::optim::Adam a(reference, options), b(multi, options);
  for (int step = 0; step < 20; ++step) {
    set_grads(reference, step);
    set_grads(multi, step);
    a.step();
    if (step == 0) b.step();  // creates the state
    else multi_tensor_adam_step(b);
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_TRUE(torch::equal(reference[i], multi[i])) << "parameter " << i << ", step " << step;
  }
  for (size_t i = 0; i + 1 < reference.size(); ++i) {
    const auto& sa = static_cast<torch::optim::AdamParamState&>(*a.state().at(optimizer_state_key(a.state(), reference[i])));
    const auto& sb = static_cast<torch::optim::AdamParamState&>(*b.state().at(optimizer_state_key(b.state(), multi[i])));
    EXPECT_EQ(sb.step(), 20);
    EXPECT_TRUE(torch::equal(sa.exp_avg(), sb.exp_avg()));
    EXPECT_TRUE(torch::equal(sa.exp_avg_sq(), sb.exp_avg_sq()));
  }
}

// On a GPU, adam_step takes the multi-tensor kernels; they fuse the multiply-adds, so they
// match LibTorch's per-parameter ops to rounding (the fused CPU loop's bound). Skipped without CUDA.
TEST(MultiTensorAdam, CudaMatchesLibTorchsAdam) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto reference = make_params();
  std::vector<torch::Tensor> multi;
  for (const auto& p : reference) multi.push_back(p.detach().to(torch::kCUDA).requires_grad_());
  const auto options = torch::optim::AdamOptions(2e-3).betas(std::make_tuple(0.5, 0.999));
  torch::optim::Adam a(reference, options), b(multi, options);
  for (int step = 0; step < 20; ++step) {
    set_grads(reference, step);
    for (size_t i = 0; i + 1 < multi.size(); ++i) multi[i].mutable_grad() = reference[i].grad().to(torch::kCUDA);
    a.step();
    EXPECT_EQ(adam_step(b), step > 0 ? AdamKernel::kMultiTensor : AdamKernel::kLibTorch);
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_LT((reference[i] - multi[i].cpu()).abs().max().item<float>(), 2e-6) << "parameter " << i << ", step " << step;
  }
}

// DeviceAdam: PyTorch's fused CUDA kernel, with the skip decided on the device. Applied steps
// match LibTorch's Adam to rounding; a step told to skip (found_inf = 1) changes nothing and does
// not count. Skipped without CUDA.
TEST(DeviceAdam, CudaMatchesLibTorchsAdamAndSkipsOnTheDevice) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto reference = make_params();
  std::vector<torch::Tensor> device;
  for (const auto& p : reference) device.push_back(p.detach().to(torch::kCUDA).requires_grad_());
  const auto options = torch::optim::AdamOptions(2e-3).betas(std::make_tuple(0.5, 0.999));
  torch::optim::Adam a(reference, options), b(device, options);
  ASSERT_TRUE(DeviceAdam::applies(b));
  DeviceAdam fused(b);
  const torch::Tensor go = torch::zeros({}, device.front().options()), skip = torch::ones({}, go.options());
  int64_t applied = 0;
  for (int step = 0; step < 20; ++step) {
    set_grads(reference, step);
    for (size_t i = 0; i + 1 < device.size(); ++i) device[i].mutable_grad() = reference[i].grad().to(torch::kCUDA);
    if (step % 5 == 3) {
      std::vector<torch::Tensor> before;
      for (const auto& p : device) before.push_back(p.detach().clone());
      device[1].mutable_grad()[0] = std::numeric_limits<float>::quiet_NaN();  // what a skip is for
      fused.step(skip);
      for (size_t i = 0; i < device.size(); ++i) EXPECT_TRUE(torch::equal(before[i], device[i])) << i;
      continue;
    }
    a.step();
    fused.step(go);
    ++applied;
    for (size_t i = 0; i < reference.size(); ++i)
      EXPECT_LT((reference[i] - device[i].cpu()).abs().max().item<float>(), 2e-6) << "parameter " << i << ", step " << step;
  }
  fused.store_steps();
  const auto& sa = static_cast<torch::optim::AdamParamState&>(*a.state().at(optimizer_state_key(a.state(), reference[2])));
  const auto& sb = static_cast<torch::optim::AdamParamState&>(*b.state().at(optimizer_state_key(b.state(), device[2])));
  EXPECT_EQ(sb.step(), applied);
  EXPECT_EQ(sa.step(), applied);
  EXPECT_TRUE(torch::allclose(sa.exp_avg(), sb.exp_avg().cpu(), 1e-5, 1e-7));
  EXPECT_TRUE(torch::allclose(sa.exp_avg_sq(), sb.exp_avg_sq().cpu(), 1e-5, 1e-9));
  EXPECT_EQ(b.state().count(optimizer_state_key(b.state(), device.back())), 0u);  // no gradient, no state
}
