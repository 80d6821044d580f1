// Tests: the losses' exact values where the maths gives them, WGAN-GP's penalty on a linear
// critic, R1's closed forms, and the architectures' shapes.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "trainer/augment.h"
#include "trainer/device.h"
#include "trainer/gemm_linear.h"
#include "trainer/losses.h"
#include "trainer/models.h"

using namespace gantry;

TEST(Losses, ExactValuesAtKnownLogits) {
  const torch::Tensor zero = torch::zeros({4});
  const double log2 = std::log(2.0);
  // D(x) = D(G(z)) = 1/2: each log term is log 1/2.
  EXPECT_NEAR(discriminator_loss(LossKind::kMinimax, zero, zero).item<double>(), 2 * log2, 1e-7);
  EXPECT_NEAR(discriminator_loss(LossKind::kNonSaturating, zero, zero).item<double>(), 2 * log2, 1e-7);
  EXPECT_NEAR(generator_loss(LossKind::kMinimax, zero).item<double>(), -log2, 1e-7);
  EXPECT_NEAR(generator_loss(LossKind::kNonSaturating, zero).item<double>(), log2, 1e-7);
  EXPECT_NEAR(discriminator_loss(LossKind::kHinge, zero, zero).item<double>(), 2.0, 1e-7);

  const torch::Tensor real = torch::tensor({2.0f, 0.5f}), fake = torch::tensor({-1.0f, 3.0f});
  // softplus(-r) + softplus(f), averaged.
  const double expected = (std::log1p(std::exp(-2.0)) + std::log1p(std::exp(-0.5))) / 2 +
                          (std::log1p(std::exp(-1.0)) + std::log1p(std::exp(3.0))) / 2;
  EXPECT_NEAR(discriminator_loss(LossKind::kMinimax, real, fake).item<double>(), expected, 1e-6);
  EXPECT_NEAR(discriminator_loss(LossKind::kWganGp, real, fake).item<double>(), 1.0 - 1.25, 1e-6);
  // relu(1 - r) + relu(1 + f): (0 + 0.5)/2 + (0 + 4)/2.
  EXPECT_NEAR(discriminator_loss(LossKind::kHinge, real, fake).item<double>(), 2.25, 1e-6);
  EXPECT_NEAR(generator_loss(LossKind::kHinge, fake).item<double>(), -1.0, 1e-6);
  EXPECT_NEAR(generator_loss(LossKind::kNonSaturating, fake).item<double>(),
              (std::log1p(std::exp(1.0)) + std::log1p(std::exp(-3.0))) / 2, 1e-6);
  // Away from 0, where softplus(t) != softplus(-t): a swapped sign or argument shows.
  EXPECT_NEAR(discriminator_loss(LossKind::kNonSaturating, real, fake).item<double>(), expected, 1e-6);
  EXPECT_NEAR(discriminator_loss(LossKind::kMinimax, fake, real).item<double>(),
              (std::log1p(std::exp(1.0)) + std::log1p(std::exp(-3.0))) / 2 +
                  (std::log1p(std::exp(2.0)) + std::log1p(std::exp(0.5))) / 2,
              1e-6);
  // Minimax G: log(1 - D(G(z))) = -softplus(f), averaged: -(log1p(e^-1) + log1p(e^3)) / 2.
  EXPECT_NEAR(generator_loss(LossKind::kMinimax, fake).item<double>(), -1.6809246, 1e-6);
  EXPECT_NEAR(generator_loss(LossKind::kWganGp, fake).item<double>(), -1.0, 1e-6);
}

TEST(Losses, StableForHugeLogits) {
  const torch::Tensor big = torch::tensor({1e4f, -1e4f});
  for (auto kind : {LossKind::kMinimax, LossKind::kNonSaturating}) {
    EXPECT_TRUE(std::isfinite(discriminator_loss(kind, big, big).item<double>()));
    EXPECT_TRUE(std::isfinite(generator_loss(kind, big).item<double>()));
  }
  // D certain and right: the loss is 0 to float precision, not NaN.
  EXPECT_NEAR(discriminator_loss(LossKind::kMinimax, torch::tensor({1e4f}), torch::tensor({-1e4f})).item<double>(), 0.0, 1e-6);
}

TEST(Losses, GradientPenaltyOfALinearCriticIsExact) {
  // D(x) = w . x has gradient w everywhere, so the penalty is (||w|| - 1)^2 for any x_hat.
  const torch::Tensor w = torch::tensor({3.0f, 4.0f}).requires_grad_(true);  // ||w|| = 5
  auto critic = [&](const torch::Tensor& x) { return (x.flatten(1) * w).sum(1); };
  const torch::Tensor real = torch::randn({6, 2}), fake = torch::randn({6, 2}), eps = torch::rand({6});
  const torch::Tensor gp = gradient_penalty(critic, real, fake, eps);
  EXPECT_NEAR(gp.item<double>(), 16.0, 1e-5);
  // Double backward: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||.
  gp.backward();
  EXPECT_NEAR(w.grad()[0].item<double>(), 2 * 4 * 3 / 5.0, 1e-4);
  EXPECT_NEAR(w.grad()[1].item<double>(), 2 * 4 * 4 / 5.0, 1e-4);
}

// A quadratic critic D(x) = ||x||^2 / 2 has gradient x, so the penalty sees where x_hat lies:
// x_hat = eps real + (1 - eps) fake. real (3, 4) and (6, 8), fake 0, eps 1/4 and 1/2 give x_hat
// (0.75, 1) and (3, 4), norms 1.25 and 5: ((0.25)^2 + 4^2) / 2 = 8.03125 (real and fake swapped
// would give 11.78125). No gradient reaches the fakes: G is not trained by D's penalty.
TEST(Losses, GradientPenaltyInterpolatesRealAndFake) {
  auto critic = [](const torch::Tensor& x) { return 0.5 * x.flatten(1).square().sum(1); };
  const torch::Tensor real = torch::tensor({{3.0f, 4.0f}, {6.0f, 8.0f}});
  const torch::Tensor fake = torch::zeros({2, 2}).requires_grad_(true);
  const torch::Tensor gp = gradient_penalty(critic, real, fake, torch::tensor({0.25f, 0.5f}));
  EXPECT_NEAR(gp.item<double>(), 8.03125, 1e-5);
  gp.backward();
  EXPECT_FALSE(fake.grad().defined());
}

