// Tests for eval/: the Parzen estimate and the Fréchet distance against closed forms; samples and
// interpolations from a real checkpoint (sizes, determinism, endpoints); the holdout split and
// label files; FID through a TorchScript module made here.
#include <ATen/CPUGeneratorImpl.h>
#include <gtest/gtest.h>
#include <torch/script.h>

#include <cmath>
#include <fstream>

#include "comm/communicator.h"
#include "eval/classifier.h"
#include "eval/evaluate.h"
#include "eval/generator.h"
#include "eval/metrics.h"
#include "fixtures.h"
#include "trainer/checkpoint.h"
#include "trainer/images.h"

using namespace gantry;
namespace fs = std::filesystem;

namespace {

comm::Runtime* g_runtime = nullptr;

// The closed form for one point and one Gaussian kernel: log N(x; c, sigma^2 I).
double log_normal(const torch::Tensor& x, const torch::Tensor& c, double sigma) {
  const double d = static_cast<double>(x.numel());
  const double r2 = (x.to(torch::kFloat64) - c.to(torch::kFloat64)).pow(2).sum().item<double>();
  return -r2 / (2 * sigma * sigma) - 0.5 * d * std::log(2 * M_PI * sigma * sigma);
}

TEST(Parzen, SingleCentreIsTheGaussianDensity) {
  torch::manual_seed(1);
  const torch::Tensor points = torch::rand({7, 1, 4, 4}), centre = torch::rand({1, 1, 4, 4});
  const std::vector<double> sigmas{0.1, 0.3, 1.0};
  const torch::Tensor ll = eval::parzen_log_likelihoods(points, centre, sigmas, /*batch=*/3);
  ASSERT_EQ(ll.sizes(), (std::vector<int64_t>{3, 7}));
  for (size_t s = 0; s < sigmas.size(); ++s)
    for (int64_t i = 0; i < 7; ++i)
      EXPECT_NEAR(ll[s][i].item<double>(), log_normal(points[i], centre[0], sigmas[s]), 1e-9);
}

TEST(Parzen, SamplesThatAreTheTestPointsGiveTheMixtureDensity) {
  // Centres = the test points: log p(x_i) = log (1/M) sum_j N(x_i; x_j, sigma^2 I), summed here term
  // by term; with far-apart points only j = i counts: -log M - d/2 log(2 pi sigma^2).
  torch::manual_seed(2);
  const torch::Tensor x = torch::rand({5, 10});
  for (double sigma : {0.05, 0.4}) {
    const torch::Tensor ll = eval::parzen_log_likelihoods(x, x, {sigma})[0];
    for (int64_t i = 0; i < 5; ++i) {
      double sum = 0;
      for (int64_t j = 0; j < 5; ++j) sum += std::exp(log_normal(x[i], x[j], sigma));
      EXPECT_NEAR(ll[i].item<double>(), std::log(sum / 5), 1e-9);
    }
  }
  const torch::Tensor far = torch::eye(4) * 100;  // rows 141 apart
  const torch::Tensor ll = eval::parzen_log_likelihoods(far, far, {1.0})[0];
  for (int64_t i = 0; i < 4; ++i) EXPECT_NEAR(ll[i].item<double>(), -std::log(4.0) - 2.0 * std::log(2 * M_PI), 1e-12);
}

TEST(Parzen, PointsFarFromEveryCentreKeepTheirClosedForm) {
  // Every term exp(-|x - c|^2 / (2 sigma^2)) underflows double here (exponents -45,000 and below),
  // so only the shift around each row's nearest centre gives a finite figure. Four centres 141
  // apart; points 30 from one of them (the others add exp(-10^6): nothing), and one point halfway
  // between two (two equal nearest terms). 8 points in batches of 3: the last batch is shorter.
  const double sigma = 0.1, k = 0.5 / (sigma * sigma), log_norm = -2.0 * std::log(2 * M_PI * sigma * sigma);
  const torch::Tensor centres = torch::eye(4, torch::kFloat64) * 100;
  std::vector<torch::Tensor> rows;
  std::vector<double> expected;
  for (int64_t i = 0; i < 7; ++i) {
    rows.push_back(centres[i % 4] + 15);  // |x - c|^2 = 4 * 15^2 = 900
    expected.push_back(-k * 900 - std::log(4.0) + log_norm);
  }
  rows.push_back((centres[0] + centres[1]) / 2);  // 50^2 + 50^2 = 5,000 from both
  expected.push_back(-k * 5000 + std::log(2.0 / 4.0) + log_norm);
  const torch::Tensor ll = eval::parzen_log_likelihoods(torch::stack(rows), centres, {sigma}, /*batch=*/3)[0];
  ASSERT_EQ(ll.size(0), 8);
  for (int64_t i = 0; i < 8; ++i) {
    ASSERT_TRUE(std::isfinite(ll[i].item<double>())) << "point " << i;
    EXPECT_NEAR(ll[i].item<double>(), expected[static_cast<size_t>(i)], 1e-6) << "point " << i;
  }
}

TEST(Parzen, ChoosesTheMaximumLikelihoodSigmaOnValidation) {
  // One centre at 0: the mean validation log-likelihood -r2/(2 s^2) - d/2 log(2 pi s^2) peaks at
  // s^2 = mean r2 / d. With that s in the grid, it is chosen, and the test mean is the closed form.
  torch::manual_seed(3);
  const torch::Tensor valid = torch::randn({50, 8}) * 0.3, test = torch::randn({40, 8}) * 0.3;
  const torch::Tensor centre = torch::zeros({1, 8});
  const double best = std::sqrt(valid.to(torch::kFloat64).pow(2).sum(1).mean().item<double>() / 8);
  const auto r = eval::parzen_evaluate(valid, test, centre, {best * 0.5, best * 0.9, best, best * 1.1, best * 2});
  EXPECT_DOUBLE_EQ(r.sigma, best);
  double mean = 0;
  std::vector<double> each;
  for (int64_t i = 0; i < 40; ++i) each.push_back(log_normal(test[i], centre[0], best)), mean += each.back() / 40;
  double var = 0;
  for (double v : each) var += (v - mean) * (v - mean) / 39;
  EXPECT_NEAR(r.mean, mean, 1e-9);
  EXPECT_NEAR(r.std_error, std::sqrt(var / 40), 1e-9);
  EXPECT_EQ(r.test_points, 40);
  EXPECT_EQ(r.centres, 1);
}

// Class coverage: shares, the quarter-share rule and KL(G || real), against values by hand.
TEST(ClassCoverage, SharesCoveredClassesAndKlAreExact) {
  const torch::Tensor real = torch::tensor({0, 1, 2, 3, 0, 1, 2, 3}, torch::kLong);  // uniform over 4
  auto same = eval::class_coverage(real, real, 4);
  EXPECT_EQ(same.classes, 4);
  EXPECT_EQ(same.covered, 4);
  EXPECT_EQ(same.kl, 0.0);
  auto one = eval::class_coverage(torch::full({5}, 2, torch::kLong), real, 4);  // G draws only class 2
  EXPECT_EQ(one.fake_share, (std::vector<double>{0, 0, 1, 0}));
  EXPECT_EQ(one.real_share, (std::vector<double>{0.25, 0.25, 0.25, 0.25}));
  EXPECT_EQ(one.covered, 1);
  EXPECT_DOUBLE_EQ(one.kl, std::log(4.0));
  // Shares 1/2, 7/16, 1/16, 0: class 2 holds exactly a quarter of its real share (covered), 3 none.
  std::vector<int64_t> labels(16, 0);
  for (int i = 8; i < 15; ++i) labels[i] = 1;
  labels[15] = 2;
  auto skewed = eval::class_coverage(torch::tensor(labels), real, 4);
  EXPECT_EQ(skewed.covered, 3);
  EXPECT_NEAR(skewed.kl, 0.5 * std::log(2.0) + 7.0 / 16 * std::log(7.0 / 4) + 1.0 / 16 * std::log(0.25), 1e-12);
  // Real records of classes 0 and 1 only, G also drawing class 2: 2 classes to cover, KL infinite.
  auto extra = eval::class_coverage(torch::tensor({0, 1, 2}, torch::kLong), torch::tensor({0, 1}, torch::kLong), 3);
  EXPECT_EQ(extra.classes, 2);
  EXPECT_EQ(extra.covered, 2);
  EXPECT_TRUE(std::isinf(extra.kl));
  EXPECT_THROW(eval::class_coverage(torch::empty({0}, torch::kLong), real, 4), std::invalid_argument);
}

TEST(Frechet, IdenticalSetsGiveZero) {
  torch::manual_seed(4);
  const torch::Tensor f = torch::randn({200, 16});
  const auto g = eval::fit_gaussian(f);
  EXPECT_NEAR(eval::frechet_distance(g, g), 0.0, 1e-9);
}

TEST(Frechet, FitIsTheSampleMeanAndUnbiasedCovariance) {
  const torch::Tensor f = torch::tensor({1.0, 2.0, 3.0, 6.0, 5.0, 10.0}, torch::kFloat64).reshape({3, 2});
  const auto g = eval::fit_gaussian(f);
  EXPECT_TRUE(torch::equal(g.mean, torch::tensor({3.0, 6.0}, torch::kFloat64)));
  // deviations (-2,-4), (0,0), (2,4): sum of outer products / 2.
  EXPECT_TRUE(torch::allclose(g.cov, torch::tensor({4.0, 8.0, 8.0, 16.0}, torch::kFloat64).reshape({2, 2})));
}

TEST(Frechet, KnownGaussiansGiveTheAnalyticDistance) {
  // 1-D: (m1 - m2)^2 + (s1 - s2)^2.
  const eval::GaussianFit a1{torch::tensor({1.0}, torch::kFloat64), torch::tensor({{4.0}}, torch::kFloat64)};
  const eval::GaussianFit b1{torch::tensor({-2.0}, torch::kFloat64), torch::tensor({{9.0}}, torch::kFloat64)};
  EXPECT_NEAR(eval::frechet_distance(a1, b1), 9.0 + 1.0, 1e-12);
  // 2-D, covariances that do not commute: tr sqrt(AB) = sqrt(tr(AB) + 2 sqrt(det A det B)) for 2x2
  // (the eigenvalues l1, l2 of AB are those of A^1/2 B A^1/2, non-negative).
  const torch::Tensor A = torch::tensor({2.0, 1.0, 1.0, 2.0}, torch::kFloat64).reshape({2, 2});
  const torch::Tensor B = torch::tensor({1.0, 0.5, 0.5, 3.0}, torch::kFloat64).reshape({2, 2});
  const eval::GaussianFit a{torch::tensor({0.0, 1.0}, torch::kFloat64), A};
  const eval::GaussianFit b{torch::tensor({3.0, -1.0}, torch::kFloat64), B};
  const double det_a = 3.0, det_b = 2.75, tr_ab = A.matmul(B).trace().item<double>();
  const double expected = (9.0 + 4.0) + (4.0 + 4.0) - 2 * std::sqrt(tr_ab + 2 * std::sqrt(det_a * det_b));
  EXPECT_NEAR(eval::frechet_distance(a, b), expected, 1e-10);
  EXPECT_NEAR(eval::frechet_distance(b, a), expected, 1e-10);
  const eval::FrechetTerms terms = eval::frechet_terms(a, b);
  EXPECT_NEAR(terms.mean, 9.0 + 4.0, 1e-12);
  EXPECT_NEAR(terms.covariance, expected - 13.0, 1e-10);
  EXPECT_DOUBLE_EQ(terms.variance_a, 4.0);
  EXPECT_DOUBLE_EQ(terms.variance_b, 4.0);
  EXPECT_EQ(terms.distance(), terms.mean + terms.covariance);
  const torch::Tensor root = eval::sqrtm_psd(A);
  EXPECT_TRUE(torch::allclose(root.matmul(root), A, 1e-12, 1e-12));
}

TEST(Frechet, PerClassComparesEachClassWithItself) {
  // Rows of classes 0 and 1 interleaved; b's class-0 rows are a's shifted by (3, 4), its class-1
  // rows a's own, in another order. Class 0: mean term 25, covariances equal; class 1: 0; class 2
  // has one row in a: NaN, not a figure.
  torch::manual_seed(7);
  const torch::Tensor x0 = torch::randn({50, 2}, torch::kFloat64), x1 = torch::randn({40, 2}, torch::kFloat64) * 3;
  const torch::Tensor a = torch::cat({x0, x1, torch::zeros({1, 2}, torch::kFloat64)});
  const torch::Tensor a_labels = torch::cat({torch::zeros({50}, torch::kLong), torch::ones({40}, torch::kLong),
                                             torch::full({1}, 2, torch::kLong)});
  const torch::Tensor order = torch::randperm(91);
  const torch::Tensor shift = torch::tensor({3.0, 4.0}, torch::kFloat64);
  const torch::Tensor b = torch::cat({x1.flip(0), x0 + shift});
  const torch::Tensor b_labels = torch::cat({torch::ones({40}, torch::kLong), torch::zeros({50}, torch::kLong)});
  const auto terms = eval::frechet_per_class(a.index({order}), a_labels.index({order}), b, b_labels, 3);
  ASSERT_EQ(terms.size(), 3u);
  EXPECT_NEAR(terms[0].mean, 25.0, 1e-9);
  EXPECT_NEAR(terms[0].covariance, 0.0, 1e-6);
  EXPECT_NEAR(terms[1].distance(), 0.0, 1e-6);
  EXPECT_NEAR(terms[1].variance_a, eval::fit_gaussian(x1).cov.trace().item<double>(), 1e-9);
  EXPECT_TRUE(std::isnan(terms[2].distance()));
  EXPECT_THROW(eval::frechet_per_class(a, a_labels.slice(0, 1), b, b_labels, 3), c10::Error);
}

TEST(Frechet, SamplesOfTwoGaussiansApproachTheAnalyticDistance) {
  // 20000 draws each of N(0, I) and N(mu, diag(4, 1/4)) in 2-D: FD = |mu|^2 + (1 + 1/4 + 4... ) terms:
  // tr(I + S - 2 S^1/2) = (1 + 4 - 4) + (1 + 0.25 - 1) = 1.25; |mu|^2 = 1. A loose tolerance: sampling.
  torch::manual_seed(5);
  const torch::Tensor x = torch::randn({20000, 2}, torch::kFloat64);
  const torch::Tensor y = torch::randn({20000, 2}, torch::kFloat64) * torch::tensor({2.0, 0.5}, torch::kFloat64) +
                          torch::tensor({1.0, 0.0}, torch::kFloat64);
  EXPECT_NEAR(eval::frechet_distance(eval::fit_gaussian(x), eval::fit_gaussian(y)), 2.25, 0.1);
}

// A run directory with config.yaml and a real committed checkpoint of an MLP GAN for MNIST shapes.
struct RunFixture {
  fs::path run_dir;
  Config config;
  std::string checkpoint;
  GanModels models;
};

RunFixture make_run(const std::string& name, const std::vector<std::string>& overrides = {}) {
  RunFixture f;
  f.run_dir = gantry::testing::fresh_dir(name);
  std::vector<std::string> all = {"data.name=mnist", "data.path=" + f.run_dir.string(), "model.arch=mlp",
                                  "model.z_dim=8", "model.mlp.g_hidden=[16]", "model.mlp.d_hidden=[16]",
                                  "run.dir=" + f.run_dir.string(), "run.seed=3"};
  all.insert(all.end(), overrides.begin(), overrides.end());
  f.config = load_config("", all);
  f.models = make_models(f.config, {1, 28, 28});
  checkpoint::StateDict state;
  for (const auto& [prefix, m] : {std::pair{"generator/", f.models.g}, std::pair{"discriminator/", f.models.d}}) {
    for (const auto& p : m->named_parameters()) state[std::string(prefix) + "param/" + p.key()] = p.value().detach();
    for (const auto& b : m->named_buffers()) state[std::string(prefix) + "buffer/" + b.key()] = b.value().detach();
  }
  std::ofstream(f.run_dir / "config.yaml") << to_yaml(f.config);
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {(f.run_dir / "checkpoints").string(), 3, 0});
  f.checkpoint = ckpt.save(state, 7, nlohmann::json::object());
  return f;
}

