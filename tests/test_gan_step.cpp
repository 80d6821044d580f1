// Tests: one D and one G update with every loss, DCGAN and MLP, on a single rank: each update
// moves only its own network, by the loss's gradient, the statistics are finite, and WGAN-GP's
// reported D loss includes the penalty.
// train.device and train.precision: device resolution, the autocast guard, and bf16 updates
// that keep fp32 weights and follow the fp32 ones (on the CPU, whose autocast runs bf16 too).
// optim.schedule: its factors, and GanStep's updates scaled by them.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "tests/small_models.h"
#include "trainer/augment.h"
#include "trainer/device.h"
#include "trainer/ema.h"
#include "trainer/gan_step.h"
#include "trainer/latent.h"
#include "trainer/losses.h"
#include "trainer/lr_schedule.h"
#include "trainer/training_metrics.h"

using namespace gantry;

namespace {
comm::Runtime* g_runtime = nullptr;

std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

// Copies of the module's gradients as its last update left them.
std::vector<torch::Tensor> gradients(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.grad().clone());
  return out;
}

void expect_all_close(const std::vector<torch::Tensor>& actual, const std::vector<torch::Tensor>& expected,
                      double rtol, double atol) {
  ASSERT_EQ(actual.size(), expected.size());
  for (size_t i = 0; i < actual.size(); ++i)
    EXPECT_TRUE(torch::allclose(actual[i], expected[i], rtol, atol))
        << i << ": max diff " << (actual[i] - expected[i]).abs().max().item<double>();
}

// A regularized D update against the same update without the penalty (each: D's gradients and
// the step's statistics): its gradient is the plain one plus `scale` times the penalty's, taken
// by hand at the same weights (a weight the penalty does not reach gets none), the penalty is
// counted in slots `sum` and `count`, and D's reported loss leaves it out (to float32 rounding).
// atol: the float32 rounding allowed between the update's one backward and the hand-made sum of
// two gradients.
using DUpdateResult = std::pair<std::vector<torch::Tensor>, torch::Tensor>;
void expect_penalty_added(const DUpdateResult& plain, const DUpdateResult& regularized, const torch::Tensor& penalty,
                          double scale, const std::vector<torch::Tensor>& params, StatSlot sum, StatSlot count,
                          double atol = 1e-6) {
  const auto penalty_grads = torch::autograd::grad({penalty}, params, {}, /*retain_graph=*/c10::nullopt,
                                                   /*create_graph=*/false, /*allow_unused=*/true);
  std::vector<torch::Tensor> expected;
  for (size_t i = 0; i < params.size(); ++i)
    expected.push_back(penalty_grads[i].defined() ? plain.first[i] + scale * penalty_grads[i] : plain.first[i]);
  expect_all_close(regularized.first, expected, 1e-4, atol);
  EXPECT_GT((regularized.first[0] - plain.first[0]).abs().max().item<double>(), 1e-6);  // the penalty moved something
  EXPECT_EQ(plain.second[count].item<double>(), 0);
  EXPECT_EQ(regularized.second[count].item<double>(), 1);
  EXPECT_NEAR(regularized.second[sum].item<double>(), penalty.item<double>(), 1e-5 * penalty.item<double>());
  // A per-sample D scores bCR's shifted copies in the same pass, a larger matrix product whose
  // float32 rounding of the same logits may differ: the MLP's loss once differed beyond its 6th digit.
  const double plain_loss = plain.second[kDLossSum].item<double>();
  EXPECT_NEAR(regularized.second[kDLossSum].item<double>(), plain_loss, 1e-6 * std::abs(plain_loss));
}

// One D update's inputs for 6 images of 28x28, with train.augment's draws when it is on.
struct DUpdateInputs {
  torch::Tensor real, z, mix, draws;
  AugmentPolicy policy;
};
DUpdateInputs d_update_inputs(const Config& c) {
  DUpdateInputs in;
  in.real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  in.z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  in.mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  in.policy = parse_augment(c.train.augment);
  if (in.policy.any()) in.draws = uniform_table(1, random::kAugment, 0, 0, 6, 2 * kAugmentDraws);
  return in;
}

// Test names for suites over (architecture, train.augment).
std::string arch_and_augment(const ::testing::TestParamInfo<std::tuple<std::string, std::string>>& info) {
  return std::get<0>(info.param) + (std::get<1>(info.param) == "none" ? "_Plain" : "_Augmented");
}

bool changed(const torch::nn::Module& m, const std::vector<torch::Tensor>& before) {
  const auto now = m.parameters();
  for (size_t i = 0; i < now.size(); ++i)
    if (!torch::equal(now[i], before[i])) return true;
  return false;
}
}  // namespace

// Parameters: architecture (dcgan | mlp) and loss.
class GanStepLoss : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(GanStepLoss, EachUpdateMovesOnlyItsNetwork) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const auto& [arch, loss] = GetParam();
  const Config c =
      arch == "mlp" ? gantry::testing::small_mlp_config(loss) : gantry::testing::small_dcgan_config(loss);
  GanStep step(make_models(c, {1, 28, 28}), c, *comm);
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);

  auto g0 = snapshot(*step.models().g), d0 = snapshot(*step.models().d);
  step.d_update(real, z, mix);
  EXPECT_TRUE(changed(*step.models().d, d0));
  EXPECT_FALSE(changed(*step.models().g, g0));  // G's BatchNorm buffers move, its parameters don't

  // The gradient D's update applied is that of this loss (and WGAN-GP's penalty, on the same
  // interpolation), computed from a fresh copy of the same models: real and fake in their places.
  GanModels fresh = make_models(c, {1, 28, 28});
  torch::Tensor fake;
  {
    torch::NoGradGuard no_grad;
    fake = fresh.generate(z);
  }
  const LossKind kind = parse_loss(c.train.loss);
  torch::Tensor expected_loss = discriminator_loss(kind, fresh.discriminate(real, {}), fresh.discriminate(fake, {}));
  if (kind == LossKind::kWganGp)
    expected_loss = expected_loss + c.train.gp_weight *
                                        gradient_penalty([&](const torch::Tensor& x) { return fresh.discriminate(x, {}); },
                                                         real, fake, mix);
  expect_all_close(gradients(*step.models().d), torch::autograd::grad({expected_loss}, fresh.d->parameters()), 1e-4,
                   1e-6);

  d0 = snapshot(*step.models().d);
  step.g_update(z);
  EXPECT_TRUE(changed(*step.models().g, g0));
  EXPECT_FALSE(changed(*step.models().d, d0));
  for (const auto& p : step.models().d->parameters()) EXPECT_TRUE(p.requires_grad());  // unfrozen again

  const torch::Tensor s = step.take_stats();
  EXPECT_EQ(s[kDUpdates].item<double>(), 1);
  EXPECT_EQ(s[kGUpdates].item<double>(), 1);
  EXPECT_NEAR(s[kDLossSum].item<double>(), expected_loss.item<double>(), 1e-5 * std::abs(expected_loss.item<double>()));
  for (int64_t i = 0; i < kNumStats; ++i) EXPECT_TRUE(std::isfinite(s[i].item<double>())) << i;
  EXPECT_GT(s[kDRealSum].item<double>(), 0);
  EXPECT_LT(s[kDRealSum].item<double>(), 1);
  EXPECT_EQ(s[kFakeCount].item<double>(), 6 * 784);
  EXPECT_EQ(step.take_stats().abs().sum().item<double>(), 0);  // reset by the read
}

