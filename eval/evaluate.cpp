// Implements: the sample and eval commands (see evaluate.h), top to bottom: load the checkpoint
// and the run's config, open the evaluation records, generate, measure, print, record.
#include "eval/evaluate.h"

#include <torch/script.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <numeric>
#include <sstream>

#include "eval/classifier.h"
#include "eval/generator.h"
#include "eval/metrics.h"
#include "trainer/device.h"
#include "trainer/images.h"
#include "trainer/latent.h"

namespace gantry::eval {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

EvalData open_eval_data(const Config& config, const std::string& path_override) {
  if (config.data.name == "gaussian1d") throw UsageError("eval works on image datasets, not gaussian1d");
  EvalData d;
  datasets::DatasetSpec spec;
  spec.name = config.data.name;
  spec.path = path_override.empty() ? config.data.path : path_override;
  spec.cache_dir = config.data.cache_dir;
  spec.seed = static_cast<uint64_t>(config.run.seed);
  spec.resolution = config.data.resolution;
  spec.channels = config.data.channels;
  if (config.data.holdout > 0) {
    spec.split = config.data.split;
    std::shared_ptr<const datasets::Dataset> all = datasets::open_dataset(spec);
    const int64_t cut = all->size() - config.data.holdout;
    d.train = datasets::record_range(all, 0, cut);
    d.test = datasets::record_range(all, cut, all->size());
    d.train_spec = d.test_spec = spec;
    d.test_begin = cut;
  } else {
    d.train_spec = d.test_spec = spec;
    d.train_spec.split = "train";
    d.test_spec.split = "test";
    d.train = datasets::open_dataset(d.train_spec);
    d.test = datasets::open_dataset(d.test_spec);
  }
  return d;
}

torch::Tensor read_records(const datasets::Dataset& data, int64_t begin, int64_t n) {
  const auto s = data.shape();
  torch::Tensor out = torch::empty({n, s.channels, s.height, s.width});
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), begin);
  data.read(idx.data(), n, out.data_ptr<float>());
  return out;
}

namespace {

// The feature classifier's seed: fixed, not --seed or run.seed, so that every Fréchet distance on
// a dataset is measured in the same features whichever command trained the cached network.
constexpr uint64_t kClassifierSeed = 0;

std::string weights(const TrainedGan& gan) {
  return gan.generator == "ema" ? "G's moving average" : "G's own weights";
}

void check_truncation(double psi) {
  if (std::isfinite(psi) && psi >= 0) return;
  std::ostringstream s;
  s << "--truncation must be a number >= 0, got " << psi;
  throw UsageError(s.str());
}

// ", truncation psi 0.7" when the latents are scaled, else nothing.
std::string truncation_note(double psi) {
  if (psi == 1) return "";
  std::ostringstream s;
  s << ", truncation psi " << psi;
  return s.str();
}

// Once the inputs are known good (a usage error stays one line): OpenBLAS on old kernels.
void warn_if_blas_is_slow() {
  if (const std::string w = blas_kernel_warning(); !w.empty()) std::cerr << "gantry: warning: " << w << "\n";
}

}  // namespace

