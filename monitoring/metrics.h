// Implements: gantry's Prometheus metrics. RankMetrics is what every rank exports (steps, images,
// step phase times, all-reduce bytes, non-finite losses, rank identity); JobMetrics is the job's
// statistics, exported once by rank 0 from values already averaged across ranks.
#pragma once

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace gantry::monitoring {

// The parts of a training step, in the order of gantry_step_phase_seconds' `phase` label values.
enum Phase : int { kData, kDForwardBackward, kGForwardBackward, kAllreduce, kOptimizer, kNumPhases };
const char* phase_name(Phase phase);

enum Network : int { kGenerator, kDiscriminator, kNumNetworks };
const char* network_name(Network network);

// D(x) is `real`, D(G(z)) is `fake`.
enum Input : int { kReal, kFake, kNumInputs };

struct RankIdentity {
  int rank = 0;
  int local_rank = 0;
  int world_size = 1;
  std::string host;
  std::string device = "cpu";  // "cuda:0" registers the device memory gauges
};

// One G update's worth of work on this rank.
struct StepSample {
  std::array<double, kNumPhases> phase_seconds{};
  int64_t images = 0;                                 // real images this rank read
  std::array<int64_t, kNumNetworks> bytes_reduced{};  // all-reduce bytes so far (cumulative)
};

// Metrics of one rank. Every update goes through references kept from Family::Add, so the cost
// is a few atomic adds and one mutex per histogram observation.
class RankMetrics {
 public:
  RankMetrics(prometheus::Registry& registry, const RankIdentity& identity);

  void record_step(const StepSample& sample);
  void add_nonfinite(Network network, int64_t count);
  // Allocated and peak device memory in bytes; only for a CUDA device (throws otherwise). The CUDA
  // backend calls it once per step from c10::cuda::CUDACachingAllocator's device stats.
  void set_device_memory(double allocated_bytes, double peak_bytes);

 private:
  prometheus::Counter& steps_;
  prometheus::Counter& images_;
  std::array<prometheus::Histogram*, kNumPhases> phase_seconds_{};
  std::array<prometheus::Counter*, kNumNetworks> allreduce_bytes_{};
  std::array<prometheus::Counter*, kNumNetworks> nonfinite_{};
  prometheus::Gauge& last_step_timestamp_;
  prometheus::Gauge* device_memory_allocated_ = nullptr;
  prometheus::Gauge* device_memory_peak_ = nullptr;
  std::array<int64_t, kNumNetworks> bytes_seen_{};
};

// The job's statistics at one log step, averaged across ranks.
struct JobSample {
  int64_t step = 0;  // G updates done
  std::array<double, kNumNetworks> loss{}, learning_rate{}, gradient_norm{};
  std::array<double, kNumInputs> discriminator_score{};  // mean D output on real and fake inputs
  double images_per_second = 0;
  std::optional<double> r1_penalty;  // mean R1 penalty of the interval, when train.r1_gamma is on
  std::optional<double> cr_penalty;  // mean consistency penalty of the interval, when train.cr_weight is on
};

struct BuildInfo {
  std::string version;
  std::string config_digest;
};

// The job-level metrics; rank 0 alone creates them.
class JobMetrics {
 public:
  JobMetrics(prometheus::Registry& registry, const BuildInfo& build);

  void record(const JobSample& sample);
  // D's outputs over a batch: counts per bucket of discriminator_output_buckets() (not cumulative;
  // one more count at the end for +Inf) and the sum of the outputs.
  void observe_discriminator_output(Input input, const std::vector<double>& bucket_counts, double sum);
  // stall_seconds: how long training waited for the save (all of it when synchronous).
  void checkpoint_saved(int64_t step, double stall_seconds);
  void checkpoint_failed();
  // eval.frechet_every's measurement. The gauges (gantry_frechet_distance and the step it was
  // taken at) exist from the first measurement on: a 0 before it would read as a perfect G.
  void record_frechet_distance(int64_t step, double distance);

  // Upper bounds of the D output histogram's buckets: 0.05, 0.10, ..., 1.0.
  static const std::vector<double>& discriminator_output_buckets();

 private:
  // The gauge in `slot`, registered (unlabelled) on first use: series that exist only once a
  // feature has produced a value.
  prometheus::Gauge& gauge_once(prometheus::Gauge*& slot, const std::string& name, const std::string& help);

  std::array<prometheus::Gauge*, kNumNetworks> loss_{}, learning_rate_{}, gradient_norm_{};
  std::array<prometheus::Gauge*, kNumInputs> score_{};
  std::array<prometheus::Histogram*, kNumInputs> output_{};
  prometheus::Gauge& images_per_second_;
  prometheus::Gauge& logged_step_;
  prometheus::Histogram& checkpoint_seconds_;
  prometheus::Gauge& checkpoint_last_success_;
  prometheus::Gauge& checkpoint_last_step_;
  prometheus::Counter* checkpoint_success_ = nullptr;
  prometheus::Counter* checkpoint_failure_ = nullptr;
  prometheus::Registry& registry_;
  prometheus::Gauge* frechet_distance_ = nullptr;
  prometheus::Gauge* frechet_step_ = nullptr;
  prometheus::Gauge* r1_penalty_ = nullptr;  // from the first sample that has one
  prometheus::Gauge* cr_penalty_ = nullptr;  // likewise
};

}  // namespace gantry::monitoring
