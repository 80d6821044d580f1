// Implements: `gantry sample` and `gantry eval`: sample grids and z-interpolations from a
// checkpoint; the Parzen-window log-likelihood, the Fréchet distance in a trained classifier's
// features, and FID with a user's TorchScript Inception. Results are printed with their real-data
// reference and appended to <run.dir>/eval.jsonl.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <ostream>
#include <string>

#include "datasets/dataset.h"
#include "eval/generator.h"
#include "trainer/config.h"
#include "trainer/models.h"

namespace gantry::eval {

struct SampleOptions {
  std::string checkpoint, out;
  int64_t n = 64;
  uint64_t seed = 0;
  bool interpolate = false;
  int64_t rows = 8, cols = 10;
  std::string generator = "auto";  // auto | ema | raw (load_trained_gan)
  double truncation = 1;           // psi: G(psi z), the truncation trick; 1 samples the prior as trained
  // A conditional G's class for every sample; -1: a row per class (row r shows class r % classes).
  int64_t label = -1;
};

// Writes the grid; returns the number of images in it.
int64_t run_sample(const SampleOptions& options, std::ostream& out);

struct EvalOptions {
  std::string checkpoint;
  std::string metric;     // parzen | frechet | fid
  std::string data;       // the dataset's directory (empty: the run's data.path)
  std::string inception;  // fid: a TorchScript file mapping [N, 3, H, W] in [0, 1] to [N, F] features
  int64_t samples = 10000;
  uint64_t seed = 0;
  int classifier_epochs = 3;
  std::string generator = "auto";  // auto | ema | raw (load_trained_gan)
  // psi: G's samples are G(psi z), z ~ N(0, I), pulled toward the prior's mean as in BigGAN's and
  // StyleGAN's truncation trick (fidelity for variety). 1, the default, is G's distribution as
  // trained, the one that compares with other models' figures.
  double truncation = 1;
};

// Prints the result and appends it to <run.dir>/eval.jsonl; returns that JSON line.
nlohmann::json run_eval(const EvalOptions& options, std::ostream& out);

// eval.frechet_every's measurement during training, for gantry::train: the classifier of
// `--metric frechet` (trained now and cached when there is none; its progress goes to `log`) and
// the fit of the real evaluation records' features are made once; each call generates
// eval.frechet_samples images from fixed latents with G in eval mode, on G's device, and returns
// their Fréchet distance to that fit. Throws DataError (no labels) like `gantry eval`.
std::function<double(GanModels&)> make_frechet_probe(const Config& config, std::ostream& log);

// The run's records split for evaluation. data.holdout > 0: the split's first size - holdout
// records are `train`, its last `holdout` are `test`. Otherwise the train and test splits.
struct EvalData {
  datasets::DatasetSpec train_spec, test_spec;
  std::shared_ptr<const datasets::Dataset> train, test;
  int64_t train_begin = 0, test_begin = 0;  // where they start in their split's files (for labels)
};
EvalData open_eval_data(const Config& config, const std::string& path_override);

// Records [begin, begin + n) of `data` as [n, C, H, W] in [-1, 1].
torch::Tensor read_records(const datasets::Dataset& data, int64_t begin, int64_t n);

}  // namespace gantry::eval