// R1 has closed forms: a linear D(x) = w.x + b has gradient w at every x, so the penalty is
// ||w||^2 and its gradient in w is 2w; D(x) = a/2 ||x||^2 has gradient a x, so the penalty is
// a^2 mean ||x||^2.
TEST(Losses, R1PenaltyMatchesClosedForms) {
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const torch::Tensor real = torch::randn({5, 2, 3, 3}, f64);
  const torch::Tensor w = torch::randn({18}, f64).requires_grad_(true);
  const torch::Tensor b = torch::randn({1}, f64);
  const torch::Tensor linear = r1_penalty([&](const torch::Tensor& x) { return x.flatten(1).matmul(w) + b; }, real);
  EXPECT_NEAR(linear.item<double>(), w.detach().square().sum().item<double>(), 1e-12);
  const torch::Tensor dw = torch::autograd::grad({linear}, {w})[0];
  EXPECT_TRUE(torch::allclose(dw, 2 * w.detach(), 1e-12, 1e-12));  // the double backward reaches D's weights

  const double a = 0.7;
  const torch::Tensor quadratic =
      r1_penalty([&](const torch::Tensor& x) { return 0.5 * a * x.flatten(1).square().sum(1); }, real);
  EXPECT_NEAR(quadratic.item<double>(), a * a * real.flatten(1).square().sum(1).mean().item<double>(), 1e-12);
  EXPECT_FALSE(real.requires_grad());  // the caller's tensor is left as it was
}

TEST(Models, ShapesForEveryArchitectureAndDataset) {
  Config c;
  c.model.z_dim = 16;
  c.model.dcgan.g_width = 8;
  c.model.dcgan.d_width = 8;
  for (const auto& arch : {"mlp", "dcgan"}) {
    for (datasets::RecordShape shape : {datasets::RecordShape{1, 28, 28}, datasets::RecordShape{3, 32, 32}}) {
      c.model.arch = arch;
      GanModels m = make_models(c, shape);
      const torch::Tensor x = m.generate(torch::randn({5, 16}));
      EXPECT_EQ(x.sizes(), (std::vector<int64_t>{5, shape.channels, shape.height, shape.width})) << arch;
      EXPECT_LE(x.abs().max().item<float>(), 1.0f);  // tanh output
      EXPECT_EQ(m.discriminate(x, {}).sizes(), (std::vector<int64_t>{5})) << arch;
    }
  }
  c.model.arch = "mlp";
  GanModels m = make_models(c, {1, 28, 28});
  int64_t g_params = 0;
  for (const auto& p : m.g->parameters()) g_params += p.numel();
  // z -> 256 -> 512 -> 784 with biases.
  EXPECT_EQ(g_params, (16 * 256 + 256) + (256 * 512 + 512) + (512 * 784 + 784));
  int64_t d_params = 0;
  for (const auto& p : m.d->parameters()) d_params += p.numel();
  EXPECT_EQ(d_params, (784 * 512 + 512) + (512 * 256 + 256) + (256 * 128 + 128) + (128 + 1));
}

// model.conditional: G reads [z, one_hot(y)]; D adds <embed(y), phi(x)> to its unconditional
// logit, phi(x) being its last layer's input. Checked for both architectures, both record shapes
// and D's minibatch-std and spectral variants: the networks have the parameters an unconditional
// config builds (the same names, G's first layer ten inputs wider) plus D's table; the projection
// is linear in the table and vanishes with it; labels change G's output and D's logits.
TEST(Models, ConditionalGanTakesLabelsInGsInputAndDsProjection) {
  for (const std::string variant : {"mlp", "dcgan", "dcgan-mbstd", "dcgan-spectral"}) {
    for (datasets::RecordShape shape : {datasets::RecordShape{1, 28, 28}, datasets::RecordShape{3, 32, 32}}) {
      Config c;
      c.model.arch = variant == "mlp" ? "mlp" : "dcgan";
      c.model.z_dim = 16;
      c.model.mlp.g_hidden = {32};
      c.model.mlp.d_hidden = {32, 16};
      c.model.dcgan.g_width = c.model.dcgan.d_width = 8;
      if (variant == "dcgan-mbstd") c.model.dcgan.d_mbstd_group = 2;
      if (variant == "dcgan-spectral") c.model.dcgan.d_norm = "spectral";
      const std::string where = variant + " " + std::to_string(shape.channels);
      GanModels plain = make_models(c, shape);
      c.model.conditional = true;
      GanModels m = make_models(c, shape);
      EXPECT_EQ(plain.classes, 0);
      ASSERT_EQ(m.classes, 10);

      const torch::Tensor z = torch::randn({4, 16});
      const torch::Tensor y = torch::tensor({0, 9, 4, 4}, torch::kInt64);
      const torch::Tensor input = m.g_input(z, y);
      EXPECT_TRUE(torch::equal(input, torch::cat({z, torch::one_hot(y, 10).to(torch::kFloat32)}, 1))) << where;
      EXPECT_TRUE(torch::equal(plain.g_input(z, y), z)) << where;  // labels ignored
      EXPECT_THROW(m.g_input(z, torch::Tensor()), c10::Error) << where;
      EXPECT_THROW(m.g_input(z, torch::tensor({0, 1, 2, 10}, torch::kInt64)), c10::Error) << where;

      // Parameters: the unconditional model's names, plus the projection table.
      auto names = [](const torch::nn::Module& module) {
        std::vector<std::string> out;
        for (const auto& p : module.named_parameters()) out.push_back(p.key());
        return out;
      };
      std::vector<std::string> expected = names(*plain.d);
      expected.push_back("projection.embed");
      EXPECT_EQ(names(*m.d), expected) << where;
      EXPECT_EQ(names(*m.g), names(*plain.g)) << where;
      torch::Tensor embed = m.d->named_parameters()["projection.embed"];
      EXPECT_EQ(embed.size(0), 10);

      m.g->eval();
      m.d->eval();  // BatchNorm's running statistics: D is a fixed function of (x, y)
      torch::NoGradGuard no_grad;
      const torch::Tensor x = m.generate(input);
      EXPECT_EQ(x.sizes(), (std::vector<int64_t>{4, shape.channels, shape.height, shape.width})) << where;
      EXPECT_FALSE(torch::allclose(m.generate(m.g_input(z, (y + 1) % 10)), x)) << where;
      EXPECT_THROW(m.discriminate(x, torch::Tensor()), c10::Error) << where;

      const torch::Tensor table = embed.clone();
      embed.zero_();
      const torch::Tensor base = m.discriminate(x, y);
      EXPECT_TRUE(torch::allclose(m.discriminate(x, (y + 3) % 10), base, 1e-6, 1e-6)) << where;
      embed.copy_(table);
      const torch::Tensor one = m.discriminate(x, y) - base;
      embed.copy_(table * 2);
      const torch::Tensor two = m.discriminate(x, y) - base;
      EXPECT_GT(one.abs().min().item<float>(), 0) << where;
      // Differences of logits: fp32's rounding of the logits themselves is the tolerance.
      const double rounding = 1e-6 * (1 + base.abs().max().item<double>());
      EXPECT_LE((two - 2 * one).abs().max().item<double>(), rounding) << where << ": " << one << two << base;
      embed.copy_(table);
      EXPECT_FALSE(torch::allclose(m.discriminate(x, (y + 3) % 10), m.discriminate(x, y))) << where;
    }
  }
}

