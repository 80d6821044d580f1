// Tests: one D and one G update with every loss on a single rank: each update moves only its own
// network, the statistics are finite, and WGAN-GP's reported D loss includes the penalty.
#include <gtest/gtest.h>

#include <limits>

#include "tests/small_models.h"
#include "trainer/gan_step.h"
#include "trainer/latent.h"

using namespace gantry;

namespace {
comm::Runtime* g_runtime = nullptr;

std::vector<torch::Tensor> snapshot(const torch::nn::Module& m) {
  std::vector<torch::Tensor> out;
  for (const auto& p : m.parameters()) out.push_back(p.detach().clone());
  return out;
}

bool changed(const torch::nn::Module& m, const std::vector<torch::Tensor>& before) {
  const auto now = m.parameters();
  for (size_t i = 0; i < now.size(); ++i)
    if (!torch::equal(now[i], before[i])) return true;
  return false;
}
}  // namespace

class GanStepLoss : public ::testing::TestWithParam<std::string> {};

TEST_P(GanStepLoss, EachUpdateMovesOnlyItsNetwork) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const Config c = gantry::testing::small_dcgan_config(GetParam());
  GanStep step(make_models(c, {1, 28, 28}), c, *comm);
  const torch::Tensor real = torch::rand({6, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 6, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 6);

  auto g0 = snapshot(*step.models().g), d0 = snapshot(*step.models().d);
  step.d_update(real, z, mix);
  EXPECT_TRUE(changed(*step.models().d, d0));
  EXPECT_FALSE(changed(*step.models().g, g0));  // G's BatchNorm buffers move, its parameters don't

  d0 = snapshot(*step.models().d);
  step.g_update(z);
  EXPECT_TRUE(changed(*step.models().g, g0));
  EXPECT_FALSE(changed(*step.models().d, d0));
  for (const auto& p : step.models().d->parameters()) EXPECT_TRUE(p.requires_grad());  // unfrozen again

  const torch::Tensor s = step.take_stats();
  EXPECT_EQ(s[kDUpdates].item<double>(), 1);
  EXPECT_EQ(s[kGUpdates].item<double>(), 1);
  for (int64_t i = 0; i < kNumStats; ++i) EXPECT_TRUE(std::isfinite(s[i].item<double>())) << i;
  EXPECT_GT(s[kDRealSum].item<double>(), 0);
  EXPECT_LT(s[kDRealSum].item<double>(), 1);
  EXPECT_EQ(s[kFakeCount].item<double>(), 6 * 784);
  EXPECT_EQ(step.take_stats().abs().sum().item<double>(), 0);  // reset by the read
}

INSTANTIATE_TEST_SUITE_P(AllLosses, GanStepLoss,
                         ::testing::Values("minimax", "non-saturating", "wgan-gp", "hinge"),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (auto& ch : n) if (ch == '-') ch = '_';
                           return n;
                         });

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
  auto everything = [&] {
    checkpoint::StateDict state;
    step.save_state(state);  // parameters, buffers and both optimizers' moments and steps
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
  EXPECT_FALSE(torch::equal(moved.at("optim/generator/net.0.weight/step"), before.at("optim/generator/net.0.weight/step")));
}

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  g_runtime = &runtime;
  return RUN_ALL_TESTS();
}
