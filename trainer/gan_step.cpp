// Implements: GanStep (see gan_step.h).
#include "trainer/gan_step.h"

#include <chrono>
#include <cmath>
#include <limits>

#include "trainer/adam.h"
#include "trainer/device.h"
#include "trainer/ema.h"

namespace gantry {

std::vector<torch::Tensor> state_tensors(const torch::nn::Module& module) {
  std::vector<torch::Tensor> out = module.parameters();
  for (const auto& b : module.buffers()) out.push_back(b);
  return out;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds(Clock::time_point from, Clock::time_point to) { return std::chrono::duration<double>(to - from).count(); }

// Adds 1 to stats[slot] when the scalar `loss` is NaN or infinite. On the CPU reading the value
// costs ~0.1 us; on a GPU that read would be a sync, so there the test stays on the device
// (isfinite is ~10 us of small ops: too much for the CPU's millisecond steps).
void count_nonfinite(torch::Tensor& stats, int64_t slot, const torch::Tensor& loss) {
  if (loss.is_cpu()) {
    if (!std::isfinite(loss.item<double>())) stats[slot] += 1;
  } else {
    stats[slot] += torch::isfinite(loss).logical_not().to(stats.device());
  }
}

// NaN guard, part 1: a rank whose own loss is non-finite makes its gradient NaN (the loss times
// NaN), so the averaged gradient is non-finite on every rank and all ranks skip alike. A finite
// loss is multiplied by exactly 1 on the device; on the CPU the check is a cheap read.
torch::Tensor poison_if_nonfinite(const torch::Tensor& loss) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  if (loss.is_cpu()) return std::isfinite(loss.item<double>()) ? loss : loss * nan;
  return loss * torch::where(torch::isfinite(loss.detach()), torch::ones_like(loss), torch::full_like(loss, nan));
}

// NaN guard, part 2, after the all-reduce: whether every averaged gradient is finite. One sum per
// parameter, read once: the host path (CPU parameters; CUDA ones take finish_on_device, which
// reads nothing). A sum that overflows float counts as non-finite: gradients that large are no better.
bool finite_gradients(const torch::nn::Module& m) {
  std::vector<torch::Tensor> sums;
  for (const auto& p : m.parameters())
    if (p.grad().defined()) sums.push_back(p.grad().sum());
  return sums.empty() || std::isfinite(torch::stack(sums).sum().item<double>());
}

// Drops the optimizer's gradients, as PyTorch 2's zero_grad(set_to_none=True) (LibTorch 1.13's
// zero_grad() fills them with zeros): backward then hands its gradient tensors over instead of
// adding them to zeroed ones, which saves a fill and an add per parameter per update.
void clear_grads(torch::optim::Optimizer& opt) {
  for (auto& group : opt.param_groups())
    for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
}

void save_adam(const torch::optim::Adam& opt, const torch::nn::Module& m, const std::string& prefix,
               checkpoint::StateDict& out) {
  const auto& state = opt.state();
  for (const auto& p : m.named_parameters()) {
    const auto it = state.find(optimizer_state_key(state, p.value()));
    if (it == state.end()) continue;  // never stepped
    const auto& s = static_cast<const torch::optim::AdamParamState&>(*it->second);
    out[prefix + p.key() + "/exp_avg"] = s.exp_avg();
    out[prefix + p.key() + "/exp_avg_sq"] = s.exp_avg_sq();
    out[prefix + p.key() + "/step"] = torch::tensor(s.step(), torch::kInt64);
  }
}

void load_adam(torch::optim::Adam& opt, const torch::nn::Module& m, const std::string& prefix,
               const checkpoint::StateDict& in) {
  auto& state = opt.state();
  for (const auto& p : m.named_parameters()) {
    const auto it = in.find(prefix + p.key() + "/exp_avg");
    if (it == in.end()) continue;
    auto s = std::make_unique<torch::optim::AdamParamState>();
    s->exp_avg(it->second.to(p.value().device()).clone());
    // exp_avg present, the rest must be too
    auto part = [&](const char* what) {
      const auto found = in.find(prefix + p.key() + "/" + what);
      if (found == in.end()) throw checkpoint::CheckpointError("the checkpoint has no tensor " + prefix + p.key() + "/" + what);
      return found->second;
    };
    s->exp_avg_sq(part("exp_avg_sq").to(p.value().device()).clone());
    s->step(part("step").item<int64_t>());
    state[optimizer_state_key(state, p.value())] = std::move(s);
  }
}

void save_module(const torch::nn::Module& m, const std::string& prefix, checkpoint::StateDict& out) {
  for (const auto& p : m.named_parameters()) out[prefix + "param/" + p.key()] = p.value().detach();
  for (const auto& b : m.named_buffers()) out[prefix + "buffer/" + b.key()] = b.value().detach();
}

void load_module(torch::nn::Module& m, const std::string& prefix, const checkpoint::StateDict& in) {
  torch::NoGradGuard no_grad;
  auto copy = [&](const std::string& name, torch::Tensor& into) {
    const auto it = in.find(name);
    if (it == in.end()) throw checkpoint::CheckpointError("the checkpoint has no tensor " + name);
    if (it->second.sizes() != into.sizes())
      throw checkpoint::CheckpointError("tensor " + name + " has shape " + c10::str(it->second.sizes()) +
                                        ", the model wants " + c10::str(into.sizes()) + " (another model config?)");
    into.copy_(it->second);
  };
  for (auto& p : m.named_parameters()) copy(prefix + "param/" + p.key(), p.value());
  for (auto& b : m.named_buffers()) copy(prefix + "buffer/" + b.key(), b.value());
}

std::unique_ptr<torch::optim::Adam> make_adam(const torch::nn::Module& m, const AdamConfig& c) {
  return std::make_unique<torch::optim::Adam>(
      m.parameters(), torch::optim::AdamOptions(c.lr).betas(std::make_tuple(c.beta1, c.beta2)));
}

// comm.overlap auto: overlap where something other than the ranks' own cores moves the data
// (NCCL); with MPI on the CPU, the copies would run on the core backward is using
// (bench/RESULTS.md: the MLP scaled 67 % with overlap and 100 % without at 2 ranks).
comm::ReducerOptions reducer_options(const CommConfig& c, const comm::Communicator& comm) {
  comm::ReducerOptions o;
  o.bucket_bytes = static_cast<int64_t>(c.bucket_mb * (1 << 20));
  o.first_bucket_bytes = static_cast<int64_t>(c.first_bucket_mb * (1 << 20));
  o.overlap = c.overlap == "true" || (c.overlap == "auto" && comm.backend_name() == "nccl");
  o.wire_dtype = c.grad_dtype == "bf16" ? torch::kBFloat16 : c.grad_dtype == "fp16" ? torch::kHalf : torch::kFloat32;
  return o;
}

}  // namespace

