// Implements: RankMetrics and JobMetrics (see metrics.h): the families, their help texts, units and
// buckets, and the references that updates go through.
#include "monitoring/metrics.h"

#include <stdexcept>

namespace gantry::monitoring {
namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;

// Phases run from microseconds (gaussian1d's data) to seconds (a large model's all-reduce).
const prometheus::Histogram::BucketBoundaries& phase_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {1e-5, 2.5e-5, 5e-5, 1e-4,  2.5e-4, 5e-4, 1e-3,
                                                            2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                            0.5,  1,    2.5,  5,    10};
  return b;
}

const prometheus::Histogram::BucketBoundaries& checkpoint_buckets() {
  static const prometheus::Histogram::BucketBoundaries b = {0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600};
  return b;
}

const char* input_name(Input input) { return input == kReal ? "real" : "fake"; }

}  // namespace

const char* phase_name(Phase phase) {
  static const char* const names[kNumPhases] = {"data", "d_forward_backward", "g_forward_backward", "allreduce",
                                                "optimizer"};
  return names[phase];
}

const char* network_name(Network network) { return network == kGenerator ? "generator" : "discriminator"; }

RankMetrics::RankMetrics(prometheus::Registry& registry, const RankIdentity& id)
    : steps_(BuildCounter()
                 .Name("gantry_steps_total")
                 .Help("Training steps (G updates) this rank has completed")
                 .Register(registry)
                 .Add({})),
      images_(BuildCounter()
                  .Name("gantry_images_total")
                  .Help("Real images this rank has read (its share of every D update's batch)")
                  .Register(registry)
                  .Add({})),
      last_step_timestamp_(BuildGauge()
                               .Name("gantry_last_step_timestamp_seconds")
                               .Help("Unix time at which this rank last completed a step")
                               .Register(registry)
                               .Add({})) {
  auto& phases = BuildHistogram()
                     .Name("gantry_step_phase_seconds")
                     .Help("Wall time of each part of a step on this rank; data is the step's time minus the rest")
                     .Register(registry);
  for (int p = 0; p < kNumPhases; ++p)
    phase_seconds_[p] = &phases.Add({{"phase", phase_name(static_cast<Phase>(p))}}, phase_buckets());
  auto& bytes = BuildCounter()
                    .Name("gantry_allreduce_bytes_total")
                    .Help("Gradient bytes this rank has all-reduced, per network")
                    .Register(registry);
  auto& nonfinite = BuildCounter()
                        .Name("gantry_nonfinite_total")
                        .Help("Updates whose loss was NaN or infinite on this rank, per network")
                        .Register(registry);
  for (int n = 0; n < kNumNetworks; ++n) {
    allreduce_bytes_[n] = &bytes.Add({{"network", network_name(static_cast<Network>(n))}});
    nonfinite_[n] = &nonfinite.Add({{"network", network_name(static_cast<Network>(n))}});
  }
  BuildGauge()
      .Name("gantry_rank_info")
      .Help("Where this rank runs (always 1)")
      .Register(registry)
      .Add({{"rank", std::to_string(id.rank)},
            {"local_rank", std::to_string(id.local_rank)},
            {"world_size", std::to_string(id.world_size)},
            {"host", id.host},
            {"device", id.device}})
      .Set(1);
  if (id.device.rfind("cuda", 0) == 0) {
    device_memory_allocated_ = &BuildGauge()
                                    .Name("gantry_device_memory_allocated_bytes")
                                    .Help("Device memory held by tensors on this rank's GPU")
                                    .Register(registry)
                                    .Add({});
    device_memory_peak_ = &BuildGauge()
                               .Name("gantry_device_memory_peak_bytes")
                               .Help("Peak device memory held by tensors on this rank's GPU")
                               .Register(registry)
                               .Add({});
  }
}

void RankMetrics::record_step(const StepSample& s) {
  steps_.Increment();
  images_.Increment(static_cast<double>(s.images));
  for (int p = 0; p < kNumPhases; ++p) phase_seconds_[p]->Observe(s.phase_seconds[p]);
  for (int n = 0; n < kNumNetworks; ++n) {
    if (s.bytes_reduced[n] > bytes_seen_[n]) allreduce_bytes_[n]->Increment(static_cast<double>(s.bytes_reduced[n] - bytes_seen_[n]));
    bytes_seen_[n] = s.bytes_reduced[n];
  }
  last_step_timestamp_.SetToCurrentTime();
}

void RankMetrics::add_nonfinite(Network network, int64_t count) {
  if (count > 0) nonfinite_[network]->Increment(static_cast<double>(count));
}

void RankMetrics::set_device_memory(double allocated_bytes, double peak_bytes) {
  if (!device_memory_allocated_) throw std::logic_error("set_device_memory: this rank's device is not a CUDA device");
  device_memory_allocated_->Set(allocated_bytes);
  device_memory_peak_->Set(peak_bytes);
}

const std::vector<double>& JobMetrics::discriminator_output_buckets() {
  static const std::vector<double> b = [] {
    std::vector<double> v;
    for (int i = 1; i <= 20; ++i) v.push_back(i / 20.0);
    return v;
  }();
  return b;
}