// model.dcgan.g_class_norm: each of G's BatchNorms loses its affine pair and gains a row of gains
// and biases per class; a sample is normalised as before, then scaled and shifted by its class's
// rows, and only the rows of the classes present receive gradient.
TEST(Models, DcganClassNormScalesAndShiftsEachSampleByItsClass) {
  for (datasets::RecordShape shape : {datasets::RecordShape{1, 28, 28}, datasets::RecordShape{3, 32, 32}}) {
    Config c;
    c.model.arch = "dcgan";
    c.model.z_dim = 16;
    c.model.conditional = true;
    c.model.dcgan.g_width = c.model.dcgan.d_width = 8;
    c.model.dcgan.g_blocks = 1;
    GanModels plain = make_models(c, shape);
    c.model.dcgan.g_class_norm = true;
    GanModels m = make_models(c, shape);
    const std::string where = std::to_string(shape.channels) + " channels";

    // G's parameters: the plain conditional G's, each BatchNorm's [C] weight and bias becoming
    // [10, C] gains and biases; the other layers are unchanged.
    auto plain_params = plain.g->named_parameters();
    auto params = m.g->named_parameters();
    ASSERT_EQ(params.size(), plain_params.size()) << where;
    auto ends_with = [](const std::string& s, const std::string& tail) {
      return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
    };
    int64_t class_norms = 0;
    for (size_t i = 0; i < params.size(); ++i) {
      const std::string name = params[i].key();
      if (ends_with(name, ".gain")) {
        ++class_norms;
        const std::string layer = name.substr(0, name.size() - 5);
        const int64_t channels = plain_params[i].value().size(0);
        EXPECT_EQ(plain_params[i].key(), layer + ".weight") << where;
        ASSERT_EQ(params[i + 1].key(), layer + ".bias") << where;
        EXPECT_EQ(params[i].value().sizes(), (std::vector<int64_t>{10, channels})) << where;
        EXPECT_EQ(params[i + 1].value().sizes(), (std::vector<int64_t>{10, channels})) << where;
        ++i;  // the layer's bias
        continue;
      }
      EXPECT_EQ(name, plain_params[i].key()) << where;
      EXPECT_EQ(params[i].value().sizes(), plain_params[i].value().sizes()) << where << " " << name;
    }
    EXPECT_EQ(class_norms, shape.channels == 1 ? 4 : 6) << where;  // 2 or 3 resolutions x (upsampling + block)

    // One layer alone: BatchNorm without affine, then the sample's class's gain and bias.
    ClassBatchNorm2d cbn(10, 3);
    cbn->train();
    {
      torch::NoGradGuard no_grad;
      cbn->gain.copy_(torch::rand({10, 3}) + 0.5);
      cbn->bias.copy_(torch::randn({10, 3}));
    }
    const torch::Tensor x = torch::randn({4, 3, 5, 5});
    const torch::Tensor y = torch::tensor({2, 7, 2, 0}, torch::kInt64);
    const torch::Tensor out = cbn->forward(x, torch::one_hot(y, 10).to(torch::kFloat32));
    const torch::Tensor mean = x.mean({0, 2, 3}, true), var = x.var({0, 2, 3}, false, true);
    const torch::Tensor expected = (x - mean) / torch::sqrt(var + 1e-5) * cbn->gain.index_select(0, y).view({4, 3, 1, 1}) +
                                   cbn->bias.index_select(0, y).view({4, 3, 1, 1});
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-5)) << where << (out - expected).abs().max();

    // Through G: gradient reaches the gain and bias rows of the classes in the batch, no others.
    m.g->train();
    const torch::Tensor z = torch::randn({4, 16});
    m.generate(m.g_input(z, y)).square().sum().backward();
    for (const auto& p : m.g->named_parameters()) {
      const std::string name = p.key();
      if (p.value().dim() != 2 || !(ends_with(name, ".gain") || ends_with(name, ".bias"))) continue;
      const torch::Tensor row_norms = p.value().grad().abs().sum(1);
      for (int64_t k = 0; k < 10; ++k) {
        const bool present = k == 0 || k == 2 || k == 7;
        EXPECT_EQ(row_norms[k].item<float>() > 0, present) << where << " " << name << " class " << k;
      }
    }
  }
  EXPECT_THROW(DcganGenerator(16, 8, datasets::RecordShape{1, 28, 28}, 0, 16), c10::Error);  // the one-hot must fit in z's columns
}

TEST(Models, SameSeedSameInitialisation) {
  Config c;
  c.model.arch = "dcgan";
  c.run.seed = 5;
  GanModels a = make_models(c, {1, 28, 28}), b = make_models(c, {1, 28, 28});
  const auto pa = a.g->parameters(), pb = b.g->parameters();
  for (size_t i = 0; i < pa.size(); ++i) EXPECT_TRUE(torch::equal(pa[i], pb[i]));
  c.model.arch = "dcgan";
  c.data.name = "fashion-mnist";
  EXPECT_THROW(make_models(c, {1, 20, 20}), ConfigError);
}

// model.dcgan.g_blocks: each hidden resolution gains 3x3 stride-1 convolutions (no bias) with
// BatchNorm's two vectors; the image shape and the rest of G stay as they were.
TEST(Models, DcganGBlocksAddAConvolutionAtEachHiddenResolution) {
  Config c;
  c.model.arch = "dcgan";
  c.model.z_dim = 16;
  c.model.dcgan.g_width = 8;
  auto g_parameters = [&](datasets::RecordShape shape) {
    int64_t n = 0;
    for (const auto& p : make_models(c, shape).g->parameters()) n += p.numel();
    return n;
  };
  auto added = [](std::vector<int64_t> channels) {
    int64_t n = 0;
    for (int64_t ch : channels) n += ch * ch * 9 + 2 * ch;
    return n;
  };
  const datasets::RecordShape mnist{1, 28, 28}, cifar{3, 32, 32};
  c.model.dcgan.g_blocks = 0;
  const int64_t mnist0 = g_parameters(mnist), cifar0 = g_parameters(cifar);
  for (int64_t blocks : {1, 2}) {
    c.model.dcgan.g_blocks = blocks;
    EXPECT_EQ(g_parameters(mnist) - mnist0, blocks * added({32, 16}));
    EXPECT_EQ(g_parameters(cifar) - cifar0, blocks * added({32, 16, 8}));
    for (datasets::RecordShape shape : {mnist, cifar}) {
      const torch::Tensor x = make_models(c, shape).generate(torch::randn({3, 16}));
      EXPECT_EQ(x.sizes(), (std::vector<int64_t>{3, shape.channels, shape.height, shape.width}));
    }
  }
}

