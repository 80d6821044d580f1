// Implements: the generator and discriminator architectures. `mlp` is the classic MLP GAN
// (G: z -> 256 -> 512 -> out, tanh for images; D: in -> 512 -> 256 -> 128 -> 1 by default, with
// LeakyReLU or maxout units); `dcgan` follows
// Radford et al. for 28x28x1 and 32x32x3 with BatchNorm, or with spectral normalisation in D
// (Miyato et al. 2018). D always returns logits.
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

// The class-conditional term of a projection discriminator (Miyato & Koyama 2018, "cGANs with
// Projection Discriminator"): D's logit for (x, y) is its unconditional logit plus
// <embed(y), phi(x)>, phi(x) being the features D's last layer reads (flattened). A learned
// [classes, features] table, initialised N(0, 0.02) as the DCGAN's weights.
struct LabelProjectionImpl : torch::nn::Module {
  LabelProjectionImpl(int64_t classes, int64_t features);
  // features [N, ...] (flattened to [N, features]), labels [N] int64 -> [N].
  torch::Tensor forward(const torch::Tensor& features, const torch::Tensor& labels);
  torch::Tensor embed;
};
TORCH_MODULE(LabelProjection);

struct MlpDiscriminatorImpl : torch::nn::Module {
  // hidden: the units per hidden layer. maxout: pieces per unit; 1 gives LeakyReLU units, k > 1
  // maxout units (Goodfellow et al. 2013), each the largest of k affine pieces, so hidden layer l
  // is a Linear of hidden[l] * k outputs whose consecutive runs of k are maxed. dropout: the
  // probability of dropping each hidden unit in training mode; input_dropout: each input pixel's
  // (Goodfellow et al. 2014 trained their D with 0.2 and 0.5, on two layers of 240 maxout units of
  // 5 pieces; without dropout the MLP GAN collapses onto a few digits, docs/RESULTS.md).
  // classes > 0: conditioned on a label (projection, see LabelProjection).
  MlpDiscriminatorImpl(datasets::RecordShape in, const std::vector<int64_t>& hidden, double dropout = 0,
                       int64_t maxout = 1, double input_dropout = 0, int64_t classes = 0);
  // u: [N, dropout_columns()] uniforms in [0, 1), drawn per sample by the caller (keyed per
  // global sample in training, so the masks are the same at any world size and on resume). The
  // input pixels' come first (when input_dropout > 0), then each hidden layer's in order (when
  // dropout > 0). In training mode an input pixel or hidden unit is kept for sample n when its
  // column of u[n] is >= its layer's probability p, and scaled by 1 / (1 - p). Undefined u in
  // training mode: LibTorch's own dropout. Eval mode, or both probabilities 0: no dropout.
  // labels: [N] class indices, for a conditional D (undefined otherwise).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& u = torch::Tensor(),
                        const torch::Tensor& labels = torch::Tensor());
  int64_t dropout_columns() const;  // the input's numel when input_dropout > 0, plus the hidden widths' sum when dropout > 0
  torch::nn::Sequential net{nullptr};  // per hidden layer: Linear, then LeakyReLU or maxout; then Linear to 1
  std::vector<int64_t> hidden;
  double p;
  int64_t pieces;
  double p_input;
  int64_t inputs;
  LabelProjection projection{nullptr};  // conditional D only

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())}, {2, torch::nn::AnyValue(torch::Tensor())})
};
TORCH_MODULE(MlpDiscriminator);

// Class-conditional BatchNorm (de Vries et al. 2017; Miyato & Koyama 2018's G): BatchNorm without
// its own affine transform, then a gain and a bias per class and channel, rows of `gain` and
// `bias` picked by a one-hot label: x_hat * (one_hot @ gain) + one_hot @ bias.
struct ClassBatchNorm2dImpl : torch::nn::Module {
  ClassBatchNorm2dImpl(int64_t classes, int64_t channels);
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& one_hot);
  torch::nn::BatchNorm2d norm{nullptr};
  torch::Tensor gain, bias;  // [classes, channels]
};
TORCH_MODULE(ClassBatchNorm2d);

struct DcganGeneratorImpl : torch::nn::Module {
  // blocks: 3x3 stride-1 convolutions (each with BatchNorm and ReLU) added at each hidden
  // resolution, after its transposed convolution (model.dcgan.g_blocks). class_norm_classes > 0:
  // the input's last class_norm_classes columns are a one-hot label, and every BatchNorm is a
  // ClassBatchNorm2d that reads it (model.dcgan.g_class_norm).
  DcganGeneratorImpl(int64_t z_dim, int64_t width, datasets::RecordShape out, int64_t blocks = 0,
                     int64_t class_norm_classes = 0);
  torch::Tensor forward(const torch::Tensor& z);
  torch::nn::Sequential net{nullptr};
  int64_t class_norm_classes;
};
TORCH_MODULE(DcganGenerator);