GanStep::GanStep(GanModels models, const Config& config, comm::Communicator& comm)
    : models_(std::move(models)),
      loss_(parse_loss(config.train.loss)),
      gp_weight_(config.train.gp_weight),
      train_(config.train),
      augment_(parse_augment(config.train.augment)),
      device_(models_.g->parameters().front().device()),
      bf16_(config.train.precision == "bf16"),
      g_lr_(config.optim.g.lr),
      d_lr_(config.optim.d.lr),
      comm_(comm) {
  g_opt_ = make_adam(*models_.g, config.optim.g);
  d_opt_ = make_adam(*models_.d, config.optim.d);
  const comm::ReducerOptions reducer = reducer_options(config.comm, comm);
  g_reducer_ = comm::make_reducer(comm, models_.g->parameters(), reducer);
  d_reducer_ = comm::make_reducer(comm, models_.d->parameters(), reducer);
  for (const auto* m : {models_.g.get(), models_.d.get()})
    for (const auto& b : m->buffers()) {
      buffers_.push_back(b);
      if (b.is_floating_point()) float_buffers_.push_back(b);
    }
  stats_ = torch::zeros({kNumStats}, torch::TensorOptions().dtype(torch::kFloat64).device(device_));
  if (DeviceAdam::applies(*g_opt_) && DeviceAdam::applies(*d_opt_)) {
    g_device_adam_ = std::make_unique<DeviceAdam>(*g_opt_);
    d_device_adam_ = std::make_unique<DeviceAdam>(*d_opt_);
    skips_ = torch::zeros({kNumSkipSlots}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
  }
}

void GanStep::set_lr_factor(double factor) {
  for (auto [opt, lr] : {std::pair{g_opt_.get(), g_lr_}, std::pair{d_opt_.get(), d_lr_}})
    for (auto& group : opt->param_groups())
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr * factor);
}