INSTANTIATE_TEST_SUITE_P(AllLosses, GanStepLoss,
                         ::testing::Combine(::testing::Values("dcgan", "mlp"),
                                            ::testing::Values("minimax", "non-saturating", "wgan-gp", "hinge")),
                         [](const auto& info) {
                           std::string n = std::get<0>(info.param) + "_" + std::get<1>(info.param);
                           for (auto& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

// model.conditional: a D update scores the real images and fakes drawn for the same labels, each
// with its label; a G update scores its fakes with the labels it was given. Both gradients are
// checked against fresh models fed the same labels, and a label changes what each update does.
TEST_P(GanStepLoss, ConditionalUpdatesFollowTheLabels) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const auto& [arch, loss] = GetParam();
  Config c = arch == "mlp" ? gantry::testing::small_mlp_config(loss) : gantry::testing::small_dcgan_config(loss);
  c.model.conditional = true;
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  const torch::Tensor labels = torch::tensor({3, 0, 9, 3, 5, 1}, torch::kInt64);
  const torch::Tensor g_labels = torch::tensor({7, 2, 2, 0, 9, 4}, torch::kInt64);

  GanStep step(make_models(c, {1, 28, 28}), c, *comm);
  step.d_update(real, z, mix, {}, false, {}, labels);
  GanModels fresh = make_models(c, {1, 28, 28});
  torch::Tensor fake;
  {
    torch::NoGradGuard no_grad;
    fake = fresh.generate(fresh.g_input(z, labels));
  }
  const LossKind kind = parse_loss(c.train.loss);
  torch::Tensor d_loss = discriminator_loss(kind, fresh.discriminate(real, labels), fresh.discriminate(fake, labels));
  if (kind == LossKind::kWganGp)
    d_loss = d_loss + c.train.gp_weight *
                          gradient_penalty([&](const torch::Tensor& x) { return fresh.discriminate(x, labels); }, real,
                                           fake, mix);
  expect_all_close(gradients(*step.models().d), torch::autograd::grad({d_loss}, fresh.d->parameters()), 1e-4, 1e-6);

  GanStep g_step(make_models(c, {1, 28, 28}), c, *comm);
  g_step.g_update(z, {}, {}, g_labels);
  const torch::Tensor g_loss =
      generator_loss(kind, fresh.discriminate(fresh.generate(fresh.g_input(z, g_labels)), g_labels));
  expect_all_close(gradients(*g_step.models().g), torch::autograd::grad({g_loss}, fresh.g->parameters()), 1e-4,
                   1e-6);

  // Other labels, other updates of D and of G; an unlabelled update of a conditional GAN, and a
  // label out of range, are refused.
  auto differ = [](const std::vector<torch::Tensor>& a, const std::vector<torch::Tensor>& b) {
    bool out = false;
    for (size_t i = 0; i < a.size(); ++i) out |= !torch::allclose(a[i], b[i], 1e-5, 1e-7);
    return out;
  };
  GanStep other(make_models(c, {1, 28, 28}), c, *comm);
  other.d_update(real, z, mix, {}, false, {}, (labels + 1) % 10);
  EXPECT_TRUE(differ(gradients(*step.models().d), gradients(*other.models().d)));
  GanStep other_g(make_models(c, {1, 28, 28}), c, *comm);
  other_g.g_update(z, {}, {}, (g_labels + 1) % 10);
  EXPECT_TRUE(differ(gradients(*g_step.models().g), gradients(*other_g.models().g)));
  EXPECT_THROW(other.d_update(real, z, mix), c10::Error);
  EXPECT_THROW(other.g_update(z), c10::Error);
  EXPECT_THROW(other.g_update(z, {}, {}, torch::full({6}, 10, torch::kInt64)), c10::Error);
}

TEST(Device, ResolvesTrainDevice) {
  Config c;
  c.train.device = "cpu";
  EXPECT_EQ(resolve_device(c, 3), torch::Device(torch::kCPU));
  c.train.device = "auto";
  const torch::Device automatic = resolve_device(c, 3);
  if (torch::cuda::is_available()) {
    EXPECT_EQ(automatic, torch::Device(torch::kCUDA, 3 % static_cast<int>(torch::cuda::device_count())));
  } else {
    EXPECT_EQ(automatic, torch::Device(torch::kCPU));
    c.train.device = "cuda";
    c.origin["train.device"] = "run.yaml:7";
    try {
      resolve_device(c, 0);
      FAIL() << "expected a ConfigError";
    } catch (const ConfigError& e) {
      EXPECT_NE(std::string(e.what()).find("run.yaml:7: train.device: cuda, but no CUDA device is usable here"),
                std::string::npos) << e.what();
    }
  }
}

// The device-memory gauges' source: the CUDA caching allocator's bytes held by tensors, now and
// at the peak. Nothing for the CPU; on a GPU a 4 MiB tensor shows in both.
TEST(Device, MemoryBytesComeFromCudaDevicesOnly) {
  EXPECT_FALSE(device_memory_bytes(torch::Device(torch::kCPU)).has_value());
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const torch::Device gpu(torch::kCUDA, 0);
  const torch::Tensor held = torch::empty({1 << 20}, torch::TensorOptions().device(gpu));
  const auto bytes = device_memory_bytes(gpu);
  ASSERT_TRUE(bytes.has_value()) << "LibTorch has CUDA, but gantry was built without GANTRY_TORCH_CUDA";
  EXPECT_GE(bytes->first, int64_t{4} << 20);
  EXPECT_GE(bytes->second, bytes->first);
}

// OpenBLAS on a CPU it does not recognise runs its SSE3 kernels (bench/RESULTS.md: 3.7x slower
// matrix products on one): the warning names the core type to set, and stays quiet otherwise.
TEST(Device, BlasWarningNamesTheCoreTypeWhereOpenBlasFellBackToOldKernels) {
  const std::string avx512 = blas_kernel_warning("Prescott", true, true);
  EXPECT_NE(avx512.find("runs its Prescott kernels"), std::string::npos) << avx512;
  EXPECT_NE(avx512.find("OPENBLAS_CORETYPE=SkylakeX"), std::string::npos) << avx512;
  EXPECT_NE(blas_kernel_warning("Sandybridge", true, false).find("OPENBLAS_CORETYPE=Haswell"), std::string::npos);
  for (const char* fits : {"Haswell", "Zen", "SkylakeX", "COOPERLAKE", "SapphireRapids"})
    EXPECT_EQ(blas_kernel_warning(fits, true, true), "") << fits;
  EXPECT_EQ(blas_kernel_warning("Prescott", false, false), "") << "an SSE-only CPU: its kernels fit";
  EXPECT_EQ(blas_kernel_warning("", true, true), "") << "not OpenBLAS";
  // Where OpenBLAS is loaded (Debian's LibTorch after scripts/setup.sh), its core name is found at
  // run time; LibTorch builds with MKL have none.
  if (dlsym(RTLD_DEFAULT, "openblas_get_config") == nullptr) GTEST_SKIP() << "LibTorch's BLAS is not OpenBLAS";
  EXPECT_NE(openblas_core(), "");
}

TEST(Device, AutocastGuardRunsMatmulsInBf16AndNests) {
  torch::nn::Linear linear(4, 3);
  const torch::Tensor x = torch::randn({2, 4});
  EXPECT_EQ(linear(x).scalar_type(), torch::kFloat32);
  {
    AutocastGuard on(torch::kCPU, true);
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    {
      AutocastGuard off(torch::kCPU, false);  // a disabled guard changes nothing
      EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    }
    {
      AutocastGuard nested(torch::kCPU, true);
      EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16);
    }
    EXPECT_EQ(linear(x).scalar_type(), torch::kBFloat16) << "the inner guard restored the outer state";
  }
  EXPECT_EQ(linear(x).scalar_type(), torch::kFloat32);
  EXPECT_EQ(linear->weight.scalar_type(), torch::kFloat32);
}

// bf16 autocast: the weights, Adam's moments and the losses stay fp32, and the updates follow the
// fp32 run's. Adam's first step moves each weight by about lr * sign(gradient), so bf16 can only
// flip the direction of gradients within its rounding of zero. Measured on the small DCGAN:
// 0.15 % of the weights moved the other way, and the updates differ by 7.6 % (relative norm);
// the limits are 2 % and 30 %. A difference of exactly 0 would mean autocast never ran.
TEST(Precision, Bf16UpdatesKeepFp32WeightsAndFollowFp32) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config();
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  std::vector<std::vector<torch::Tensor>> deltas;
  for (const char* precision : {"fp32", "bf16"}) {
    c.train.precision = precision;
    GanStep step(make_models(c, {1, 28, 28}), c, *comm);
    const auto g0 = snapshot(*step.models().g), d0 = snapshot(*step.models().d);
    ASSERT_TRUE(step.d_update(real, z, mix));
    ASSERT_TRUE(step.g_update(z));
    std::vector<torch::Tensor> delta;
    const auto g = step.models().g->parameters(), d = step.models().d->parameters();
    for (size_t i = 0; i < g.size(); ++i) delta.push_back((g[i] - g0[i]).flatten());
    for (size_t i = 0; i < d.size(); ++i) delta.push_back((d[i] - d0[i]).flatten());
    for (const auto& p : g) EXPECT_EQ(p.scalar_type(), torch::kFloat32) << precision;
    for (const auto& p : d) EXPECT_EQ(p.scalar_type(), torch::kFloat32) << precision;
    const torch::Tensor s = step.take_stats();
    EXPECT_TRUE(std::isfinite(s[kDLossSum].item<double>()) && std::isfinite(s[kGLossSum].item<double>()));
    deltas.push_back(delta);
  }
  const torch::Tensor fp32 = torch::cat(deltas[0]), bf16 = torch::cat(deltas[1]);
  const double flipped = (fp32.sign() != bf16.sign()).to(torch::kFloat64).mean().item<double>();
  EXPECT_LT(flipped, 0.02) << "fraction of weights moved the other way in bf16: " << flipped;
  const double relative = ((fp32 - bf16).norm() / fp32.norm()).item<double>();
  EXPECT_LT(relative, 0.3) << "relative difference of the updates: " << relative;
  EXPECT_GT(relative, 0.0) << "bf16 gave the fp32 updates exactly: autocast did not run";
  std::printf("bf16 vs fp32 after one D and one G update: %.4f of the weights moved the other way, "
              "relative difference of the updates %.4f\n", flipped, relative);
}