// A convolution whose weight W is used as W / sigma(W), sigma being W's largest singular value as
// a matrix [out, in * k * k] (Miyato et al. 2018, "Spectral Normalization for GANs"). sigma is
// estimated as u^T W v from vectors u, v that one power iteration per forward pass in training
// mode moves towards W's top singular vectors; in eval mode they stay. They are buffers, so they
// travel with checkpoints, the replica broadcast and the replica checksum, and being a function
// of the (identical) weights alone they stay identical on every rank. Gradients flow through
// sigma as well as W, with u and v held fixed, as in the paper and torch.nn.utils.spectral_norm.
struct SpectralConv2dImpl : torch::nn::Conv2dImpl {
  SpectralConv2dImpl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t padding);
  torch::Tensor forward(const torch::Tensor& x);
  // W / sigma, after the power iteration in training mode. Computed with elementwise products
  // and sums, so that it stays fp32 under autocast.
  torch::Tensor normalized_weight();
  torch::Tensor u, v;

 private:
  int64_t stride_, padding_;
};
TORCH_MODULE(SpectralConv2d);

// D's normalisation layer (model.dcgan.d_norm, with auto resolved).
enum class DNorm { kBatch, kSpectral, kNone };

// Minibatch standard deviation (Karras et al. 2018, "Progressive Growing of GANs", section 3):
// the batch is split into groups of `group` samples (fewer where the batch is not a multiple of
// it: the largest divisor of the batch size that is at most `group`); for each group, the
// standard deviation of every feature over the group's samples, averaged over all features,
// becomes one extra channel of each of the group's samples. D thereby sees how varied a batch
// is, which lets it tell a generator that covers too little variation from the data. Group j
// holds samples j, j + n/group, j + 2n/group, ... as in StyleGAN2's layer. No parameters.
struct MinibatchStdImpl : torch::nn::Module {
  explicit MinibatchStdImpl(int64_t group);
  torch::Tensor forward(const torch::Tensor& x);  // [n, c, h, w] -> [n, c + 1, h, w]
  int64_t group;
};
TORCH_MODULE(MinibatchStd);

struct DcganDiscriminatorImpl : torch::nn::Module {
  // kBatch is refused with WGAN-GP, whose penalty is per sample (Gulrajani et al., section 4).
  // mbstd_group > 0 puts a MinibatchStd layer of that group size before D's last convolution.
  // classes > 0: conditioned on a label, projected onto the input of D's last convolution.
  // blocks: 3x3 stride-1 convolutions (normalised as the others, each with LeakyReLU) after each
  // downsampling convolution, at the resolution it left (model.dcgan.d_blocks; SNGAN's D
  // alternates the two kinds).
  DcganDiscriminatorImpl(int64_t width, datasets::RecordShape in, DNorm norm, int64_t mbstd_group = 0,
                         int64_t classes = 0, int64_t blocks = 0);
  // labels: [N] class indices, for a conditional D (undefined otherwise).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& labels = torch::Tensor());
  torch::nn::Sequential net{nullptr};
  LabelProjection projection{nullptr};  // conditional D only

 protected:
  FORWARD_HAS_DEFAULT_ARGS({1, torch::nn::AnyValue(torch::Tensor())})
};
TORCH_MODULE(DcganDiscriminator);

// G and D behind one type, so the training step needs no knowledge of the architecture.
// A conditional GAN (classes > 0) is the same interface: G's input carries the label (g_input),
// and D takes the labels beside the images.
struct GanModels {
  std::shared_ptr<torch::nn::Module> g;
  std::shared_ptr<torch::nn::Module> d;
  // G's input (g_input's [N, z_dim + classes]) -> x [N, C, H, W].
  std::function<torch::Tensor(const torch::Tensor&)> generate;
  // x, labels ([N] int64; undefined for an unconditional D, which ignores them) -> logits [N].
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)> discriminate;
  // D with per-sample random draws: x [N, ...], labels, u [N, d_draws] -> logits [N];
  // model.mlp.d_dropout's masks (MlpDiscriminatorImpl::forward). d_draws == 0: D draws nothing,
  // and this is discriminate.
  std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&)> discriminate_drawn;
  int64_t classes = 0;  // model.conditional: the classes G and D are conditioned on; 0: none
  int64_t d_draws = 0;
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
  // G's input for latents z [N, z_dim] and labels [N] (int64 class indices): z itself for an
  // unconditional G (labels ignored), [z, one_hot(labels)] in z's dtype and device for a
  // conditional one, which needs labels in [0, classes).
  torch::Tensor g_input(const torch::Tensor& z, const torch::Tensor& labels) const;
};

// Builds the configured architecture for records of `shape`, initialised from `seed` so that all
// ranks start identical even before rank 0's broadcast. Throws ConfigError for a misfit.
GanModels make_models(const Config& config, datasets::RecordShape shape);

}  // namespace gantry
