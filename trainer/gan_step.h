// Implements: one data-parallel GAN update at a time. A D update is D forward on real and
// detached fakes -> D loss backward -> D's gradients averaged across ranks -> D's Adam step.
// A G update freezes D, backpropagates G's loss through it, averages G's gradients and steps G.
// Statistics stay on the device as running sums until the reporter reads them.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/losses.h"
#include "trainer/models.h"

namespace gantry {

// Running sums since the last read, one slot each (a single tensor, so one all-reduce).
enum StatSlot : int64_t {
  kDLossSum, kGLossSum, kDRealSum, kDFakeSum, kDUpdates, kGUpdates, kFakeSum, kFakeSqSum, kFakeCount,
  kNumStats
};

class GanStep {
 public:
  GanStep(GanModels models, const Config& config, comm::Communicator& comm);

  // real: this rank's share of the global batch; z and penalty_mix: matching latents and
  // WGAN-GP interpolation weights (ignored by the other losses).
  void d_update(const torch::Tensor& real, const torch::Tensor& z, const torch::Tensor& penalty_mix);
  void g_update(const torch::Tensor& z);
  // Averages BatchNorm running statistics across ranks so replicas stay identical.
  void sync_buffers();

  // Returns the sums accumulated since the last call (local to this rank) and resets them.
  torch::Tensor take_stats();

  // Models' parameters and buffers and both optimizers' full state, as named tensors
  // ("generator/param/net.0.weight", "optim/discriminator/net.0.weight/exp_avg", ...), and back.
  void save_state(checkpoint::StateDict& out) const;
  void load_state(const checkpoint::StateDict& in);

  GanModels& models() { return models_; }
  torch::optim::Adam& g_optimizer() { return *g_opt_; }
  torch::optim::Adam& d_optimizer() { return *d_opt_; }
  int64_t bytes_reduced() const { return g_reducer_->bytes_reduced() + d_reducer_->bytes_reduced(); }

 private:
  void set_d_trainable(bool trainable);

  GanModels models_;
  LossKind loss_;
  double gp_weight_;
  comm::Communicator& comm_;
  std::unique_ptr<torch::optim::Adam> g_opt_, d_opt_;
  std::unique_ptr<comm::GradientReducer> g_reducer_, d_reducer_;
  std::vector<torch::Tensor> float_buffers_;
  torch::Tensor stats_;
};

// All parameters and buffers of a module, in registration order.
std::vector<torch::Tensor> state_tensors(const torch::nn::Module& module);

}  // namespace gantry