std::pair<uint32_t, uint32_t> png_size(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  unsigned char h[24] = {0};
  in.read(reinterpret_cast<char*>(h), 24);
  auto be = [&](int o) { return (uint32_t{h[o]} << 24) | (uint32_t{h[o + 1]} << 16) | (uint32_t{h[o + 2]} << 8) | h[o + 3]; };
  return {be(16), be(20)};  // IHDR width, height
}

std::string bytes_of(const fs::path& file) {
  std::ifstream in(file, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

TEST(Sample, LoadsTheCheckpointsGenerator) {
  RunFixture f = make_run("eval-load");
  eval::TrainedGan gan = eval::load_trained_gan(f.run_dir.string());  // a run directory follows `latest`
  EXPECT_EQ(gan.step, 7);
  EXPECT_EQ(fs::path(gan.run_dir), fs::absolute(f.run_dir).lexically_normal());
  // A checkpoint directory named with a trailing slash, as a shell completes it, is the same run.
  EXPECT_EQ(eval::load_trained_gan(f.checkpoint + "/").run_dir, gan.run_dir);
  const torch::Tensor z = eval::sample_latents(1, 5, 8);
  torch::NoGradGuard no_grad;
  f.models.g->eval();
  // The loaded weights are the trained ones: the same batch gives the same bits.
  EXPECT_TRUE(torch::equal(eval::generate(gan, z, 5), f.models.generate(z)));
  // In batches of 2, BLAS may pick other kernels (LibTorch 2.11 does): equal within rounding.
  EXPECT_TRUE(torch::allclose(eval::generate(gan, z, 2), f.models.generate(z), 1e-5, 1e-6));
}

// A conditional G's evaluation labels: proportional to the class counts within one sample, the
// classes interleaved, and each class in turn when the counts are equal.
TEST(Sample, ConditionalLabelsAreStratifiedByTheClassCounts) {
  EXPECT_TRUE(torch::equal(eval::sample_labels(25, std::vector<int64_t>(10, 7)), torch::arange(25) % 10));
  const torch::Tensor y = eval::sample_labels(8, {1, 3});
  EXPECT_TRUE(torch::equal(y, torch::tensor({1, 0, 1, 1, 1, 0, 1, 1}, torch::kInt64))) << y;
  const std::vector<int64_t> counts = {892, 1135, 1032, 1010, 982, 0, 958, 1028, 974, 1009};  // MNIST's test digits, no 5s
  const torch::Tensor many = eval::sample_labels(1001, counts);
  for (int64_t c = 0; c < 10; ++c) {
    const double expected = 1001.0 * counts[c] / 9020;
    EXPECT_LE(std::abs(many.eq(c).sum().item<int64_t>() - expected), 1.0) << c;
    for (const int64_t n : {100, 1000}) {  // every prefix stays within one of its share too
      const double share = n * static_cast<double>(counts[c]) / 9020;
      EXPECT_LE(std::abs(many.slice(0, 0, n).eq(c).sum().item<int64_t>() - share), 1.0) << c << " " << n;
    }
  }
  EXPECT_THROW(eval::sample_labels(4, {0, 0}), std::invalid_argument);
}

TEST(Sample, GridSizesAndDeterminism) {
  RunFixture f = make_run("eval-grid");
  eval::SampleOptions o;
  o.checkpoint = f.checkpoint;
  std::ostringstream log;
  o.out = (f.run_dir / "a.png").string();
  o.n = 10;  // 4 columns, 3 rows of 28 + 2 pixels, plus a 2-pixel border
  EXPECT_EQ(eval::run_sample(o, log), 10);
  EXPECT_EQ(png_size(o.out), (std::pair<uint32_t, uint32_t>{4 * 30 + 2, 3 * 30 + 2}));
  o.out = (f.run_dir / "b.png").string();
  eval::run_sample(o, log);
  EXPECT_EQ(bytes_of(f.run_dir / "a.png"), bytes_of(f.run_dir / "b.png"));
  o.seed = 1;
  o.out = (f.run_dir / "c.png").string();
  eval::run_sample(o, log);
  EXPECT_NE(bytes_of(f.run_dir / "a.png"), bytes_of(f.run_dir / "c.png"));
  o.interpolate = true;
  o.rows = 3;
  o.cols = 5;
  o.out = (f.run_dir / "i.png").string();
  EXPECT_EQ(eval::run_sample(o, log), 15);
  EXPECT_EQ(png_size(o.out), (std::pair<uint32_t, uint32_t>{5 * 30 + 2, 3 * 30 + 2}));
  o.cols = 1;
  EXPECT_THROW(eval::run_sample(o, log), eval::UsageError);
}

TEST(Sample, InterpolationRowsRunFromGz0ToGz1) {
  RunFixture f = make_run("eval-interp");
  eval::TrainedGan gan = eval::load_trained_gan(f.checkpoint);
  const int64_t rows = 3, cols = 6;
  const torch::Tensor z = eval::interpolation_latents(4, rows, cols, 8);
  const torch::Tensor images = eval::generate(gan, z);
  // The same endpoints again, drawn alone: the rows' first and last latents.
  const torch::Tensor again = eval::interpolation_latents(4, rows, 2, 8);
  for (int64_t r = 0; r < rows; ++r) {
    const torch::Tensor z0 = again[r * 2], z1 = again[r * 2 + 1];
    EXPECT_FALSE(torch::equal(z0, z1));
    EXPECT_TRUE(torch::equal(z[r * cols], z0));
    EXPECT_TRUE(torch::equal(z[r * cols + cols - 1], z1));
    EXPECT_TRUE(torch::allclose(images[r * cols], eval::generate(gan, z0.unsqueeze(0))[0], 1e-6, 1e-6));
    EXPECT_TRUE(torch::allclose(images[r * cols + cols - 1], eval::generate(gan, z1.unsqueeze(0))[0], 1e-6, 1e-6));
    // Linear in between: the middle of 6 columns is not a column, but column 2 is 2/5 of the way.
    EXPECT_TRUE(torch::allclose(z[r * cols + 2], z0 * 0.6 + z1 * 0.4, 1e-6, 1e-6));
  }
}

// A checkpoint with G's moving average: sample and eval use it unless asked for G's own weights.
TEST(Sample, UsesGsMovingAverageWhenTheCheckpointHasOne) {
  RunFixture f = make_run("eval-ema", {"train.g_ema_kimg=1"});
  // make_run's checkpoint holds no average: auto falls back to G, and ema is a clear error.
  EXPECT_EQ(eval::load_trained_gan(f.checkpoint).generator, "raw");
  try {
    eval::load_trained_gan(f.checkpoint, "ema");
    FAIL() << "expected a CheckpointError";
  } catch (const checkpoint::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("g_ema_kimg"), std::string::npos) << e.what();
  }
  // Another checkpoint whose average differs from G: half of G's weights.
  checkpoint::StateDict state = checkpoint::read_checkpoint(f.checkpoint).state;
  ASSERT_TRUE(f.models.g_ema);
  torch::NoGradGuard no_grad;
  for (const auto& p : f.models.g_ema->named_parameters()) {
    p.value().mul_(0.5);
    state["generator_ema/param/" + p.key()] = p.value().detach();
  }
  for (const auto& b : f.models.g_ema->named_buffers()) state["generator_ema/buffer/" + b.key()] = b.value().detach();
  auto comm = comm::make_mpi_communicator(*g_runtime);
  checkpoint::Checkpointer ckpt(*comm, {(f.run_dir / "checkpoints").string(), 3, 0});
  const std::string with_ema = ckpt.save(state, 8, nlohmann::json::object());

  const torch::Tensor z = eval::sample_latents(1, 5, 8);
  f.models.g->eval();
  eval::TrainedGan chosen = eval::load_trained_gan(with_ema);
  EXPECT_EQ(chosen.generator, "ema");
  EXPECT_FALSE(chosen.models.g_ema);
  EXPECT_TRUE(torch::equal(eval::generate(chosen, z, 5), f.models.generate_ema(z)));
  eval::TrainedGan raw = eval::load_trained_gan(with_ema, "raw");
  EXPECT_EQ(raw.generator, "raw");
  EXPECT_TRUE(torch::equal(eval::generate(raw, z, 5), f.models.generate(z)));
  EXPECT_FALSE(torch::equal(f.models.generate(z), f.models.generate_ema(z)));

  eval::SampleOptions o;
  o.checkpoint = with_ema;
  o.out = (f.run_dir / "g.png").string();
  o.generator = "newest";
  std::ostringstream log;
  EXPECT_THROW(eval::run_sample(o, log), eval::UsageError);
  o.generator = "auto";
  eval::run_sample(o, log);
  EXPECT_NE(log.str().find("G's moving average"), std::string::npos) << log.str();
}

TEST(Sample, ACheckpointOfAnotherModelIsAClearError) {
  RunFixture f = make_run("eval-mismatch");
  Config other = f.config;
  other.model.mlp.g_hidden = {32};
  std::ofstream(f.run_dir / "config.yaml") << to_yaml(other);
  try {
    eval::load_trained_gan(f.checkpoint);
    FAIL() << "expected a CheckpointError";
  } catch (const checkpoint::CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find("generator/param/net.0.weight"), std::string::npos) << e.what();
  }
}