int64_t run_sample(const SampleOptions& o, std::ostream& out) {
  if (o.out.empty()) throw UsageError("sample needs --out FILE.png");
  check_truncation(o.truncation);
  TrainedGan gan = load_trained_gan(o.checkpoint, o.generator);
  const int64_t classes = gan.models.classes;
  if (o.label >= 0 && classes == 0)
    throw UsageError("--class: the G of " + gan.checkpoint +
                     " is not conditional (its run had model.conditional: false)");
  if (o.label >= classes && classes > 0)
    throw UsageError("--class must be 0.." + std::to_string(classes - 1) + ", got " + std::to_string(o.label));
  warn_if_blas_is_slow();
  if (gan.shape.height == 1) throw UsageError("sample draws image grids; " + gan.config.data.name + " has no images");
  const int64_t z_dim = gan.config.model.z_dim;
  // A conditional G without --class: a row per class, each row one class throughout.
  const bool row_per_class = classes > 0 && o.label < 0;
  int64_t rows = 0, cols = 0;
  torch::Tensor z;
  if (o.interpolate) {
    if (o.rows < 1 || o.cols < 2) throw UsageError("--interpolate needs --rows >= 1 and --cols >= 2");
    rows = o.rows;
    cols = o.cols;
    z = interpolation_latents(o.seed, rows, cols, z_dim);
  } else {
    if (o.n < 1) throw UsageError("--n must be at least 1");
    if (row_per_class) {
      rows = classes;
      cols = (o.n + classes - 1) / classes;
    } else {
      cols = static_cast<int64_t>(std::ceil(std::sqrt(static_cast<double>(o.n))));
      rows = (o.n + cols - 1) / cols;
    }
    z = sample_latents(o.seed, row_per_class ? rows * cols : o.n, z_dim);
  }
  torch::Tensor labels;
  if (row_per_class) labels = grid_labels(rows, cols, classes);
  else if (classes > 0) labels = torch::full({z.size(0)}, o.label, torch::kInt64);
  write_image_grid(generate(gan, z * o.truncation, labels), rows, cols, o.out);
  out << "gantry: " << z.size(0) << " samples (" << rows << " x " << cols << (o.interpolate ? ", interpolated" : "")
      << (row_per_class ? ", a row per class" : "") << (o.label >= 0 ? ", class " + std::to_string(o.label) : "")
      << ") of " << gan.checkpoint << " (step " << gan.step << ", " << weights(gan) << truncation_note(o.truncation)
      << ") in " << o.out << "\n";
  return z.size(0);
}

