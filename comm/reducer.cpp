// Implements: the bucketed gradient reducer. Gradients are packed in reverse registration order
// into flat buckets by byte size; a post-hook on each parameter's gradient accumulator copies its
// gradient into its bucket once backward has produced it, and a full bucket's all-reduce starts
// at once (in bucket order, the same on every rank) while backward goes on. finish() fills in the
// parameters that got no gradient, waits for every bucket and copies the averages back.
#include "comm/reducer.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>

#include <functional>
#include <mutex>
#include <sstream>

namespace gantry::comm {
namespace {

class BucketedReducer;

// Runs after AccumulateGrad has written a parameter's .grad: the parameter is ready.
class ReadyHook final : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(BucketedReducer* reducer, size_t slot) : reducer_(reducer), slot_(slot) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs,
                                            const torch::autograd::variable_list& /*inputs*/) override;

 private:
  BucketedReducer* reducer_;
  size_t slot_;
};

class BucketedReducer final : public GradientReducer {
 public:
  BucketedReducer(Communicator& comm, std::vector<torch::Tensor> params, const ReducerOptions& options)
      : comm_(comm), options_(options) {
    for (auto& p : params)
      if (p.requires_grad()) slots_.push_back(Slot{p});
    check_same_everywhere();
    if (comm_.world_size() == 1 && !options_.reduce_single_rank) return;  // the local gradient is the average
    assign_buckets();
    if (!options_.overlap) return;
    for (size_t i = 0; i < slots_.size(); ++i) {
      Slot& s = slots_[i];
      s.accumulator = torch::autograd::impl::grad_accumulator(s.param);  // held, so the hook stays
      s.hook_key = s.accumulator->add_post_hook(std::make_unique<ReadyHook>(this, i));
    }
  }

  ~BucketedReducer() override {
    for (auto& s : slots_)
      if (s.accumulator) s.accumulator->del_post_hook(s.hook_key);
  }