// On a GPU (scripts/gpu_check.sh runs the unit tests there): the same updates from the same
// weights and inputs as on the CPU, and in bf16 with fp32 weights. Skipped where CUDA is not
// available. TF32 is off for the comparison (cuDNN's convolutions default to it). Adam's first
// step moves each weight by about lr * sign(gradient), so a gradient within rounding of zero may
// move the other way on the GPU (cuDNN and cuBLAS sum in other orders): at most 0.5 % of the
// weights may differ by more than lr / 10, at most 1 % by more than lr / 1000 (fp32 rounding of
// the weights themselves is about lr / 50000).
TEST(Precision, CudaUpdatesMatchTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config("wgan-gp");
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  auto& context = at::globalContext();
  const bool tf32_cudnn = context.allowTF32CuDNN();
  context.setAllowTF32CuDNN(false);
  std::vector<torch::Tensor> delta[2];
  for (int on_gpu = 0; on_gpu < 2; ++on_gpu) {
    GanModels m = make_models(c, {1, 28, 28});  // seeded: the same weights both times
    std::vector<torch::Tensor> before;
    for (const auto& p : m.g->parameters()) before.push_back(p.detach().clone());
    for (const auto& p : m.d->parameters()) before.push_back(p.detach().clone());
    m.g->to(on_gpu ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU));
    m.d->to(on_gpu ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU));
    GanStep step(std::move(m), c, *comm);
    ASSERT_TRUE(step.d_update(real, z, mix));
    ASSERT_TRUE(step.g_update(z));
    size_t i = 0;
    for (const auto& p : step.models().g->parameters()) delta[on_gpu].push_back((p.detach().cpu() - before[i++]).flatten());
    for (const auto& p : step.models().d->parameters()) delta[on_gpu].push_back((p.detach().cpu() - before[i++]).flatten());
    EXPECT_EQ(step.take_stats().device().is_cuda(), on_gpu == 1);
  }
  context.setAllowTF32CuDNN(tf32_cudnn);
  const double lr = std::min(c.optim.g.lr, c.optim.d.lr);
  const torch::Tensor cpu = torch::cat(delta[0]), gpu = torch::cat(delta[1]);
  const torch::Tensor gap = (cpu - gpu).abs();
  const double flipped = (gap > lr / 10).to(torch::kFloat64).mean().item<double>();
  const double apart = (gap > lr / 1000).to(torch::kFloat64).mean().item<double>();
  EXPECT_LT(flipped, 0.005) << "weights whose GPU update differs from the CPU's by more than lr/10";
  EXPECT_LT(apart, 0.01) << "weights whose GPU update differs from the CPU's by more than lr/1000";
  EXPECT_GT(cpu.abs().max().item<double>(), lr / 2) << "the updates did not move the weights";
  std::printf("CUDA vs CPU after one D and one G update, %lld weights: %.5f differ by > lr/10, "
              "%.5f by > lr/1000, median difference %.3g of lr\n",
              static_cast<long long>(cpu.numel()), flipped, apart, gap.median().item<double>() / lr);

  c.train.precision = "bf16";
  GanModels m = make_models(c, {1, 28, 28});
  m.g->to(torch::Device(torch::kCUDA, 0));
  m.d->to(torch::Device(torch::kCUDA, 0));
  GanStep step(std::move(m), c, *comm);
  EXPECT_TRUE(step.d_update(real, z, mix));
  EXPECT_TRUE(step.g_update(z));
  for (const auto& p : step.models().g->parameters()) EXPECT_EQ(p.scalar_type(), torch::kFloat32);
}