namespace {

std::string fixed(double v, int digits) {
  char s[64];
  std::snprintf(s, sizeof s, "%.*f", digits, v);
  return s;
}

torch::Tensor to_unit(const torch::Tensor& x) { return (x + 1) * 0.5; }  // [-1, 1] -> [0, 1]

// A conditional G's evaluation labels: n, stratified at the training records' class frequencies
// (the prior G was trained with). Undefined for an unconditional G.
torch::Tensor evaluation_labels(int64_t classes, const EvalData& data, int64_t n) {
  if (classes == 0) return torch::Tensor();
  const std::vector<int64_t> all = datasets::read_labels(data.train_spec);
  std::vector<int64_t> counts(static_cast<size_t>(classes), 0);
  for (int64_t i = data.train_begin; i < data.train_begin + data.train->size(); ++i) {
    const int64_t y = all.at(static_cast<size_t>(i));
    if (y < 0 || y >= classes)
      throw datasets::DataError(data.train_spec.name + " " + data.train_spec.split + ": label " + std::to_string(y) +
                                " of record " + std::to_string(i) + " is not one of G's " +
                                std::to_string(classes) + " classes");
    ++counts[static_cast<size_t>(y)];
  }
  return sample_labels(n, counts);
}

// --samples images of G in [-1, 1], from --seed's latents scaled by --truncation; a conditional
// G's of `labels` (evaluation_labels).
torch::Tensor samples_of(TrainedGan& gan, const torch::Tensor& labels, const EvalOptions& o) {
  return generate(gan, sample_latents(o.seed, o.samples, gan.config.model.z_dim) * o.truncation, labels);
}

// Parzen: sigma on the even-numbered evaluation records, the log-likelihood on the odd-numbered
// ones. Interleaved, not the first and second halves: a file's records need not be in random
// order (MNIST's test set holds 5,000 digits of NIST's cleaner writers, then 5,000 of the others),
// and sigma must be chosen on records like those it is scored on.
nlohmann::json parzen(TrainedGan& gan, const EvalData& data, const torch::Tensor& labels, const EvalOptions& o,
                      std::ostream& out) {
  const int64_t n = data.test->size();
  if (n < 2) throw UsageError("parzen needs at least 2 evaluation records");
  const torch::Tensor records = to_unit(read_records(*data.test, 0, n));
  const torch::Tensor valid = records.slice(0, 0, n, 2), test = records.slice(0, 1, n, 2);
  const std::vector<double> grid = log_grid(0.02, 2.0, 61);
  const auto t0 = Clock::now();
  const torch::Tensor samples = to_unit(samples_of(gan, labels, o));
  const ParzenResult g = parzen_evaluate(valid, test, samples, grid);
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  const int64_t n_real = std::min(o.samples, data.train->size());
  const ParzenResult real = parzen_evaluate(valid, test, to_unit(read_records(*data.train, 0, n_real)), grid);
  out << "parzen log-likelihood: " << fixed(g.mean, 1) << " ± " << fixed(g.std_error, 1) << " nats per test example ("
      << g.centres << " samples of G, sigma " << fixed(g.sigma, 4) << " chosen on " << valid.size(0)
      << " validation records, " << g.test_points << " test records, pixels in [0, 1]; " << fixed(seconds, 1) << " s)\n"
      << "parzen, real training data as the samples: " << fixed(real.mean, 1) << " ± " << fixed(real.std_error, 1)
      << " (" << real.centres << " records, sigma " << fixed(real.sigma, 4) << ")\n";
  nlohmann::json result = {{"parzen_ll", g.mean}, {"parzen_se", g.std_error}, {"sigma", g.sigma}, {"samples", g.centres},
                           {"validation_records", valid.size(0)}, {"test_records", g.test_points}, {"seconds", seconds},
                           {"real_parzen_ll", real.mean}, {"real_parzen_se", real.std_error}, {"real_sigma", real.sigma},
                           {"real_records", real.centres}};
  if (n_real < g.centres) {
    // A Parzen estimate grows with its number of centres, so G is also scored with as many
    // samples as the training data gives the reference: the like-for-like comparison.
    const ParzenResult matched = parzen_evaluate(valid, test, samples.slice(0, 0, n_real), grid);
    out << "parzen, G with as many samples as the reference (" << n_real << "): " << fixed(matched.mean, 1) << " ± "
        << fixed(matched.std_error, 1) << " (sigma " << fixed(matched.sigma, 4) << ")\n";
    result["matched_parzen_ll"] = matched.mean;
    result["matched_parzen_se"] = matched.std_error;
    result["matched_sigma"] = matched.sigma;
    result["matched_samples"] = n_real;
  }
  return result;
}

// The features frechet_from fitted: of the test records, G's samples, and the first rows of the
// training records (as many as the floor used).
struct FeatureSets {
  torch::Tensor test, fake, real;
};

// Features of real test, generated and real training images; the distances between their fits.
// `kept`, when given, receives the features.
nlohmann::json frechet_from(const std::function<torch::Tensor(const torch::Tensor&)>& features,
                            const torch::Tensor& fake_images, const EvalData& data, const EvalOptions& o,
                            const std::string& name, std::ostream& out, FeatureSets* kept = nullptr) {
  const int64_t n_test = data.test->size();
  const int64_t n_real = std::min(data.train->size(), std::max(n_test, o.samples));
  FeatureSets f{features(read_records(*data.test, 0, n_test)), features(fake_images),
                features(read_records(*data.train, 0, n_real))};
  const GaussianFit test = fit_gaussian(f.test), fake = fit_gaussian(f.fake), real = fit_gaussian(f.real);
  if (kept) *kept = std::move(f);
  const FrechetTerms terms = frechet_terms(fake, test), floor_terms = frechet_terms(real, test);
  const double fd = terms.distance(), floor = floor_terms.distance();
  out << name << ": " << fixed(fd, 3) << " (" << o.samples << " samples of G vs " << n_test << " test records)\n"
      << name << " floor, real training vs real test: " << fixed(floor, 3) << " (" << n_real << " vs " << n_test
      << " records); ratio " << fixed(fd / floor, 2) << "\n"
      << name << " parts: " << fixed(terms.mean, 3) << " between the means and " << fixed(terms.covariance, 3)
      << " in the covariances (floor: " << fixed(floor_terms.mean, 3) << " and " << fixed(floor_terms.covariance, 3)
      << "); total feature variance of G's samples " << fixed(terms.variance_a, 2) << ", of the test records "
      << fixed(terms.variance_b, 2) << " (" << fixed(terms.variance_a / terms.variance_b, 3) << "x), of the training records "
      << fixed(floor_terms.variance_a, 2) << "\n";
  return {{name, fd}, {name + "_floor", floor}, {"ratio", fd / floor}, {"samples", o.samples},
          {"test_records", n_test}, {"real_records", n_real},
          {name + "_mean_term", terms.mean}, {name + "_covariance_term", terms.covariance},
          {name + "_floor_mean_term", floor_terms.mean}, {name + "_floor_covariance_term", floor_terms.covariance},
          {"feature_variance", {{"fake", terms.variance_a}, {"test", terms.variance_b}, {"real", floor_terms.variance_a}}}};
}

// Prints G's class shares beside the real ones and returns them as JSON.
nlohmann::json coverage_report(const ClassCoverage& c, std::ostream& out) {
  const int64_t classes = static_cast<int64_t>(c.fake_share.size());
  out << "classes of G's samples (the classifier's labels), % of samples, the evaluation records' in brackets:\n ";
  for (int64_t k = 0; k < classes; ++k)
    out << " " << k << ": " << fixed(100 * c.fake_share[k], 1) << " (" << fixed(100 * c.real_share[k], 1) << ")";
  out << "\nclasses covered: " << c.covered << " of " << c.classes << "; KL(G || real) of the class shares "
      << (std::isfinite(c.kl) ? fixed(c.kl, 4) + " nats" : "infinite (G draws a class the evaluation records lack)")
      << "\n";
  // JSON has no infinity: an infinite KL is written as null.
  return {{"fake_share", c.fake_share}, {"real_share", c.real_share}, {"classes", c.classes}, {"covered", c.covered},
          {"kl", std::isfinite(c.kl) ? nlohmann::json(c.kl) : nlohmann::json(nullptr)}};
}

// The labels of records begin .. begin + n - 1 of `spec`'s label file: [n] int64.
torch::Tensor labelled_classes(const datasets::DatasetSpec& spec, int64_t begin, int64_t n) {
  const std::vector<int64_t> all = datasets::read_labels(spec);
  if (static_cast<int64_t>(all.size()) < begin + n)
    throw datasets::DataError(spec.name + " " + spec.split + ": " + std::to_string(all.size()) + " labels for " +
                              std::to_string(begin + n) + " images");
  return torch::tensor(std::vector<int64_t>(all.begin() + begin, all.begin() + begin + n), torch::kLong);
}

LabelledImages labelled(const datasets::Dataset& d, const datasets::DatasetSpec& spec, int64_t begin) {
  return {read_records(d, 0, d.size()), labelled_classes(spec, begin, d.size())};
}

// A conditional G's distance within each class: its samples drawn for class c against the test
// records of class c, beside the same floor (training records of class c against them). Shows
// whether the distance is spread over the classes or held by a few. Printed as a table and
// returned as JSON rows (NaN, for a class too rare to fit, as null).
nlohmann::json per_class_report(const FeatureSets& f, const torch::Tensor& fake_labels, const torch::Tensor& test_labels,
                                const torch::Tensor& real_labels, int64_t classes, std::ostream& out) {
  const std::vector<FrechetTerms> g = frechet_per_class(f.fake, fake_labels, f.test, test_labels, classes);
  const std::vector<FrechetTerms> floor = frechet_per_class(f.real, real_labels, f.test, test_labels, classes);
  const auto number = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr); };
  const torch::Tensor fake_counts = torch::bincount(fake_labels, {}, classes);
  const torch::Tensor test_counts = torch::bincount(test_labels, {}, classes);
  out << "within each class (G's samples drawn for it vs its test records; floor: its training records):\n"
      << "  class  samples  test  distance  floor  ratio  (means + covariances)  variance G / test\n";
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t k = 0; k < classes; ++k) {
    const FrechetTerms& a = g[static_cast<size_t>(k)];
    const FrechetTerms& b = floor[static_cast<size_t>(k)];
    const int64_t n_fake = fake_counts[k].item<int64_t>(), n_test = test_counts[k].item<int64_t>();
    out << "  " << std::setw(5) << k << "  " << std::setw(7) << n_fake << "  " << std::setw(4) << n_test << "  "
        << std::setw(8) << fixed(a.distance(), 3) << "  " << std::setw(5) << fixed(b.distance(), 3) << "  "
        << std::setw(5) << fixed(a.distance() / b.distance(), 2) << "  (" << fixed(a.mean, 3) << " + "
        << fixed(a.covariance, 3) << ")  " << fixed(a.variance_a / a.variance_b, 3) << "\n";
    rows.push_back({{"class", k}, {"samples", n_fake}, {"test_records", n_test}, {"distance", number(a.distance())},
                    {"floor", number(b.distance())}, {"mean_term", number(a.mean)},
                    {"covariance_term", number(a.covariance)}, {"variance", number(a.variance_a)},
                    {"test_variance", number(a.variance_b)}});
  }
  return rows;
}

