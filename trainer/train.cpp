// Implements: `gantry train`, top to bottom: init -> data and models -> loop (k D updates, one G
// update, buffer sync, report, samples, replica check) -> final checks, weights and summary.
#include "trainer/train.h"

#include <ATen/CPUGeneratorImpl.h>
#include <sched.h>
#include <torch/version.h>

#include <chrono>
#include <csignal>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <thread>

#include "comm/watchdog.h"
#include "datasets/stream.h"
#include "gantry_build.h"
#include "trainer/augment.h"
#include "trainer/checkpoint.h"
#include "trainer/device.h"
#include "trainer/gan_step.h"
#include "trainer/images.h"
#include "trainer/latent.h"
#include "trainer/lr_schedule.h"
#include "trainer/reporter.h"
#include "trainer/stop_signals.h"
#include "trainer/training_metrics.h"

namespace gantry {
namespace fs = std::filesystem;
namespace {

using Clock = std::chrono::steady_clock;

void write_file_atomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text;
    if (!out.flush()) throw std::runtime_error("cannot write " + tmp.string());
  }
  fs::rename(tmp, path);
}

// The signal that any rank received, or 0. Collective, so every rank decides alike.
int agreed_stop_signal(comm::Communicator& comm) {
  torch::Tensor signals = torch::zeros({comm.world_size()}, torch::kInt64);
  signals[comm.rank()] = stop_signal_received();
  comm.all_reduce(signals, comm::ReduceOp::kSum);
  return static_cast<int>(signals.max().item<int64_t>());
}

// Everything a resumed run needs beyond the config: models, optimizers, counters, the data
// stream's position and torch's CPU generator (gantry's own random numbers are keyed by step).
checkpoint::StateDict training_state(GanStep& gan, const datasets::DataStream& stream, int64_t step,
                                     int64_t images_seen) {
  checkpoint::StateDict state;
  gan.save_state(state);
  state["train/step"] = torch::tensor(step, torch::kInt64);
  state["train/images_seen"] = torch::tensor(images_seen, torch::kInt64);
  state["data/epoch"] = torch::tensor(stream.position().epoch, torch::kInt64);
  state["data/batch"] = torch::tensor(stream.position().batch, torch::kInt64);
  // What data/batch counts in: a resume with another train.batch_size converts it.
  state["data/batch_size"] = torch::tensor(stream.global_batch(), torch::kInt64);
  state["rng/torch_cpu"] = at::detail::getDefaultCPUGenerator().get_state();
  return state;
}

// A tensor the checkpoint must hold (one that verified but lacks it came from another program).
const torch::Tensor& required(const checkpoint::StateDict& state, const std::string& name) {
  const auto it = state.find(name);
  if (it == state.end()) throw checkpoint::CheckpointError("the checkpoint has no tensor " + name);
  return it->second;
}

int64_t required_count(const checkpoint::StateDict& state, const std::string& name) {
  const torch::Tensor& t = required(state, name);
  if (t.numel() != 1 || t.scalar_type() != torch::kInt64)
    throw checkpoint::CheckpointError("tensor " + name + " is not one int64 count (shape " + c10::str(t.sizes()) +
                                      ", " + std::string(c10::toString(t.scalar_type())) + ")");
  return t.item<int64_t>();
}

void restore_training_state(const checkpoint::StateDict& state, GanStep& gan, datasets::DataStream& stream) {
  gan.load_state(state);
  // Checkpoints from before data/batch_size counted in batches of the run's size, as far as
  // anyone can tell; an index past this epoch then moves to the next one rather than reading
  // past its permutation.
  const bool sized = state.count("data/batch_size") > 0;
  stream.resume_position({required_count(state, "data/epoch"), required_count(state, "data/batch")},
                         sized ? required_count(state, "data/batch_size") : stream.global_batch());
  auto generator = at::detail::getDefaultCPUGenerator();
  generator.set_state(required(state, "rng/torch_cpu"));
}

// Test hook: GANTRY_FAULT_NONFINITE=d|g:STEP[:RANK] fills that network's input with NaN on RANK
// (default 0) in step STEP (numbered from 1, as in log.jsonl): the NaN guard's fault injection.
struct NonfiniteFault {
  char net = 0;  // 'd': D's real batch, 'g': G's latents; 0: off
  int64_t step = 0;
  int rank = 0;
};

NonfiniteFault nonfinite_fault() {
  NonfiniteFault f;
  const char* spec = std::getenv("GANTRY_FAULT_NONFINITE");
  if (!spec) return f;
  long long step = 0;
  int rank = 0;
  char net = 0;
  if (std::sscanf(spec, "%c:%lld:%d", &net, &step, &rank) < 2 || (net != 'd' && net != 'g'))
    throw JobError(std::string("GANTRY_FAULT_NONFINITE='") + spec + "': expected d|g:STEP[:RANK]");
  return {net, static_cast<int64_t>(step), rank};
}

torch::Tensor maybe_poison(const torch::Tensor& input, const NonfiniteFault& fault, char net, int64_t done, int rank) {
  if (fault.net != net || fault.step != done || fault.rank != rank) return input;
  return torch::full_like(input, std::numeric_limits<float>::quiet_NaN());
}

