// Implements: the glue between training and monitoring/: one step's sample from GanStep's phase
// times, this rank's non-finite counts from its local statistics, a log interval's statistics as
// logged, and the job's metrics at a log step (losses and D scores as logged, learning rates,
// gradient norms, D's output histogram).
#pragma once

#include <chrono>
#include <memory>

#include "comm/communicator.h"
#include "monitoring/exporter.h"
#include "monitoring/metrics.h"
#include "trainer/gan_step.h"
#include "trainer/reporter.h"

namespace gantry {

// The exporter and the metrics it serves; all empty when monitoring.port is 0.
struct TrainingMetrics {
  std::unique_ptr<monitoring::Exporter> exporter;
  std::unique_ptr<monitoring::RankMetrics> rank;
  std::unique_ptr<monitoring::JobMetrics> job;  // rank 0 only
};

// The learning rate opt takes its next step with (its first group's).
double learning_rate(torch::optim::Adam& opt);

// One step's sample: its phase times `t` (GanStep::take_times()), data as the rest of the step's
// wall time since `step_start`, and the all-reduce byte counts.
monitoring::StepSample step_sample(const GanStep& gan, const UpdateTimes& t,
                                   std::chrono::steady_clock::time_point step_start, int64_t images);

// Adds this rank's non-finite loss counts from `local_stats` (take_stats(), before the all-reduce).
void record_nonfinite(monitoring::RankMetrics& rank, const torch::Tensor& local_stats);

// D's outputs of the last D update counted per bucket of the D output histogram (Prometheus' `le`
// buckets, then +Inf) and their sum; real, then fake. Summed across ranks: the global batch's.
torch::Tensor discriminator_output_counts(const GanStep& gan);

// The statistics of a log interval, as logged: GanStep's statistics summed over the interval and
// across ranks (take_stats(), all-reduced) become mean losses, D scores and penalties (those the
// interval computed), and, for data that are not images, the mean and std of the fakes.
LogRecord interval_statistics(const torch::Tensor& summed_stats, int64_t step, bool images);

// At a log step: all-reduces D's output counts (collective: every rank calls it) and, where `job`
// is set (rank 0), records the logged statistics `r` with learning rates and gradient norms.
void record_log_step(monitoring::JobMetrics* job, GanStep& gan, comm::Communicator& comm, const LogRecord& r);

}  // namespace gantry
