// Implements: Adam's update fused into one pass over each parameter's memory, for the step
// gantry takes, and the version-agnostic lookup of LibTorch's per-parameter Adam state.
// LibTorch's Adam::step makes six passes (and a temporary) per parameter; the fused loop reads
// the parameter, gradient and both moments once and writes them once.
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

// One Adam step of `opt`, the same update as torch::optim::Adam::step() to float rounding:
// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g²; p -= lr / (1 - b1^t) · m / (sqrt(v) / sqrt(1 - b2^t) + eps).
// Float32 CPU parameters with contiguous gradients take the fused loop; anything else (CUDA,
// weight decay, AMSGrad, a parameter's first step) goes through opt.step(). The state stays
// LibTorch's, so checkpoints and opt.step() see the same exp_avg, exp_avg_sq and step.
// Returns whether the fused loop took the step.
bool adam_step(torch::optim::Adam& opt);

}  // namespace gantry