// Keeps the lines of log.jsonl up to `step`: a run resumed from step N continues the log there.
void truncate_log(const fs::path& file, int64_t step) {
  std::ifstream in(file);
  std::string kept;
  for (std::string line; std::getline(in, line);) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.value("step", int64_t{0}) <= step) kept += line + "\n";
  }
  write_file_atomic(file, kept);
}


// Runs `setup` on every rank and makes them agree: if any rank failed, every rank throws with the
// failure (naming the rank when not all failed alike): ConfigError when every rank failed with
// the same config error, so that the job exits 2 and a launcher does not retry a mistake, else
// JobError.
template <typename Fn>
void on_all_ranks(comm::Communicator& comm, Fn&& setup) {
  std::string error;  // "C" + message for a ConfigError, "E" + message for anything else
  try {
    setup();
  } catch (const ConfigError& e) {
    error = std::string("C") + e.what();
  } catch (const std::exception& e) {
    error = std::string("E") + e.what();
  }
  const auto errors = comm.all_gather(error);
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    bool everywhere = true;
    for (const auto& e : errors) everywhere &= (e == errors[r]);
    const std::string message = errors[r].substr(1);
    if (everywhere && errors[r][0] == 'C') throw ConfigError(message);
    throw JobError(everywhere || errors.size() == 1 ? message : "rank " + std::to_string(r) + ": " + message);
  }
}

uint64_t checksum(const std::vector<torch::Tensor>& tensors) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (const auto& t : tensors) {
    const torch::Tensor c = t.detach().to(torch::kCPU).contiguous();
    const auto* p = static_cast<const uint8_t*>(c.data_ptr());
    const size_t n = c.numel() * c.element_size();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
      uint64_t w;
      std::memcpy(&w, p + i, 8);
      h = random::mix64(h ^ w);
    }
    for (; i < n; ++i) h = random::mix64(h ^ p[i]);
  }
  return h;
}

std::vector<torch::Tensor> replica_state(const GanModels& m) {
  std::vector<torch::Tensor> all = state_tensors(*m.g);
  for (auto& t : state_tensors(*m.d)) all.push_back(t);
  if (m.g_ema)
    for (auto& t : state_tensors(*m.g_ema)) all.push_back(t);
  return all;
}

// Compares every rank's checksum of all parameters and buffers; throws JobError on divergence.
void check_replicas(comm::Communicator& comm, const GanModels& models, int64_t step) {
  const auto sums = comm.all_gather_value<uint64_t>(checksum(replica_state(models)));
  std::string diverged;
  for (size_t r = 1; r < sums.size(); ++r)
    if (sums[r] != sums[0]) diverged += (diverged.empty() ? "" : ", ") + std::to_string(r);
  if (!diverged.empty())
    throw JobError("replicas diverged at step " + std::to_string(step) + ": rank(s) " + diverged +
                   " hold different parameters or buffers than rank 0");
}

void save_weights(const GanModels& m, const fs::path& path) {
  c10::Dict<std::string, torch::Tensor> dict;
  for (const auto& [prefix, module] :
       {std::pair{"generator.", m.g}, std::pair{"discriminator.", m.d}, std::pair{"generator_ema.", m.g_ema}}) {
    if (!module) continue;
    for (const auto& p : module->named_parameters()) dict.insert(prefix + p.key(), p.value().detach().cpu());
    for (const auto& b : module->named_buffers()) dict.insert(prefix + b.key(), b.value().detach().cpu());
  }
  const std::vector<char> bytes = torch::pickle_save(c10::IValue(dict));
  write_file_atomic(path, std::string(bytes.begin(), bytes.end()));
}

// A grid of `m`'s generator (G's average when there is one) in eval mode, 8 columns wide, a row per
// 8 latents of z_fixed. labels: a conditional G's, one per latent (undefined otherwise).
void write_samples(const GanModels& m, const torch::Tensor& z_fixed, const torch::Tensor& labels,
                   const fs::path& path) {
  torch::NoGradGuard no_grad;
  const GanModels s = m.sampler();
  const bool training = s.g->is_training();
  s.g->eval();
  const torch::Tensor images = s.generate(s.g_input(z_fixed.to(s.g->parameters().front().device()), labels));
  s.g->train(training);
  write_image_grid(images, z_fixed.size(0) / 8, 8, path.string());
}

std::string step_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

// Final statistics of a 1-D run from many samples: G's output distribution against the data's,
// and D's mean output on each. rank 0 only.
nlohmann::json gaussian_summary(GanModels& m, const Config& config, const datasets::Dataset& data) {
  constexpr int64_t kSamples = 100000;
  torch::NoGradGuard no_grad;
  m.g->eval();
  m.d->eval();
  const uint64_t seed = static_cast<uint64_t>(config.run.seed);
  const torch::Tensor fake = m.generate(latent_rows(seed, random::kFixedLatent, 1, 0, kSamples, config.model.z_dim));
  std::vector<int64_t> idx(kSamples);
  for (int64_t i = 0; i < kSamples; ++i) idx[i] = i % data.size();
  torch::Tensor real = torch::empty({kSamples, 1, 1, 1});
  data.read(idx.data(), kSamples, real.data_ptr<float>());
  nlohmann::json j = {
      {"samples", kSamples},
      {"data_mean", config.data.gaussian.mean},
      {"data_std", config.data.gaussian.std},
      {"fake_mean", fake.mean().item<double>()},
      {"fake_std", fake.std().item<double>()},
      {"d_real", torch::sigmoid(m.discriminate(real, torch::Tensor())).mean().item<double>()},
      {"d_fake", torch::sigmoid(m.discriminate(fake, torch::Tensor())).mean().item<double>()},
  };
  m.g->train();
  m.d->train();
  return j;
}