// IDX images and labels for a fake MNIST in `dir`: n records with labels i % 10.
void write_mnist(const fs::path& dir, const std::string& stem, uint32_t n) {
  gantry::testing::write_bytes(dir / (stem + "-images-idx3-ubyte"), gantry::testing::idx_bytes(0x803, n, 28, 28));
  std::vector<uint8_t> labels = gantry::testing::idx_bytes(0x801, 0, 0, 0);
  labels.resize(8);
  for (int s = 24, k = 4; s >= 0; s -= 8, ++k) labels[k] = static_cast<uint8_t>(n >> s);
  for (uint32_t i = 0; i < n; ++i) labels.push_back(static_cast<uint8_t>(i % 10));
  gantry::testing::write_bytes(dir / (stem + "-labels-idx1-ubyte.gz"), labels, /*gzip=*/true);
}

// A run on 100 MNIST-format records whose last 40 are held out (20 validation + 20 test for
// Parzen), and eval options for its checkpoint.
struct HeldOutRun {
  RunFixture run;
  eval::EvalOptions options;
};

HeldOutRun held_out_run(const std::string& name, const std::string& metric, int64_t samples) {
  HeldOutRun h{make_run(name, {"data.split=test", "data.holdout=40"}), {}};
  write_mnist(h.run.run_dir, "t10k", 100);
  h.options.checkpoint = h.run.checkpoint;
  h.options.metric = metric;
  h.options.samples = samples;
  return h;
}

