// Implements: G's exponential moving average (see ema.h).
#include "trainer/ema.h"

#include <algorithm>
#include <cmath>

namespace gantry {

double g_ema_beta(const TrainConfig& train, int64_t g_updates) {
  if (train.g_ema_kimg <= 0) return 0;
  const double batch = static_cast<double>(train.batch_size);
  double half_life = train.g_ema_kimg * 1000;
  if (train.g_ema_rampup > 0) half_life = std::min(half_life, static_cast<double>(g_updates) * batch * train.g_ema_rampup);
  return std::pow(0.5, batch / std::max(half_life, 1e-8));
}

void update_average(torch::nn::Module& average, const torch::nn::Module& source, double beta) {
  torch::NoGradGuard no_grad;
  const auto avg_params = average.parameters(), src_params = source.parameters();
  for (size_t i = 0; i < avg_params.size(); ++i) avg_params[i].lerp_(src_params[i], 1 - beta);
  const auto avg_buffers = average.buffers(), src_buffers = source.buffers();
  for (size_t i = 0; i < avg_buffers.size(); ++i) avg_buffers[i].copy_(src_buffers[i]);
}

}  // namespace gantry