  void prepare() override {
    if (buckets_.empty()) return;
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& s : slots_) s.ready = false;
    for (auto& b : buckets_) {
      b.pending = static_cast<int64_t>(b.slots.size());
      b.work.reset();
    }
    next_launch_ = 0;
    armed_ = true;
  }

  void finish() override {
    if (buckets_.empty()) {  // one rank: a parameter without a gradient gets zeros, as with many
      for (auto& s : slots_)
        if (!s.param.grad().defined()) s.param.mutable_grad() = torch::zeros_like(s.param);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!armed_) throw CommError("gradient reducer: finish() without prepare()");
      for (size_t i = 0; i < slots_.size(); ++i)  // no gradient this time (or no hooks): now
        if (!slots_[i].ready) mark_ready_locked(i);
      armed_ = false;
    }
    Bucket& last = buckets_.back();  // blocking, here; the same on every rank whatever the timing
    comm_.all_reduce(last.wire, ReduceOp::kAverage);
    bytes_ += last.wire.numel() * static_cast<int64_t>(last.wire.element_size());
    for (auto& b : buckets_) {
      if (b.work) b.work->wait();
      b.work.reset();
      for (size_t i : b.slots) {
        Slot& s = slots_[i];
        const torch::Tensor reduced = b.wire.narrow(0, s.offset, s.param.numel()).view(s.param.sizes());
        torch::Tensor& grad = s.param.mutable_grad();
        if (grad.defined()) grad.copy_(reduced);
        else grad = reduced.to(s.param.scalar_type(), /*non_blocking=*/false, /*copy=*/true);
      }
    }
  }

  int64_t bytes_reduced() const override { return bytes_; }

  std::vector<int64_t> bucket_bytes() const override {
    std::vector<int64_t> out;
    for (const auto& b : buckets_) out.push_back(b.wire.numel() * static_cast<int64_t>(b.wire.element_size()));
    return out;
  }

  // From a ReadyHook, on the thread running backward.
  void mark_ready(size_t slot) {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!armed_) return;  // a backward that this reducer does not serve (the other network's)
    if (slots_[slot].ready)
      throw CommError("gradient reducer: parameter " + std::to_string(slot) +
                      " received a gradient twice in one update; call backward once between prepare() and finish()");
    mark_ready_locked(slot);
  }

 private:
  struct Slot {
    torch::Tensor param;
    int64_t bucket = 0;
    int64_t offset = 0;  // elements into the bucket
    bool ready = false;
    std::shared_ptr<torch::autograd::Node> accumulator;
    uintptr_t hook_key = 0;
  };
  struct Bucket {
    torch::Tensor wire;         // the flat buffer that travels
    std::vector<size_t> slots;  // its parameters
    int64_t pending = 0;        // parameters still without a gradient this update
    std::shared_ptr<Work> work;
  };

  // Every rank must build the same buckets, or the all-reduces would pair up wrongly and hang.
  void check_same_everywhere() {
    std::ostringstream layout;
    layout << options_.bucket_bytes << '/' << options_.first_bucket_bytes << '/' << options_.overlap << '/'
           << c10::toString(options_.wire_dtype);
    int64_t elements = 0;
    for (const auto& s : slots_) {
      layout << ';' << c10::toString(s.param.scalar_type()) << s.param.sizes();
      elements += s.param.numel();
    }
    struct Signature {
      uint64_t hash;
      int64_t tensors, elements;
    };
    const Signature mine{std::hash<std::string>{}(layout.str()), static_cast<int64_t>(slots_.size()), elements};
    const auto all = comm_.all_gather_value(mine);
    std::string differ;
    for (size_t r = 1; r < all.size(); ++r)
      if (all[r].hash != all[0].hash)
        differ += "; rank " + std::to_string(r) + " has " + std::to_string(all[r].tensors) + " tensors (" +
                  std::to_string(all[r].elements) + " elements)";
    if (!differ.empty())
      throw CommError("gradient reducer: ranks disagree on the gradients to reduce (shapes, dtypes or comm "
                      "options): rank 0 has " + std::to_string(all[0].tensors) + " tensors (" +
                      std::to_string(all[0].elements) + " elements)" + differ);
  }

  void assign_buckets() {
    const int64_t unlimited = std::numeric_limits<int64_t>::max();
    int64_t cap = options_.overlap ? std::min(options_.first_bucket_bytes, options_.bucket_bytes) : unlimited;
    std::vector<std::vector<size_t>> groups(1);
    int64_t bytes = 0;
    for (size_t k = slots_.size(); k-- > 0;) {
      const torch::Tensor& p = slots_[k].param;
      const int64_t size = p.numel() * static_cast<int64_t>(c10::elementSize(options_.wire_dtype));
      std::vector<size_t>& current = groups.back();
      const bool same_kind = current.empty() || (slots_[current.front()].param.scalar_type() == p.scalar_type() &&
                                                 slots_[current.front()].param.device() == p.device());
      if (!current.empty() && (!same_kind || bytes + size > cap)) {
        groups.emplace_back();
        bytes = 0;
        if (options_.overlap) cap = options_.bucket_bytes;
      }
      groups.back().push_back(k);
      bytes += size;
    }
    for (auto& group : groups) {
      if (group.empty()) continue;
      Bucket b;
      int64_t offset = 0;
      for (size_t i : group) {
        slots_[i].bucket = static_cast<int64_t>(buckets_.size());
        slots_[i].offset = offset;
        offset += slots_[i].param.numel();
      }
      b.wire = torch::empty({offset}, slots_[group.front()].param.options().dtype(options_.wire_dtype));
      b.slots = std::move(group);
      buckets_.push_back(std::move(b));
    }
  }

  // Copies the slot's gradient into its bucket (zeros when it has none) and launches, in order,
  // every bucket that is now complete.
  void mark_ready_locked(size_t slot) {
    Slot& s = slots_[slot];
    Bucket& b = buckets_[s.bucket];
    torch::Tensor view = b.wire.narrow(0, s.offset, s.param.numel());
    const torch::Tensor& grad = s.param.grad();
    if (grad.defined()) view.copy_(grad.reshape({-1}));
    else view.zero_();
    s.ready = true;
    --b.pending;
    // The last bucket is left to finish(): backward is over by the time it fills, so there is
    // nothing left to hide it behind, and reducing it on the caller's thread saves the hand-off
    // (which a busy machine can stretch to a scheduler time slice).
    while (next_launch_ + 1 < buckets_.size() && buckets_[next_launch_].pending == 0) {
      Bucket& next = buckets_[next_launch_++];
      next.work = comm_.all_reduce_async(next.wire, ReduceOp::kAverage);
      bytes_ += next.wire.numel() * static_cast<int64_t>(next.wire.element_size());
    }
  }

  Communicator& comm_;
  const ReducerOptions options_;
  std::vector<Slot> slots_;
  std::vector<Bucket> buckets_;
  std::mutex mutex_;  // backward may run hooks on autograd's device threads
  bool armed_ = false;
  size_t next_launch_ = 0;
  int64_t bytes_ = 0;
};

torch::autograd::variable_list ReadyHook::operator()(const torch::autograd::variable_list& outputs,
                                                     const torch::autograd::variable_list& /*inputs*/) {
  reducer_->mark_ready(slot_);
  return outputs;
}

}  // namespace

std::unique_ptr<GradientReducer> make_reducer(Communicator& comm, std::vector<torch::Tensor> params,
                                              const ReducerOptions& options) {
  return std::make_unique<BucketedReducer>(comm, std::move(params), options);
}

}  // namespace gantry::comm
