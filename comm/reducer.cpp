// Implements: the inline gradient reducer: after backward, every parameter's gradient (zeros for
// one that took no part in the loss) is averaged across ranks with one coalesced all-reduce.
#include "comm/reducer.h"

namespace gantry::comm {
namespace {

class InlineReducer final : public GradientReducer {
 public:
  InlineReducer(Communicator& comm, std::vector<torch::Tensor> params)
      : comm_(comm), params_(std::move(params)) {}

  void prepare() override {}

  void finish() override {
    std::vector<torch::Tensor> grads;
    grads.reserve(params_.size());
    for (auto& p : params_) {
      // A parameter outside the graph has no gradient; every rank must still contribute the
      // same list, so it is reduced as zeros.
      if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
      grads.push_back(p.grad());
      bytes_ += p.grad().numel() * static_cast<int64_t>(p.grad().element_size());
    }
    comm_.all_reduce(grads, ReduceOp::kAverage);
  }

  int64_t bytes_reduced() const override { return bytes_; }

 private:
  Communicator& comm_;
  std::vector<torch::Tensor> params_;
  int64_t bytes_ = 0;
};

}  // namespace

std::unique_ptr<GradientReducer> make_inline_reducer(Communicator& comm, std::vector<torch::Tensor> params) {
  return std::make_unique<InlineReducer>(comm, std::move(params));
}

}  // namespace gantry::comm