std::string classifier_cache(const EvalData& data, int epochs) {
  // Everything the network depends on is in the name (its seed is fixed), so a cached file is
  // always the network that would be trained now.
  const std::string file = "gantry-classifier-" + data.train_spec.name + "-" + data.train_spec.split + "-" +
                           std::to_string(data.train_begin) + "-" + std::to_string(data.train->size()) + "-e" +
                           std::to_string(epochs) + ".pt";
  const fs::path dir = fs::absolute(data.train_spec.path);
  if (!data.train_spec.cache_dir.empty()) return (fs::path(data.train_spec.cache_dir) / file).string();
  // Not in a folder marked read-only, even for root (who may write anywhere), nor under /usr.
  const bool writable = ::access(dir.c_str(), W_OK) == 0 &&
                        (fs::status(dir).permissions() & fs::perms::owner_write) != fs::perms::none;
  if (dir.string().rfind("/usr/", 0) != 0 && writable) return (dir / file).string();
  const char* home = std::getenv("HOME");
  return (fs::path(home ? home : ".") / ".cache" / "gantry" / file).string();
}

// "<cache file> (cached|trained now), test accuracy NN.NN %"
std::string describe(const Classifier& c) {
  return c.path + (c.cached ? " (cached)" : " (trained now)") + ", test accuracy " + fixed(100 * c.test_accuracy, 2) +
         " %";
}

}  // namespace

