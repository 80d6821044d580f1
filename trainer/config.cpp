// Implements: the config schema (one table of typed fields with their checks), YAML parsing with
// --set overrides, unknown-key detection with suggestions, and the resolved-config dump.
#include "trainer/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <functional>
#include <set>
#include <sstream>

namespace gantry {
namespace {

// One settable key: how to read it from YAML into the Config, check it, and write it back.
struct Field {
  std::string key;
  std::function<void(Config&, const YAML::Node&)> set;  // throws std::string on a type error
  std::function<std::string(const Config&)> check;      // "" when valid
  std::function<YAML::Node(const Config&)> get;
};

template <typename T>
T parse_scalar(const YAML::Node& node);

template <>
int64_t parse_scalar<int64_t>(const YAML::Node& node) {
  if (!node.IsScalar()) throw std::string("expected an integer");
  const std::string& s = node.Scalar();
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used, 10);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw std::string("expected an integer, got '" + s + "'");
}

template <>
double parse_scalar<double>(const YAML::Node& node) {
  if (!node.IsScalar()) throw std::string("expected a number");
  const std::string& s = node.Scalar();
  try {
    size_t used = 0;
    const double v = std::stod(s, &used);
    if (used == s.size()) return v;
  } catch (const std::exception&) {
  }
  throw std::string("expected a number, got '" + s + "'");
}

template <>
bool parse_scalar<bool>(const YAML::Node& node) {
  if (node.IsScalar()) {
    const std::string& s = node.Scalar();
    if (s == "true" || s == "True" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "False" || s == "no" || s == "off") return false;
    throw std::string("expected true or false, got '" + s + "'");
  }
  throw std::string("expected true or false");
}

template <>
std::string parse_scalar<std::string>(const YAML::Node& node) {
  if (!node.IsScalar()) throw std::string("expected a string");
  return node.Scalar();
}

template <>
std::vector<int64_t> parse_scalar<std::vector<int64_t>>(const YAML::Node& node) {
  if (!node.IsSequence()) throw std::string("expected a list of integers, like [256, 512]");
  std::vector<int64_t> out;
  for (const auto& item : node) out.push_back(parse_scalar<int64_t>(item));
  return out;
}

template <typename T>
using Check = std::function<std::string(const T&)>;

template <typename Access>
Field make_field(std::string key, Access access,
                 Check<std::remove_reference_t<decltype(access(std::declval<Config&>()))>> check = {}) {
  using T = std::remove_reference_t<decltype(access(std::declval<Config&>()))>;
  Field f;
  f.key = std::move(key);
  f.set = [access](Config& c, const YAML::Node& n) { access(c) = parse_scalar<T>(n); };
  f.check = [access, check](const Config& c) {
    return check ? check(access(const_cast<Config&>(c))) : std::string();
  };
  f.get = [access](const Config& c) { return YAML::Node(access(const_cast<Config&>(c))); };
  return f;
}

#define GANTRY_FIELD(key, member, ...) \
  make_field(key, [](Config& c) -> auto& { return c.member; }, ##__VA_ARGS__)

template <typename T>
Check<T> at_least(T lo) {
  return [lo](const T& v) {
    std::ostringstream s;
    if (v < lo) s << "must be at least " << lo << ", got " << v;
    return s.str();
  };
}

template <typename T>
Check<T> between(T lo, T hi) {
  return [lo, hi](const T& v) {
    std::ostringstream s;
    if (v < lo || v > hi) s << "must be in [" << lo << ", " << hi << "], got " << v;
    return s.str();
  };
}

Check<double> in_range(double lo, double hi, bool open_high = false) {
  return [=](const double& v) {
    std::ostringstream s;
    if (v < lo || v > hi || (open_high && v == hi))
      s << "must be in [" << lo << ", " << hi << (open_high ? ")" : "]") << ", got " << v;
    return s.str();
  };
}

// (0, 1]: a share of something that may not be empty.
Check<double> fraction() {
  return [](const double& v) {
    std::ostringstream s;
    if (!(v > 0 && v <= 1)) s << "must be in (0, 1], got " << v;
    return s.str();
  };
}

Check<double> positive() {
  return [](const double& v) {
    std::ostringstream s;
    if (!(v > 0)) s << "must be positive, got " << v;
    return s.str();
  };
}

Check<std::string> one_of(std::vector<std::string> allowed) {
  return [allowed](const std::string& v) {
    if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) return std::string();
    std::string list;
    for (const auto& a : allowed) list += (list.empty() ? "" : ", ") + a;
    return "must be one of " + list + ", got '" + v + "'";
  };
}

Check<double> probability_below_one() {
  return [](const double& v) {
    std::ostringstream s;
    if (!(v >= 0 && v < 1)) s << "must be in [0, 1), got " << v;
    return s.str();
  };
}

Check<std::vector<int64_t>> positive_widths() {
  return [](const std::vector<int64_t>& v) {
    if (v.empty()) return std::string("must list at least one layer width");
    for (auto w : v)
      if (w <= 0) return "layer widths must be positive, got " + std::to_string(w);
    return std::string();
  };
}

const std::vector<Field>& schema() {
  static const std::vector<Field> fields = {
      GANTRY_FIELD("run.dir", run.dir,
                   [](const std::string& v) { return v.empty() ? "must not be empty" : ""; }),
      GANTRY_FIELD("run.seed", run.seed, at_least<int64_t>(0)),
      GANTRY_FIELD("data.name", data.name, one_of({"mnist", "fashion-mnist", "cifar10", "images", "gaussian1d"})),
      GANTRY_FIELD("data.path", data.path),
      GANTRY_FIELD("data.split", data.split, one_of({"train", "test"})),
      GANTRY_FIELD("data.gaussian.mean", data.gaussian.mean),
      GANTRY_FIELD("data.gaussian.std", data.gaussian.std, positive()),
      GANTRY_FIELD("data.cache_dir", data.cache_dir),
      GANTRY_FIELD("data.workers", data.workers, at_least<int64_t>(1)),
      GANTRY_FIELD("data.prefetch", data.prefetch, at_least<int64_t>(0)),
      GANTRY_FIELD("data.hflip", data.hflip),
      GANTRY_FIELD("data.holdout", data.holdout, at_least<int64_t>(0)),
      GANTRY_FIELD("data.resolution", data.resolution,
                   [](const int64_t& v) { return v < 1 || v > 4096 ? "must be 1..4096, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("data.channels", data.channels,
                   [](const int64_t& v) { return v == 1 || v == 3 ? "" : "must be 1 or 3, got " + std::to_string(v); }),
      GANTRY_FIELD("model.arch", model.arch, one_of({"mlp", "dcgan"})),
      GANTRY_FIELD("model.z_dim", model.z_dim, at_least<int64_t>(1)),
      GANTRY_FIELD("model.conditional", model.conditional),
      GANTRY_FIELD("model.mlp.g_hidden", model.mlp.g_hidden, positive_widths()),
      GANTRY_FIELD("model.mlp.d_hidden", model.mlp.d_hidden, positive_widths()),
      GANTRY_FIELD("model.mlp.d_dropout", model.mlp.d_dropout, probability_below_one()),
      GANTRY_FIELD("model.mlp.d_input_dropout", model.mlp.d_input_dropout, probability_below_one()),
      GANTRY_FIELD("model.mlp.d_maxout", model.mlp.d_maxout,
                   [](const int64_t& v) { return v < 1 || v > 64 ? "must be 1..64, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("model.dcgan.g_width", model.dcgan.g_width, at_least<int64_t>(1)),
      GANTRY_FIELD("model.dcgan.g_blocks", model.dcgan.g_blocks,
                   [](const int64_t& v) { return v < 0 || v > 8 ? "must be 0..8, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("model.dcgan.g_class_norm", model.dcgan.g_class_norm),
      GANTRY_FIELD("model.dcgan.d_width", model.dcgan.d_width, at_least<int64_t>(1)),
      GANTRY_FIELD("model.dcgan.d_blocks", model.dcgan.d_blocks,
                   [](const int64_t& v) { return v < 0 || v > 8 ? "must be 0..8, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("model.dcgan.d_mbstd_group", model.dcgan.d_mbstd_group,
                   [](const int64_t& v) { return v < 0 || v > 64 ? "must be 0..64, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("model.dcgan.d_norm", model.dcgan.d_norm, one_of({"auto", "batch", "spectral", "none"})),
      GANTRY_FIELD("train.steps", train.steps, at_least<int64_t>(1)),
      GANTRY_FIELD("train.batch_size", train.batch_size, at_least<int64_t>(1)),
      GANTRY_FIELD("train.d_steps", train.d_steps, at_least<int64_t>(1)),
      GANTRY_FIELD("train.loss", train.loss, one_of({"minimax", "non-saturating", "wgan-gp", "hinge"})),
      GANTRY_FIELD("train.gp_weight", train.gp_weight, at_least(0.0)),
      GANTRY_FIELD("train.g_ema_kimg", train.g_ema_kimg, at_least(0.0)),
      GANTRY_FIELD("train.g_ema_rampup", train.g_ema_rampup, at_least(0.0)),
      GANTRY_FIELD("train.augment", train.augment, one_of({"none", "translation", "cutout", "translation,cutout"})),
      GANTRY_FIELD("train.r1_gamma", train.r1_gamma, at_least(0.0)),
      GANTRY_FIELD("train.r1_every", train.r1_every, at_least<int64_t>(1)),
      GANTRY_FIELD("train.cr_weight", train.cr_weight, at_least(0.0)),
      GANTRY_FIELD("train.cr_shift", train.cr_shift,
                   [](const int64_t& v) { return v < 1 || v > 8 ? "must be 1..8, got " + std::to_string(v) : ""; }),
      GANTRY_FIELD("train.g_topk", train.g_topk, fraction()),
      GANTRY_FIELD("train.g_topk_gamma", train.g_topk_gamma, in_range(0.0, 1.0)),
      GANTRY_FIELD("train.reuse_fakes", train.reuse_fakes),
      GANTRY_FIELD("train.log_every", train.log_every, at_least<int64_t>(0)),
      GANTRY_FIELD("train.sample_every", train.sample_every, at_least<int64_t>(0)),
      GANTRY_FIELD("train.consistency_every", train.consistency_every, at_least<int64_t>(0)),
      GANTRY_FIELD("train.threads", train.threads, between<int64_t>(0, kMaxThreads)),
      GANTRY_FIELD("train.dump_replicas", train.dump_replicas),
      GANTRY_FIELD("train.on_nonfinite", train.on_nonfinite, one_of({"skip", "stop"})),
      GANTRY_FIELD("train.max_nonfinite_skips", train.max_nonfinite_skips, at_least<int64_t>(1)),
      GANTRY_FIELD("train.device", train.device, one_of({"auto", "cpu", "cuda"})),
      GANTRY_FIELD("train.precision", train.precision, one_of({"fp32", "bf16"})),
      GANTRY_FIELD("train.deterministic", train.deterministic),
      GANTRY_FIELD("optim.g.lr", optim.g.lr, positive()),
      GANTRY_FIELD("optim.g.beta1", optim.g.beta1, in_range(0.0, 1.0, true)),
      GANTRY_FIELD("optim.g.beta2", optim.g.beta2, in_range(0.0, 1.0, true)),
      GANTRY_FIELD("optim.d.lr", optim.d.lr, positive()),
      GANTRY_FIELD("optim.d.beta1", optim.d.beta1, in_range(0.0, 1.0, true)),
      GANTRY_FIELD("optim.d.beta2", optim.d.beta2, in_range(0.0, 1.0, true)),
      GANTRY_FIELD("optim.schedule", optim.schedule, one_of({"constant", "linear", "cosine"})),
      GANTRY_FIELD("optim.warmup_steps", optim.warmup_steps, at_least<int64_t>(0)),
      GANTRY_FIELD("optim.decay_start", optim.decay_start, in_range(0.0, 1.0, true)),
      GANTRY_FIELD("optim.final_lr_ratio", optim.final_lr_ratio, in_range(0.0, 1.0, false)),
      GANTRY_FIELD("checkpoint.every", checkpoint.every, at_least<int64_t>(0)),
      GANTRY_FIELD("checkpoint.keep_last", checkpoint.keep_last, at_least<int64_t>(1)),
      GANTRY_FIELD("checkpoint.keep_every", checkpoint.keep_every, at_least<int64_t>(0)),
      GANTRY_FIELD("checkpoint.async", checkpoint.async),
      GANTRY_FIELD("checkpoint.on_failure", checkpoint.on_failure, one_of({"continue", "stop"})),
      GANTRY_FIELD("comm.backend", comm.backend, one_of({"auto", "mpi", "nccl"})),
      GANTRY_FIELD("comm.bucket_mb", comm.bucket_mb, positive()),
      GANTRY_FIELD("comm.first_bucket_mb", comm.first_bucket_mb, positive()),
      GANTRY_FIELD("comm.overlap", comm.overlap, one_of({"auto", "true", "false"})),
      GANTRY_FIELD("comm.grad_dtype", comm.grad_dtype, one_of({"fp32", "bf16", "fp16"})),
      GANTRY_FIELD("comm.timeout_s", comm.timeout_s, at_least(0.0)),
      GANTRY_FIELD("monitoring.port", monitoring.port,
                   [](const int64_t& v) { return v < 0 || v > 65535 ? "must be 0 (off) or a TCP port" : ""; }),
      GANTRY_FIELD("monitoring.bind", monitoring.bind,
                   [](const std::string& v) { return v.empty() ? "must not be empty (0.0.0.0: every interface)" : ""; }),
      GANTRY_FIELD("monitoring.linger_s", monitoring.linger_s, at_least(0.0)),
      GANTRY_FIELD("eval.frechet_every", eval.frechet_every, at_least<int64_t>(0)),
      GANTRY_FIELD("eval.frechet_samples", eval.frechet_samples, at_least<int64_t>(2)),
  };
  return fields;
}

const Field* find_field(const std::string& key) {
  for (const auto& f : schema())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_section(const std::string& prefix) {
  for (const auto& f : schema())
    if (f.key.compare(0, prefix.size() + 1, prefix + ".") == 0) return true;
  return false;
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1 : 0)});
      diag = up;
    }
  }
  return row[b.size()];
}

std::string unknown_key_message(const std::string& key) {
  std::string best;
  size_t best_d = 4;  // suggest only close matches
  for (const auto& f : schema()) {
    const size_t d = edit_distance(key, f.key);
    if (d < best_d) best_d = d, best = f.key;
  }
  std::string msg = "unknown key '" + key + "'";
  if (!best.empty()) msg += " (did you mean '" + best + "'?)";
  return msg;
}

// A leaf value with the place it came from.
struct Entry {
  YAML::Node node;
  std::string where;
};

void flatten(const YAML::Node& map, const std::string& prefix, const std::string& file,
             std::vector<std::pair<std::string, Entry>>& out) {
  for (const auto& item : map) {
    const std::string where = file + ":" + std::to_string(item.first.Mark().line + 1);
    if (!item.first.IsScalar())  // YAML's "? [a, b]: ..." complex keys
      throw ConfigError("config error: " + where + ": a key must be a plain name, not a " +
                        (item.first.IsMap() ? "mapping" : item.first.IsSequence() ? "list" : "null"));
    const std::string name = item.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    for (const auto& [seen, entry] : out)
      if (seen == key)
        throw ConfigError("config error: " + where + ": '" + key + "' is given twice (first at " + entry.where + ")");
    if (find_field(key)) {
      out.push_back({key, Entry{item.second, where}});
    } else if (is_section(key)) {
      if (!item.second.IsMap())
        throw ConfigError("config error: " + where + ": '" + key + "' must be a mapping of keys");
      flatten(item.second, key, file, out);
    } else {
      throw ConfigError("config error: " + where + ": " + unknown_key_message(key));
    }
  }
}

std::string default_data_path(const std::string& dataset) {
  if (dataset == "fashion-mnist") return kDebianFashionMnistDir;
  if (dataset == "mnist") return "data/mnist";
  if (dataset == "cifar10") return "data/cifar10";
  if (dataset == "images") return "data/images";
  return "";
}

}  // namespace

std::string Config::where(const std::string& key) const {
  const auto it = origin.find(key);
  return it == origin.end() ? "default" : it->second;
}

Config load_config(const std::string& file, const std::vector<std::string>& overrides) {
  std::vector<std::pair<std::string, Entry>> entries;
  if (!file.empty()) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(file);
    } catch (const YAML::BadFile&) {
      throw ConfigError("config error: " + file + ": cannot open the file");
    } catch (const YAML::Exception& e) {
      throw ConfigError("config error: " + file + ":" + std::to_string(e.mark.line + 1) +
                        ": YAML syntax: " + e.msg);
    }
    if (root.IsDefined() && !root.IsNull()) {
      if (!root.IsMap()) throw ConfigError("config error: " + file + ": the top level must be a mapping");
      flatten(root, "", file, entries);
    }
  }
  for (const auto& o : overrides) {
    const auto eq = o.find('=');
    const std::string where = "--set " + o;
    if (eq == std::string::npos || eq == 0)
      throw ConfigError("config error: " + where + ": expected --set key=value");
    const std::string key = o.substr(0, eq);
    if (!find_field(key)) throw ConfigError("config error: " + where + ": " + unknown_key_message(key));
    YAML::Node value;
    try {
      value = YAML::Load(o.substr(eq + 1));
    } catch (const YAML::Exception& e) {
      throw ConfigError("config error: " + where + ": " + key + ": cannot parse the value: " + e.msg);
    }
    if (value.IsNull()) value = YAML::Node(std::string());
    entries.push_back({key, Entry{value, where}});
  }

  Config config;
  for (const auto& [key, entry] : entries) {
    try {
      find_field(key)->set(config, entry.node);
    } catch (const std::string& why) {
      throw ConfigError("config error: " + entry.where + ": " + key + ": " + why);
    }
    config.origin[key] = entry.where;  // later entries (--set) win
  }

  for (const auto& f : schema()) {
    const std::string why = f.check(config);
    if (!why.empty()) throw ConfigError("config error: " + config.where(f.key) + ": " + f.key + ": " + why);
  }
  if (config.data.path.empty()) config.data.path = default_data_path(config.data.name);
  if (config.data.name == "gaussian1d" && config.model.arch != "mlp")
    throw ConfigError("config error: " + config.where("model.arch") +
                      ": model.arch: gaussian1d data needs model.arch mlp, got '" + config.model.arch + "'");
  if (config.data.name == "gaussian1d" && config.train.augment != "none")
    throw ConfigError("config error: " + config.where("train.augment") + ": train.augment: augmentation is for " +
                      "images; gaussian1d data needs 'none', got '" + config.train.augment + "'");
  if (config.data.name == "gaussian1d" && config.train.cr_weight > 0)
    throw ConfigError("config error: " + config.where("train.cr_weight") + ": train.cr_weight: consistency under " +
                      "translation is for images; gaussian1d data needs 0");
  if (config.train.loss == "wgan-gp" && config.train.r1_gamma > 0)
    throw ConfigError("config error: " + config.where("train.r1_gamma") + ": train.r1_gamma: wgan-gp has its own " +
                      "gradient penalty (train.gp_weight); R1 is for minimax, non-saturating and hinge");
  if (config.train.loss == "wgan-gp" && config.model.dcgan.d_norm == "batch")
    throw ConfigError("config error: " + config.where("model.dcgan.d_norm") + ": model.dcgan.d_norm: batch " +
                      "couples a batch's samples, and wgan-gp's penalty is per sample; use spectral, none or auto");
  if (config.model.dcgan.g_class_norm && !(config.model.conditional && config.model.arch == "dcgan"))
    throw ConfigError("config error: " + config.where("model.dcgan.g_class_norm") + ": model.dcgan.g_class_norm: " +
                      "a class-conditional BatchNorm needs labels: set model.conditional true, with model.arch dcgan");
  if (config.optim.schedule == "constant")
    for (const auto& [key, value] : {std::pair{"optim.decay_start", config.optim.decay_start},
                                     std::pair{"optim.final_lr_ratio", config.optim.final_lr_ratio}})
      if (value != 0)
        throw ConfigError("config error: " + config.where(key) + ": " + key + ": shapes the decay, and " +
                          "optim.schedule is constant; set optim.schedule to linear or cosine");
  if (config.optim.warmup_steps >= config.train.steps && config.optim.warmup_steps > 0)
    throw ConfigError("config error: " + config.where("optim.warmup_steps") + ": optim.warmup_steps: " +
                      std::to_string(config.optim.warmup_steps) + " steps of warm-up leave none of the " +
                      std::to_string(config.train.steps) + " train.steps at the full learning rate");
  const bool labelled = config.data.name == "mnist" || config.data.name == "fashion-mnist" ||
                        config.data.name == "cifar10";
  if (config.model.conditional && !labelled)
    throw ConfigError("config error: " + config.where("model.conditional") + ": model.conditional: needs class " +
                      "labels (mnist, fashion-mnist, cifar10); data.name '" + config.data.name + "' has none");
  if (config.eval.frechet_every > 0 && !labelled)
    throw ConfigError("config error: " + config.where("eval.frechet_every") + ": eval.frechet_every: the Fréchet " +
                      "distance needs a labelled dataset (mnist, fashion-mnist, cifar10) to train its feature " +
                      "classifier on; data.name is '" + config.data.name + "'");
  if (config.data.name != "gaussian1d" && config.data.path.empty())
    throw ConfigError("config error: " + config.where("data.path") + ": data.path: must name the " +
                      config.data.name + " directory");
  return config;
}

int64_t label_classes(const Config& config) { return config.model.conditional ? 10 : 0; }

void validate_for_world(const Config& config, int world_size) {
  if (config.train.batch_size % world_size != 0)
    throw ConfigError("config error: " + config.where("train.batch_size") + ": train.batch_size: " +
                      std::to_string(config.train.batch_size) + " is not divisible by the world size " +
                      std::to_string(world_size) + "; the global batch is split evenly across ranks");
}

std::string config_digest(const Config& config) {
  // Only what decides the results: where metrics are served, how many threads decode batches and
  // what is measured may change across a resume without the training changing.
  Config c = config;
  c.monitoring = MonitoringConfig{};
  c.eval = EvalConfig{};  // measuring changes no weight
  c.data.workers = DataConfig{}.workers;
  c.data.prefetch = DataConfig{}.prefetch;
  c.data.cache_dir.clear();
  const std::string text = to_yaml(c);
  uint64_t h = 0xcbf29ce484222325ULL;  // FNV-1a: stable across platforms and versions
  for (unsigned char c : text) h = (h ^ c) * 0x100000001b3ULL;
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::string to_yaml(const Config& config) {
  // The schema's dotted keys as a tree in schema order, then emitted section by section.
  struct Tree {
    std::vector<std::pair<std::string, Tree>> children;
    YAML::Node value;
  };
  Tree root;
  for (const auto& f : schema()) {
    Tree* node = &root;
    std::stringstream ss(f.key);
    for (std::string part; std::getline(ss, part, '.');) {
      auto it = std::find_if(node->children.begin(), node->children.end(),
                             [&](const auto& c) { return c.first == part; });
      if (it == node->children.end()) it = node->children.insert(node->children.end(), {part, Tree{}});
      node = &it->second;
    }
    node->value = f.get(config);
  }
  YAML::Emitter out;
  std::function<void(const Tree&)> emit = [&](const Tree& t) {
    out << YAML::BeginMap;
    for (const auto& [name, child] : t.children) {
      out << YAML::Key << name << YAML::Value;
      if (child.children.empty()) {
        if (child.value.IsSequence()) out << YAML::Flow;
        out << child.value;
      } else {
        emit(child);
      }
    }
    out << YAML::EndMap;
  };
  emit(root);
  return std::string("# The resolved configuration of this run, every key included.\n") + out.c_str() + "\n";
}

}  // namespace gantry