// model.dcgan.d_blocks: each resolution a downsampling convolution leaves gains 3x3 stride-1
// convolutions at its width: with BatchNorm, a weight without bias and BatchNorm's two vectors;
// spectrally normalised, a weight and a bias (and the power iteration's u, v buffers). D still
// scores each image once, and a conditional D projects the label onto the same features.
TEST(Models, DcganDBlocksAddAConvolutionAfterEachDownsampling) {
  Config c;
  c.model.arch = "dcgan";
  c.model.z_dim = 16;
  c.model.dcgan.d_width = 8;
  c.model.conditional = true;
  c.data.name = "fashion-mnist";
  auto count = [](const std::vector<torch::Tensor>& tensors) {
    int64_t n = 0;
    for (const auto& t : tensors) n += t.numel();
    return n;
  };
  const datasets::RecordShape mnist{1, 28, 28}, cifar{3, 32, 32};
  for (const std::string norm : {"batch", "spectral"}) {
    c.model.dcgan.d_norm = norm;
    auto added = [&](std::vector<int64_t> channels) {
      int64_t n = 0;
      for (int64_t ch : channels) n += ch * ch * 9 + (norm == "batch" ? 2 * ch : ch);
      return n;
    };
    c.model.dcgan.d_blocks = 0;
    const GanModels mnist0 = make_models(c, mnist), cifar0 = make_models(c, cifar);
    for (int64_t blocks : {1, 2}) {
      c.model.dcgan.d_blocks = blocks;
      const GanModels m = make_models(c, mnist), k = make_models(c, cifar);
      EXPECT_EQ(count(m.d->parameters()) - count(mnist0.d->parameters()), blocks * added({8, 16})) << norm;
      EXPECT_EQ(count(k.d->parameters()) - count(cifar0.d->parameters()), blocks * added({8, 16, 32})) << norm;
      if (norm == "spectral") {  // u [out] and v [in * 3 * 3] for each added convolution
        EXPECT_EQ(count(m.d->buffers()) - count(mnist0.d->buffers()), blocks * (8 * 10 + 16 * 10)) << norm;
      }
      for (const auto& [shape, models] : {std::pair{mnist, m}, std::pair{cifar, k}}) {
        const torch::Tensor x = torch::randn({5, shape.channels, shape.height, shape.width});
        const torch::Tensor labels = torch::tensor({0, 1, 2, 3, 9}, torch::kInt64);
        EXPECT_EQ(models.discriminate(x, labels).sizes(), (std::vector<int64_t>{5})) << norm;
      }
    }
  }
}

// MinibatchStd against its definition, computed by hand for each group: the population standard
// deviation over the group's samples of each feature, averaged over the features, as one more
// channel. Samples j, j + n/g, ... form group j; batches that are not a multiple of the group
// size use its largest divisor (5 samples, group 4: groups of 1, whose deviation is 0, so the
// channel is sqrt(1e-8)).
TEST(Models, MinibatchStdAppendsEachGroupsMeanStandardDeviation) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({6, 2, 3, 3}, torch::kFloat64);
  MinibatchStd layer(3);
  const torch::Tensor y = layer->forward(x);
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{6, 3, 3, 3}));
  EXPECT_TRUE(torch::equal(y.slice(1, 0, 2), x));
  for (int64_t j = 0; j < 2; ++j) {  // n/g = 2 groups: {0, 2, 4} and {1, 3, 5}
    const torch::Tensor members = torch::stack({x[j], x[j + 2], x[j + 4]});
    const torch::Tensor centred = members - members.mean(0);
    const double expected = ((centred * centred).mean(0) + 1e-8).sqrt().mean().item<double>();
    for (int64_t i : {j, j + 2, j + 4}) {
      EXPECT_NEAR(y[i][2].min().item<double>(), expected, 1e-12);
      EXPECT_NEAR(y[i][2].max().item<double>(), expected, 1e-12);
    }
  }
  MinibatchStd four(4);
  const torch::Tensor single = four->forward(torch::randn({5, 2, 3, 3}, torch::kFloat64));
  EXPECT_NEAR(single.select(1, 2).max().item<double>(), 1e-4, 1e-12);
  EXPECT_NEAR(single.select(1, 2).min().item<double>(), 1e-4, 1e-12);
}

// model.dcgan.d_mbstd_group: D's last convolution takes one more input channel (7x7 or 4x4 more
// weights), a sample's logit then depends on the rest of its group, and D is no longer scored
// per sample (real and fake halves go through it separately).
TEST(Models, DcganMinibatchStdFeedsDsLastConvolution) {
  Config c;
  c.model.arch = "dcgan";
  c.model.dcgan.d_width = 8;
  c.model.dcgan.d_norm = "none";
  auto d_parameters = [&](datasets::RecordShape shape) {
    int64_t n = 0;
    for (const auto& p : make_models(c, shape).d->parameters()) n += p.numel();
    return n;
  };
  const datasets::RecordShape mnist{1, 28, 28}, cifar{3, 32, 32};
  c.model.dcgan.d_mbstd_group = 0;
  const int64_t mnist0 = d_parameters(mnist), cifar0 = d_parameters(cifar);
  EXPECT_TRUE(make_models(c, mnist).d_per_sample);
  c.model.dcgan.d_mbstd_group = 4;
  EXPECT_EQ(d_parameters(mnist) - mnist0, 7 * 7);
  EXPECT_EQ(d_parameters(cifar) - cifar0, 4 * 4);
  GanModels m = make_models(c, mnist);
  EXPECT_FALSE(m.d_per_sample);
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({8, 1, 28, 28});
  const torch::Tensor logits = m.discriminate(x, {});
  ASSERT_EQ(logits.sizes(), (std::vector<int64_t>{8}));
  torch::Tensor changed = x.clone();
  changed[4].mul_(3);  // sample 4 shares group 0 with samples 0, 2 and 6 (8 / 4 = 2 groups)
  const torch::Tensor after = m.discriminate(changed, {});
  for (int64_t i : {0, 2, 6}) EXPECT_NE(after[i].item<float>(), logits[i].item<float>()) << i;
  for (int64_t i : {1, 3, 5, 7}) EXPECT_EQ(after[i].item<float>(), logits[i].item<float>()) << i;
}

