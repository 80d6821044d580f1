// Implements: the learning-rate schedule (see lr_schedule.h).
#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace gantry {

double lr_factor(const OptimConfig& optim, int64_t step, int64_t steps) {
  if (step < optim.warmup_steps) return static_cast<double>(step + 1) / static_cast<double>(optim.warmup_steps);
  if (optim.schedule == "constant") return 1.0;
  // The decay runs over [start, steps): the full rate at `start`, approaching final_lr_ratio.
  // (The 1e-9 keeps 0.29 x 100 from rounding down to step 28.)
  const int64_t start = std::max(optim.warmup_steps,
                                 static_cast<int64_t>(std::floor(optim.decay_start * static_cast<double>(steps) + 1e-9)));
  if (step < start || steps <= start) return 1.0;
  const double progress = std::min(1.0, static_cast<double>(step - start) / static_cast<double>(steps - start));
  const double shape = optim.schedule == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return optim.final_lr_ratio + (1.0 - optim.final_lr_ratio) * shape;
}

int64_t g_topk_count(const TrainConfig& train, int64_t step, int64_t records) {
  const double epochs = static_cast<double>(step) * static_cast<double>(train.batch_size * train.d_steps) /
                        static_cast<double>(std::max<int64_t>(records, 1));
  const double kept = std::max(train.g_topk, std::pow(train.g_topk_gamma, epochs));
  return std::clamp<int64_t>(std::llround(kept * static_cast<double>(train.batch_size)), 1, train.batch_size);
}

}  // namespace gantry
