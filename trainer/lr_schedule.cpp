// Implements: the learning-rate schedule (see lr_schedule.h).
#include "trainer/lr_schedule.h"

#include <algorithm>
#include <cmath>

namespace gantry {

double lr_factor(const OptimConfig& optim, int64_t step, int64_t steps) {
  const double warm = step < optim.warmup_steps
                          ? static_cast<double>(step + 1) / static_cast<double>(optim.warmup_steps)
                          : 1.0;
  if (optim.schedule == "constant") return warm;
  // Decay over [start, steps): full learning rate at `start`, approaching final_lr_ratio.
  const int64_t start = static_cast<int64_t>(std::floor(optim.decay_start * static_cast<double>(steps)));
  if (step < start || steps <= start) return warm;
  const double progress = std::min(1.0, static_cast<double>(step - start) / static_cast<double>(steps - start));
  const double floor = optim.final_lr_ratio;
  const double shape = optim.schedule == "linear" ? 1.0 - progress : 0.5 * (1.0 + std::cos(M_PI * progress));
  return warm * (floor + (1.0 - floor) * shape);
}

}  // namespace gantry
