// Implements: the training side of the metrics (see training_metrics.h).
#include "trainer/training_metrics.h"

#include <algorithm>
#include <cmath>

namespace gantry {

double learning_rate(torch::optim::Adam& opt) {
  return static_cast<torch::optim::AdamOptions&>(opt.param_groups().front().options()).lr();
}

monitoring::StepSample step_sample(const GanStep& gan, const UpdateTimes& t,
                                   std::chrono::steady_clock::time_point step_start, int64_t images) {
  const double step = std::chrono::duration<double>(std::chrono::steady_clock::now() - step_start).count();
  monitoring::StepSample s;
  s.phase_seconds[monitoring::kDForwardBackward] = t.d_forward_backward;
  s.phase_seconds[monitoring::kGForwardBackward] = t.g_forward_backward;
  s.phase_seconds[monitoring::kAllreduce] = t.allreduce;
  s.phase_seconds[monitoring::kOptimizer] = t.optimizer;
  s.phase_seconds[monitoring::kData] =
      std::max(0.0, step - t.d_forward_backward - t.g_forward_backward - t.allreduce - t.optimizer);
  s.images = images;
  s.bytes_reduced = {gan.g_bytes_reduced(), gan.d_bytes_reduced()};
  return s;
}

void record_nonfinite(monitoring::RankMetrics& rank, const torch::Tensor& local_stats) {
  const torch::Tensor host = local_stats.cpu();
  const auto s = host.accessor<double, 1>();
  rank.add_nonfinite(monitoring::kGenerator, static_cast<int64_t>(s[kGNonFinite]));
  rank.add_nonfinite(monitoring::kDiscriminator, static_cast<int64_t>(s[kDNonFinite]));
}

torch::Tensor discriminator_output_counts(const GanStep& gan) {
  const auto& bounds = monitoring::JobMetrics::discriminator_output_buckets();
  const torch::Tensor edges = torch::tensor(bounds, torch::kFloat64);
  std::vector<torch::Tensor> parts;
  for (const torch::Tensor& p : {gan.last_d_real(), gan.last_d_fake()}) {
    const torch::Tensor v = p.to(torch::kCPU, torch::kFloat64);
    // bucketize(right=false) gives i with bounds[i-1] < v <= bounds[i]: Prometheus' `le`.
    parts.push_back(torch::bincount(torch::bucketize(v, edges), {}, static_cast<int64_t>(bounds.size()) + 1)
                        .to(torch::kFloat64));
    parts.push_back(v.sum().reshape({1}));
  }
  return torch::cat(parts);
}

LogRecord interval_statistics(const torch::Tensor& summed_stats, int64_t step, bool images) {
  const torch::Tensor host = summed_stats.to(torch::kCPU, torch::kFloat64);
  const auto s = host.accessor<double, 1>();
  LogRecord r;
  r.step = step;
  r.d_loss = s[kDLossSum] / s[kDUpdates];
  r.g_loss = s[kGLossSum] / s[kGUpdates];
  r.d_real = s[kDRealSum] / s[kDUpdates];
  r.d_fake = s[kDFakeSum] / s[kDUpdates];
  if (s[kR1Count] > 0) r.r1_penalty = s[kR1Sum] / s[kR1Count];
  if (s[kCRCount] > 0) r.cr_penalty = s[kCRSum] / s[kCRCount];
  if (!images) {
    const double mean = s[kFakeSum] / s[kFakeCount];
    r.fake_mean = mean;
    r.fake_std = std::sqrt(std::max(0.0, s[kFakeSqSum] / s[kFakeCount] - mean * mean));
  }
  return r;
}

void record_log_step(monitoring::JobMetrics* job, GanStep& gan, comm::Communicator& comm, const LogRecord& r) {
  torch::Tensor counts = discriminator_output_counts(gan);
  comm.all_reduce(counts, comm::ReduceOp::kSum);
  if (!job) return;
  const auto [g_norm, d_norm] = gan.gradient_norms();
  monitoring::JobSample s;
  s.step = r.step;
  s.loss = {r.g_loss, r.d_loss};
  s.learning_rate = {learning_rate(gan.g_optimizer()), learning_rate(gan.d_optimizer())};
  s.gradient_norm = {g_norm, d_norm};
  s.discriminator_score = {r.d_real, r.d_fake};
  s.images_per_second = r.img_per_s;
  s.r1_penalty = r.r1_penalty;
  s.cr_penalty = r.cr_penalty;
  job->record(s);
  const size_t n = monitoring::JobMetrics::discriminator_output_buckets().size() + 1;
  const double* c = counts.data_ptr<double>();
  job->observe_discriminator_output(monitoring::kReal, std::vector<double>(c, c + n), c[n]);
  job->observe_discriminator_output(monitoring::kFake, std::vector<double>(c + n + 1, c + 2 * n + 1), c[2 * n + 1]);
}

}  // namespace gantry