TEST(EvalData, HoldoutSplitsTheRecordsAndTheLabels) {
  const fs::path dir = gantry::testing::fresh_dir("eval-holdout");
  write_mnist(dir, "t10k", 50);
  datasets::DatasetSpec spec{"mnist", dir.string(), "test"};
  spec.holdout = 20;
  const auto train = datasets::open_dataset(spec);
  ASSERT_EQ(train->size(), 30);
  Config config = load_config("", {"data.name=mnist", "data.path=" + dir.string(), "data.split=test", "data.holdout=20"});
  const eval::EvalData d = eval::open_eval_data(config, "");
  ASSERT_EQ(d.train->size(), 30);
  ASSERT_EQ(d.test->size(), 20);
  EXPECT_EQ(d.test_begin, 30);
  // Record 30 of the file is record 0 of the held-out set.
  const torch::Tensor first = eval::read_records(*d.test, 0, 1);
  EXPECT_FLOAT_EQ(first[0][0][0][1].item<float>(), gantry::testing::idx_pixel(30, 1) * (2.0f / 255.0f) - 1.0f);
  const auto labels = datasets::read_labels(spec);
  ASSERT_EQ(labels.size(), 50u);
  EXPECT_EQ(labels[37], 7);
  spec.holdout = 50;
  EXPECT_THROW(datasets::open_dataset(spec), datasets::DataError);
}

