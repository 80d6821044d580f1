// Implements: one data-parallel GAN update at a time. A D update is D forward on real and
// detached fakes -> D loss backward -> D's gradients averaged across ranks -> D's Adam step.
// A G update freezes D, backpropagates G's loss through it, averages G's gradients and steps G.
// Statistics stay on the device as running sums until the reporter reads them.
#pragma once

#include <torch/torch.h>

#include <memory>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "trainer/adam.h"
#include "trainer/augment.h"
#include "trainer/checkpoint.h"
#include "trainer/config.h"
#include "trainer/losses.h"
#include "trainer/models.h"

namespace gantry {

// Running sums since the last read, one slot each (a single tensor, so one all-reduce).
enum StatSlot : int64_t {
  kDLossSum, kGLossSum, kDRealSum, kDFakeSum, kDUpdates, kGUpdates, kFakeSum, kFakeSqSum, kFakeCount,
  kDNonFinite, kGNonFinite,  // updates whose loss was NaN or infinite
  kR1Sum, kR1Count,          // train.r1_gamma's penalty, on the D updates that add it
  kCRSum, kCRCount,          // train.cr_weight's consistency penalty, on the D updates that add it
  kNumStats
};

// Wall time of each part of the updates since the last take_times(), in seconds. The clock sees
// the work itself on CPU; on CUDA it would see kernel launches unless the streams are synced.
struct UpdateTimes {
  double d_forward_backward = 0, g_forward_backward = 0, allreduce = 0, optimizer = 0;
  UpdateTimes& operator+=(const UpdateTimes& o) {
    d_forward_backward += o.d_forward_backward;
    g_forward_backward += o.g_forward_backward;
    allreduce += o.allreduce;
    optimizer += o.optimizer;
    return *this;
  }
};

// Whether an update was applied. On the CPU the host decides at once. With CUDA parameters the
// device decides (DeviceAdam): the update returns as soon as its work is queued, and the outcome
// is a flag on the device, so reading it waits for the update to finish.
class UpdateOutcome {
 public:
  explicit UpdateOutcome(bool applied) : applied_(applied) {}
  explicit UpdateOutcome(torch::Tensor skipped) : skipped_(std::move(skipped)) {}
  // Whether applied() answers without waiting for the device.
  bool known() const { return !skipped_.defined(); }
  bool applied() const { return known() ? applied_ : skipped_.item<float>() == 0; }
  explicit operator bool() const { return applied(); }

 private:
  bool applied_ = false;
  torch::Tensor skipped_;  // 0-dim float on the device: 1 when skipped
};

// The updates the device skipped since the last GanStep::settle() (CUDA; the CPU's outcomes are
// known when each update returns).
struct SkippedUpdates {
  int64_t d = 0, g = 0;
  int64_t longest_run = 0;  // the most consecutive skipped updates, D's and G's together
};

class GanStep {
 public:
  GanStep(GanModels models, const Config& config, comm::Communicator& comm);

