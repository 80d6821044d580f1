// Implements: the run configuration as typed structs, parsed once from YAML plus `--set` overrides
// and validated in one place. Every error names the key and where it came from (file:line or the
// --set argument); the resolved config can be written back as YAML.
#pragma once

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace gantry {

// The most intra-op threads a process may ask for (train.threads, --threads): far beyond any
// node's cores per rank, and well inside the int that LibTorch's thread count is.
inline constexpr int64_t kMaxThreads = 1024;

// A user's mistake in the configuration: one line naming the key and its location.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RunConfig {
  std::string dir = "runs/gantry";
  int64_t seed = 0;
};

struct GaussianConfig {
  double mean = 4.0;
  double std = 1.25;
};

struct DataConfig {
  std::string name = "fashion-mnist";  // mnist | fashion-mnist | cifar10 | images | gaussian1d
  std::string path;                    // empty: the dataset's default directory
  std::string split = "train";         // train | test
  GaussianConfig gaussian;
  std::string cache_dir;               // where .gz files are inflated (empty: next to them)
  int64_t workers = 1;                 // threads that decode batches
  int64_t prefetch = 2;                // batches decoded ahead of training (0: none)
  bool hflip = false;                  // random left-right flips (images)
  int64_t holdout = 0;                 // the split's last N records are left out of training (for evaluation)
  int64_t resolution = 32;             // images: each image centre-cropped and resized to this square
  int64_t channels = 3;                // images: 1 (gray) or 3 (RGB)
};

struct MlpConfig {
  std::vector<int64_t> g_hidden{256, 512};
  std::vector<int64_t> d_hidden{512, 256, 128};
  double d_dropout = 0;        // dropout probability on D's hidden units in training (Goodfellow et al.: 0.5)
  double d_input_dropout = 0;  // dropout probability on D's input pixels in training (Goodfellow et al.: 0.2)
  int64_t d_maxout = 1;        // pieces per hidden unit of D: 1 = LeakyReLU units, k > 1 = maxout units
                               // (Goodfellow et al.: 240 units of 5 pieces per layer)
};

struct DcganConfig {
  int64_t g_width = 64;  // channels of G's last hidden layer (ngf)
  int64_t g_blocks = 0;  // 3x3 stride-1 convolutions added at each of G's hidden resolutions
  // With model.conditional: G's BatchNorm layers take a gain and a bias per class (conditional
  // BatchNorm, as SNGAN-projection's G) besides reading the one-hot label with z.
  bool g_class_norm = false;
  int64_t d_width = 64;  // channels of D's first layer (ndf)
  int64_t d_blocks = 0;  // 3x3 stride-1 convolutions added after each of D's downsampling ones
  // Group size of a minibatch standard deviation channel before D's last convolution (Karras et
  // al. 2018; StyleGAN2 uses 4). 0: none.
  int64_t d_mbstd_group = 0;
  // D's normalisation: batch (Radford et al.'s BatchNorm), spectral (Miyato et al. 2018: every
  // layer's weight divided by its largest singular value, no BatchNorm), none, or auto (batch, but
  // none for wgan-gp, whose penalty is per sample).
  std::string d_norm = "auto";
};

struct ModelConfig {
  std::string arch = "dcgan";  // mlp | dcgan
  int64_t z_dim = 100;
  // G and D conditioned on the records' class labels (labelled datasets: mnist, fashion-mnist,
  // cifar10): G takes [z, one_hot(label)] (Mirza & Osindero 2014), D adds the projection of its
  // last features onto a learned embedding of the label (Miyato & Koyama 2018).
  bool conditional = false;
  MlpConfig mlp;
  DcganConfig dcgan;
};

struct TrainConfig {
  int64_t steps = 1000;       // G updates
  int64_t batch_size = 64;    // global batch, split evenly across ranks
  int64_t d_steps = 1;        // D updates per G update
  std::string loss = "non-saturating";  // minimax | non-saturating | wgan-gp | hinge
  double gp_weight = 10.0;    // WGAN-GP's lambda
  // G's exponential moving average, the weights samples and evaluation use (trainer/ema.h):
  // half-life in thousands of generated images (0: off), shortened to g_ema_rampup times the
  // images generated so far early in a run (0: no ramp-up).
  double g_ema_kimg = 0;
  double g_ema_rampup = 0.05;
  // DiffAugment on everything D sees (trainer/augment.h): none | translation | cutout |
  // translation,cutout.
  std::string augment = "none";
  // R1 (Mescheder et al. 2018): r1_gamma / 2 * E[||grad_x D(x)||^2] on the real images, added to
  // D's loss every r1_every-th D update and scaled by r1_every (StyleGAN2's lazy regularization).
  // 0: off.
  double r1_gamma = 0;
  int64_t r1_every = 16;
  // Balanced consistency regularization (bCR, Zhao et al. 2021, "Improved Consistency
  // Regularization for GANs"): cr_weight * (E[(D(T(x)) - D(x))^2] + E[(D(T(G(z))) - D(G(z)))^2])
  // added to D's loss, D's logits on the images it sees and on them translated by up to cr_shift
  // pixels (T, zero fill). 0: off.
  double cr_weight = 0;
  int64_t cr_shift = 2;
  // Top-k G updates (Sinha et al. 2020): G's loss reads only the k of the global batch's fakes D
  // scores as most real, k = max(g_topk, g_topk_gamma^epochs) x batch_size (epochs: the images
  // seen so far over the training records). g_topk: 1 = every fake (off).
  double g_topk = 1;
  double g_topk_gamma = 0.99;
  // G's update backpropagates through the fakes of the D update before it (their latents and
  // labels) instead of drawing new ones: one G forward pass fewer per step.
  bool reuse_fakes = false;
  int64_t log_every = 50;
  int64_t sample_every = 500;
  int64_t consistency_every = 100;
  int64_t threads = 0;        // intra-op threads per rank; 0 = cores / ranks on this node
  bool dump_replicas = false; // write every rank's final parameters (replica tests)
  std::string on_nonfinite = "skip";  // skip | stop: an update whose averaged gradient is NaN or infinite
  int64_t max_nonfinite_skips = 10;   // skip: at most this many skipped updates in a row; one more stops
  std::string device = "auto";     // auto | cpu | cuda (auto: the local rank's GPU when there is one)
  std::string precision = "fp32";  // fp32 | bf16: autocast forward passes; fp32 weights, optimizer and losses
  bool deterministic = true;       // false: cuDNN picks the fastest algorithms (benchmark mode)
};