std::function<double(GanModels&)> make_frechet_probe(const Config& config, std::ostream& log) {
  const EvalData data = open_eval_data(config, "");
  log << "gantry: eval.frechet_every: Fréchet distance every " << config.eval.frechet_every << " steps, "
      << config.eval.frechet_samples << " samples of G against " << data.test->size() << " records of "
      << data.test->name() << "\n";
  auto classifier = std::make_shared<Classifier>(
      load_or_train_classifier(labelled(*data.train, data.train_spec, data.train_begin),
                               labelled(*data.test, data.test_spec, data.test_begin),
                               classifier_cache(data, EvalOptions{}.classifier_epochs), kClassifierSeed,
                               EvalOptions{}.classifier_epochs, log));
  log << "gantry: feature classifier " << describe(*classifier) << "\n";
  auto test = std::make_shared<GaussianFit>(
      fit_gaussian(classifier_features(*classifier, read_records(*data.test, 0, data.test->size()))));
  const torch::Tensor z = sample_latents(static_cast<uint64_t>(config.run.seed), config.eval.frechet_samples,
                                         config.model.z_dim);
  const torch::Tensor labels = evaluation_labels(label_classes(config), data, z.size(0));
  return [classifier, test, z, labels](GanModels& models) {
    const bool training = models.g->is_training();
    models.g->eval();
    const torch::Tensor images = generate(models, z, labels);
    models.g->train(training);
    return frechet_distance(fit_gaussian(classifier_features(*classifier, images)), *test);
  };
}