JobMetrics::JobMetrics(prometheus::Registry& registry, const BuildInfo& build)
    : images_per_second_(BuildGauge()
                             .Name("gantry_images_per_second")
                             .Help("Real images per second, whole job, over the last log interval")
                             .Register(registry)
                             .Add({})),
      logged_step_(BuildGauge()
                       .Name("gantry_logged_step")
                       .Help("The step (G updates done) that the job statistics describe")
                       .Register(registry)
                       .Add({})),
      checkpoint_seconds_(BuildHistogram()
                              .Name("gantry_checkpoint_save_seconds")
                              .Help("Time training waited for a checkpoint save (the host copy of an async save)")
                              .Register(registry)
                              .Add({}, checkpoint_buckets())),
      checkpoint_last_success_(BuildGauge()
                                   .Name("gantry_checkpoint_last_success_timestamp_seconds")
                                   .Help("Unix time of the last committed checkpoint (training start until the first)")
                                   .Register(registry)
                                   .Add({})),
      checkpoint_last_step_(BuildGauge()
                                .Name("gantry_checkpoint_last_step")
                                .Help("Step of the last committed checkpoint (0: none yet)")
                                .Register(registry)
                                .Add({})),
      registry_(registry) {
  auto& loss = BuildGauge().Name("gantry_loss").Help("Loss averaged across ranks, per network").Register(registry);
  auto& lr = BuildGauge().Name("gantry_learning_rate").Help("Adam's learning rate, per network").Register(registry);
  auto& norm = BuildGauge()
                   .Name("gantry_gradient_norm")
                   .Help("L2 norm of the network's all-reduced gradients at its last update before the log step")
                   .Register(registry);
  for (int n = 0; n < kNumNetworks; ++n) {
    const prometheus::Labels labels = {{"network", network_name(static_cast<Network>(n))}};
    loss_[n] = &loss.Add(labels);
    learning_rate_[n] = &lr.Add(labels);
    gradient_norm_[n] = &norm.Add(labels);
  }
  auto& score = BuildGauge()
                    .Name("gantry_discriminator_score")
                    .Help("Mean D output (a probability): input=real is D(x), input=fake is D(G(z))")
                    .Register(registry);
  auto& output = BuildHistogram()
                     .Name("gantry_discriminator_output")
                     .Help("D's outputs over the global batch of the last D update before each log step")
                     .Register(registry);
  for (int i = 0; i < kNumInputs; ++i) {
    const prometheus::Labels labels = {{"input", input_name(static_cast<Input>(i))}};
    score_[i] = &score.Add(labels);
    output_[i] = &output.Add(labels, discriminator_output_buckets());
  }
  auto& saves = BuildCounter().Name("gantry_checkpoint_saves_total").Help("Checkpoint saves by result").Register(registry);
  checkpoint_success_ = &saves.Add({{"result", "success"}});
  checkpoint_failure_ = &saves.Add({{"result", "failure"}});
  BuildGauge()
      .Name("gantry_build_info")
      .Help("gantry's version and the digest of the resolved config (always 1)")
      .Register(registry)
      .Add({{"version", build.version}, {"config_digest", build.config_digest}})
      .Set(1);
  checkpoint_last_success_.SetToCurrentTime();
}

prometheus::Gauge& JobMetrics::gauge_once(prometheus::Gauge*& slot, const std::string& name, const std::string& help) {
  if (!slot) slot = &BuildGauge().Name(name).Help(help).Register(registry_).Add({});
  return *slot;
}

void JobMetrics::record_frechet_distance(int64_t step, double distance) {
  gauge_once(frechet_distance_, "gantry_frechet_distance",
             "Fréchet distance of G's samples to the real test images in gantry eval's classifier features "
             "(eval.frechet_every; lower is better)")
      .Set(distance);
  gauge_once(frechet_step_, "gantry_frechet_distance_step", "The step gantry_frechet_distance was measured at")
      .Set(static_cast<double>(step));
}

void JobMetrics::record(const JobSample& s) {
  for (int n = 0; n < kNumNetworks; ++n) {
    loss_[n]->Set(s.loss[n]);
    learning_rate_[n]->Set(s.learning_rate[n]);
    gradient_norm_[n]->Set(s.gradient_norm[n]);
  }
  for (int i = 0; i < kNumInputs; ++i) score_[i]->Set(s.discriminator_score[i]);
  images_per_second_.Set(s.images_per_second);
  logged_step_.Set(static_cast<double>(s.step));
  // Registered by the first sample that carries it: without train.r1_gamma there is no series.
  if (s.r1_penalty)
    gauge_once(r1_penalty_, "gantry_r1_penalty",
               "Mean R1 penalty E||grad_x D(x)||^2 on the real images over the regularized D updates of the "
               "latest log interval that had one (train.r1_gamma)")
        .Set(*s.r1_penalty);
  if (s.cr_penalty)
    gauge_once(cr_penalty_, "gantry_cr_penalty",
               "Mean consistency penalty (D's logits on translated images against the same images, reals' and "
               "fakes' squared differences summed) over the latest log interval's D updates (train.cr_weight)")
        .Set(*s.cr_penalty);
}

void JobMetrics::observe_discriminator_output(Input input, const std::vector<double>& bucket_counts, double sum) {
  if (bucket_counts.size() != discriminator_output_buckets().size() + 1)
    throw std::invalid_argument("observe_discriminator_output: expected one count per bucket plus +Inf");
  output_[input]->ObserveMultiple(bucket_counts, sum);
}

void JobMetrics::checkpoint_saved(int64_t step, double stall_seconds) {
  checkpoint_seconds_.Observe(stall_seconds);
  checkpoint_success_->Increment();
  checkpoint_last_success_.SetToCurrentTime();
  checkpoint_last_step_.Set(static_cast<double>(step));
}

void JobMetrics::checkpoint_failed() {
  checkpoint_failure_->Increment();
}

}  // namespace gantry::monitoring