// G's transposed convolutions run through oneDNN on the CPU where that is faster
// (trainer/models.cpp), as the input gradient of a convolution: the same outputs and the same
// gradients (input and weight) as LibTorch's ConvTranspose2d kernel, within float rounding, for
// every layer of both DCGAN generators. The layers with 16 or more output channels take that path
// (their autograd node says so); the last layer (1 or 3 channels) keeps LibTorch's. Under bf16
// autocast the oneDNN layers run in bf16 where the CPU has oneDNN's bf16 kernels (AVX-512): their
// outputs are bf16, and the outputs and both gradients stay within bf16's rounding (2^-8 relative
// per operand; tolerance 3 % of the largest value) of LibTorch's fp32 results. On other CPUs
// they stay fp32 under autocast and match as closely as without it (LibTorch's bf16 fallback
// was 6 % off on an AVX2 EPYC, past that tolerance).
TEST(Models, DcganTransposedConvolutionsMatchLibTorchsKernel) {
  Config c;
  c.model.arch = "dcgan";
  c.model.z_dim = 16;
  c.model.dcgan.g_width = 8;  // channels 32 -> 16 -> (8 ->) 1 or 3
  for (const bool bf16 : {false, true}) {
    for (datasets::RecordShape shape : {datasets::RecordShape{1, 28, 28}, datasets::RecordShape{3, 32, 32}}) {
      GanModels m = make_models(c, shape);
      auto net = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(m.g->named_children()["net"]);
      ASSERT_TRUE(net);
      std::vector<int64_t> in = {6, 16, 1, 1};
      int onednn = 0, libtorch = 0;
      for (auto it = net->begin(); it != net->end(); ++it) {
        auto* layer = it->ptr()->as<torch::nn::ConvTranspose2d>();
        if (!layer) continue;
        const torch::Tensor x = torch::randn(in).requires_grad_();
        torch::Tensor fast;
        {
          AutocastGuard autocast(torch::kCPU, bf16);
          fast = it->forward(x);  // gantry's
        }
        const torch::Tensor reference = layer->torch::nn::ConvTranspose2dImpl::forward(x);  // LibTorch's, fp32
        ASSERT_EQ(fast.sizes(), reference.sizes());
        const std::string node = fast.grad_fn()->name();
        const bool on_onednn = node.find("OneDnnTransposedConv") != std::string::npos;
        (on_onednn ? onednn : libtorch) += 1;
        // bf16 where oneDNN has bf16 kernels (AVX-512); elsewhere the layer stays fp32 under autocast.
        const bool in_bf16 = bf16 && cpu_has_onednn_bf16();
        if (on_onednn) EXPECT_EQ(fast.scalar_type(), in_bf16 ? torch::kBFloat16 : torch::kFloat32);
        const torch::Tensor g = torch::randn_like(reference);
        const auto a = torch::autograd::grad({fast}, {x, layer->weight}, {g.to(fast.scalar_type())});
        const auto b = torch::autograd::grad({reference}, {x, layer->weight}, {g});
        auto close = [&](const torch::Tensor& actual, const torch::Tensor& expected, double rtol, double atol) {
          const torch::Tensor e = expected.to(torch::kFloat32), d = actual.to(torch::kFloat32) - e;
          if (bf16 && (in_bf16 || !on_onednn)) return (d.abs().max() <= 0.03 * e.abs().max()).item<bool>();
          return torch::allclose(actual, expected, rtol, atol);
        };
        EXPECT_TRUE(close(fast, reference, 1e-4, 1e-6)) << node << (fast - reference).abs().max();
        EXPECT_TRUE(close(a[0], b[0], 1e-4, 1e-6)) << node << (a[0] - b[0]).abs().max();
        EXPECT_TRUE(close(a[1], b[1], 1e-4, 1e-5)) << node << (a[1] - b[1]).abs().max();
        in = reference.sizes().vec();
      }
      EXPECT_EQ(onednn, 2) << "the layers with 32 and 16 output channels" << (bf16 ? " (bf16)" : "");
      EXPECT_EQ(libtorch, shape.channels == 1 ? 1 : 2) << "the last layer (and CIFAR's 8-channel one)";
    }
  }
}

