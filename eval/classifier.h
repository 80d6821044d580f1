// Implements: the feature network behind gantry's Fréchet distance: a small CNN classifier that
// gantry trains on the run's labelled training records, caches next to the data (or in the user's
// cache folder when that is read-only), and whose penultimate layer gives the features.
#pragma once

#include <torch/torch.h>

#include <ostream>
#include <string>

#include "datasets/dataset.h"

namespace gantry::eval {

struct FeatureNetImpl : torch::nn::Module {
  FeatureNetImpl(datasets::RecordShape shape, int64_t classes);
  torch::Tensor features(const torch::Tensor& x);  // [N, 128]
  torch::Tensor forward(const torch::Tensor& x);   // class logits
  torch::nn::Sequential body{nullptr};
  torch::nn::Linear head{nullptr};
};
TORCH_MODULE(FeatureNet);

struct Classifier {
  FeatureNet net{nullptr};
  double test_accuracy = 0;  // on the evaluation records
  std::string path;          // its cache file
  bool cached = false;       // read from the cache rather than trained now
};

struct LabelledImages {
  torch::Tensor images;  // [N, C, H, W] in [-1, 1]
  torch::Tensor labels;  // [N] int64
};

// The classifier cached at `cache_file`, or one trained now on `train` (`epochs` passes of Adam,
// seeded) and measured on `test`, then cached there atomically.
Classifier load_or_train_classifier(const LabelledImages& train, const LabelledImages& test, const std::string& cache_file,
                                    uint64_t seed, int epochs, std::ostream& log);

// Features of `images` in batches, without gradients, in eval mode.
torch::Tensor classifier_features(Classifier& c, const torch::Tensor& images, int64_t batch = 500);
// The classifier's label for each of `images` (the most likely class), likewise.
torch::Tensor classifier_labels(Classifier& c, const torch::Tensor& images, int64_t batch = 500);

}  // namespace gantry::eval