nlohmann::json run_eval(const EvalOptions& o, std::ostream& out) {
  if (o.metric != "parzen" && o.metric != "frechet" && o.metric != "fid")
    throw UsageError("--metric must be parzen, frechet or fid, got '" + o.metric + "'");
  if (o.samples < 2) throw UsageError("--samples must be at least 2");
  check_truncation(o.truncation);
  if (o.metric == "fid" && o.inception.empty()) throw UsageError("--metric fid needs --inception FILE (TorchScript)");
  TrainedGan gan = load_trained_gan(o.checkpoint, o.generator);
  const EvalData data = open_eval_data(gan.config, o.data);
  warn_if_blas_is_slow();
  out << "gantry: " << o.metric << " of " << gan.checkpoint << " (step " << gan.step << ", " << weights(gan)
      << truncation_note(o.truncation) << "), "
      << data.test->name()
      << ": " << data.train->size() << " training and " << data.test->size() << " evaluation records\n";
  // A conditional G's sample labels, once for the command (they read the training label file).
  const torch::Tensor labels = evaluation_labels(gan.models.classes, data, o.samples);
  nlohmann::json result;
  if (o.metric == "parzen") {
    result = parzen(gan, data, labels, o, out);
  } else if (o.metric == "frechet") {
    const LabelledImages test = labelled(*data.test, data.test_spec, data.test_begin);
    Classifier c = load_or_train_classifier(labelled(*data.train, data.train_spec, data.train_begin), test,
                                            classifier_cache(data, o.classifier_epochs), kClassifierSeed,
                                            o.classifier_epochs, out);
    out << "feature classifier: " << describe(c) << "\n";
    const torch::Tensor fake = samples_of(gan, labels, o);
    FeatureSets features;
    result = frechet_from([&](const torch::Tensor& x) { return classifier_features(c, x); }, fake, data, o,
                          "frechet_distance", out, &features);
    result["classifier_accuracy"] = c.test_accuracy;
    result["classifier"] = c.path;
    const torch::Tensor fake_labels = classifier_labels(c, fake);
    result["class_coverage"] =
        coverage_report(class_coverage(fake_labels, test.labels, c.net->head->options.out_features()), out);
    if (gan.models.classes > 0) {  // a conditional G: does it draw the class it is asked for?
      const double agree = fake_labels.eq(labels).to(torch::kFloat64).mean().item<double>();
      out << "conditional G: the classifier labels " << fixed(100 * agree, 1) << " % of G's samples with the class "
          << "they were drawn for (its own accuracy on the evaluation records: " << fixed(100 * c.test_accuracy, 2)
          << " %)\n";
      result["label_agreement"] = agree;
      const torch::Tensor train_labels = labelled_classes(data.train_spec, data.train_begin, features.real.size(0));
      result["per_class"] = per_class_report(features, labels, test.labels, train_labels, gan.models.classes, out);
    }
  } else {
    if (!fs::exists(o.inception)) throw UsageError("--inception " + o.inception + ": not found");
    torch::jit::script::Module inception;
    try {
      inception = torch::jit::load(o.inception);
    } catch (const c10::Error& e) {
      throw UsageError("--inception " + o.inception + ": not a TorchScript module LibTorch can load (" +
                       e.what_without_backtrace() + ")");
    }
    inception.eval();
    auto features = [&](const torch::Tensor& images) {
      torch::NoGradGuard no_grad;
      std::vector<torch::Tensor> parts;
      for (int64_t lo = 0; lo < images.size(0); lo += 50) {
        torch::Tensor x = to_unit(images.slice(0, lo, lo + 50));
        if (x.size(1) == 1) x = x.expand({-1, 3, -1, -1}).contiguous();
        c10::IValue y;
        try {
          y = inception.forward({x});
        } catch (const c10::Error& e) {
          throw UsageError("--inception " + o.inception + ": forward failed on images [" + std::to_string(x.size(0)) +
                           ", 3, " + std::to_string(x.size(2)) + ", " + std::to_string(x.size(3)) +
                           "] in [0, 1] (" + e.what_without_backtrace() + ")");
        }
        if (!y.isTensor() || y.toTensor().dim() < 2 || y.toTensor().size(0) != x.size(0))
          throw UsageError("--inception " + o.inception + ": forward must return one tensor [N, F] of features for " +
                           "N images, got " + (y.isTensor() ? "a tensor of shape " + c10::str(y.toTensor().sizes())
                                                            : std::string("a ") + y.tagKind()));
        parts.push_back(y.toTensor().flatten(1));
      }
      return torch::cat(parts);
    };
    result = frechet_from(features, samples_of(gan, labels, o), data, o, "fid", out);
    result["inception"] = o.inception;
  }
  result["metric"] = o.metric;
  result["checkpoint"] = gan.checkpoint;
  result["step"] = gan.step;
  result["generator"] = gan.generator;
  result["seed"] = o.seed;
  result["truncation"] = o.truncation;
  result["time"] = static_cast<int64_t>(std::time(nullptr));
  std::ofstream log(fs::path(gan.run_dir) / "eval.jsonl", std::ios::app);
  log << result.dump() << "\n";
  if (!log) throw std::runtime_error("cannot append to " + (fs::path(gan.run_dir) / "eval.jsonl").string());
  return result;
}

}  // namespace gantry::eval
