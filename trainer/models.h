// Implements: the generator and discriminator architectures. `mlp` is the classic MLP GAN
// (G: z -> 256 -> 512 -> out, tanh for images; D: in -> 512 -> 256 -> 128 -> 1); `dcgan` follows
// Radford et al. for 28x28x1 and 32x32x3 with BatchNorm. D always returns logits.
#pragma once

#include <torch/torch.h>

#include "datasets/dataset.h"
#include "trainer/config.h"

namespace gantry {

struct MlpGeneratorImpl : torch::nn::Module {
  MlpGeneratorImpl(int64_t z_dim, const std::vector<int64_t>& hidden, datasets::RecordShape out, bool tanh_output);
  torch::Tensor forward(const torch::Tensor& z);
  torch::nn::Sequential net{nullptr};
  datasets::RecordShape shape;
};
TORCH_MODULE(MlpGenerator);

struct MlpDiscriminatorImpl : torch::nn::Module {
  MlpDiscriminatorImpl(datasets::RecordShape in, const std::vector<int64_t>& hidden);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(MlpDiscriminator);

struct DcganGeneratorImpl : torch::nn::Module {
  DcganGeneratorImpl(int64_t z_dim, int64_t width, datasets::RecordShape out);
  torch::Tensor forward(const torch::Tensor& z);
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(DcganGenerator);

struct DcganDiscriminatorImpl : torch::nn::Module {
  // batch_norm is off for WGAN-GP, whose penalty is per sample (Gulrajani et al., section 4).
  DcganDiscriminatorImpl(int64_t width, datasets::RecordShape in, bool batch_norm);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Sequential net{nullptr};
};
TORCH_MODULE(DcganDiscriminator);

// G and D behind one type, so the training step needs no knowledge of the architecture.
struct GanModels {
  std::shared_ptr<torch::nn::Module> g;
  std::shared_ptr<torch::nn::Module> d;
  std::function<torch::Tensor(const torch::Tensor&)> generate;       // z [N, z_dim] -> x [N, C, H, W]
  std::function<torch::Tensor(const torch::Tensor&)> discriminate;   // x -> logits [N]
  // Whether D scores each sample on its own (no BatchNorm or other batch-coupled layer). Then a D
  // update may score real and fake images in one forward pass: the same logits, one set of
  // larger matrix products instead of two.
  bool d_per_sample = false;
  // G's exponential moving average (train.g_ema_kimg > 0; null otherwise): a second G of the same
  // architecture that GanStep::update_g_ema moves after each G update and never trains.
  std::shared_ptr<torch::nn::Module> g_ema;
  std::function<torch::Tensor(const torch::Tensor&)> generate_ema;

  // The generator to sample and evaluate: G's average when there is one, else G itself (the same
  // D). Shares the modules.
  GanModels sampler() const;
};

// Builds the configured architecture for records of `shape`, initialised from `seed` so that all
// ranks start identical even before rank 0's broadcast. Throws ConfigError for a misfit.
GanModels make_models(const Config& config, datasets::RecordShape shape);

}  // namespace gantry
