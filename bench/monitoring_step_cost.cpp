// Implements: the monitoring cost inside a real gaussian1d step (configs/gaussian1d.yaml's models,
// 128 rows a rank, one thread): the step itself, the per-step record (step_sample + record_step),
// and a log step's metrics (non-finite counts, D output histogram all-reduce, gradient norms).
#include <chrono>
#include <cstdio>
#include "trainer/latent.h"
#include "trainer/training_metrics.h"
using namespace gantry;
int main(int argc, char** argv) {
  comm::Runtime runtime(&argc, &argv);
  auto comm = comm::make_mpi_communicator(runtime);
  torch::set_num_threads(1);
  Config c = load_config("configs/gaussian1d.yaml", {});
  GanStep gan(make_models(c, {1, 1, 1}), c, *comm);
  prometheus::Registry registry;
  monitoring::RankMetrics rank(registry, {0, 0, 1, "h", "cpu"});
  monitoring::JobMetrics job(registry, {"v", "d"});
  const int64_t b = 128;
  using Clock = std::chrono::steady_clock;
  double step_s = 0, rec_s = 0, log_s = 0;
  const int steps = 3000, log_every = 100;
  for (int i = 0; i < steps; ++i) {
    auto t0 = Clock::now();
    gan.d_update(torch::randn({b, 1, 1, 1}) + 4, latent_rows(1, random::kLatent, 2 * i, 0, b, 8), uniform_rows(1, random::kPenaltyMix, 2 * i, 0, b));
    gan.g_update(latent_rows(1, random::kLatent, 2 * i + 1, 0, b, 8));
    gan.sync_buffers();
    auto t1 = Clock::now();
    rank.record_step(step_sample(gan, gan.take_times(), t0, b));
    auto t2 = Clock::now();
    if ((i + 1) % log_every == 0) {
      torch::Tensor stats = gan.take_stats();
      auto t3 = Clock::now();
      record_nonfinite(rank, stats);
      LogRecord r; r.step = i + 1; r.d_loss = 1; r.g_loss = 1;
      record_log_step(&job, gan, *comm, r);
      log_s += std::chrono::duration<double>(Clock::now() - t3).count();
    }
    if (i >= 500) { step_s += std::chrono::duration<double>(t1 - t0).count(); rec_s += std::chrono::duration<double>(t2 - t1).count(); }
  }
  const int n = steps - 500;
  std::printf("step %.1f us, record_step+step_sample %.3f us/step, log-step metrics %.1f us each = %.3f us/step amortized (log_every %d)\n",
              1e6 * step_s / n, 1e6 * rec_s / n, 1e6 * log_s / (steps / log_every), 1e6 * log_s / steps, log_every);
}