// Starts this rank's exporter at monitoring.port + local rank and registers its metrics.
TrainingMetrics start_metrics(const Config& config, const comm::ProcessInfo& proc, const std::string& device) {
  TrainingMetrics m;
  m.exporter = std::make_unique<monitoring::Exporter>(config.monitoring.bind,
                                                      static_cast<int>(config.monitoring.port) + proc.local_rank);
  m.rank = std::make_unique<monitoring::RankMetrics>(
      m.exporter->registry(),
      monitoring::RankIdentity{proc.rank, proc.local_rank, proc.world_size, proc.host, device});
  if (proc.rank == 0)
    m.job = std::make_unique<monitoring::JobMetrics>(m.exporter->registry(),
                                                     monitoring::BuildInfo{GANTRY_VERSION, config_digest(config)});
  return m;
}

// The `run` label of the discovery file: the run directory's name.
std::string run_label(const fs::path& run_dir) {
  const fs::path p = fs::absolute(run_dir).lexically_normal();
  return (p.has_filename() ? p.filename() : p.parent_path().filename()).string();
}

// A CFS quota in whole cores, rounded up (a quota of 1.5 cores may keep 2 threads busy part of
// the time); 0 for no quota.
int quota_cores(long long quota, long long period) {
  if (quota <= 0 || period <= 0) return 0;
  return static_cast<int>(std::max(1LL, (quota + period - 1) / period));
}

// The first two whitespace-separated fields of `file`, or nothing when it cannot be read.
std::optional<std::pair<std::string, std::string>> two_fields(const fs::path& file) {
  std::ifstream in(file);
  std::string a, b;
  if (!(in >> a)) return std::nullopt;
  in >> b;
  return std::make_pair(a, b);
}

long long as_number(const std::string& s) {
  try {
    size_t used = 0;
    const long long v = std::stoll(s, &used);
    return used == s.size() ? v : 0;
  } catch (const std::exception&) {
    return 0;
  }
}

// The tighter of two limits, 0 meaning none.
int tighter(int a, int b) { return a > 0 && (b == 0 || a < b) ? a : b; }

// The smallest nonzero limit that `limit_in` reads in `top / path` or any directory between it
// and `top`; 0 when none has one. In a container the path that /proc/self/cgroup gives may be the
// host's and not exist under the container's mount: its ancestors, `top` among them, still count.
template <typename Fn>
int smallest_limit(const fs::path& top, const std::string& path, Fn limit_in) {
  const fs::path root = top.lexically_normal();
  fs::path dir = (root / fs::path(path).relative_path()).lexically_normal();
  if (dir.native().rfind(root.native(), 0) != 0) dir = root;  // ".." out of the mount: only its root
  int best = 0;
  for (;;) {
    best = tighter(limit_in(dir), best);
    if (dir == root || dir == dir.parent_path()) return best;
    dir = dir.parent_path();
  }
}

}  // namespace

int cgroup_cpu_limit(const fs::path& root, const std::string& self) {
  int best = 0;
  std::istringstream lines(self);
  for (std::string line; std::getline(lines, line);) {
    // hierarchy-ID:controller-list:cgroup-path
    const size_t a = line.find(':'), b = a == std::string::npos ? a : line.find(':', a + 1);
    if (b == std::string::npos) continue;
    const std::string id = line.substr(0, a), controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (id == "0" && controllers.empty()) {  // cgroup v2: cpu.max is "QUOTA PERIOD" or "max PERIOD"
      best = tighter(smallest_limit(root, path, [](const fs::path& dir) {
        const auto f = two_fields(dir / "cpu.max");
        return f ? quota_cores(as_number(f->first), as_number(f->second)) : 0;
      }), best);
    } else {
      std::istringstream names(controllers);
      for (std::string name; std::getline(names, name, ',');) {
        if (name != "cpu") continue;  // cgroup v1: the cpu controller's CFS quota (-1: none)
        best = tighter(smallest_limit(root / controllers, path, [](const fs::path& dir) {
          const auto quota = two_fields(dir / "cpu.cfs_quota_us"), period = two_fields(dir / "cpu.cfs_period_us");
          return quota && period ? quota_cores(as_number(quota->first), as_number(period->first)) : 0;
        }), best);
      }
    }
  }
  return best;
}

int available_cores() {
  cpu_set_t set;
  int cores = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set)
                                                          : static_cast<int>(std::thread::hardware_concurrency());
  std::ifstream self("/proc/self/cgroup");
  const std::string text((std::istreambuf_iterator<char>(self)), std::istreambuf_iterator<char>());
  const int quota = cgroup_cpu_limit("/sys/fs/cgroup", text);
  if (quota > 0) cores = std::min(cores, quota);
  return std::max(1, cores);
}

int threads_per_rank(const comm::ProcessInfo& info) { return std::max(1, available_cores() / std::max(1, info.local_size)); }

