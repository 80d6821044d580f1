// Implements: loading a trained GAN for evaluation, seeded latents and interpolations (see generator.h).
#include "eval/generator.h"

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <stdexcept>
#include <vector>

#include "datasets/random.h"
#include "trainer/checkpoint.h"
#include "trainer/inspect.h"
#include "trainer/latent.h"

namespace gantry::eval {
namespace fs = std::filesystem;

namespace {

void load_module(torch::nn::Module& m, const std::string& prefix, const checkpoint::StateDict& state,
                 const std::string& dir) {
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& into) {
    const auto it = state.find(name);
    if (it == state.end() || it->second.sizes() != into.sizes())
      throw checkpoint::CheckpointError(dir + ": tensor " + name + (it == state.end() ? " is missing" : " has another shape") +
                                        " (does the run's config.yaml still describe this checkpoint's model?)");
    into.copy_(it->second);
  };
  for (auto& p : m.named_parameters()) copy(prefix + "param/" + p.key(), p.value());
  for (auto& b : m.named_buffers()) copy(prefix + "buffer/" + b.key(), b.value());
}

}  // namespace

datasets::RecordShape record_shape(const DataConfig& data) {
  if (data.name == "mnist" || data.name == "fashion-mnist") return {1, 28, 28};
  if (data.name == "cifar10") return {3, 32, 32};
  if (data.name == "images") return {data.channels, data.resolution, data.resolution};
  if (data.name == "gaussian1d") return {1, 1, 1};
  throw ConfigError("unknown dataset '" + data.name + "'");
}

TrainedGan load_trained_gan(const std::string& path, const std::string& generator) {
  if (generator != "auto" && generator != "ema" && generator != "raw")
    throw UsageError("--generator must be auto, ema or raw, got '" + generator + "'");
  TrainedGan gan;
  gan.checkpoint = resolve_checkpoint_dir(path);
  const auto loaded = checkpoint::read_checkpoint(gan.checkpoint);
  // <run.dir>/checkpoints/step-N: the run's resolved config is two levels up.
  fs::path dir = fs::absolute(gan.checkpoint).lexically_normal();
  if (!dir.has_filename()) dir = dir.parent_path();  // "step-N/" (as shells complete it) ends in an empty name
  gan.run_dir = dir.parent_path().parent_path().string();
  const fs::path config_file = fs::path(gan.run_dir) / "config.yaml";
  if (!fs::exists(config_file))
    throw checkpoint::CheckpointError(gan.checkpoint + ": no " + config_file.string() +
                                      " next to it (a checkpoint is read from <run.dir>/checkpoints/step-N)");
  gan.config = load_config(config_file.string(), {});
  gan.step = loaded.manifest.value("step", int64_t{0});
  gan.shape = record_shape(gan.config.data);
  gan.models = make_models(gan.config, gan.shape);
  // G's average has G's architecture: whichever is chosen loads into models.g.
  const bool has_ema = std::any_of(loaded.state.begin(), loaded.state.end(),
                                   [](const auto& t) { return t.first.rfind("generator_ema/", 0) == 0; });
  if (generator == "ema" && !has_ema)
    throw checkpoint::CheckpointError(gan.checkpoint + ": --generator ema, but this checkpoint holds no average of G " +
                                      "(its run had train.g_ema_kimg: 0)");
  gan.generator = generator == "raw" || !has_ema ? "raw" : "ema";
  load_module(*gan.models.g, gan.generator == "ema" ? "generator_ema/" : "generator/", loaded.state, gan.checkpoint);
  load_module(*gan.models.d, "discriminator/", loaded.state, gan.checkpoint);
  gan.models.g_ema = nullptr;
  gan.models.generate_ema = nullptr;
  gan.models.g->eval();
  gan.models.d->eval();
  return gan;
}

torch::Tensor generate(TrainedGan& gan, const torch::Tensor& z, int64_t batch) {
  return generate(gan, z, torch::Tensor(), batch);
}

torch::Tensor generate(TrainedGan& gan, const torch::Tensor& z, const torch::Tensor& labels, int64_t batch) {
  torch::Tensor x = generate(gan.models, z, labels, batch);
  // A NaN sample would turn every figure into NaN, and a grid into noise, with no word of why.
  if (!torch::isfinite(x).all().item<bool>())
    throw std::runtime_error("the generator in " + gan.checkpoint + " (step " + std::to_string(gan.step) +
                             ") gives NaN or infinite samples: its weights diverged, or --truncation scaled the "
                             "latents out of range");
  return x;
}

torch::Tensor generate(GanModels& models, const torch::Tensor& z, int64_t batch) {
  return generate(models, z, torch::Tensor(), batch);
}

torch::Tensor generate(GanModels& models, const torch::Tensor& z, const torch::Tensor& labels, int64_t batch) {
  torch::NoGradGuard no_grad;
  const torch::Device device = models.g->parameters().front().device();
  std::vector<torch::Tensor> parts;
  for (int64_t lo = 0; lo < z.size(0); lo += batch) {
    const torch::Tensor y = labels.defined() ? labels.slice(0, lo, lo + batch) : labels;
    parts.push_back(models.generate(models.g_input(z.slice(0, lo, lo + batch).to(device), y))
                        .to(torch::kCPU, torch::kFloat32));
  }
  return torch::cat(parts);
}

torch::Tensor sample_labels(int64_t n, const std::vector<int64_t>& counts) {
  const int64_t total = std::accumulate(counts.begin(), counts.end(), int64_t{0});
  if (counts.empty() || total <= 0) throw std::invalid_argument("sample_labels: no class has records");
  // Integer credits (in units of 1 / total): every sample adds counts[c] to class c's credit, the
  // class with the most (the lowest index on a tie) is drawn and pays back `total`.
  std::vector<int64_t> credit(counts.size(), 0);
  torch::Tensor y = torch::empty({n}, torch::kInt64);
  int64_t* out = y.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    for (size_t c = 0; c < counts.size(); ++c) credit[c] += counts[c];
    const auto best = std::max_element(credit.begin(), credit.end());
    *best -= total;
    out[i] = best - credit.begin();
  }
  return y;
}

torch::Tensor sample_latents(uint64_t seed, int64_t n, int64_t z_dim) {
  return latent_rows(seed, random::kEvalLatent, 0, 0, n, z_dim);
}

torch::Tensor interpolation_latents(uint64_t seed, int64_t rows, int64_t cols, int64_t z_dim) {
  const torch::Tensor ends = latent_rows(seed, random::kEvalLatent, 1, 0, 2 * rows, z_dim).reshape({rows, 2, 1, z_dim});
  const torch::Tensor t = torch::linspace(0, 1, cols).reshape({1, cols, 1});
  const torch::Tensor z0 = ends.select(1, 0), z1 = ends.select(1, 1);  // [rows, 1, z_dim]
  torch::Tensor z = z0 * (1 - t) + z1 * t;
  // The endpoints exactly, whatever the rounding of the blend.
  z.select(1, 0).copy_(z0.squeeze(1));
  z.select(1, cols - 1).copy_(z1.squeeze(1));
  return z.reshape({rows * cols, z_dim});
}

}  // namespace gantry::eval
