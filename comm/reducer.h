// Implements: the gradient reducer, kept apart from the transport (the Communicator). A reducer
// is armed before backward and finished after it; once finish() returns, every parameter's .grad
// holds the average over all ranks, bit-identical on every rank.
#pragma once

#include <torch/torch.h>

#include <memory>
#include <vector>

#include "comm/communicator.h"

namespace gantry::comm {

class GradientReducer {
 public:
  virtual ~GradientReducer() = default;
  // Called before backward: arms the autograd hooks that launch each bucket once it is full.
  virtual void prepare() = 0;
  // Called after backward, before the optimizer step: launches what backward did not (the
  // buckets of parameters that got no gradient) and waits for every bucket; all reductions are
  // complete on return.
  virtual void finish() = 0;
  // Bytes this reducer has moved through the communicator so far (in the transport dtype).
  virtual int64_t bytes_reduced() const = 0;
  // The buckets' sizes in bytes of gradient, in launch order (the first holds the last layers).
  virtual std::vector<int64_t> bucket_bytes() const = 0;
};

struct ReducerOptions {
  // Gradients are packed, in reverse registration order (about the order backward produces
  // them), into flat buckets of at most this many bytes; a single larger tensor gets a bucket
  // of its own. The first bucket is smaller so that communication starts early (DDP: 1 and 25 MB).
  int64_t bucket_bytes = 25 << 20;
  int64_t first_bucket_bytes = 1 << 20;
  // Launch each bucket's all-reduce from backward as soon as it is full. Off: one all-reduce of
  // every gradient after backward.
  bool overlap = true;
  // The dtype gradients travel in: float32 is exact; bfloat16 or float16 halve the bytes (the
  // average is taken in that dtype, then cast back, as DDP's compression hooks do).
  torch::ScalarType wire_dtype = torch::kFloat32;
  // Bucket and all-reduce at world size 1 too, where the local gradient already is the average
  // and the reducer otherwise does nothing. For tests: one GPU then runs the hooks, the stream
  // ordering and the wire dtype that many ranks would.
  bool reduce_single_rank = false;
};

// A reducer over `params` (those that require grad). Collective: every rank must construct it
// with the same parameter shapes and dtypes, which it checks first, naming the ranks that differ,
// rather than letting mismatched buckets hang the job.
std::unique_ptr<GradientReducer> make_reducer(Communicator& comm, std::vector<torch::Tensor> params,
                                              const ReducerOptions& options);

}  // namespace gantry::comm