// The MLPs' Linear layers (oneDNN's sgemm where gantry is built with it, trainer/models.cpp):
// forward and every gradient as LibTorch's addmm gives them, at any batch, including one row
// (whose bias broadcast is a view of the bias itself), and without touching the parameters.
TEST(Models, MlpLinearLayersMatchLibTorchsLinearForwardAndBackward) {
  Config c;
  c.model.arch = "mlp";
  c.model.z_dim = 16;
  c.model.mlp.g_hidden = {32, 48};
  c.model.mlp.d_hidden = {40, 24};
  GanModels m = make_models(c, {1, 6, 6});
  auto* d = m.d->as<MlpDiscriminatorImpl>();
  ASSERT_NE(d, nullptr);
  auto linear = [&](int i) { return d->net[i]->as<torch::nn::Linear>(); };
  // D's logits through LibTorch's addmm and the same weights.
  auto reference = [&](const torch::Tensor& x) {
    torch::Tensor h = x;
    for (int l = 0; l < 2; ++l) h = torch::leaky_relu(torch::addmm(linear(2 * l)->bias, h, linear(2 * l)->weight.t()), 0.2);
    return torch::addmm(linear(4)->bias, h, linear(4)->weight.t()).view({-1});
  };
  std::vector<torch::Tensor> before;
  for (const auto& p : m.d->parameters()) before.push_back(p.detach().clone());
  for (int64_t rows : {1, 3, 256}) {
    const torch::Tensor x = torch::randn({rows, 36}, torch::requires_grad());
    const torch::Tensor out = d->forward(x.view({rows, 1, 6, 6}));
    const torch::Tensor expected = reference(x);
    EXPECT_TRUE(torch::allclose(out, expected, 1e-5, 1e-6)) << rows << " rows: " << (out - expected).abs().max();
    std::vector<torch::Tensor> inputs{x};
    for (const auto& p : m.d->parameters()) inputs.push_back(p);
    const torch::Tensor weights = torch::randn({rows});  // a loss whose gradient differs per row
    const auto got = torch::autograd::grad({(out * weights).sum()}, inputs);
    const auto want = torch::autograd::grad({(expected * weights).sum()}, inputs);
    for (size_t i = 0; i < got.size(); ++i)
      EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-4, 1e-5))
          << rows << " rows, input " << i << ": " << (got[i] - want[i]).abs().max();
  }
  // Differentiable backward (WGAN-GP's and R1's penalties): the gradient of |dD/dx|^2 with
  // respect to D's parameters, through the input gradient taken with create_graph.
  const torch::Tensor x = torch::randn({8, 36}, torch::requires_grad());
  auto penalty = [&](const torch::Tensor& logits) {
    const torch::Tensor dx = torch::autograd::grad({logits.sum()}, {x}, {}, true, true)[0];
    return dx.pow(2).sum();
  };
  // allow_unused: the last bias does not reach the input gradient (nor, but through the
  // LeakyReLUs' masks, do the others); an unused parameter's gradient counts as zeros.
  const auto params = m.d->parameters();
  auto penalty_grads = [&](const torch::Tensor& logits) {
    auto g = torch::autograd::grad({penalty(logits)}, params, {}, false, false, /*allow_unused=*/true);
    for (size_t i = 0; i < g.size(); ++i)
      if (!g[i].defined()) g[i] = torch::zeros_like(params[i]);
    return g;
  };
  const auto got = penalty_grads(d->forward(x.view({8, 1, 6, 6})));
  const auto want = penalty_grads(reference(x));
  for (size_t i = 0; i < got.size(); ++i) {
    EXPECT_TRUE(torch::allclose(got[i], want[i], 1e-4, 1e-5)) << "penalty, parameter " << i << ": " << (got[i] - want[i]).abs().max();
    if (i % 2 == 0) EXPECT_GT(want[i].abs().max().item<double>(), 0) << "the penalty reaches weight " << i;
  }
  const auto after = m.d->parameters();
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(torch::equal(after[i], before[i])) << "parameter " << i;
  ::testing::Test::RecordProperty("onednn_sgemm", gemm_linear_uses_onednn() ? "yes" : "no (nn::Linear)");
  // One row at a time gives G's batch, and leaves G's bias alone.
  torch::NoGradGuard no_grad;
  const torch::Tensor z = torch::randn({4, 16});
  const torch::Tensor batch = m.generate(z);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_TRUE(torch::allclose(m.generate(z.slice(0, i, i + 1).clone()), batch.slice(0, i, i + 1), 1e-5, 1e-6)) << i;
}

// model.mlp.d_dropout: in training mode each hidden unit is kept where the caller's uniform is
// >= p and scaled by 1 / (1 - p), layer by layer from column 0, exactly as computed by hand here;
// in eval mode D is the same network without dropout; make_models reports the draws it needs.
TEST(Models, MlpDiscriminatorDropsTheUnitsItsDrawsSay) {
  Config c;
  c.model.arch = "mlp";
  c.model.mlp.d_hidden = {6, 4};
  c.model.mlp.d_dropout = 0.25;
  GanModels m = make_models(c, {1, 3, 3});
  EXPECT_EQ(m.d_draws, 10);
  auto* d = m.d->as<MlpDiscriminatorImpl>();
  ASSERT_NE(d, nullptr);
  const torch::Tensor x = torch::randn({5, 1, 3, 3});
  const torch::Tensor u = torch::rand({5, 10});
  auto linear = [&](int i) { return d->net[i]->as<torch::nn::Linear>(); };
  // D's logits through LibTorch's addmm and the same weights.
  auto reference = [&](const torch::Tensor& x) {
    torch::Tensor h = x;
    for (int l = 0; l < 2; ++l) h = torch::leaky_relu(torch::addmm(linear(2 * l)->bias, h, linear(2 * l)->weight.t()), 0.2);
    return torch::addmm(linear(4)->bias, h, linear(4)->weight.t()).view({-1});
  };
  auto by_hand = [&](bool dropping) {
    torch::Tensor h = x.flatten(1);
    int64_t column = 0;
    for (int l = 0; l < 2; ++l) {
      h = torch::leaky_relu(torch::addmm(linear(2 * l)->bias, h, linear(2 * l)->weight.t()), 0.2);
      const int64_t width = h.size(1);
      if (dropping) h = h * (u.slice(1, column, column + width) >= 0.25).to(torch::kFloat32) / 0.75;
      column += width;
    }
    return torch::addmm(linear(4)->bias, h, linear(4)->weight.t()).view({-1});
  };
  torch::NoGradGuard no_grad;
  const torch::Tensor trained = m.discriminate_drawn(x, {}, u);
  EXPECT_TRUE(torch::allclose(trained, by_hand(true), 1e-5, 1e-6)) << trained << by_hand(true);
  EXPECT_FALSE(torch::allclose(trained, by_hand(false), 1e-3, 1e-3)) << "some unit was dropped";
  EXPECT_TRUE(torch::equal(m.discriminate_drawn(x, {}, u), trained)) << "the draws decide, nothing else";
  EXPECT_THROW(m.discriminate_drawn(x, {}, u.slice(1, 0, 9)), c10::Error);
  m.d->eval();
  EXPECT_TRUE(torch::allclose(m.discriminate_drawn(x, {}, u), by_hand(false), 1e-5, 1e-6));
  c.model.mlp.d_dropout = 0;
  EXPECT_EQ(make_models(c, {1, 3, 3}).d_draws, 0);
}