TEST(GanStep, WganGpReportsThePenalisedLoss) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c;
  c.data.name = "gaussian1d";
  c.model.arch = "mlp";
  c.model.z_dim = 2;
  c.train.loss = "wgan-gp";
  const torch::Tensor real = torch::randn({16, 1, 1, 1});
  const torch::Tensor z = torch::randn({16, 2});
  const torch::Tensor mix = torch::rand({16});
  c.train.gp_weight = 0;
  GanStep plain(make_models(c, {1, 1, 1}), c, *comm);
  plain.d_update(real, z, mix);
  c.train.gp_weight = 10;
  GanStep penalised(make_models(c, {1, 1, 1}), c, *comm);  // same seed: same initial models
  penalised.d_update(real, z, mix);
  const double without = plain.take_stats()[kDLossSum].item<double>();
  const double with = penalised.take_stats()[kDLossSum].item<double>();
  // A freshly initialised critic's input gradient is far from norm 1, so the penalty is positive.
  EXPECT_GT(with - without, 0.1);
}

// A D without batch-coupled layers (the MLP; the DCGAN critic without BatchNorm for WGAN-GP)
// scores real and fake images in one forward pass. It must give the two-pass update: the same
// statistics and, after three D updates, the same weights within float rounding (the weight
// gradients are summed in another order). Measured: the largest difference is 1.5e-08, against
// weights up to 0.34; the limit is 1e-6. With BatchNorm the passes stay separate.
TEST(GanStep, OneDiscriminatorPassForRealAndFakeGivesTheTwoPassUpdate) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  EXPECT_FALSE(make_models(gantry::testing::small_dcgan_config("minimax"), {1, 28, 28}).d_per_sample);
  EXPECT_TRUE(make_models(gantry::testing::small_dcgan_config("wgan-gp"), {1, 28, 28}).d_per_sample);
  Config c;
  c.data.name = "fashion-mnist";
  c.model.arch = "mlp";
  c.model.z_dim = 8;
  c.model.mlp.g_hidden = {16, 32};
  c.model.mlp.d_hidden = {32, 16, 8};
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  std::vector<torch::Tensor> weights[2], stats;
  for (int joint = 0; joint < 2; ++joint) {
    GanModels m = make_models(c, {1, 28, 28});  // seeded: the same weights both times
    ASSERT_TRUE(m.d_per_sample);
    m.d_per_sample = joint == 1;
    GanStep step(std::move(m), c, *comm);
    for (int64_t s = 0; s < 3; ++s)
      ASSERT_TRUE(step.d_update(latent_rows(7, random::kLatent, s, 0, 6, 784).tanh().view({6, 1, 28, 28}), z, mix));
    for (const auto& p : step.models().d->parameters()) weights[joint].push_back(p.detach().flatten());
    stats.push_back(step.take_stats());
  }
  const torch::Tensor two = torch::cat(weights[0]), one = torch::cat(weights[1]);
  const double gap = (two - one).abs().max().item<double>();
  EXPECT_LT(gap, 1e-6) << "largest weight difference after 3 D updates";
  EXPECT_TRUE(torch::allclose(stats[0], stats[1], 1e-6, 0)) << stats[0] << stats[1];
  std::printf("one D pass vs two, after 3 D updates: largest weight difference %.3g (weights up to %.3g)\n",
              gap, two.abs().max().item<double>());
}

// The NaN guard: a NaN in D's real batch or G's latents skips that update and leaves no trace
// (parameters, Adam moments and BatchNorm running statistics all as before); the next finite
// update is applied again.
TEST(GanStep, NonFiniteUpdatesAreSkippedWithoutATrace) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const Config c = gantry::testing::small_dcgan_config();
  GanStep step(make_models(c, {1, 28, 28}), c, *comm);
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  ASSERT_TRUE(step.d_update(real, z, mix));
  ASSERT_TRUE(step.g_update(z));
  auto everything = [&] {  // copies: the state's tensors are the live ones
    checkpoint::StateDict state;
    step.save_state(state);  // parameters, buffers and both optimizers' moments and steps
    for (auto& [name, t] : state) t = t.clone();
    return state;
  };
  const checkpoint::StateDict before = everything();

  EXPECT_FALSE(step.d_update(torch::full_like(real, nan), z, mix));
  EXPECT_FALSE(step.g_update(torch::full_like(z, nan)));
  EXPECT_FALSE(step.d_update(real, torch::full_like(z, std::numeric_limits<float>::infinity()), mix));
  const checkpoint::StateDict after = everything();
  ASSERT_EQ(after.size(), before.size());
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << name;
  const torch::Tensor s = step.take_stats();
  EXPECT_EQ(s[kDNonFinite].item<double>(), 2);  // the losses were NaN: still counted as such
  EXPECT_EQ(s[kGNonFinite].item<double>(), 1);

  EXPECT_TRUE(step.d_update(real, z, mix));
  EXPECT_TRUE(step.g_update(z));
  const checkpoint::StateDict moved = everything();
  // Two applied updates each: the skipped ones did not count.
  EXPECT_EQ(moved.at("optim/generator/net.0.weight/step").item<int64_t>(), 2);
  EXPECT_EQ(moved.at("optim/discriminator/net.0.weight/step").item<int64_t>(), 2);
}