TEST(Fid, ATorchScriptFeatureModuleGivesTheFrechetDistanceOfItsFeatures) {
  // A tiny "Inception": the per-channel means of its input, written here as TorchScript.
  RunFixture f = make_run("eval-fid", {"data.split=test", "data.holdout=40"});
  write_mnist(f.run_dir, "t10k", 100);
  torch::jit::Module m("TinyInception");
  m.define("def forward(self, x):\n  return x.mean(dim=[2, 3])\n");
  const std::string file = (f.run_dir / "tiny.pt").string();
  m.save(file);
  eval::EvalOptions o;
  o.checkpoint = f.checkpoint;
  o.metric = "fid";
  o.inception = file;
  o.samples = 64;
  std::ostringstream log;
  const nlohmann::json r = eval::run_eval(o, log);
  // The features by hand: every channel is the grey image's mean in [0, 1].
  eval::TrainedGan gan = eval::load_trained_gan(f.checkpoint);
  auto feats = [](const torch::Tensor& x) { return ((x + 1) * 0.5).mean({2, 3}).expand({-1, 3}); };
  const eval::EvalData d = eval::open_eval_data(gan.config, "");
  const double expected = eval::frechet_distance(
      eval::fit_gaussian(feats(eval::generate(gan, eval::sample_latents(0, 64, 8)))),
      eval::fit_gaussian(feats(eval::read_records(*d.test, 0, 40))));
  EXPECT_NEAR(r["fid"].get<double>(), expected, 1e-6 * std::max(1.0, expected));
  EXPECT_EQ(r["test_records"].get<int64_t>(), 40);
  std::ifstream jsonl(f.run_dir / "eval.jsonl");
  std::string line;
  std::getline(jsonl, line);
  EXPECT_EQ(nlohmann::json::parse(line)["metric"], "fid");
}