torch::Tensor GanStep::seen_by_d(const torch::Tensor& x, const torch::Tensor& augment, int64_t k) const {
  if (!augment_.any() || !augment.defined()) return x;
  return diff_augment(x, augment.slice(1, k * kAugmentDraws, (k + 1) * kAugmentDraws), augment_);
}

UpdateOutcome GanStep::apply_update(torch::optim::Adam& opt, DeviceAdam* device_adam, const torch::nn::Module& m,
                                    const std::vector<torch::Tensor>& buffers, int64_t slot) {
  if (device_adam) return finish_on_device(*device_adam, m, buffers, slot);
  if (finite_gradients(m)) {
    adam_step(opt);
    return UpdateOutcome(true);
  }
  restore_buffers(buffers);
  return UpdateOutcome(false);
}

UpdateOutcome GanStep::finish_on_device(DeviceAdam& adam, const torch::nn::Module& m,
                                        const std::vector<torch::Tensor>& buffers, int64_t slot) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> grads;
  for (const auto& p : m.parameters())
    if (p.grad().defined()) grads.push_back(p.grad());
  // 1 when some averaged gradient holds a NaN or an infinity (AMP's check, one multi-tensor
  // kernel; the gradients are multiplied by 1). Unlike the host path's sum, finite gradients whose
  // sum overflows float pass.
  torch::Tensor found_inf = torch::zeros({}, skips_.options());
  if (!grads.empty())
    at::_amp_foreach_non_finite_check_and_unscale_(grads, found_inf, torch::ones({}, skips_.options()));
  adam.step(found_inf);
  const torch::Tensor skipped = found_inf.to(torch::kBool);
  for (size_t i = 0; i < buffers.size(); ++i)
    buffers_[i].copy_(torch::where(skipped, buffers[i], buffers_[i]));
  skips_[slot] += found_inf;
  skips_[kSkipsRun].mul_(found_inf).add_(found_inf);  // one longer when skipped, else 0
  skips_[kSkipsLongestRun].copy_(torch::maximum(skips_[kSkipsLongestRun], skips_[kSkipsRun]));
  return UpdateOutcome(found_inf);
}

SkippedUpdates GanStep::settle() {
  if (!decides_on_device()) return {};
  g_device_adam_->store_steps();
  d_device_adam_->store_steps();
  const torch::Tensor s = skips_.cpu();
  const auto count = [&](int64_t slot) { return static_cast<int64_t>(s[slot].item<float>()); };
  SkippedUpdates out{count(kSkipsD), count(kSkipsG), count(kSkipsLongestRun)};
  skips_[kSkipsD].zero_();
  skips_[kSkipsG].zero_();
  skips_[kSkipsLongestRun].zero_();  // a run in progress carries on in kSkipsRun
  return out;
}

torch::Tensor GanStep::device_of(const torch::Tensor& labels) const {
  if (models_.classes == 0) return torch::Tensor();  // an unconditional D reads none
  TORCH_CHECK(labels.defined(), "a conditional GAN's update needs the batch's labels");
  // The range is checked here, on the host, where it costs no device sync: on a GPU one_hot and
  // index_select would only fail in a device-side assert.
  TORCH_CHECK(labels.is_cpu(), "a conditional GAN's labels arrive on the host");
  if (labels.numel() > 0)
    TORCH_CHECK(labels.min().item<int64_t>() >= 0 && labels.max().item<int64_t>() < models_.classes,
                "labels must be class indices in [0, ", models_.classes, ")");
  return labels.to(device_, /*non_blocking=*/true);  // asynchronous from pinned memory
}

torch::Tensor GanStep::draws_for(const torch::Tensor& dropout, int64_t k) const {
  if (!dropout.defined() || models_.d_draws == 0) return torch::Tensor();
  return dropout.slice(1, k * models_.d_draws, (k + 1) * models_.d_draws);
}

torch::Tensor GanStep::score(const torch::Tensor& x, const torch::Tensor& labels, const torch::Tensor& draws) {
  return draws.defined() ? models_.discriminate_drawn(x, labels, draws) : models_.discriminate(x, labels);
}

