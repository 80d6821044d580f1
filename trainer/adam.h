// Implements: the Adam step gantry takes: fused into one pass over each parameter's memory on
// the CPU, multi-tensor (foreach) kernels over the whole list on a GPU; and the version-agnostic
// lookup of LibTorch's per-parameter Adam state. LibTorch's Adam::step makes six passes (and a
// temporary) per parameter, each a kernel launch on a GPU.
#pragma once

#include <torch/torch.h>

#include <sstream>
#include <string>
#include <type_traits>

namespace gantry {

// The key of `param` in an optimizer's state map: a string of the TensorImpl's address in
// LibTorch 1.x, the address itself in 2.x.
template <typename Map>
typename Map::key_type optimizer_state_key(const Map&, const torch::Tensor& param) {
  using Key = typename Map::key_type;
  if constexpr (std::is_same_v<Key, std::string>) {
    std::ostringstream s;
    s << param.unsafeGetTensorImpl();
    return s.str();
  } else {
    return static_cast<Key>(param.unsafeGetTensorImpl());
  }
}

// Which loop took an Adam step.
enum class AdamKernel { kLibTorch, kFusedCpu, kMultiTensor };

// Adam on one CUDA device without a host sync, for an update that the device itself decides to
// skip: PyTorch's fused CUDA Adam kernel (at::_fused_adam_, one launch per step; LibTorch 1.13 and
// 2.x), which leaves parameters and moments untouched when `found_inf`, a 0-dim float on the
// device, is 1. The step counts behind the bias corrections live on the device as float tensors,
// as PyTorch's fused Adam keeps them, and a skipped step does not count. opt's own per-parameter
// step, which checkpoints save, is brought up to date by store_steps().
class DeviceAdam {
 public:
  // Whether DeviceAdam can step `opt`: float32 parameters on one CUDA device, no weight decay or
  // AMSGrad, one parameter group.
  static bool applies(torch::optim::Adam& opt);

  explicit DeviceAdam(torch::optim::Adam& opt) : opt_(opt) {}
  // One step for the parameters with a gradient; creates the state of any that has none.
  void step(const torch::Tensor& found_inf);
  // Copies the device step counts into opt's state (a device sync).
  void store_steps();
  // Takes the step counts from opt's state again (after a checkpoint replaced it).
  void reload_steps() { steps_.clear(); }

 private:
  torch::optim::Adam& opt_;
  std::vector<torch::Tensor> steps_;  // one per parameter of the group, in order
};

// One Adam step of `opt`, the same update as torch::optim::Adam::step() to float rounding:
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g²; p -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps).
// - kFusedCpu: float32 CPU parameters with contiguous gradients, one pass over each parameter.
// - kMultiTensor: float32 parameters on one GPU: LibTorch's ops over the whole parameter list at
//   once (at::_foreach_*, multi-tensor kernels: a handful of launches per step instead of about
//   eight per parameter, as PyTorch's default CUDA Adam).
// - kLibTorch: anything else (weight decay, AMSGrad, a parameter's first step) goes through
//   opt.step().
// The state stays LibTorch's, so checkpoints and opt.step() see the same exp_avg, exp_avg_sq and
// step.
AdamKernel adam_step(torch::optim::Adam& opt);

// The kMultiTensor step, on whatever device the parameters are (on the CPU its ops run one
// tensor at a time, the same ops as Adam::step: bit-identical there). Every parameter with a
// gradient must have its state; no weight decay or AMSGrad.
void multi_tensor_adam_step(torch::optim::Adam& opt);

}  // namespace gantry
