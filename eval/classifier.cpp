// Implements: the feature classifier (see classifier.h): training, accuracy, the cache file.
#include "eval/classifier.h"

#include <ATen/CPUGeneratorImpl.h>

#include <filesystem>
#include <functional>

namespace gantry::eval {
namespace fs = std::filesystem;
namespace nn = torch::nn;

FeatureNetImpl::FeatureNetImpl(datasets::RecordShape shape, int64_t classes) {
  const int64_t flat = 32 * (shape.height / 4) * (shape.width / 4);
  body = register_module("body", nn::Sequential(
      nn::Conv2d(nn::Conv2dOptions(shape.channels, 16, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
      nn::Conv2d(nn::Conv2dOptions(16, 32, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
      nn::Flatten(), nn::Linear(flat, 128), nn::ReLU()));
  head = register_module("head", nn::Linear(128, classes));
}

torch::Tensor FeatureNetImpl::features(const torch::Tensor& x) { return body->forward(x); }
torch::Tensor FeatureNetImpl::forward(const torch::Tensor& x) { return head->forward(features(x)); }

namespace {

double accuracy(FeatureNet& net, const LabelledImages& data) {
  torch::NoGradGuard no_grad;
  net->eval();
  int64_t right = 0;
  for (int64_t lo = 0; lo < data.images.size(0); lo += 500) {
    const torch::Tensor logits = net->forward(data.images.slice(0, lo, lo + 500));
    right += logits.argmax(1).eq(data.labels.slice(0, lo, lo + 500)).sum().item<int64_t>();
  }
  return static_cast<double>(right) / static_cast<double>(std::max<int64_t>(1, data.images.size(0)));
}

datasets::RecordShape shape_of(const torch::Tensor& images) { return {images.size(1), images.size(2), images.size(3)}; }

// One intra-op thread while it lives; then the caller's count again, also after an exception.
struct OneThread {
  const int caller = at::get_num_threads();
  OneThread() { at::set_num_threads(1); }
  ~OneThread() { at::set_num_threads(caller); }
  OneThread(const OneThread&) = delete;
  OneThread& operator=(const OneThread&) = delete;
};

// Seeds LibTorch's default CPU generator (which the network's initialisation draws from) and
// gives the caller's stream back afterwards: a Fréchet probe during training runs on rank 0 only,
// and moving rank 0's generator would make the ranks' saved generator states, and a resumed run,
// differ from an uninterrupted one.
class SeededDefaultGenerator {
 public:
  explicit SeededDefaultGenerator(uint64_t seed) : saved_(generator_.get_state()) { generator_.set_current_seed(seed); }
  ~SeededDefaultGenerator() { generator_.set_state(saved_); }
  SeededDefaultGenerator(const SeededDefaultGenerator&) = delete;
  SeededDefaultGenerator& operator=(const SeededDefaultGenerator&) = delete;

 private:
  at::Generator generator_ = at::detail::getDefaultCPUGenerator();
  torch::Tensor saved_;
};

}  // namespace

Classifier load_or_train_classifier(const LabelledImages& train, const LabelledImages& test, const std::string& cache_file,
                                    uint64_t seed, int epochs, std::ostream& log) {
  Classifier c;
  c.path = cache_file;
  const int64_t classes = std::max(train.labels.max().item<int64_t>(), test.labels.max().item<int64_t>()) + 1;
  {
    const SeededDefaultGenerator seeded(seed);
    c.net = FeatureNet(shape_of(train.images), classes);
  }
  if (fs::exists(cache_file)) {
    try {
      torch::serialize::InputArchive archive;
      archive.load_from(cache_file);
      c.net->load(archive);
    } catch (const c10::Error& e) {
      // Truncated, from another gantry's network, or not an archive at all: name the file, and
      // how to get a good one, rather than LibTorch's backtrace.
      throw std::runtime_error(cache_file + ": cannot read this cached feature classifier (" +
                               e.what_without_backtrace() + "); delete it and gantry trains the classifier again");
    }
    c.cached = true;
  } else {
    log << "gantry: training the feature classifier on " << train.images.size(0) << " labelled records (" << epochs
        << " epochs); it is cached in " << cache_file << "\n";
    // One intra-op thread, whatever the caller's count: reductions split across threads round
    // differently, and training amplifies that, so the cached classifier (and every Fréchet
    // distance measured with it) would depend on --threads or the training run's ranks per node.
    const OneThread one_thread;
    torch::optim::Adam opt(c.net->parameters(), torch::optim::AdamOptions(1e-3));
    auto gen = at::detail::createCPUGenerator(seed);
    constexpr int64_t kBatch = 128;
    for (int epoch = 0; epoch < epochs; ++epoch) {
      c.net->train();
      const torch::Tensor order = torch::randperm(train.images.size(0), gen, torch::kLong);
      for (int64_t lo = 0; lo < order.size(0); lo += kBatch) {
        const torch::Tensor idx = order.slice(0, lo, lo + kBatch);
        opt.zero_grad();
        torch::nn::functional::cross_entropy(c.net->forward(train.images.index_select(0, idx)),
                                             train.labels.index_select(0, idx)).backward();
        opt.step();
      }
    }
    fs::create_directories(fs::path(cache_file).parent_path());
    torch::serialize::OutputArchive archive;
    c.net->save(archive);
    const std::string tmp = cache_file + ".tmp";
    archive.save_to(tmp);
    fs::rename(tmp, cache_file);
  }
  c.test_accuracy = accuracy(c.net, test);
  c.net->eval();
  return c;
}

namespace {

// `f` over `images` in batches, without gradients, with the network in eval mode.
torch::Tensor batched(Classifier& c, const torch::Tensor& images, int64_t batch,
                      const std::function<torch::Tensor(const torch::Tensor&)>& f) {
  torch::NoGradGuard no_grad;
  c.net->eval();
  std::vector<torch::Tensor> parts;
  for (int64_t lo = 0; lo < images.size(0); lo += batch) parts.push_back(f(images.slice(0, lo, lo + batch)));
  return torch::cat(parts);
}

}  // namespace

torch::Tensor classifier_features(Classifier& c, const torch::Tensor& images, int64_t batch) {
  return batched(c, images, batch, [&](const torch::Tensor& x) { return c.net->features(x); });
}

torch::Tensor classifier_labels(Classifier& c, const torch::Tensor& images, int64_t batch) {
  return batched(c, images, batch, [&](const torch::Tensor& x) { return c.net->forward(x).argmax(1); });
}

}  // namespace gantry::eval