// The same guard with CUDA parameters, where the device decides (DeviceAdam): the updates return
// without waiting, their outcomes read as skipped, nothing changed, and settle() counts them.
// Skipped without CUDA.
TEST(GanStep, OnCudaTheDeviceSkipsNonFiniteUpdatesWithoutATrace) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  auto comm = comm::make_mpi_communicator(*g_runtime);
  if (comm->world_size() != 1) GTEST_SKIP() << "one rank: its collectives leave CUDA tensors alone";
  const Config c = gantry::testing::small_dcgan_config();
  GanModels models = make_models(c, {1, 28, 28});
  models.g->to(torch::kCUDA);
  models.d->to(torch::kCUDA);
  if (models.g_ema) models.g_ema->to(torch::kCUDA);
  GanStep step(std::move(models), c, *comm);
  ASSERT_TRUE(step.decides_on_device());
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8, /*pinned=*/true);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const UpdateOutcome first = step.d_update(real, z, mix);
  EXPECT_FALSE(first.known());
  EXPECT_TRUE(first.applied());
  EXPECT_TRUE(step.g_update(z));
  auto everything = [&] {
    checkpoint::StateDict state;
    step.save_state(state);
    for (auto& [name, t] : state) t = t.cpu().clone();
    return state;
  };
  const checkpoint::StateDict before = everything();
  EXPECT_EQ(before.at("optim/generator/net.0.weight/step").item<int64_t>(), 1);

  EXPECT_FALSE(step.d_update(torch::full_like(real, nan), z, mix));
  EXPECT_FALSE(step.g_update(torch::full_like(z, nan)));
  EXPECT_FALSE(step.d_update(real, torch::full_like(z, std::numeric_limits<float>::infinity()), mix));
  const checkpoint::StateDict after = everything();
  for (const auto& [name, t] : before) EXPECT_TRUE(torch::equal(t, after.at(name))) << name;
  const SkippedUpdates skipped = step.settle();
  EXPECT_EQ(skipped.d, 2);
  EXPECT_EQ(skipped.g, 1);
  EXPECT_EQ(skipped.longest_run, 3);

  EXPECT_TRUE(step.d_update(real, z, mix));
  EXPECT_TRUE(step.g_update(z));
  const SkippedUpdates none = step.settle();
  EXPECT_EQ(none.d + none.g, 0);
  EXPECT_EQ(none.longest_run, 0);
  EXPECT_EQ(everything().at("optim/generator/net.0.weight/step").item<int64_t>(), 2);
  step.load_state(before);  // the device's step counts follow the checkpoint's
  EXPECT_TRUE(step.g_update(z));
  EXPECT_EQ(everything().at("optim/generator/net.0.weight/step").item<int64_t>(), 2);
}

// train.augment: D's updates see the augmented images (the update differs from the plain one and
// repeats exactly from the same draws). G's weights differ too, but through the D update alone
// they would: the next test checks G's update on its own.
TEST(GanStep, AugmentationChangesWhatDSeesDeterministically) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config();
  c.train.augment = "translation,cutout";
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  const torch::Tensor d_draws = uniform_table(1, random::kAugment, 0, 0, 6, 2 * kAugmentDraws);
  const torch::Tensor g_draws = uniform_table(1, random::kAugment, 1, 0, 6, kAugmentDraws);
  auto after = [&](bool augment) {
    GanStep step(make_models(c, {1, 28, 28}), c, *comm);
    EXPECT_TRUE(step.d_update(real, z, mix, augment ? d_draws : torch::Tensor()));
    EXPECT_TRUE(step.g_update(z, augment ? g_draws : torch::Tensor()));
    checkpoint::StateDict state;
    step.save_state(state);
    for (auto& [name, t] : state) t = t.clone();
    return state;
  };
  const checkpoint::StateDict plain = after(false), augmented = after(true), again = after(true);
  for (const auto& [name, t] : augmented) EXPECT_TRUE(torch::equal(t, again.at(name))) << name;
  EXPECT_FALSE(torch::equal(plain.at("discriminator/param/net.0.weight"), augmented.at("discriminator/param/net.0.weight")));
  EXPECT_FALSE(torch::equal(plain.at("generator/param/net.0.weight"), augmented.at("generator/param/net.0.weight")));
}

// train.augment in G's update, on its own (the test above runs a D update first, which differs
// anyway): G's gradient is that of the loss of D on the augmented G(z), backpropagated through
// the augmentation, computed here from a fresh copy of the same models; without draws it differs.
TEST(GanStep, GsUpdateBackpropagatesThroughTheAugmentation) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config();
  c.train.augment = "translation,cutout";
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor g_draws = uniform_table(1, random::kAugment, 1, 0, 6, kAugmentDraws);
  auto g_gradient = [&](const torch::Tensor& draws) {
    GanStep step(make_models(c, {1, 28, 28}), c, *comm);
    EXPECT_TRUE(step.g_update(z, draws));
    return gradients(*step.models().g);
  };
  const std::vector<torch::Tensor> plain = g_gradient(torch::Tensor()), augmented = g_gradient(g_draws);

  GanModels fresh = make_models(c, {1, 28, 28});  // the same seed: the weights before the update
  const torch::Tensor logits =
      fresh.discriminate(diff_augment(fresh.generate(z), g_draws, parse_augment(c.train.augment)), {});
  expect_all_close(augmented,
                   torch::autograd::grad({generator_loss(parse_loss(c.train.loss), logits)}, fresh.g->parameters()),
                   1e-4, 1e-7);
  EXPECT_GT((augmented[0] - plain[0]).abs().max().item<double>(), 1e-6);
}

// train.g_topk: with k = 3 of 6, G's update is the gradient of G's mean loss over the 3 fakes D
// scores highest, for each loss (the weights before the update from a second, identically seeded
// copy); k = 6 is the plain update.
TEST(GanStep, TopKGUpdateFollowsTheKFakesDScoresHighest) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  for (const std::string loss : {"non-saturating", "minimax", "hinge"}) {
    Config c = gantry::testing::small_dcgan_config(loss);
    c.model.dcgan.d_norm = "spectral";  // D scores each fake alone, so 3 of them score as in the batch
    const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
    auto g_gradient = [&](int64_t k) {
      GanStep step(make_models(c, {1, 28, 28}), c, *comm);
      step.set_g_topk(k);
      EXPECT_TRUE(step.g_update(z));
      return gradients(*step.models().g);
    };
    GanModels fresh = make_models(c, {1, 28, 28});
    const torch::Tensor fakes = fresh.generate(z);
    const torch::Tensor logits = fresh.discriminate(fakes, {}).flatten();
    const torch::Tensor best = std::get<1>(logits.detach().topk(3));
    const LossKind kind = parse_loss(loss);
    const auto expected = torch::autograd::grad({generator_loss(kind, logits.index({best}))}, fresh.g->parameters(),
                                                {}, /*retain_graph=*/true);
    expect_all_close(g_gradient(3), expected, 1e-4, 1e-7);
    const auto all = torch::autograd::grad({generator_loss(kind, logits)}, fresh.g->parameters());
    expect_all_close(g_gradient(6), all, 1e-5, 1e-8);
    EXPECT_GT((expected[0] - all[0]).abs().max().item<double>(), 1e-6) << loss;
  }
}