// model.mlp.d_maxout and d_input_dropout: hidden unit j of a k-piece layer is the largest of its
// Linear's outputs j*k .. j*k + k - 1; the input's draws come first, then each hidden layer's; all
// computed by hand here. The maxout gradient reaches only each unit's winning piece.
TEST(Models, MlpDiscriminatorMaxoutUnitsAndInputDropout) {
  Config c;
  c.model.arch = "mlp";
  c.model.mlp.d_hidden = {4, 3};
  c.model.mlp.d_maxout = 3;
  c.model.mlp.d_dropout = 0.5;
  c.model.mlp.d_input_dropout = 0.2;
  GanModels m = make_models(c, {1, 2, 3});
  EXPECT_EQ(m.d_draws, 6 + 4 + 3);
  auto* d = m.d->as<MlpDiscriminatorImpl>();
  ASSERT_NE(d, nullptr);
  auto linear = [&](int i) { return d->net[i]->as<torch::nn::Linear>(); };
  // D's logits through LibTorch's addmm and the same weights.
  auto reference = [&](const torch::Tensor& x) {
    torch::Tensor h = x;
    for (int l = 0; l < 2; ++l) h = torch::leaky_relu(torch::addmm(linear(2 * l)->bias, h, linear(2 * l)->weight.t()), 0.2);
    return torch::addmm(linear(4)->bias, h, linear(4)->weight.t()).view({-1});
  };
  EXPECT_EQ(linear(0)->weight.sizes(), (std::vector<int64_t>{12, 6}));
  EXPECT_EQ(linear(2)->weight.sizes(), (std::vector<int64_t>{9, 4}));
  EXPECT_EQ(linear(4)->weight.sizes(), (std::vector<int64_t>{1, 3}));
  const torch::Tensor x = torch::randn({5, 1, 2, 3});
  const torch::Tensor u = torch::rand({5, 13});
  auto by_hand = [&](bool dropping) {
    auto scaled_keep = [&](int64_t from, int64_t n, double q) {
      return (u.slice(1, from, from + n) >= q).to(torch::kFloat32) / (1 - q);
    };
    torch::Tensor h = x.flatten(1);
    if (dropping) h = h * scaled_keep(0, 6, 0.2);
    int64_t column = 6;
    for (int l = 0; l < 2; ++l) {
      const torch::Tensor pieces = torch::addmm(linear(2 * l)->bias, h, linear(2 * l)->weight.t());
      std::vector<torch::Tensor> units;
      for (int64_t j = 0; j < pieces.size(1) / 3; ++j)
        units.push_back(torch::max(torch::max(pieces.select(1, 3 * j), pieces.select(1, 3 * j + 1)),
                                   pieces.select(1, 3 * j + 2)));
      h = torch::stack(units, 1);
      if (dropping) h = h * scaled_keep(column, h.size(1), 0.5);
      column += h.size(1);
    }
    return torch::addmm(linear(4)->bias, h, linear(4)->weight.t()).view({-1});
  };
  {
    torch::NoGradGuard no_grad;
    const torch::Tensor trained = m.discriminate_drawn(x, {}, u);
    EXPECT_TRUE(torch::allclose(trained, by_hand(true), 1e-5, 1e-6)) << trained << by_hand(true);
    EXPECT_FALSE(torch::allclose(trained, by_hand(false), 1e-3, 1e-3)) << "some input or unit was dropped";
    m.d->eval();
    EXPECT_TRUE(torch::allclose(m.discriminate_drawn(x, {}, u), by_hand(false), 1e-5, 1e-6));
  }
  // Each unit of the first layer passes gradient to exactly one of its pieces' weight rows, per sample.
  m.d->zero_grad();
  m.discriminate(x.slice(0, 0, 1), {}).sum().backward();
  const torch::Tensor rows_touched = linear(0)->weight.grad().abs().sum(1).gt(0).view({4, 3}).sum(1);
  EXPECT_TRUE(torch::equal(rows_touched, torch::ones({4}, torch::kLong))) << rows_touched;
  c.model.mlp.d_dropout = 0;
  EXPECT_EQ(make_models(c, {1, 2, 3}).d_draws, 6);
}

// model.dcgan.d_norm: spectral. One power iteration per training forward pass, exactly as written
// (v = W^T u / |W^T u|, u = W v / |W v|); after many passes sigma is W's largest singular value, so
// the layer convolves with a weight of spectral norm 1; in eval mode u and v stay; and the
// gradient through sigma is the closed form (g - <g, W> / sigma * u v^T) / sigma.
TEST(Models, SpectralConvolutionDividesByTheLargestSingularValue) {
  torch::manual_seed(0);
  SpectralConv2d conv(3, 5, 4, 2, 1);
  const torch::Tensor x = torch::randn({2, 3, 8, 8});
  const torch::Tensor w = conv->weight.detach().flatten(1);  // [5, 48]

  const torch::Tensor u0 = conv->u.clone();
  conv->train();
  conv->forward(x);
  const torch::Tensor v1 = w.t().mv(u0) / w.t().mv(u0).norm();
  const torch::Tensor u1 = w.mv(v1) / w.mv(v1).norm();
  EXPECT_TRUE(torch::allclose(conv->v, v1, 1e-5, 1e-7)) << (conv->v - v1).abs().max();
  EXPECT_TRUE(torch::allclose(conv->u, u1, 1e-5, 1e-7)) << (conv->u - u1).abs().max();

  for (int i = 0; i < 100; ++i) conv->forward(x);
  const double sigma = torch::linalg_svdvals(w)[0].item<double>();
  EXPECT_NEAR(w.mv(conv->v).dot(conv->u).item<double>(), sigma, 1e-5 * sigma);
  const torch::Tensor normalized = conv->normalized_weight().detach();
  EXPECT_NEAR(torch::linalg_svdvals(normalized.flatten(1))[0].item<double>(), 1.0, 1e-5);
  const torch::Tensor expected = torch::conv2d(x, conv->weight.detach() / sigma, conv->bias.detach(), 2, 1);
  EXPECT_TRUE(torch::allclose(conv->forward(x).detach(), expected, 1e-4, 1e-6));

  conv->eval();
  const torch::Tensor u = conv->u.clone(), v = conv->v.clone();
  conv->weight.data().mul_(torch::rand_like(conv->weight) + 0.5);  // far from the vectors' fixed point
  const torch::Tensor g = torch::randn_like(conv->weight);
  const torch::Tensor grad = torch::autograd::grad({conv->normalized_weight()}, {conv->weight}, {g})[0];
  EXPECT_TRUE(torch::equal(conv->u, u) && torch::equal(conv->v, v)) << "eval mode moves neither vector";
  const torch::Tensor wd = conv->weight.detach();
  const torch::Tensor s = wd.flatten(1).mv(v).dot(u);
  const torch::Tensor closed = (g - (g * wd).sum() / s * torch::outer(u, v).view_as(g)) / s;
  EXPECT_TRUE(torch::allclose(grad, closed, 1e-4, 1e-6)) << (grad - closed).abs().max();
}