// What a message says, or "" when the call throws nothing (or something else).
template <class Error, class F>
std::string message_of(F&& call) {
  try {
    call();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Fid, AnUnloadableOrMisshapenInceptionIsAUsageErrorNamingTheFile) {
  RunFixture f = make_run("eval-fid-bad", {"data.split=test", "data.holdout=40"});
  write_mnist(f.run_dir, "t10k", 100);
  eval::EvalOptions o;
  o.checkpoint = f.checkpoint;
  o.metric = "fid";
  o.samples = 64;
  std::ostringstream log;
  o.inception = (f.run_dir / "garbage.pt").string();
  std::ofstream(o.inception) << "not a zip archive";
  std::string what = message_of<eval::UsageError>([&] { eval::run_eval(o, log); });
  EXPECT_NE(what.find(o.inception + ": not a TorchScript module"), std::string::npos) << what;
  EXPECT_EQ(what.find("Exception raised from"), std::string::npos) << "no LibTorch backtrace: " << what;
  // A module that returns a tuple instead of [N, F] features.
  torch::jit::Module m("Pair");
  m.define("def forward(self, x):\n  return (x.mean(dim=[2, 3]), x.mean(dim=[2, 3]))\n");
  o.inception = (f.run_dir / "pair.pt").string();
  m.save(o.inception);
  what = message_of<eval::UsageError>([&] { eval::run_eval(o, log); });
  EXPECT_NE(what.find(o.inception + ": forward must return one tensor [N, F]"), std::string::npos) << what;
}

TEST(Frechet, TheCommandTrainsCachesAndReusesItsClassifier) {
  auto [f, o] = held_out_run("eval-frechet", "frechet", 50);
  o.classifier_epochs = 1;
  std::ostringstream log;
  const nlohmann::json first = eval::run_eval(o, log);
  const std::string cache = first["classifier"];
  EXPECT_EQ(fs::path(cache).parent_path(), fs::absolute(f.run_dir));  // next to the (writable) data
  ASSERT_TRUE(fs::exists(cache));
  EXPECT_NE(log.str().find("(trained now)"), std::string::npos) << log.str();
  const nlohmann::json second = eval::run_eval(o, log);
  EXPECT_NE(log.str().find("(cached)"), std::string::npos) << log.str();
  // The cached classifier is the same network: same accuracy, same distances.
  EXPECT_EQ(first["classifier_accuracy"], second["classifier_accuracy"]);
  EXPECT_DOUBLE_EQ(first["frechet_distance"].get<double>(), second["frechet_distance"].get<double>());
  // Another --seed draws other samples of G but measures them in the same, cached, features.
  o.seed = 5;
  const nlohmann::json reseeded = eval::run_eval(o, log);
  EXPECT_EQ(reseeded["classifier"], first["classifier"]);
  EXPECT_EQ(reseeded["classifier_accuracy"], first["classifier_accuracy"]);
  EXPECT_DOUBLE_EQ(reseeded["frechet_distance_floor"].get<double>(), first["frechet_distance_floor"].get<double>());
  EXPECT_NE(reseeded["frechet_distance"].get<double>(), first["frechet_distance"].get<double>());
  EXPECT_NE(cache.find("-e1.pt"), std::string::npos) << "the epochs are part of the cache's name: " << cache;
  o.seed = 0;
  EXPECT_GT(first["frechet_distance_floor"].get<double>(), 0.0);
  EXPECT_EQ(first["real_records"].get<int64_t>(), 50);
  // The distance's two parts, and each set's total feature variance.
  EXPECT_NEAR(first["frechet_distance_mean_term"].get<double>() + first["frechet_distance_covariance_term"].get<double>(),
              first["frechet_distance"].get<double>(), 1e-9);
  EXPECT_NEAR(first["frechet_distance_floor_mean_term"].get<double>() +
                  first["frechet_distance_floor_covariance_term"].get<double>(),
              first["frechet_distance_floor"].get<double>(), 1e-9);
  EXPECT_GE(first["frechet_distance_mean_term"].get<double>(), 0.0);
  for (const char* set : {"fake", "test", "real"}) EXPECT_GT(first["feature_variance"][set].get<double>(), 0.0) << set;
  EXPECT_NE(log.str().find("frechet_distance parts: "), std::string::npos) << log.str();
  // G's 50 samples, as the classifier labels them, over the 10 digit classes.
  const auto& coverage = first["class_coverage"];
  ASSERT_EQ(coverage["fake_share"].size(), 10u);
  double total = 0;
  for (const auto& share : coverage["fake_share"]) total += share.get<double>();
  EXPECT_NEAR(total, 1.0, 1e-12);
  EXPECT_GE(coverage["kl"].get<double>(), 0.0);
  EXPECT_NE(log.str().find("classes covered: "), std::string::npos) << log.str();
  // A damaged cache is named, with the remedy, and left for the user to delete.
  std::ofstream(cache, std::ios::trunc) << "truncated";
  const std::string what = message_of<std::runtime_error>([&] { eval::run_eval(o, log); });
  EXPECT_NE(what.find(cache + ": cannot read this cached feature classifier"), std::string::npos) << what;
  EXPECT_NE(what.find("delete it"), std::string::npos) << what;
}

// --truncation psi: G's samples are G(psi z). At psi 0 every sample is G(0), so the Parzen
// mixture is one Gaussian at G(0) and the figure is its closed form on the scored records.
TEST(Parzen, TruncationZeroGivesTheDensityOfOneGaussianAtGOfZero) {
  auto [f, o] = held_out_run("eval-parzen-trunc", "parzen", 30);
  o.truncation = 0;
  std::ostringstream log;
  const nlohmann::json r = eval::run_eval(o, log);
  EXPECT_EQ(r["truncation"].get<double>(), 0.0);
  EXPECT_NE(log.str().find("truncation psi 0"), std::string::npos) << log.str();
  eval::TrainedGan gan = eval::load_trained_gan(f.checkpoint);
  // G(0) from a batch of 30 zero rows, as the command drew its 30 samples: the same matrix
  // shapes give the same float rounding (a batch of 1 moved the figure by 1.5e-9 relative).
  const torch::Tensor centre = (eval::generate(gan, torch::zeros({30, 8}))[0] + 1) * 0.5;
  const eval::EvalData data = eval::open_eval_data(gan.config, "");
  const torch::Tensor test = ((eval::read_records(*data.test, 0, 40) + 1) * 0.5).slice(0, 1, 40, 2);  // the odd ones
  const double sigma = r["sigma"].get<double>();
  double mean = 0;
  for (int64_t i = 0; i < 20; ++i) mean += log_normal(test[i], centre, sigma) / 20;
  EXPECT_NEAR(r["parzen_ll"].get<double>(), mean, 1e-9 * std::abs(mean));
  // psi 1 is G's distribution as trained: the figure without the flag.
  o.truncation = 1;
  const nlohmann::json untruncated = eval::run_eval(o, log);
  EXPECT_NE(untruncated["parzen_ll"].get<double>(), r["parzen_ll"].get<double>());
  o.truncation = -0.5;
  EXPECT_THROW(eval::run_eval(o, log), eval::UsageError);
}

TEST(Sample, TruncationScalesTheLatents) {
  RunFixture f = make_run("eval-sample-trunc");
  eval::SampleOptions o;
  o.checkpoint = f.checkpoint;
  o.n = 4;
  std::ostringstream log;
  auto grid = [&](double psi, const std::string& name) {  // run_sample's PNG bytes
    o.truncation = psi;
    o.out = (f.run_dir / name).string();
    eval::run_sample(o, log);
    return bytes_of(o.out);
  };
  const std::string plain = grid(1, "plain.png"), half = grid(0.5, "half.png");
  o = eval::SampleOptions{};
  o.checkpoint = f.checkpoint;
  o.n = 4;
  o.out = (f.run_dir / "default.png").string();
  eval::run_sample(o, log);
  EXPECT_EQ(bytes_of(o.out), plain);  // psi 1 is the default: the prior as trained
  EXPECT_NE(half, plain);
  // The same grid as G(0.5 z) drawn directly, written by run_sample's own writer.
  eval::TrainedGan gan = eval::load_trained_gan(f.checkpoint);
  write_image_grid(eval::generate(gan, eval::sample_latents(0, 4, 8) * 0.5), 2, 2, (f.run_dir / "direct.png").string());
  EXPECT_EQ(bytes_of(f.run_dir / "direct.png"), half);
  EXPECT_NE(log.str().find("truncation psi 0.5"), std::string::npos) << log.str();
}

// A generator whose samples are not finite (diverged weights; here latents scaled beyond float's
// range) is an error that names the checkpoint, not a NaN figure, and leaves eval.jsonl alone.
TEST(Parzen, NonFiniteSamplesAreAnErrorNotAFigure) {
  auto [f, o] = held_out_run("eval-nonfinite", "parzen", 50);
  o.truncation = 1e39;  // finite as a double; z * psi overflows float
  std::ostringstream log;
  try {
    eval::run_eval(o, log);
    FAIL() << "no error; log: " << log.str();
  } catch (const eval::UsageError& e) {
    FAIL() << "a usage error: " << e.what();
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(f.checkpoint), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("NaN or infinite samples"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(f.run_dir / "eval.jsonl"));
  eval::SampleOptions so;
  so.checkpoint = f.checkpoint;
  so.truncation = 1e39;
  so.out = (f.run_dir / "nan.png").string();
  EXPECT_THROW(eval::run_sample(so, log), std::runtime_error);
  EXPECT_FALSE(fs::exists(so.out));
}

TEST(Classifier, TrainingDoesNotDependOnTheCallersThreadCount) {
  // Enough images that LibTorch splits the convolutions' reductions across 2 threads, which
  // round differently from 1; the classifier must come out bit-identical either way.
  torch::manual_seed(3);
  const eval::LabelledImages train{torch::rand({2048, 1, 28, 28}) * 2 - 1, torch::randint(10, {2048}, torch::kLong)};
  const eval::LabelledImages test{torch::rand({64, 1, 28, 28}) * 2 - 1, torch::randint(10, {64}, torch::kLong)};
  const fs::path dir = fs::temp_directory_path() / "gantry-classifier-threads";
  fs::remove_all(dir);
  const int before = at::get_num_threads();
  std::ostringstream log;
  std::vector<std::vector<torch::Tensor>> weights;
  for (const int threads : {2, 1}) {
    at::set_num_threads(threads);
    const std::string cache = (dir / ("threads-" + std::to_string(threads) + ".pt")).string();
    const torch::Tensor generator = at::detail::getDefaultCPUGenerator().get_state();
    eval::Classifier c = eval::load_or_train_classifier(train, test, cache, /*seed=*/5, /*epochs=*/1, log);
    EXPECT_EQ(at::get_num_threads(), threads);  // the caller's count, restored
    // And the caller's random stream: a probe during training must not move rank 0's generator.
    EXPECT_TRUE(torch::equal(at::detail::getDefaultCPUGenerator().get_state(), generator));
    weights.push_back(c.net->parameters());
  }
  at::set_num_threads(before);
  ASSERT_EQ(weights[0].size(), weights[1].size());
  for (size_t i = 0; i < weights[0].size(); ++i) EXPECT_TRUE(torch::equal(weights[0][i], weights[1][i])) << "parameter " << i;
  fs::remove_all(dir);
}

TEST(Parzen, TheCommandReportsTheRunsHeldOutRecords) {
  auto [f, o] = held_out_run("eval-parzen", "parzen", 60);
  std::ostringstream log;
  const nlohmann::json r = eval::run_eval(o, log);
  EXPECT_EQ(r["validation_records"].get<int64_t>(), 20);
  EXPECT_EQ(r["test_records"].get<int64_t>(), 20);
  EXPECT_EQ(r["real_records"].get<int64_t>(), 60);
  EXPECT_TRUE(std::isfinite(r["parzen_ll"].get<double>()));
  EXPECT_NE(log.str().find("parzen log-likelihood: "), std::string::npos) << log.str();
  // The protocol by hand: sigma on the held-out records 0, 2, 4, ..., the figure on 1, 3, 5, ...
  eval::TrainedGan gan = eval::load_trained_gan(f.checkpoint);
  const eval::EvalData d = eval::open_eval_data(gan.config, "");
  const torch::Tensor held_out = (eval::read_records(*d.test, 0, 40) + 1) * 0.5;
  const torch::Tensor samples = (eval::generate(gan, eval::sample_latents(0, 60, 8)) + 1) * 0.5;
  const std::vector<double> grid = eval::log_grid(0.02, 2.0, 61);
  const eval::ParzenResult expected =
      eval::parzen_evaluate(held_out.slice(0, 0, 40, 2), held_out.slice(0, 1, 40, 2), samples, grid);
  EXPECT_DOUBLE_EQ(r["sigma"].get<double>(), expected.sigma);
  EXPECT_NEAR(r["parzen_ll"].get<double>(), expected.mean, 1e-9 * std::abs(expected.mean));
  EXPECT_FALSE(r.contains("matched_parzen_ll")) << "as many training records as samples: nothing to match";
  // 100 samples against the 60 training records: G is scored with its first 60 samples too.
  o.samples = 100;
  const nlohmann::json more = eval::run_eval(o, log);
  EXPECT_EQ(more["real_records"].get<int64_t>(), 60);
  EXPECT_EQ(more["matched_samples"].get<int64_t>(), 60);
  EXPECT_NEAR(more["matched_parzen_ll"].get<double>(), r["parzen_ll"].get<double>(), 1e-9 * std::abs(expected.mean))
      << "the first 60 of 100 samples are the 60 samples";
  EXPECT_NE(log.str().find("G with as many samples as the reference (60)"), std::string::npos) << log.str();
}

}  // namespace

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  g_runtime = &runtime;
  return RUN_ALL_TESTS();
}