// train.reuse_fakes: a G update after a D update that kept its fakes is the G update on that D
// update's latents (and labels), whatever latents it is given: the same weights after two steps as
// the plain loop handed the D update's latents twice, for the DCGAN (BatchNorm in both networks)
// and the conditional MLP.
TEST(GanStep, ReusedFakesGiveTheUpdateOnTheDUpdatesLatents) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config dcgan = gantry::testing::small_dcgan_config();
  Config mlp = gantry::testing::small_mlp_config("hinge");
  mlp.model.conditional = true;
  for (const Config& c : {dcgan, mlp}) {
    const bool conditional = c.model.conditional;
    auto train = [&](bool reuse) {
      GanStep step(make_models(c, {1, 28, 28}), c, *comm);
      for (int64_t s = 0; s < 2; ++s) {
        const torch::Tensor real = latent_rows(7, random::kLatent, s, 0, 6, 784).tanh().view({6, 1, 28, 28});
        const torch::Tensor z = latent_rows(1, random::kLatent, 2 * s, 0, 6, 8);
        const torch::Tensor labels = conditional ? torch::arange(6, torch::kLong) % 10 : torch::Tensor();
        if (reuse) step.keep_fakes_for_g();
        EXPECT_TRUE(step.d_update(real, z, uniform_rows(1, random::kPenaltyMix, s, 0, 6), {}, false, {}, labels));
        const torch::Tensor other = latent_rows(1, random::kLatent, 2 * s + 1, 0, 6, 8);
        const torch::Tensor other_labels = conditional ? (torch::arange(6, torch::kLong) + 3) % 10 : torch::Tensor();
        EXPECT_TRUE(reuse ? step.g_update(other, {}, {}, other_labels) : step.g_update(z, {}, {}, labels));
      }
      std::vector<torch::Tensor> out = snapshot(*step.models().g);
      for (const auto& p : step.models().d->parameters()) out.push_back(p.detach().clone());
      return out;
    };
    expect_all_close(train(true), train(false), 1e-5, 1e-7);
  }
}

TEST(GanStep, TopKCountDecaysByGammaPerEpochDownToItsFloor) {
  TrainConfig t;
  t.batch_size = 64;
  const int64_t records = 640;  // 10 steps an epoch
  EXPECT_EQ(g_topk_count(t, 0, records), 64);  // g_topk 1: every fake, always
  EXPECT_EQ(g_topk_count(t, 1000, records), 64);
  t.g_topk = 0.25;
  t.g_topk_gamma = 0.5;
  EXPECT_EQ(g_topk_count(t, 0, records), 64);
  EXPECT_EQ(g_topk_count(t, 10, records), 32);  // one epoch: 0.5 x 64
  EXPECT_EQ(g_topk_count(t, 5, records), 45);   // 0.5^0.5 x 64 = 45.25
  EXPECT_EQ(g_topk_count(t, 15, records), 23);  // 0.5^1.5 x 64 = 22.63
  EXPECT_EQ(g_topk_count(t, 20, records), 16);  // the floor, 0.25 x 64
  EXPECT_EQ(g_topk_count(t, 90, records), 16);
  t.d_steps = 2;  // D's passes over the data: an epoch every 5 steps
  EXPECT_EQ(g_topk_count(t, 5, records), 32);
  t.g_topk_gamma = 0;  // straight to the floor after the first step
  EXPECT_EQ(g_topk_count(t, 0, records), 64);
  EXPECT_EQ(g_topk_count(t, 1, records), 16);
  t.g_topk = 0.001;  // never below one fake
  EXPECT_EQ(g_topk_count(t, 1, records), 1);
}

// train.r1_gamma: a D update with r1 set adds exactly r1_gamma / 2 * r1_every times R1's gradient
// (taken at the same weights from a separate copy of D) to the gradient it applies, and logs the
// penalty; one without adds nothing. With train.augment the penalty is the gradient with respect to
// the un-augmented reals of D on their augmentation (the same draws as the update's reals).
// Parameters: architecture (dcgan | mlp: R1 then runs through GemmLinear's double backward) and
// train.augment.
class GanStepR1 : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(GanStepR1, AddsItsScaledGradientToDsUpdate) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const auto& [arch, augment] = GetParam();
  Config c = arch == "mlp" ? gantry::testing::small_mlp_config() : gantry::testing::small_dcgan_config();
  c.train.augment = augment;
  c.train.r1_gamma = 0.3;
  c.train.r1_every = 3;
  const double scale = 0.3 / 2 * 3;  // 0.45: no other simple combination of the two gives it
  const DUpdateInputs in = d_update_inputs(c);  // named, not bound: C++17 lambdas cannot capture bindings
  const torch::Tensor &real = in.real, &z = in.z, &mix = in.mix, &draws = in.draws;
  const AugmentPolicy policy = in.policy;
  auto d_gradient_and_stats = [&](bool r1) {
    GanStep step(make_models(c, {1, 28, 28}), c, *comm);
    EXPECT_TRUE(step.d_update(real, z, mix, draws, r1));
    return std::pair{gradients(*step.models().d), step.take_stats()};
  };
  const DUpdateResult plain = d_gradient_and_stats(false), regularized = d_gradient_and_stats(true);

  GanModels fresh = make_models(c, {1, 28, 28});  // the same seed: D's weights before the update
  const torch::Tensor penalty = r1_penalty(
      [&](const torch::Tensor& x) {
        return fresh.discriminate(policy.any() ? diff_augment(x, draws.slice(1, 0, kAugmentDraws), policy) : x, {});
      },
      real);
  // Some weights (a bias just before the logit) do not reach grad_x D: R1 leaves them alone.
  expect_penalty_added(plain, regularized, penalty, scale, fresh.d->parameters(), kR1Sum, kR1Count);
}

INSTANTIATE_TEST_SUITE_P(Augment, GanStepR1,
                         ::testing::Combine(::testing::Values("dcgan", "mlp"),
                                            ::testing::Values("none", "translation,cutout")),
                         arch_and_augment);

// train.cr_weight (bCR): a D update handed consistency draws applies the gradient of its loss plus
// cr_weight times the mean squared difference between D's logits on the images it saw translated
// by those draws (up to train.cr_shift pixels) and on the images themselves, reals' and fakes'
// terms summed, computed by hand from a fresh copy of the same models; the penalty is logged on
// its own and D's reported loss leaves it out. Parameters: architecture (dcgan, whose BatchNorm D
// scores each batch in a pass of its own | spectral, a DCGAN D that scores all four batches in one
// pass, and so with one power iteration | mlp, one pass too) and train.augment (the translation
// applies on top of what D sees).
class GanStepConsistency : public ::testing::TestWithParam<std::tuple<std::string, std::string>> {};