void train(const Config& config, comm::Runtime& runtime, const std::string& resume, const QualityProbeFactory& frechet) {
  // ---- init ------------------------------------------------------------------------------------
  const auto& proc = runtime.info();
  // train.device: the local rank's GPU, or the CPU (cuda without a GPU is a config error, the
  // same on every rank). comm.backend auto then picks NCCL for CUDA models and MPI for CPU ones;
  // asking for NCCL without a GPU is a clear error here.
  const torch::Device device = resolve_device(config, proc.local_rank);
  configure_backends(config);
  // A collective blocked longer than comm.timeout_s reports the ranks that have not arrived and
  // aborts the job, rather than hanging it (declared first: it outlives the communicator).
  std::unique_ptr<comm::Watchdog> watchdog;
  if (config.comm.timeout_s > 0) watchdog = std::make_unique<comm::Watchdog>(runtime, config.comm.timeout_s);
  auto comm = comm::make_communicator(runtime, comm::parse_backend(config.comm.backend), device.is_cuda());
  if (watchdog) comm = comm::watch(std::move(comm), *watchdog);
  const int rank = comm->rank(), world = comm->world_size();
  const bool rank0 = rank == 0;
  const fs::path run_dir = config.run.dir;
  const uint64_t seed = static_cast<uint64_t>(config.run.seed);
  const int64_t local_batch = config.train.batch_size / world;
  const int64_t d_steps = config.train.d_steps;
  torch::set_num_threads(config.train.threads > 0 ? static_cast<int>(config.train.threads) : threads_per_rank(proc));
  // Preemption: SIGTERM or SIGUSR1 asks for a checkpoint and a clean exit after the current step.
  const StopSignalsArmed stop_signals_armed;
  // The checkpointer has a communicator of its own: an async save's collectives run on its
  // thread while the training loop's run on this one.
  auto checkpoint_comm = comm::make_mpi_communicator(runtime);
  checkpoint::Checkpointer checkpointer(*checkpoint_comm, {(run_dir / "checkpoints").string(),
                                                           config.checkpoint.keep_last, config.checkpoint.keep_every});

  // ---- data, models, run directory (every rank must succeed before any collective) -------------
  std::shared_ptr<datasets::Dataset> dataset;
  std::shared_ptr<const std::vector<int64_t>> labels;  // the training records' (model.conditional)
  std::unique_ptr<datasets::DataStream> stream;
  std::unique_ptr<GanStep> gan;
  std::unique_ptr<Reporter> reporter;
  on_all_ranks(*comm, [&] {
    validate_for_world(config, world);
    datasets::DatasetSpec spec{config.data.name, config.data.path, config.data.split,
                               config.data.gaussian.mean, config.data.gaussian.std, 1 << 20, seed,
                               config.data.cache_dir, config.data.holdout, config.data.resolution,
                               config.data.channels};
    // Skipped images: opening scans the same folder on every rank, so rank 0 names what it
    // skipped; a file that fails to decode later is named by the rank that read it.
    auto opened = std::make_shared<std::atomic<bool>>(false);
    spec.warn = [rank0, opened](const std::string& m) {
      if (rank0 || *opened) std::fprintf(stderr, "%s\n", m.c_str());
    };
    dataset = datasets::open_dataset(spec);
    *opened = true;
    GanModels made = make_models(config, dataset->shape());
    made.g->to(device);
    made.d->to(device);
    if (made.g_ema) made.g_ema->to(device);
    gan = std::make_unique<GanStep>(std::move(made), config, *comm);
    datasets::StreamOptions stream_options{static_cast<int>(config.data.workers),
                                           static_cast<int>(config.data.prefetch), config.data.hflip};
    stream_options.device = device;  // CUDA: pinned batches
    if (config.model.conditional) {  // the training records' labels: the split's, less data.holdout's
      auto all = datasets::read_labels(spec);
      if (static_cast<int64_t>(all.size()) != dataset->size() + config.data.holdout)
        throw datasets::DataError(config.data.name + " " + config.data.split + ": " + std::to_string(all.size()) +
                                  " labels for " + std::to_string(dataset->size() + config.data.holdout) + " images");
      all.resize(static_cast<size_t>(dataset->size()));
      labels = std::make_shared<const std::vector<int64_t>>(std::move(all));
      stream_options.labels = labels;
    }
    stream = std::make_unique<datasets::DataStream>(dataset, config.train.batch_size, rank, world, seed, stream_options);
    if (resume.empty() && !checkpoint::list_checkpoints((run_dir / "checkpoints").string()).empty())
      throw ConfigError("run.dir " + run_dir.string() + " already holds checkpoints: continue it with --resume auto, " +
                        "or choose another run.dir (nothing there was changed)");
    if (rank0) {
      fs::create_directories(run_dir / "samples");
      fs::create_directories(run_dir / "checkpoints");
    }
  });
  on_all_ranks(*comm, [&] { reporter = std::make_unique<Reporter>(rank0, run_dir.string(), config.train.steps); });
  GanModels& models = gan->models();
  TrainingMetrics metrics;  // Prometheus: every rank serves /metrics; rank 0 writes the discovery file
  if (config.monitoring.port > 0) {
    const std::string device = models.g->parameters().front().device().str();
    on_all_ranks(*comm, [&] { metrics = start_metrics(config, proc, device); });
    const auto addresses = comm->all_gather(
        monitoring::scrape_address(config.monitoring.bind, proc.host, metrics.exporter->port()));
    const fs::path targets = run_dir / "prometheus-targets.json";
    on_all_ranks(*comm, [&] {
      if (rank0) monitoring::write_file_sd(targets.string(), run_label(run_dir), addresses);
    });
    reporter->message("gantry: metrics at http://" + addresses.front() + "/metrics (rank 0); Prometheus targets in " +
                      targets.string());
  }
  // eval.frechet_every: rank 0 prepares the measurement once (its classifier is trained on first
  // use, then cached); the other ranks wait here.
  QualityProbe probe;
  if (config.eval.frechet_every > 0)
    on_all_ranks(*comm, [&] {
      if (!frechet) throw ConfigError("config error: eval.frechet_every: no Fréchet measurement in this program");
      if (rank0) probe = frechet();
    });
  reporter->message("gantry: " + std::to_string(world) + " rank(s), " + std::to_string(torch::get_num_threads()) +
                    " thread(s) each, " + dataset->name() + " (" + std::to_string(dataset->size()) +
                    " records), " + config.model.arch + ", " + config.train.loss + ", global batch " +
                    std::to_string(config.train.batch_size) + ", run dir " + run_dir.string());
  if (const std::string blas = blas_kernel_warning(); !blas.empty()) reporter->message("gantry: warning: " + blas);
  if (config.train.precision == "bf16" && device.is_cpu() && !cpu_has_onednn_bf16())
    reporter->message("gantry: warning: train.precision bf16 on a CPU without AVX-512: LibTorch's bf16 kernels here "
                      "are fallbacks (steps ran 6-28x slower than in fp32, and a convolution came out 6 % off); fp32 "
                      "is the better choice");

  // ---- resume: the newest checkpoint that verifies (auto) or the one named --------------------
  checkpointer.clean_leftovers();
  int64_t start_step = 0;
  if (!resume.empty()) {
    const auto load_start = Clock::now();
    auto loaded = checkpointer.load(resume, [&](const std::string& w) { reporter->message("gantry: warning: " + w); });
    if (loaded) {
      int64_t images_seen = 0;
      try {  // a tensor missing from the same state on every rank: they fail alike
        restore_training_state(loaded->state, *gan, *stream);
        start_step = required_count(loaded->state, "train/step");
        images_seen = required_count(loaded->state, "train/images_seen");
      } catch (const checkpoint::CheckpointError& e) {
        throw checkpoint::CheckpointError("checkpoint " + loaded->dir + ": " + e.what() + "; nothing was changed");
      }
      // Past train.steps: training would start beyond its end, and final.pt would be rewritten
      // from a later state than the config asks for.
      if (start_step > config.train.steps)
        throw ConfigError("config error: train.steps: " + std::to_string(config.train.steps) + " is below step " +
                          std::to_string(start_step) + " of " + loaded->dir + "; nothing was changed");
      // The digest of the state now live in this process: equal to the checkpoint's when the load
      // (and any resharding) reproduced it exactly.
      const std::string live = checkpoint::digest(training_state(*gan, *stream, start_step, images_seen));
      reporter->message("gantry: resumed from " + loaded->dir + " (step " + std::to_string(start_step) +
                        ", saved by " + std::to_string(loaded->manifest.value("world_size", 0)) +
                        " rank(s)) in " + std::to_string(std::chrono::duration<double>(Clock::now() - load_start).count()) +
                        " s; state digest " + live);
      if (loaded->manifest.value("config_digest", "") != config_digest(config))
        reporter->message("gantry: note: the config differs from the one the checkpoint was saved with");
    } else {
      reporter->message("gantry: no checkpoint to resume from; starting at step 0");
    }
  }
  // A run resumed at its last step (a launcher's retry after it finished, or a crash after the
  // final checkpoint) has nothing to train: its log, config and summary stay as they are, and
  // only outputs that are missing are written below.
  // It is that run only if its summary.json says so: the same train.steps and the checksum of
  // the state just loaded (an earlier checkpoint resumed at its own step is a new ending, and a
  // crash before summary.json was written leaves the outputs to write). Only rank 0 writes them.
  bool finished_before = false;
  if (rank0 && !resume.empty() && start_step == config.train.steps) {
    std::ifstream in(run_dir / "summary.json");
    const auto summary = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    try {
      finished_before = summary.is_object() && summary.value("steps", int64_t{-1}) == config.train.steps &&
                        summary.value("checksum", uint64_t{0}) == checksum(replica_state(models));
    } catch (const nlohmann::json::exception&) {
      // a summary.json of other shape: not that run's
    }
  }
  if (rank0 && !finished_before) {
    // Written only now that the resume (if any) succeeded: a failed one leaves the run as it was.
    write_file_atomic(run_dir / "config.yaml", to_yaml(config));
    if (start_step > 0) truncate_log(run_dir / "log.jsonl", start_step);
    else std::ofstream(run_dir / "log.jsonl", std::ios::trunc);
  }
  if (finished_before)
    reporter->message("gantry: the run already ended at train.steps (" + std::to_string(start_step) +
                      ") with this state (summary.json): nothing to train; raise train.steps to go on");
  const nlohmann::json checkpoint_meta = {{"gantry_version", GANTRY_VERSION}, {"torch_version", TORCH_VERSION},
                                          {"config_digest", config_digest(config)}, {"seed", config.run.seed}};
  auto seconds_since = [](Clock::time_point t0) {
    char text[32];
    std::snprintf(text, sizeof text, "%.3f s", std::chrono::duration<double>(Clock::now() - t0).count());
    return std::string(text);
  };
  // A periodic save that failed (every rank agrees; nothing was committed): a warning, and
  // training goes on, or a clean stop (checkpoint.on_failure). The previous checkpoint is intact.
  auto checkpoint_failed = [&](const checkpoint::CheckpointError& e) {
    const auto kept = checkpoint::list_checkpoints((run_dir / "checkpoints").string());
    const std::string previous = kept.empty() ? "no earlier checkpoint exists" : "the previous one, " + kept.front() +
                                                                                     ", is intact";
    if (config.checkpoint.on_failure == "stop")
      throw JobError(std::string(e.what()) + "; stopping (checkpoint.on_failure: stop); " + previous +
                     ": resume with --resume auto");
    reporter->message(std::string("gantry: warning: ") + e.what() + "; training goes on (checkpoint.on_failure: " +
                      "continue); " + previous);
  };
  // NaN guard: an update whose averaged gradient is not finite was skipped by GanStep on every
  // rank alike; count it, or stop (train.on_nonfinite), and stop after too many in a row.
  const NonfiniteFault fault = nonfinite_fault();
  int64_t skipped_total = 0, skipped_in_a_row = 0;
  auto on_skipped = [&](const std::string& what, int64_t skipped, int64_t in_a_row) {
    skipped_total += skipped;
    if (config.train.on_nonfinite == "stop")
      throw JobError(what + "; stopping (train.on_nonfinite: stop); no non-finite update was applied and the " +
                     "last checkpoint is intact");
    if (in_a_row > config.train.max_nonfinite_skips)
      throw JobError(what + ": " + std::to_string(in_a_row) + " updates in a row were non-finite, more than " +
                     "train.max_nonfinite_skips (" + std::to_string(config.train.max_nonfinite_skips) + "); stopping");
    reporter->message("gantry: warning: " + what + "; update skipped (" + std::to_string(in_a_row) + " in a row, " +
                      std::to_string(skipped_total) + " in all; train.on_nonfinite: skip)");
  };
  // The CPU's outcomes are known as each update returns.
  auto after_update = [&](const UpdateOutcome& outcome, const char* net, int64_t done) {
    if (!outcome.known()) return;  // decided on the device: settle_skips counts it
    if (outcome.applied()) {
      skipped_in_a_row = 0;
      return;
    }
    ++skipped_in_a_row;
    on_skipped(std::string("non-finite loss or gradient in ") + net + "'s update at step " + std::to_string(done), 1,
               skipped_in_a_row);
  };
  // With CUDA the device decides, so the host reads the count where it syncs anyway: at each log
  // line and before each checkpoint. Updates after a skipped one may have been applied by then;
  // the checkpoint that follows is not written when this stops the job.
  auto settle_skips = [&](int64_t done) {
    const SkippedUpdates s = gan->settle();
    if (s.d + s.g == 0) return;
    on_skipped("non-finite loss or gradient in " + std::to_string(s.d) + " of D's and " + std::to_string(s.g) +
                   " of G's updates up to step " + std::to_string(done),
               s.d + s.g, s.longest_run);
  };
  // Old checkpoints that retention could not remove: the commit stands.
  auto report_retention = [&](const std::string& warning) {
    if (!warning.empty()) reporter->message("gantry: warning: " + warning);
  };
  // Reports the async save in flight once it is done; a failed one goes to checkpoint_failed.
  int64_t async_step = 0;    // the async save in flight: its step and how long it stalled training
  double async_stall_s = 0;
  auto finish_async_save = [&] {
    try {
      if (auto dir = checkpointer.wait()) {
        reporter->message("gantry: checkpoint " + *dir + " committed in the background");
        if (metrics.job) metrics.job->checkpoint_saved(async_step, async_stall_s);
        report_retention(checkpointer.take_warning());
      }
    } catch (const checkpoint::CheckpointError& e) {
      if (metrics.job) metrics.job->checkpoint_failed();
      checkpoint_failed(e);
    }
  };
  auto save_checkpoint = [&](int64_t done, bool async) {
    const auto t0 = Clock::now();
    finish_async_save();  // at most one in flight
    const bool waited = std::chrono::duration<double>(Clock::now() - t0).count() > 1e-3;
    const std::string waiting = seconds_since(t0);
    const auto t1 = Clock::now();
    settle_skips(done);
    const auto state = training_state(*gan, *stream, done, done * d_steps * config.train.batch_size);
    if (async && proc.thread_multiple) {
      checkpointer.save_async(state, done, checkpoint_meta);
      async_step = done;
      async_stall_s = std::chrono::duration<double>(Clock::now() - t0).count();
      reporter->message("gantry: checkpoint of step " + std::to_string(done) + " writing in the background (training stalled " +
                        seconds_since(t1) + " for the copy" + (waited ? ", " + waiting + " waiting for the previous save" : "") + ")");
      return;
    }
    const std::string dir = checkpointer.save(state, done, checkpoint_meta);
    reporter->message("gantry: checkpoint " + dir + " (" + seconds_since(t0) + ")");
    if (metrics.job) metrics.job->checkpoint_saved(done, std::chrono::duration<double>(Clock::now() - t0).count());
    report_retention(checkpointer.take_warning());
  };
  {  // Every replica starts from rank 0's parameters and buffers.
    std::vector<torch::Tensor> state = replica_state(models);
    torch::NoGradGuard no_grad;
    comm->broadcast(state, 0);
  }
  const bool images = config.data.name != "gaussian1d";
  // The sample grids' latents (and a conditional G's labels: a row per class).
  const int64_t classes = gan->models().classes;
  const int64_t grid_rows = classes > 0 ? classes : 8;
  const torch::Tensor z_fixed = latent_rows(seed, random::kFixedLatent, 0, 0, grid_rows * 8, config.model.z_dim);
  const torch::Tensor grid_y = classes > 0 ? grid_labels(grid_rows, 8, classes) : torch::Tensor();

  // ---- training loop ---------------------------------------------------------------------------
  const auto start = Clock::now();
  auto last_log = start;
  int64_t last_log_step = start_step;
  int stop_signal = 0;
  UpdateTimes phase_totals;   // this rank's, for summary.json's step breakdown
  double data_wait_total = 0;  // the ranks' mean, summed over the log intervals
  const bool pinned = device.is_cuda();  // latents copied to the GPU without a sync
  const int64_t first = static_cast<int64_t>(rank) * local_batch;  // this rank's first global row
  // train.augment's uniforms for `images` batches of this rank's rows (none when it is off).
  const bool augmenting = parse_augment(config.train.augment).any();
  auto augment_draws = [&](int64_t draw, int64_t images) {
    if (!augmenting) return torch::Tensor();
    return uniform_table(seed, random::kAugment, draw, first, local_batch,
                         images * kAugmentDraws, pinned);
  };
  // train.cr_weight's translations of a D update's reals and fakes, keyed per global sample too.
  auto cr_shift_draws = [&](int64_t draw) {
    if (config.train.cr_weight == 0) return torch::Tensor();
    return uniform_table(seed, random::kCrShift, draw, first, local_batch, 2 * kAugmentDraws, pinned);
  };
  // model.mlp.d_dropout's uniforms, keyed per global sample like train.augment's.
  const int64_t d_draws = gan->models().d_draws;
  auto dropout_draws = [&](int64_t draw, int64_t images) {
    if (d_draws == 0) return torch::Tensor();
    return uniform_table(seed, random::kDropout, draw, first, local_batch, images * d_draws, pinned);
  };
  for (int64_t step = start_step; step < config.train.steps && !stop_signal; ++step) {
    const auto step_start = Clock::now();
    if (watchdog) watchdog->set_step(step);
    gan->set_lr_factor(lr_factor(config.optim, step, config.train.steps));
    gan->set_g_topk(g_topk_count(config.train, step, dataset->size()));
    for (int64_t k = 0; k < d_steps; ++k) {
      const int64_t draw = step * (d_steps + 1) + k;
      const torch::Tensor real = maybe_poison(stream->next(), fault, 'd', step + 1, rank);
      if (config.train.reuse_fakes && k == d_steps - 1) gan->keep_fakes_for_g();
      after_update(gan->d_update(real,
                                 latent_rows(seed, random::kLatent, draw, first, local_batch, config.model.z_dim, pinned),
                                 uniform_rows(seed, random::kPenaltyMix, draw, first, local_batch, pinned),
                                 augment_draws(draw, 2),
                                 /*r1=*/(step * d_steps + k) % config.train.r1_every == 0, dropout_draws(draw, 2),
                                 stream->labels(), cr_shift_draws(draw)),
                   "D", step + 1);
    }
    const int64_t g_draw = step * (d_steps + 1) + d_steps;
    after_update(gan->g_update(maybe_poison(latent_rows(seed, random::kLatent, g_draw, first, local_batch,
                                                        config.model.z_dim, pinned),
                                            fault, 'g', step + 1, rank),
                               augment_draws(g_draw, 1), dropout_draws(g_draw, 1),
                               labels ? label_rows(seed, random::kFakeLabel, g_draw, first, local_batch, *labels, pinned)
                                      : torch::Tensor()),
                 "G", step + 1);
    gan->sync_buffers();
    gan->update_g_ema(step + 1);  // after the sync: G's BatchNorm statistics are the ranks' mean
    if (metrics.rank && device.is_cuda())
      if (const auto memory = device_memory_bytes(device))
        metrics.rank->set_device_memory(static_cast<double>(memory->first), static_cast<double>(memory->second));
    const UpdateTimes times = gan->take_times();
    phase_totals += times;
    if (metrics.rank) metrics.rank->record_step(step_sample(*gan, times, step_start, local_batch * d_steps));
    const int64_t done = step + 1;
    const bool last = done == config.train.steps;

    if (config.train.log_every > 0 && (done % config.train.log_every == 0 || last)) {
      settle_skips(done);
      torch::Tensor stats = gan->take_stats();
      if (metrics.rank) record_nonfinite(*metrics.rank, stats);  // this rank's own, before the all-reduce
      comm->all_reduce(stats, comm::ReduceOp::kSum);
      torch::Tensor data_wait = torch::tensor({stream->take_wait_seconds()}, torch::kFloat64);
      comm->all_reduce(data_wait, comm::ReduceOp::kAverage);
      const auto now = Clock::now();
      const double seconds = std::chrono::duration<double>(now - last_log).count();
      LogRecord r = interval_statistics(stats, done, images);
      r.epoch = stream->position().epoch;
      r.data_wait_s = data_wait.item<double>() / static_cast<double>(done - last_log_step);
      data_wait_total += data_wait.item<double>();
      r.img_per_s = static_cast<double>((done - last_log_step) * d_steps * config.train.batch_size) / seconds;
      r.lr_g = learning_rate(gan->g_optimizer());
      r.lr_d = learning_rate(gan->d_optimizer());
      reporter->log(r);
      if (metrics.rank) record_log_step(metrics.job.get(), *gan, *comm, r);
      last_log = now;
      last_log_step = done;
    }
    if (rank0 && images && config.train.sample_every > 0 && (done % config.train.sample_every == 0 || last))
      write_samples(models, z_fixed, grid_y, run_dir / "samples" / (step_name(done) + ".png"));
    if (probe && (done % config.eval.frechet_every == 0 || last)) {
      // G in eval mode, from fixed latents; the other ranks wait at the next collective.
      const auto t0 = Clock::now();
      GanModels sampled = models.sampler();
      const double distance = probe(sampled);
      const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();
      char text[160];
      std::snprintf(text, sizeof text, "gantry: Fréchet distance at step %lld: %.3f (%lld samples of G, %.1f s)",
                    static_cast<long long>(done), distance, static_cast<long long>(config.eval.frechet_samples), seconds);
      reporter->message(text);
      if (metrics.job) metrics.job->record_frechet_distance(done, distance);
      const nlohmann::json record = {{"metric", "frechet"}, {"during_training", true}, {"step", done},
                                     {"frechet_distance", distance}, {"samples", config.eval.frechet_samples},
                                     {"seconds", seconds}};
      std::ofstream(run_dir / "eval.jsonl", std::ios::app) << record.dump() << "\n";
    }
    if (config.train.consistency_every > 0 && done % config.train.consistency_every == 0)
      check_replicas(*comm, models, done);
    stop_signal = agreed_stop_signal(*comm);
    if (stop_signal) {
      save_checkpoint(done, /*async=*/false);
      reporter->message(std::string("gantry: stopping after step ") + std::to_string(done) + " on " +
                        (stop_signal == SIGTERM ? "SIGTERM" : "SIGUSR1") + "; resume with --resume auto");
    } else if (!last && config.checkpoint.every > 0 && done % config.checkpoint.every == 0) {
      try {
        save_checkpoint(done, config.checkpoint.async);
      } catch (const checkpoint::CheckpointError& e) {  // every rank agrees
        if (metrics.job) metrics.job->checkpoint_failed();
        checkpoint_failed(e);
      }
    }
  }
  if (stop_signal) {
    comm->barrier();
    return;
  }

  // ---- finish ----------------------------------------------------------------------------------
  check_replicas(*comm, models, config.train.steps);
  if (config.train.steps > start_step) save_checkpoint(config.train.steps, /*async=*/false);
  finish_async_save();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (config.train.dump_replicas) {
    fs::create_directories(run_dir / "replicas");
    save_weights(models, run_dir / "replicas" / ("rank-" + std::to_string(rank) + ".pt"));
  }
  // The step breakdown, averaged over ranks: exposed all-reduce is what training waited for
  // after backward (buckets launched during backward overlap with it and do not count).
  torch::Tensor phases = torch::tensor({seconds, phase_totals.d_forward_backward, phase_totals.g_forward_backward,
                                        phase_totals.allreduce, phase_totals.optimizer}, torch::kFloat64);
  comm->all_reduce(phases, comm::ReduceOp::kAverage);
  const auto ph = phases.accessor<double, 1>();
  if (rank0 && !(finished_before && fs::exists(run_dir / "final.pt")))
    save_weights(models, run_dir / "final.pt");
  if (rank0 && !finished_before) {
    nlohmann::json summary = {
        {"steps", config.train.steps},
        {"world_size", world},
        {"seconds", seconds},
        {"img_per_s", static_cast<double>((config.train.steps - start_step) * d_steps * config.train.batch_size) /
                          std::max(seconds, 1e-9)},
        {"checksum", checksum(replica_state(models))},
        {"skipped_updates", skipped_total},
        {"phase_seconds",
         {{"d_forward_backward", ph[1]}, {"g_forward_backward", ph[2]}, {"exposed_allreduce", ph[3]},
          {"optimizer", ph[4]}, {"data_wait", data_wait_total},
          {"other", std::max(0.0, ph[0] - ph[1] - ph[2] - ph[3] - ph[4] - data_wait_total)}}},
    };
    if (!images) summary["gaussian"] = gaussian_summary(models, config, *dataset);
    write_file_atomic(run_dir / "summary.json", summary.dump(2) + "\n");
  }
  reporter->finish();
  reporter->message("gantry: done, " + std::to_string(config.train.steps) + " steps in " +
                    std::to_string(static_cast<int>(seconds)) + " s; weights in " + (run_dir / "final.pt").string());
  if (metrics.exporter && config.monitoring.linger_s > 0) {  // the final values get scraped too
    char text[96];
    std::snprintf(text, sizeof text, "gantry: serving metrics for %g s more (monitoring.linger_s)",
                  config.monitoring.linger_s);
    reporter->message(text);
    std::this_thread::sleep_for(std::chrono::duration<double>(config.monitoring.linger_s));
  }
  comm->barrier();
}

}  // namespace gantry