  // real: this rank's share of the global batch; z and penalty_mix: matching latents and
  // WGAN-GP interpolation weights (ignored by the other losses).
  // An update is skipped when its averaged gradient held a NaN or an infinity (or some rank's
  // loss did): the optimizer does not step and the BatchNorm buffers are put back. Every rank
  // skips alike. On a GPU nothing here waits for the device unless the outcome is read.
  // With train.augment, D sees real and fake images augmented (trainer/augment.h) by `augment`'s
  // uniforms: [n, 2 * kAugmentDraws] for a D update (real's, then fake's), [n, kAugmentDraws] for a
  // G update. Undefined: D sees them as they are.
  // r1: this D update adds train.r1_gamma's penalty (the caller picks every r1_every-th).
  // With D's dropout (models' d_draws > 0), `dropout` holds its uniforms, laid out like
  // `augment`'s: [n, 2 * d_draws] for a D update (real's, then fake's), [n, d_draws] for a G update.
  // Undefined: LibTorch's own dropout draws them.
  // With train.cr_weight, `cr_shifts` holds the uniforms of bCR's translations (trainer/augment.h,
  // by up to train.cr_shift pixels): [n, 2 * kAugmentDraws], real's then fake's, applied on top of
  // what D sees. Undefined: no consistency penalty.
  // labels: for a conditional GAN (models' classes > 0), [n] class indices (int64, on the host).
  // A D update's are the real images', and its fakes are drawn for the same labels (so that
  // WGAN-GP's interpolates join images of one class); a G update's are the caller's draw.
  // Undefined for an unconditional GAN.
  UpdateOutcome d_update(const torch::Tensor& real, const torch::Tensor& z, const torch::Tensor& penalty_mix,
                         const torch::Tensor& augment = torch::Tensor(), bool r1 = false,
                         const torch::Tensor& dropout = torch::Tensor(), const torch::Tensor& labels = torch::Tensor(),
                         const torch::Tensor& cr_shifts = torch::Tensor());
  UpdateOutcome g_update(const torch::Tensor& z, const torch::Tensor& augment = torch::Tensor(),
                         const torch::Tensor& dropout = torch::Tensor(), const torch::Tensor& labels = torch::Tensor());
  // train.reuse_fakes: the next D update keeps its fakes with G's graph (G's forward pass runs with
  // gradients), and the G update after it backpropagates through those instead of drawing G(z)
  // anew: its z and labels are then unused (the fakes' are the D update's). G has not changed in
  // between, so this is the same update on the D update's latents, one G forward pass cheaper.
  void keep_fakes_for_g() { keep_fakes_ = true; }
  // Sets both optimizers' learning rates to optim.{g,d}.lr x factor (optim.schedule's factor for
  // the coming step, trainer/lr_schedule.h); they start at factor 1.
  void set_lr_factor(double factor);
  // train.g_topk: the G updates that follow read only the k fakes of the global batch (every
  // rank's, in rank order) that D scores highest, each weighted 1/k: the mean loss of the k
  // (Sinha et al. 2020's top-k update). The ranks share their logits for it (one all-reduce of
  // the global batch's logits, on the device). k at or above the global batch: every fake (the
  // start).
  void set_g_topk(int64_t k) { g_topk_ = k; }
  // Whether outcomes are decided on the device (then count them with settle()).
  bool decides_on_device() const { return d_device_adam_ != nullptr; }
  // The device's skipped updates since the last call (a device sync; zeros on the CPU), and the
  // optimizers' host step counts brought up to date for checkpoints.
  SkippedUpdates settle();
  // Averages BatchNorm running statistics across ranks so replicas stay identical.
  void sync_buffers();
  // Moves G's average (if any) toward G after G update number `g_updates` (from 1): every rank
  // holds the same G, so every rank computes the same average without communication.
  void update_g_ema(int64_t g_updates);

  // Returns the sums accumulated since the last call (local to this rank) and resets them.
  torch::Tensor take_stats();
  // Returns the time spent in each phase since the last call and resets it.
  UpdateTimes take_times();
  // D's outputs (probabilities, flat) on this rank's real and fake inputs of the last D update.
  const torch::Tensor& last_d_real() const { return last_d_real_; }
  const torch::Tensor& last_d_fake() const { return last_d_fake_; }
  // L2 norms of G's and D's gradients as their last update left them (averaged across ranks).
  std::pair<double, double> gradient_norms() const;

  // Models' parameters and buffers (G's average as "generator_ema/...") and both optimizers'
  // full state, as named tensors ("generator/param/net.0.weight",
  // "optim/discriminator/net.0.weight/exp_avg", ...), and back. A state without G's average
  // (saved with train.g_ema_kimg: 0) starts the average from G.
  void save_state(checkpoint::StateDict& out);
  void load_state(const checkpoint::StateDict& in);

  GanModels& models() { return models_; }
  torch::optim::Adam& g_optimizer() { return *g_opt_; }
  torch::optim::Adam& d_optimizer() { return *d_opt_; }
  int64_t bytes_reduced() const { return g_reducer_->bytes_reduced() + d_reducer_->bytes_reduced(); }
  int64_t g_bytes_reduced() const { return g_reducer_->bytes_reduced(); }
  int64_t d_bytes_reduced() const { return d_reducer_->bytes_reduced(); }