// model.dcgan.d_norm picks D's layers: auto is BatchNorm, except none for wgan-gp; spectral
// normalises every convolution and drops BatchNorm, so D scores each sample on its own and the
// training step may score real and fake in one pass (d_per_sample).
TEST(Models, DiscriminatorNormalisationFollowsTheConfig) {
  auto count = [](const GanModels& m) {
    std::array<int, 3> n{};  // BatchNorm, spectral, plain convolutions
    for (const auto& module : m.d->modules(false)) {
      if (module->as<torch::nn::BatchNorm2d>()) ++n[0];
      if (module->as<SpectralConv2d>()) ++n[1];
      else if (module->as<torch::nn::Conv2d>()) ++n[2];
    }
    return n;
  };
  Config c;
  c.model.arch = "dcgan";
  c.model.dcgan.g_width = 8;
  c.model.dcgan.d_width = 8;
  EXPECT_EQ(count(make_models(c, {1, 28, 28})), (std::array<int, 3>{1, 0, 3}));
  EXPECT_FALSE(make_models(c, {1, 28, 28}).d_per_sample);
  c.train.loss = "wgan-gp";
  EXPECT_EQ(count(make_models(c, {1, 28, 28})), (std::array<int, 3>{0, 0, 3}));
  c.train.loss = "hinge";
  c.model.dcgan.d_norm = "spectral";
  EXPECT_EQ(count(make_models(c, {1, 28, 28})), (std::array<int, 3>{0, 3, 0}));
  EXPECT_EQ(count(make_models(c, {3, 32, 32})), (std::array<int, 3>{0, 4, 0}));

  GanModels m = make_models(c, {3, 32, 32});
  EXPECT_TRUE(m.d_per_sample);
  const torch::Tensor x = torch::randn({4, 3, 32, 32});
  // Each training pass moves u and v by one power iteration, the same whatever the batch: every
  // pass below starts from the same vectors.
  std::vector<torch::Tensor> start;
  for (const auto& b : m.d->buffers()) start.push_back(b.clone());
  auto from_start = [&](const torch::Tensor& batch) {
    const auto buffers = m.d->buffers();
    for (size_t i = 0; i < buffers.size(); ++i) buffers[i].copy_(start[i]);
    return m.discriminate(batch, {});
  };
  const torch::Tensor together = from_start(x);
  for (int64_t i = 0; i < 4; ++i)
    EXPECT_NEAR(from_start(x.slice(0, i, i + 1)).item<double>(), together[i].item<double>(), 1e-6);
  // The vectors are buffers, so checkpoints and the replica broadcast carry them.
  int vectors = 0;
  for (const auto& b : m.d->named_buffers()) vectors += b.key().size() > 2 && b.key().substr(b.key().size() - 2) == ".u";
  EXPECT_EQ(vectors, 4);
}

// train.augment (DiffAugment): translation by the drawn shift with zero fill, and a cutout square
// at the drawn place, pixel for pixel against loops; both differentiable (each output pixel's
// gradient lands on the one input pixel it came from); and translation by a set radius.
TEST(Augment, TranslationAndCutoutMoveAndMaskExactlyTheDrawnPixels) {
  const int64_t h = 28, w = 28;  // r = 4 (shifts -4..4), cutout 14 x 14
  const torch::Tensor x = torch::arange(2 * 3 * h * w, torch::kFloat32).view({2, 3, h, w}).add_(1).requires_grad_();
  // Image 0: u = 0 -> shift -4 in y and x; cutout top/left at 0 - 7. Image 1: shift +2 in y
  // (floor(0.7 * 9) - 4), -1 in x (floor(0.35 * 9) - 4); cutout top floor(0.5 * 29) - 7 = 7, left floor(0.99 * 29) - 7 = 21.
  const torch::Tensor u = torch::tensor({0.0F, 0.0F, 0.0F, 0.0F, 0.7F, 0.35F, 0.5F, 0.99F}).view({2, 4});
  const int64_t ty[2] = {-4, 2}, tx[2] = {-4, -1}, top[2] = {-7, 7}, left[2] = {-7, 21};
  const torch::Tensor moved = diff_augment(x, u, {true, false});
  const torch::Tensor both = diff_augment(x, u, {true, true});
  const torch::Tensor cut = diff_augment(x, u, {false, true});
  const torch::Tensor xd = x.detach(), md = moved.detach(), bd = both.detach(), cd = cut.detach();
  auto xa = xd.accessor<float, 4>();
  auto ma = md.accessor<float, 4>();
  auto ba = bd.accessor<float, 4>();
  auto ca = cd.accessor<float, 4>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t c = 0; c < 3; ++c)
      for (int64_t i = 0; i < h; ++i)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t si = i + ty[n], sj = j + tx[n];
          const float shifted = si >= 0 && si < h && sj >= 0 && sj < w ? xa[n][c][si][sj] : 0.0F;
          const bool hole = i >= top[n] && i < top[n] + 14 && j >= left[n] && j < left[n] + 14;
          ASSERT_EQ(ma[n][c][i][j], shifted) << n << " " << c << " " << i << " " << j;
          ASSERT_EQ(ba[n][c][i][j], hole ? 0.0F : shifted) << n << " " << c << " " << i << " " << j;
          ASSERT_EQ(ca[n][c][i][j], hole ? 0.0F : xa[n][c][i][j]) << n << " " << c << " " << i << " " << j;
        }
  both.sum().backward();  // d/dx: 1 on every input pixel that reached an output pixel outside the hole
  const torch::Tensor grad = x.grad();
  auto ga = grad.accessor<float, 4>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t oi = i - ty[n], oj = j - tx[n];  // where input pixel (i, j) went
        const bool kept = oi >= 0 && oi < h && oj >= 0 && oj < w &&
                          !(oi >= top[n] && oi < top[n] + 14 && oj >= left[n] && oj < left[n] + 14);
        ASSERT_EQ(ga[n][0][i][j], kept ? 1.0F : 0.0F) << n << " " << i << " " << j;
      }
  EXPECT_TRUE(torch::equal(diff_augment(x, u, {}), x));  // "none"
  EXPECT_THROW(parse_augment("flip"), std::invalid_argument);
  // A set radius (train.cr_shift's) replaces round(H / 8): r = 2, shifts -2..2, so image 0 moves
  // by -2 and image 1 by +1 in y (floor(0.7 * 5) - 2) and -1 in x (floor(0.35 * 5) - 2).
  const torch::Tensor near = diff_augment(xd, u, {true, false, 2});
  const int64_t ry[2] = {-2, 1}, rx[2] = {-2, -1};
  auto na = near.accessor<float, 4>();
  for (int64_t n = 0; n < 2; ++n)
    for (int64_t i = 0; i < h; ++i)
      for (int64_t j = 0; j < w; ++j) {
        const int64_t si = i + ry[n], sj = j + rx[n];
        ASSERT_EQ(na[n][1][i][j], si >= 0 && si < h && sj >= 0 && sj < w ? xa[n][1][si][sj] : 0.0F) << n << " " << i << " " << j;
      }
}