UpdateOutcome GanStep::d_update(const torch::Tensor& real_in, const torch::Tensor& z_in, const torch::Tensor& penalty_mix_in,
                                const torch::Tensor& augment, bool r1, const torch::Tensor& dropout_in,
                                const torch::Tensor& labels_in, const torch::Tensor& cr_shifts_in) {
  const auto t0 = Clock::now();
  // From pinned host memory these copies are asynchronous (a no-op on the CPU).
  const torch::Tensor unaugmented = real_in.to(device_, /*non_blocking=*/true);
  torch::Tensor real = unaugmented;
  const torch::Tensor z = z_in.to(device_, /*non_blocking=*/true),
                      penalty_mix = penalty_mix_in.to(device_, /*non_blocking=*/true);
  const torch::Tensor dropout = dropout_in.defined() ? dropout_in.to(device_, /*non_blocking=*/true) : dropout_in;
  const torch::Tensor labels = device_of(labels_in);
  const torch::Tensor real_draws = draws_for(dropout, 0), fake_draws = draws_for(dropout, 1);
  const std::vector<torch::Tensor> buffers = snapshot_buffers();
  // D's logits (fp32, whatever the forward passes ran in) on each of `batches`, alternately reals
  // and fakes of the batch's labels (fakes are drawn for the real labels), all of one size.
  auto logits_of = [&](const std::vector<torch::Tensor>& batches) {
    std::vector<torch::Tensor> out;
    if (!models_.d_per_sample) {  // BatchNorm normalises each batch by its own statistics
      for (size_t i = 0; i < batches.size(); ++i)
        out.push_back(score(batches[i], labels, i % 2 == 0 ? real_draws : fake_draws).to(torch::kFloat32));
      return out;
    }
    // One forward over all of them (bench/RESULTS.md: the MLP's D update gains from the larger
    // matrix products; a spectral D runs one power iteration for all). Fakes may be bf16 under
    // autocast: widening them is exact.
    const auto n = static_cast<int64_t>(batches.size());
    std::vector<torch::Tensor> images, draws;
    for (int64_t i = 0; i < n; ++i) {
      images.push_back(batches[i].to(batches[0].scalar_type()));
      draws.push_back(i % 2 == 0 ? real_draws : fake_draws);
    }
    const torch::Tensor logits = score(torch::cat(images), labels.defined() ? labels.repeat({n}) : labels,
                                       real_draws.defined() ? torch::cat(draws) : real_draws)
                                     .to(torch::kFloat32);
    return logits.chunk(n);
  };
  torch::Tensor fake, real_logits, fake_logits, consistency_penalty;
  {
    AutocastGuard autocast(device_, bf16_);
    if (keep_fakes_) {
      kept_fakes_ = models_.generate(models_.g_input(z, labels));
      kept_labels_ = labels;
      keep_fakes_ = false;
      fake = seen_by_d(kept_fakes_.detach(), augment, 1);
    } else {
      torch::NoGradGuard no_grad;
      fake = seen_by_d(models_.generate(models_.g_input(z, labels)), augment, 1);
    }
    real = seen_by_d(real, augment, 0);
    clear_grads(*d_opt_);
    std::vector<torch::Tensor> batches{real, fake};
    const bool cr = train_.cr_weight > 0 && cr_shifts_in.defined();
    if (cr) {  // bCR: the same images translated, scored beside them
      const torch::Tensor u = cr_shifts_in.to(device_, /*non_blocking=*/true);
      const AugmentPolicy shift{/*translation=*/true, /*cutout=*/false, train_.cr_shift};
      batches.push_back(diff_augment(real, u.slice(1, 0, kAugmentDraws), shift));
      batches.push_back(diff_augment(fake, u.slice(1, kAugmentDraws, 2 * kAugmentDraws), shift));
    }
    const std::vector<torch::Tensor> logits = logits_of(batches);
    real_logits = logits[0];
    fake_logits = logits[1];
    // D's logits on the translated images should match its logits on them. Both sides carry
    // gradient, as in Zhao et al.'s penalty.
    if (cr) consistency_penalty = (logits[2] - real_logits).square().mean() + (logits[3] - fake_logits).square().mean();
  }
  torch::Tensor loss = discriminator_loss(loss_, real_logits, fake_logits);
  torch::Tensor reported = loss;
  if (loss_ == LossKind::kWganGp && gp_weight_ > 0) {
    // The penalty's double backward runs in fp32: a gradient norm is what bf16 rounds worst.
    loss = loss + gp_weight_ * gradient_penalty(
                                   [&](const torch::Tensor& x) { return score(x, labels, real_draws); }, real,
                                   fake.to(torch::kFloat32), penalty_mix);
    reported = loss;
  }
  if (r1 && train_.r1_gamma > 0) {
    // Its own pass over the reals in fp32, like WGAN-GP's penalty, with the gradient taken before
    // the augmentation (as StyleGAN2-ADA does). The pass also moves D's BatchNorm running
    // statistics, which D, always in training mode, never reads. Not in the reported loss: it is
    // logged on its own as r1_penalty.
    const torch::Tensor penalty = r1_penalty(
        [&](const torch::Tensor& x) { return score(seen_by_d(x, augment, 0), labels, real_draws); }, unaugmented);
    loss = loss + (0.5 * train_.r1_gamma * static_cast<double>(train_.r1_every)) * penalty;
    stats_[kR1Sum] += penalty.detach().to(torch::kFloat64);
    stats_[kR1Count] += 1;
  }
  if (consistency_penalty.defined()) {  // logged on its own as cr_penalty, like R1's
    loss = loss + train_.cr_weight * consistency_penalty;
    stats_[kCRSum] += consistency_penalty.detach().to(torch::kFloat64);
    stats_[kCRCount] += 1;
  }
  d_reducer_->prepare();
  poison_if_nonfinite(loss).backward();
  const auto t1 = Clock::now();
  d_reducer_->finish();
  const auto t2 = Clock::now();
  const UpdateOutcome outcome = apply_update(*d_opt_, d_device_adam_.get(), *models_.d, buffers, kSkipsD);
  const auto t3 = Clock::now();

  torch::NoGradGuard no_grad;
  last_d_real_ = torch::sigmoid(real_logits.detach()).flatten();
  last_d_fake_ = torch::sigmoid(fake_logits.detach()).flatten();
  stats_[kDLossSum] += reported.detach().to(torch::kFloat64);
  stats_[kDRealSum] += last_d_real_.mean().to(torch::kFloat64);
  stats_[kDFakeSum] += last_d_fake_.mean().to(torch::kFloat64);
  count_nonfinite(stats_, kDNonFinite, loss.detach());  // with R1's penalty: a NaN there skips the update too
  stats_[kDUpdates] += 1;
  times_.d_forward_backward += seconds(t0, t1) + seconds(t3, Clock::now());  // bookkeeping counts here
  times_.allreduce += seconds(t1, t2);
  times_.optimizer += seconds(t2, t3);
  return outcome;
}

