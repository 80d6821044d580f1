// Implements: the cost of gantry's per-step metric updates (RankMetrics::record_step with all
// five phases, both networks' bytes, the timestamp) and of a log step's JobMetrics updates, in
// nanoseconds per call, single-threaded, while a scraper thread collects the registry.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

#include "monitoring/metrics.h"

int main() {
  using Clock = std::chrono::steady_clock;
  prometheus::Registry registry;
  gantry::monitoring::RankMetrics rank(registry, {0, 0, 2, "host", "cpu"});
  gantry::monitoring::JobMetrics job(registry, {"bench", "digest"});
  std::atomic<bool> stop{false};
  std::thread scraper([&] {  // a scrape every 10 ms: far more often than Prometheus would
    while (!stop) {
      registry.Collect();
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  });
  constexpr int kCalls = 1000000;
  gantry::monitoring::StepSample s;
  s.phase_seconds = {1e-4, 4e-4, 3e-4, 2e-4, 1e-4};
  s.images = 128;
  const auto t0 = Clock::now();
  for (int i = 0; i < kCalls; ++i) {
    s.bytes_reduced = {int64_t{i} * 1000, int64_t{i} * 2000};
    rank.record_step(s);
  }
  const auto t1 = Clock::now();
  gantry::monitoring::JobSample j;
  const std::vector<double> counts(gantry::monitoring::JobMetrics::discriminator_output_buckets().size() + 1, 6.0);
  for (int i = 0; i < kCalls / 10; ++i) {
    j.step = i;
    job.record(j);
    job.observe_discriminator_output(gantry::monitoring::kReal, counts, 60);
    job.observe_discriminator_output(gantry::monitoring::kFake, counts, 60);
  }
  const auto t2 = Clock::now();
  stop = true;
  scraper.join();
  std::printf("{\"record_step_ns\": %.1f, \"log_step_job_metrics_ns\": %.1f}\n",
              std::chrono::duration<double, std::nano>(t1 - t0).count() / kCalls,
              std::chrono::duration<double, std::nano>(t2 - t1).count() / (kCalls / 10));
}