TEST_P(GanStepConsistency, AddsTheWeightedPenaltysGradientToDsUpdate) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const auto& [arch, augment] = GetParam();
  Config c = arch == "mlp" ? gantry::testing::small_mlp_config("hinge") : gantry::testing::small_dcgan_config("hinge");
  if (arch == "spectral") c.model.dcgan.d_norm = "spectral";
  c.train.augment = augment;
  c.train.cr_weight = 0.7;
  c.train.cr_shift = 3;
  const DUpdateInputs in = d_update_inputs(c);  // named, not bound: C++17 lambdas cannot capture bindings
  const torch::Tensor &real = in.real, &z = in.z, &mix = in.mix, &draws = in.draws;
  const AugmentPolicy policy = in.policy;
  const torch::Tensor shifts = uniform_table(1, random::kCrShift, 0, 0, 6, 2 * kAugmentDraws);
  auto d_gradient_and_stats = [&](const torch::Tensor& cr_shifts) {
    GanStep step(make_models(c, {1, 28, 28}), c, *comm);
    EXPECT_TRUE(step.d_update(real, z, mix, draws, /*r1=*/false, {}, {}, cr_shifts));
    return std::pair{gradients(*step.models().d), step.take_stats()};
  };
  const DUpdateResult plain = d_gradient_and_stats(torch::Tensor()), regularized = d_gradient_and_stats(shifts);

  GanModels fresh = make_models(c, {1, 28, 28});  // the same seed: G's and D's weights before the update
  torch::Tensor fake;
  {
    torch::NoGradGuard no_grad;
    fake = fresh.generate(z);
  }
  auto seen = [&](const torch::Tensor& x, int64_t k) {
    return policy.any() ? diff_augment(x, draws.slice(1, k * kAugmentDraws, (k + 1) * kAugmentDraws), policy) : x;
  };
  const AugmentPolicy shift{/*translation=*/true, /*cutout=*/false, /*translation_radius=*/3};
  auto shifted = [&](const torch::Tensor& x, int64_t k) {
    return diff_augment(x, shifts.slice(1, k * kAugmentDraws, (k + 1) * kAugmentDraws), shift);
  };
  const torch::Tensor real_seen = seen(real, 0), fake_seen = seen(fake, 1);
  const std::vector<torch::Tensor> batches{real_seen, fake_seen, shifted(real_seen, 0), shifted(fake_seen, 1)};
  std::vector<torch::Tensor> logits;
  if (fresh.d_per_sample) {
    logits = fresh.discriminate(torch::cat(batches), {}).chunk(4);
  } else {
    for (const auto& b : batches) logits.push_back(fresh.discriminate(b, {}));
  }
  EXPECT_EQ(fresh.d_per_sample, arch != "dcgan");
  const torch::Tensor penalty = (logits[2] - logits[0]).square().mean() + (logits[3] - logits[1]).square().mean();
  EXPECT_GT(penalty.item<double>(), 1e-6);
  // BatchNorm's four passes sum gradients of near-cancelling terms: seen 2.4e-6 apart in float32.
  expect_penalty_added(plain, regularized, penalty, 0.7, fresh.d->parameters(), kCRSum, kCRCount, /*atol=*/1e-5);
}

INSTANTIATE_TEST_SUITE_P(Augment, GanStepConsistency,
                         ::testing::Combine(::testing::Values("dcgan", "spectral", "mlp"),
                                            ::testing::Values("none", "translation,cutout")),
                         arch_and_augment);

// G's moving average (train.g_ema_kimg): StyleGAN2-ADA's schedule, exactly.
TEST(GeneratorAverage, BetaFollowsTheHalfLifeAndItsRampUp) {
  TrainConfig t;
  t.batch_size = 64;
  EXPECT_EQ(g_ema_beta(t, 1), 0);  // off by default: the "average" is G
  t.g_ema_kimg = 10;
  t.g_ema_rampup = 0;
  EXPECT_EQ(g_ema_beta(t, 1), std::pow(0.5, 64.0 / 10000));
  EXPECT_EQ(g_ema_beta(t, 1000000), std::pow(0.5, 64.0 / 10000));
  t.g_ema_rampup = 0.05;  // half-life min(10000, 0.05 * 64 * updates) images
  EXPECT_EQ(g_ema_beta(t, 1), std::pow(0.5, 64.0 / (0.05 * 64)));     // 0.5^20: nearly G itself
  EXPECT_EQ(g_ema_beta(t, 100), std::pow(0.5, 64.0 / (0.05 * 6400)));  // 0.5^0.2
  EXPECT_EQ(g_ema_beta(t, 3125), std::pow(0.5, 64.0 / 10000));         // the ramp ends at 10,000 images
  EXPECT_EQ(g_ema_beta(t, 5000), std::pow(0.5, 64.0 / 10000));
}

// The average starts as G, moves by exactly lerp(ema, G, 1 - beta) per update, copies G's
// buffers, goes through save_state/load_state, and a state without it starts it from G.
TEST(GeneratorAverage, MovesTowardGAndTravelsWithTheCheckpoint) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config();
  c.train.batch_size = 6;
  c.train.g_ema_kimg = 0.1;  // half-life 100 images: beta = 0.5^(6/100) = 0.959
  c.train.g_ema_rampup = 0;
  GanModels m = make_models(c, {1, 28, 28});
  ASSERT_TRUE(m.g_ema);
  EXPECT_FALSE(m.g_ema->is_training());
  {
    const auto g = state_tensors(*m.g), ema = state_tensors(*m.g_ema);
    ASSERT_EQ(g.size(), ema.size());
    for (size_t i = 0; i < g.size(); ++i) EXPECT_TRUE(torch::equal(g[i], ema[i])) << i;
  }
  EXPECT_EQ(m.sampler().g, m.g_ema);
  GanStep step(std::move(m), c, *comm);
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);
  for (int64_t n = 1; n <= 3; ++n) {
    step.d_update(real, z, mix);
    step.g_update(z);
    const auto before = snapshot(*step.models().g_ema);
    step.update_g_ema(n);
    const double beta = g_ema_beta(c.train, n);
    ASSERT_GT(beta, 0.01);
    const auto g = step.models().g->parameters(), ema = step.models().g_ema->parameters();
    for (size_t i = 0; i < g.size(); ++i) {
      EXPECT_TRUE(torch::equal(ema[i], torch::lerp(before[i], g[i], 1 - beta))) << i;
      EXPECT_FALSE(torch::equal(ema[i], g[i])) << i;  // an average, not a copy
    }
    const auto g_buffers = step.models().g->buffers(), ema_buffers = step.models().g_ema->buffers();
    for (size_t i = 0; i < g_buffers.size(); ++i) EXPECT_TRUE(torch::equal(ema_buffers[i], g_buffers[i])) << i;
  }

  checkpoint::StateDict state;
  step.save_state(state);
  ASSERT_TRUE(state.count("generator_ema/param/net.0.weight"));
  GanStep restored(make_models(c, {1, 28, 28}), c, *comm);
  restored.load_state(state);
  const auto saved = state_tensors(*step.models().g_ema), loaded = state_tensors(*restored.models().g_ema);
  for (size_t i = 0; i < saved.size(); ++i) EXPECT_TRUE(torch::equal(saved[i], loaded[i])) << i;

  checkpoint::StateDict without;  // saved by a run with the average off
  for (const auto& [name, t] : state)
    if (name.rfind("generator_ema/", 0) != 0) without[name] = t;
  GanStep started(make_models(c, {1, 28, 28}), c, *comm);
  started.load_state(without);
  const auto g = state_tensors(*started.models().g), ema = state_tensors(*started.models().g_ema);
  for (size_t i = 0; i < g.size(); ++i) EXPECT_TRUE(torch::equal(g[i], ema[i])) << i;
}