UpdateOutcome GanStep::g_update(const torch::Tensor& z_in, const torch::Tensor& augment,
                                const torch::Tensor& dropout_in, const torch::Tensor& labels_in) {
  const auto t0 = Clock::now();
  const torch::Tensor dropout = dropout_in.defined() ? dropout_in.to(device_, /*non_blocking=*/true) : dropout_in;
  const bool reusing = kept_fakes_.defined();
  const torch::Tensor labels = reusing ? kept_labels_ : device_of(labels_in);
  const std::vector<torch::Tensor> buffers = snapshot_buffers();
  set_d_trainable(false);
  clear_grads(*g_opt_);
  torch::Tensor fake, logits;
  {
    AutocastGuard autocast(device_, bf16_);
    fake = reusing ? kept_fakes_ : models_.generate(models_.g_input(z_in.to(device_, /*non_blocking=*/true), labels));
    logits = score(seen_by_d(fake, augment, 0), labels, draws_for(dropout, 0)).to(torch::kFloat32);
  }
  kept_fakes_ = kept_labels_ = torch::Tensor();  // the graph goes with the backward below
  const torch::Tensor loss = g_loss(logits);
  g_reducer_->prepare();
  poison_if_nonfinite(loss).backward();
  const auto t1 = Clock::now();
  g_reducer_->finish();
  const auto t2 = Clock::now();
  const UpdateOutcome outcome = apply_update(*g_opt_, g_device_adam_.get(), *models_.g, buffers, kSkipsG);
  const auto t3 = Clock::now();
  set_d_trainable(true);

  torch::NoGradGuard no_grad;
  const torch::Tensor f = fake.detach().to(torch::kFloat64);
  stats_[kGLossSum] += loss.detach().to(torch::kFloat64);
  count_nonfinite(stats_, kGNonFinite, loss.detach());
  stats_[kGUpdates] += 1;
  stats_[kFakeSum] += f.sum();
  stats_[kFakeSqSum] += f.pow(2).sum();
  stats_[kFakeCount] += f.numel();
  times_.g_forward_backward += seconds(t0, t1) + seconds(t3, Clock::now());
  times_.allreduce += seconds(t1, t2);
  times_.optimizer += seconds(t2, t3);
  return outcome;
}