struct CheckpointConfig {
  int64_t every = 500;     // save every N steps (0: only at the end and on SIGTERM/SIGUSR1)
  int64_t keep_last = 3;   // keep the newest K checkpoints
  int64_t keep_every = 0;  // and every checkpoint whose step is a multiple of M (0: none)
  bool async = false;      // periodic saves write in the background while training goes on
  std::string on_failure = "continue";  // continue | stop: what a periodic save that fails does
};

struct CommConfig {
  std::string backend = "auto";      // auto | mpi | nccl (auto: NCCL when the models are on CUDA)
  double bucket_mb = 25;             // gradient bucket size, as DDP's bucket_cap_mb
  double first_bucket_mb = 1;        // the first bucket (the last layers), so communication starts early
  std::string overlap = "auto";      // true: all-reduce buckets during backward; false: one after it;
                                     // auto: true with NCCL, false with MPI (CPU copies compete with backward)
  std::string grad_dtype = "fp32";   // fp32 | bf16 | fp16: the dtype gradients travel in
  double timeout_s = 600;            // a collective blocked this long aborts the job (0: never)
};

struct MonitoringConfig {
  int64_t port = 0;               // rank r serves /metrics at port + local rank; 0: no exporter
  std::string bind = "0.0.0.0";   // the address the exporters listen on
  double linger_s = 0;            // keep serving this long after the last step (final scrapes)
};

// Sample quality measured while training (rank 0): the Fréchet distance of `gantry eval --metric
// frechet`, in the same classifier's features, exported as gantry_frechet_distance.
struct EvalConfig {
  int64_t frechet_every = 0;       // every N steps and at the end; 0: never
  int64_t frechet_samples = 5000;  // samples of G per measurement
};

struct AdamConfig {
  double lr = 2e-4;
  double beta1 = 0.5;
  double beta2 = 0.999;
};

struct OptimConfig {
  AdamConfig g;
  AdamConfig d;
  // Both learning rates over the run (trainer/lr_schedule.h): lr x a factor that warms up
  // linearly over warmup_steps, then from decay_start x train.steps on (not before the warm-up
  // ends) falls (linear | cosine) toward final_lr_ratio at train.steps; constant: no decay.
  std::string schedule = "constant";
  int64_t warmup_steps = 0;
  double decay_start = 0;     // fraction of train.steps
  double final_lr_ratio = 0;  // the factor the decay approaches at train.steps
};

struct Config {
  RunConfig run;
  DataConfig data;
  ModelConfig model;
  TrainConfig train;
  OptimConfig optim;
  CheckpointConfig checkpoint;
  CommConfig comm;
  MonitoringConfig monitoring;
  EvalConfig eval;

  // Where each key's value came from ("run.yaml:12", "--set", or "default"), for error messages
  // raised after parsing, such as a batch size that the world size does not divide.
  std::map<std::string, std::string> origin;
  std::string where(const std::string& key) const;
};

// Parses `file` (may be empty: all defaults), applies `overrides` ("dotted.key=value"), fills in
// defaults that depend on other keys, and validates. Throws ConfigError.
Config load_config(const std::string& file, const std::vector<std::string>& overrides);

// The resolved config as YAML, every key included.
std::string to_yaml(const Config& config);

// A short hex digest of the resolved config's training keys (recorded in checkpoints and
// metrics); the monitoring and eval keys and the loader's thread counts are left out.
std::string config_digest(const Config& config);

// The number of classes G and D are conditioned on: 10 for a model.conditional model (every
// labelled dataset gantry reads has ten), 0 otherwise.
int64_t label_classes(const Config& config);

// Checks that need the job's shape; throws ConfigError naming the key.
void validate_for_world(const Config& config, int world_size);

// Debian's dataset-fashion-mnist installs here.
inline constexpr const char* kDebianFashionMnistDir = "/usr/share/datasets/fashion-mnist";

}  // namespace gantry
