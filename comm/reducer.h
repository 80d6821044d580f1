// Implements: the gradient reducer interface, kept apart from the transport (the Communicator).
// A reducer is armed before backward and finished after it; once finish() returns, every
// parameter's .grad holds the average over all ranks, bit-identical on every rank.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace gantry::comm {

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  // Called before backward (a bucketed reducer arms its autograd hooks here).
  virtual void prepare() = 0;
  // Called after backward, before the optimizer step: all reductions are complete on return.
  virtual void finish() = 0;
  // Bytes this reducer has moved through the communicator so far.
  virtual int64_t bytes_reduced() const = 0;
};

// Reduces all gradients in one coalesced all-reduce after backward (DDP with overlap off).
std::unique_ptr<GradientReducer> make_inline_reducer(Communicator& comm, std::vector<torch::Tensor> params);

}  // namespace gantry::comm
