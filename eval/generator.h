// Implements: a trained G (and D) loaded from a checkpoint for evaluation, with the run's config
// read from <run.dir>/config.yaml; seeded samples, and the rows of z-interpolations of
// Goodfellow et al. (2014), Figure 2.
#pragma once

#include <torch/torch.h>

#include <stdexcept>
#include <string>

#include "datasets/dataset.h"
#include "trainer/config.h"
#include "trainer/models.h"

namespace gantry::eval {

// A mistake in the command's arguments (exit code 2, as a config error).
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainedGan {
  Config config;           // the run's resolved config
  std::string checkpoint;  // the checkpoint directory read
  std::string run_dir;     // the run's directory (eval.jsonl goes there)
  int64_t step = 0;
  datasets::RecordShape shape;
  GanModels models;        // in eval mode; models.g holds the weights chosen (no g_ema)
  std::string generator;   // which weights models.g holds: "ema" (G's average) or "raw" (G)
};

// The record shape the run's config gives (28x28x1, 32x32x3, an image folder's resolution and
// channels, 1-D): no files needed.
datasets::RecordShape record_shape(const DataConfig& data);

// `path`: a checkpoint directory, a checkpoints folder or a run directory (follows `latest`).
// `generator`: "auto" (G's average when the checkpoint holds one, else G), "ema" or "raw".
// Throws CheckpointError (missing or corrupt checkpoint, a model that does not fit, "ema" from a
// run without train.g_ema_kimg), ConfigError (the run's config.yaml) or UsageError (another
// `generator`).
TrainedGan load_trained_gan(const std::string& path, const std::string& generator = "auto");

// G(z) for z [N, z_dim], batch by batch, without gradients: [N, C, H, W] in [-1, 1]. A
// conditional G (model.conditional) draws sample i of class labels[i] ([N] int64) and needs them;
// an unconditional one ignores them.
torch::Tensor generate(TrainedGan& gan, const torch::Tensor& z, int64_t batch = 500);
torch::Tensor generate(TrainedGan& gan, const torch::Tensor& z, const torch::Tensor& labels, int64_t batch = 500);
// The same for live models, on G's device (z is moved there), returned on the CPU in fp32. G's
// mode is left as it is (eval mode for statistics, as TrainedGan's).
torch::Tensor generate(GanModels& models, const torch::Tensor& z, int64_t batch = 500);
torch::Tensor generate(GanModels& models, const torch::Tensor& z, const torch::Tensor& labels, int64_t batch = 500);

// Labels for n samples of a conditional G, stratified by `counts` (records per class, e.g. of the
// training records): class c comes n * counts[c] / sum(counts) times, give or take one, and the
// classes interleave (each sample takes the class furthest behind its share). Equal counts give
// class i % classes for sample i. [n] int64.
torch::Tensor sample_labels(int64_t n, const std::vector<int64_t>& counts);

// N standard-normal latents, a pure function of (seed, n, z_dim).
torch::Tensor sample_latents(uint64_t seed, int64_t n, int64_t z_dim);

// rows x cols latents: row r runs linearly from z0_r (column 0) to z1_r (the last column), with
// z0_r and z1_r from `seed`. Returned in row-major order, [rows * cols, z_dim].
torch::Tensor interpolation_latents(uint64_t seed, int64_t rows, int64_t cols, int64_t z_dim);

}  // namespace gantry::eval