 private:
  void set_d_trainable(bool trainable);
  // x as D sees it: augmented by columns [k, k + 1) * kAugmentDraws of `augment`, or as it is.
  torch::Tensor seen_by_d(const torch::Tensor& x, const torch::Tensor& augment, int64_t k) const;
  // Columns [k, k + 1) * d_draws of `dropout`: D's draws for image k of each row (0: real, 1:
  // fake); undefined when D draws nothing.
  torch::Tensor draws_for(const torch::Tensor& dropout, int64_t k) const;
  // A conditional GAN's labels on the models' device (undefined for an unconditional one).
  torch::Tensor device_of(const torch::Tensor& labels) const;
  // D's logits for x (of classes `labels`, undefined for an unconditional D) with `draws` (rows
  // matching x's), or without any when it is undefined.
  torch::Tensor score(const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor& draws);
  // G's loss for this rank's logits [n]: the mean over the global batch, or with set_g_topk's k
  // below the global batch, world_size / k times the sum over this rank's fakes among the k (so
  // that the reducer's average over ranks gives the mean over the k).
  torch::Tensor g_loss(const torch::Tensor& logits);
  std::vector<torch::Tensor> snapshot_buffers() const;
  void restore_buffers(const std::vector<torch::Tensor>& snapshot);
  // An update's end, after the all-reduce: the Adam step if every averaged gradient is finite,
  // else the buffers put back. On the host, or on the device (device_adam set).
  UpdateOutcome apply_update(torch::optim::Adam& opt, DeviceAdam* device_adam, const torch::nn::Module& m,
                             const std::vector<torch::Tensor>& buffers, int64_t slot);
  // The device's side of an update's end: the Adam step it skips when the averaged gradient is
  // not finite, the buffers put back then, and the skip counted in skips_.
  UpdateOutcome finish_on_device(DeviceAdam& adam, const torch::nn::Module& m,
                                 const std::vector<torch::Tensor>& buffers, int64_t slot);

  GanModels models_;
  LossKind loss_;
  double gp_weight_;
  TrainConfig train_;     // G's average: its half-life, ramp-up and the batch
  AugmentPolicy augment_;  // train.augment
  torch::Device device_;  // where the models live; inputs arrive on the host or there
  bool bf16_;             // train.precision: bf16 autocast around the forward passes
  double g_lr_, d_lr_;    // optim.g.lr and optim.d.lr, which set_lr_factor scales
  int64_t g_topk_ = 0;    // set_g_topk's k (0: every fake)
  bool keep_fakes_ = false;            // keep_fakes_for_g: the next D update keeps its fakes
  torch::Tensor kept_fakes_, kept_labels_;  // those fakes (with G's graph) and their labels, until the G update
  comm::Communicator& comm_;
  std::unique_ptr<torch::optim::Adam> g_opt_, d_opt_;
  std::unique_ptr<comm::GradientReducer> g_reducer_, d_reducer_;
  std::unique_ptr<DeviceAdam> g_device_adam_, d_device_adam_;  // CUDA parameters: skips decided there
  enum SkipSlot : int64_t { kSkipsD, kSkipsG, kSkipsRun, kSkipsLongestRun, kNumSkipSlots };
  torch::Tensor skips_;  // on the device, since the last settle(): skipped updates, the current and longest run
  std::vector<torch::Tensor> buffers_;        // G's and D's, put back when an update is skipped
  std::vector<torch::Tensor> float_buffers_;  // those averaged across ranks (BatchNorm's statistics)
  torch::Tensor stats_;
  UpdateTimes times_;
  torch::Tensor last_d_real_, last_d_fake_;
};

// All parameters and buffers of a module, in registration order.
std::vector<torch::Tensor> state_tensors(const torch::nn::Module& module);

}  // namespace gantry