torch::Tensor GanStep::g_loss(const torch::Tensor& logits) {
  const int64_t n = logits.size(0), world = comm_.world_size();
  if (g_topk_ <= 0 || g_topk_ >= n * world) return generator_loss(loss_, logits);
  torch::Tensor weights;
  {
    torch::NoGradGuard no_grad;
    // The global batch's logits on every rank: each rank's in its own rows, zeros elsewhere,
    // summed (adding zeros is exact, so every rank sees the same values and picks the same k).
    const int64_t first = comm_.rank() * n;
    torch::Tensor all = torch::zeros({n * world}, logits.options());
    all.slice(0, first, first + n).copy_(logits.detach().flatten());
    if (world > 1) comm_.all_reduce(all, comm::ReduceOp::kSum);
    const torch::Tensor best = std::get<1>(all.topk(g_topk_));
    weights = torch::zeros_like(all).index_fill_(0, best, static_cast<double>(world) / static_cast<double>(g_topk_));
    weights = weights.slice(0, first, first + n);
  }
  return (generator_loss_per_sample(loss_, logits) * weights).sum();
}

void GanStep::update_g_ema(int64_t g_updates) {
  if (models_.g_ema) update_average(*models_.g_ema, *models_.g, g_ema_beta(train_, g_updates));
}

void GanStep::save_state(checkpoint::StateDict& out) {
  if (decides_on_device()) {  // the step counts checkpoints save
    g_device_adam_->store_steps();
    d_device_adam_->store_steps();
  }
  save_module(*models_.g, "generator/", out);
  save_module(*models_.d, "discriminator/", out);
  if (models_.g_ema) save_module(*models_.g_ema, "generator_ema/", out);
  save_adam(*g_opt_, *models_.g, "optim/generator/", out);
  save_adam(*d_opt_, *models_.d, "optim/discriminator/", out);
}

void GanStep::load_state(const checkpoint::StateDict& in) {
  load_module(*models_.g, "generator/", in);
  load_module(*models_.d, "discriminator/", in);
  if (models_.g_ema) {
    if (in.count("generator_ema/param/" + models_.g_ema->named_parameters().begin()->key()))
      load_module(*models_.g_ema, "generator_ema/", in);
    else
      update_average(*models_.g_ema, *models_.g, /*beta=*/0);  // the average starts here
  }
  load_adam(*g_opt_, *models_.g, "optim/generator/", in);
  load_adam(*d_opt_, *models_.d, "optim/discriminator/", in);
  if (decides_on_device()) {
    g_device_adam_->reload_steps();
    d_device_adam_->reload_steps();
  }
}

void GanStep::sync_buffers() {
  if (float_buffers_.empty()) return;
  const auto t0 = Clock::now();
  comm_.all_reduce(float_buffers_, comm::ReduceOp::kAverage);
  times_.allreduce += seconds(t0, Clock::now());
}

torch::Tensor GanStep::take_stats() {
  torch::Tensor out = stats_.clone();
  stats_.zero_();
  return out;
}

UpdateTimes GanStep::take_times() {
  const UpdateTimes out = times_;
  times_ = UpdateTimes{};
  return out;
}

std::pair<double, double> GanStep::gradient_norms() const {
  auto norm = [](const torch::nn::Module& m) {
    double sq = 0;
    for (const auto& p : m.parameters())
      if (p.grad().defined()) sq += p.grad().detach().to(torch::kFloat64).pow(2).sum().item<double>();
    return std::sqrt(sq);
  };
  return {norm(*models_.g), norm(*models_.d)};
}

// The models' buffers (BatchNorm's statistics and batch counts), copied before an update's forward
// passes change them, so a skipped update leaves no trace (a NaN batch would otherwise poison the
// running means).
std::vector<torch::Tensor> GanStep::snapshot_buffers() const {
  std::vector<torch::Tensor> copy;
  for (const auto& b : buffers_) copy.push_back(b.detach().clone());
  return copy;
}

void GanStep::restore_buffers(const std::vector<torch::Tensor>& snapshot) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < snapshot.size(); ++i) buffers_[i].copy_(snapshot[i]);
}

void GanStep::set_d_trainable(bool trainable) {
  for (auto& p : models_.d->parameters()) p.set_requires_grad(trainable);
}

}  // namespace gantry