// optim.schedule's factor at exact points: warm-up (step + 1) / warmup_steps, then full until
// decay_start x steps (and not before the warm-up ends), then linear or cosine toward
// final_lr_ratio at train.steps.
TEST(LearningRateSchedule, FactorFollowsWarmUpAndDecay) {
  OptimConfig o;
  EXPECT_EQ(lr_factor(o, 0, 100), 1);  // constant by default
  EXPECT_EQ(lr_factor(o, 99, 100), 1);
  o.warmup_steps = 4;
  EXPECT_EQ(lr_factor(o, 0, 100), 0.25);
  EXPECT_EQ(lr_factor(o, 2, 100), 0.75);
  EXPECT_EQ(lr_factor(o, 3, 100), 1);
  EXPECT_EQ(lr_factor(o, 50, 100), 1);
  o.warmup_steps = 0;
  o.schedule = "linear";
  o.decay_start = 0.5;
  EXPECT_EQ(lr_factor(o, 49, 100), 1);
  EXPECT_EQ(lr_factor(o, 50, 100), 1);          // the decay starts at full rate
  EXPECT_DOUBLE_EQ(lr_factor(o, 75, 100), 0.5);  // halfway through it
  EXPECT_NEAR(lr_factor(o, 99, 100), 0.02, 1e-15);
  o.final_lr_ratio = 0.1;
  EXPECT_DOUBLE_EQ(lr_factor(o, 75, 100), 0.55);
  o.decay_start = 0.29;  // 0.29 x 100 is 28.999999999999996 in doubles: the decay starts at step 29
  EXPECT_EQ(lr_factor(o, 29, 100), 1);
  EXPECT_LT(lr_factor(o, 30, 100), 1);
  o.schedule = "cosine";
  o.final_lr_ratio = 0;
  o.decay_start = 0;
  EXPECT_EQ(lr_factor(o, 0, 100), 1);
  EXPECT_DOUBLE_EQ(lr_factor(o, 50, 100), 0.5);
  EXPECT_DOUBLE_EQ(lr_factor(o, 25, 100), 0.5 * (1 + std::cos(M_PI / 4)));
  o.warmup_steps = 10;  // the warm-up first, then the decay over steps 10..100
  EXPECT_EQ(lr_factor(o, 4, 100), 0.5);
  EXPECT_EQ(lr_factor(o, 9, 100), 1);
  EXPECT_EQ(lr_factor(o, 10, 100), 1);
  EXPECT_DOUBLE_EQ(lr_factor(o, 55, 100), 0.5);
}

// set_lr_factor scales both optimizers' rates, and so each Adam update: from the same weights and
// inputs, a D update and (separately) a G update at half the rate move each weight half as far as
// at the full rate, and at rate 0 not at all. Each is the network's second update, after one at
// rate 0 that leaves the weights as they were but gives Adam its moments, so that it goes through
// gantry's fused Adam step (LibTorch's takes a parameter's first step) with the same moments at
// every rate.
TEST(LearningRateSchedule, GanStepScalesBothOptimizersUpdates) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  Config c = gantry::testing::small_dcgan_config("non-saturating");
  c.optim.g.lr = 1e-3;
  c.optim.d.lr = 4e-3;
  const torch::Tensor real = latent_rows(7, random::kLatent, 0, 0, 4, 784).tanh().view({4, 1, 28, 28});
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 4, c.model.z_dim);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 4);
  std::vector<torch::Tensor> moved[3];  // D's then G's weight changes at factors 1, 0.5, 0
  const double factors[3] = {1, 0.5, 0};
  for (int i = 0; i < 3; ++i) {
    for (const bool d : {true, false}) {  // from the same seeded weights each time
      GanStep step(make_models(c, {1, 28, 28}), c, *comm);
      const torch::nn::Module& net = d ? *step.models().d : *step.models().g;
      auto update = [&] { return d ? step.d_update(real, z, mix) : step.g_update(z); };
      step.set_lr_factor(0);
      const auto before = snapshot(net);
      ASSERT_TRUE(update());
      ASSERT_FALSE(changed(net, before)) << "an update at rate 0";
      step.set_lr_factor(factors[i]);
      EXPECT_DOUBLE_EQ(learning_rate(step.g_optimizer()), 1e-3 * factors[i]);
      EXPECT_DOUBLE_EQ(learning_rate(step.d_optimizer()), 4e-3 * factors[i]);
      ASSERT_TRUE(update());
      const auto after = snapshot(net);
      for (size_t k = 0; k < before.size(); ++k) moved[i].push_back(after[k] - before[k]);
    }
  }
  double largest = 0;
  for (size_t k = 0; k < moved[0].size(); ++k) {
    largest = std::max(largest, moved[0][k].abs().max().item<double>());
    // atol: a float's rounding of p - lr x u for weights up to ~1 (BatchNorm's scales), 2 ulps
    EXPECT_TRUE(torch::allclose(moved[1][k], 0.5 * moved[0][k], 1e-4, 2.5e-7))
        << k << ": max diff " << (moved[1][k] - 0.5 * moved[0][k]).abs().max().item<double>();
    EXPECT_EQ(moved[2][k].abs().max().item<double>(), 0) << k;
  }
  EXPECT_GT(largest, 1e-4);  // the full-rate update did move the weights
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  g_runtime = &runtime;
  return RUN_ALL_TESTS();
}
