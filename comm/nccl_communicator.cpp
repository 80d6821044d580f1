// Implements: the NCCL Communicator for CUDA tensors. MPI (the bootstrap communicator) broadcasts
// the ncclUniqueId; each rank takes the GPU of its local rank. Collectives run on a dedicated
// stream that waits on an event recorded on the caller's current stream, and the caller's
// stream waits on an event recorded after them: ordering by events, never by host syncs.
// Every collective stays on a list until its event has fired, so that the watchdog's thread can
// name one that never completes on the GPU (a peer that never arrived), as PyTorch's NCCL
// watchdog does: the host returned from it long ago, and would otherwise hang at its next sync.
#include <cuda_runtime.h>
#include <nccl.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <deque>
#include <map>
#include <mutex>

#include "comm/communicator.h"

#if GANTRY_TORCH_CUDA
#include <c10/cuda/CUDAStream.h>
#endif

namespace gantry::comm {
namespace {

#define GANTRY_CUDA_CHECK(expr)                                                                      \
  do {                                                                                               \
    const cudaError_t gantry_cuda_rc = (expr);                                                       \
    if (gantry_cuda_rc != cudaSuccess)                                                               \
      throw DeviceError(std::string(#expr) + " failed at " + __FILE__ + ":" + std::to_string(__LINE__) + \
                        ": " + cudaGetErrorString(gantry_cuda_rc));                                  \
  } while (0)

#define GANTRY_NCCL_CHECK(expr)                                                                      \
  do {                                                                                               \
    const ncclResult_t gantry_nccl_rc = (expr);                                                      \
    if (gantry_nccl_rc != ncclSuccess)                                                               \
      throw DeviceError(std::string(#expr) + " failed at " + __FILE__ + ":" + std::to_string(__LINE__) + \
                        ": " + ncclGetErrorString(gantry_nccl_rc));                                  \
  } while (0)

ncclDataType_t nccl_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return ncclFloat32;
    case torch::kFloat64: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt32: return ncclInt32;
    case torch::kInt64: return ncclInt64;
    case torch::kUInt8: return ncclUint8;
    default:
      throw CommError(std::string("NCCL communicator: unsupported dtype ") + std::string(c10::toString(type)));
  }
}

// The stream the caller's kernels are queued on: LibTorch's current stream when it has CUDA,
// else the legacy default stream.
cudaStream_t current_stream(int device) {
#if GANTRY_TORCH_CUDA
  return c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
#else
  (void)device;
  return cudaStreamLegacy;
#endif
}

// An event, destroyed with its last owner (the Work and the list of collectives in flight).
struct Event {
  cudaEvent_t event = nullptr;
  Event() { GANTRY_CUDA_CHECK(cudaEventCreateWithFlags(&event, cudaEventDisableTiming)); }
  ~Event() { cudaEventDestroy(event); }
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
};

// Makes the caller's current stream wait for an event recorded after the collective.
class EventWork final : public Work {
 public:
  EventWork(std::shared_ptr<Event> done, int device) : done_(std::move(done)), device_(device) {}
  void wait() override { GANTRY_CUDA_CHECK(cudaStreamWaitEvent(current_stream(device_), done_->event, 0)); }

 private:
  std::shared_ptr<Event> done_;
  int device_;
};

// "all_reduce of 1,048,576 Float elements" (c10's names of the dtypes)
std::string describe(const char* what, int64_t elements, torch::ScalarType type) {
  std::string digits = std::to_string(elements), grouped;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i > 0 && (digits.size() - i) % 3 == 0) grouped += ',';
    grouped += digits[i];
  }
  return std::string(what) + " of " + grouped + " " + std::string(c10::toString(type)) + " elements";
}

class NcclCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce;  // the one-tensor convenience

  NcclCommunicator(const Runtime& runtime, std::unique_ptr<Communicator> bootstrap)
      : bootstrap_(std::move(bootstrap)) {
    int devices = 0;
    const cudaError_t rc = cudaGetDeviceCount(&devices);
    if (rc != cudaSuccess || devices == 0)
      throw CommError(std::string("comm.backend nccl: no CUDA device is visible to rank ") +
                      std::to_string(runtime.info().rank) + " (cudaGetDeviceCount: " +
                      (rc == cudaSuccess ? "0 devices" : cudaGetErrorString(rc)) + "); use comm.backend: mpi");
    // NCCL refuses two ranks on one GPU, but only deep inside ncclCommInitRank and with a bare
    // "invalid usage". Every rank of the node sees the same counts, so all of them throw here.
    if (runtime.info().local_size > devices)
      throw CommError("comm.backend nccl: " + std::to_string(runtime.info().local_size) + " ranks on node " +
                      runtime.info().host + " but " + std::to_string(devices) +
                      " visible GPU(s); NCCL needs one GPU per rank. Start at most " + std::to_string(devices) +
                      " ranks per node, or train on the CPU (train.device: cpu, comm.backend: mpi)");
    device_ = runtime.info().local_rank % devices;
    GANTRY_CUDA_CHECK(cudaSetDevice(device_));
    ncclUniqueId id;
    if (bootstrap_->rank() == 0) GANTRY_NCCL_CHECK(ncclGetUniqueId(&id));
    torch::Tensor bytes = torch::from_blob(&id, {static_cast<int64_t>(sizeof id)}, torch::kUInt8);
    std::vector<torch::Tensor> list{bytes};
    bootstrap_->broadcast(list, 0);
    GANTRY_NCCL_CHECK(ncclCommInitRank(&comm_, bootstrap_->world_size(), id, bootstrap_->rank()));
    GANTRY_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  }
  ~NcclCommunicator() override {
    if (aborted_) return;  // the communicator is gone, and its stream may never drain
    if (stream_) cudaStreamSynchronize(stream_);
    if (comm_) ncclCommDestroy(comm_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  // From the watchdog's thread: ncclCommAbort makes the kernels of every in-flight collective
  // return, so no rank stays spinning on a peer that will never arrive.
  void abort() override {
    if (comm_ && !aborted_.exchange(true)) ncclCommAbort(comm_);
  }

  int rank() const override { return bootstrap_->rank(); }
  int world_size() const override { return bootstrap_->world_size(); }
  std::string backend_name() const override { return "nccl"; }

  // Host tensors (loss statistics, checksums, timings) take the bootstrap MPI communicator; a
  // list is all on the host or all on the GPU.
  void all_reduce(std::vector<torch::Tensor>& tensors, ReduceOp op) override {
    if (on_host(tensors, "all_reduce")) return bootstrap_->all_reduce(tensors, op);
    std::map<torch::ScalarType, std::vector<torch::Tensor*>> groups;
    for (auto& t : tensors) {
      check_cuda(t, "all_reduce");
      groups[t.scalar_type()].push_back(&t);
    }
    for (auto& [type, group] : groups) {
      if (group.size() == 1) {
        all_reduce_async(*group[0], op)->wait();
        continue;
      }
      std::vector<torch::Tensor> views;
      for (auto* t : group) views.push_back(t->reshape({-1}));
      torch::Tensor flat = torch::cat(views);
      all_reduce_async(flat, op)->wait();
      int64_t offset = 0;
      for (auto* t : group) {
        t->copy_(flat.narrow(0, offset, t->numel()).view(t->sizes()));
        offset += t->numel();
      }
    }
  }

  std::shared_ptr<Work> all_reduce_async(torch::Tensor tensor, ReduceOp op) override {
    if (tensor.device().is_cpu()) return bootstrap_->all_reduce_async(tensor, op);
    check_cuda(tensor, "all_reduce_async");
    check_alive();
    const ncclRedOp_t nccl_op = op == ReduceOp::kAverage ? ncclAvg : ncclSum;
    if (op == ReduceOp::kAverage && !torch::isFloatingType(tensor.scalar_type()))
      throw CommError("all_reduce_async: average of an integer tensor");
    order_after_caller();
    GANTRY_NCCL_CHECK(ncclAllReduce(tensor.data_ptr(), tensor.data_ptr(), static_cast<size_t>(tensor.numel()),
                                    nccl_type(tensor.scalar_type()), nccl_op, comm_, stream_));
    return std::make_shared<EventWork>(record_done(describe("all_reduce", tensor.numel(), tensor.scalar_type())),
                                       device_);
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    if (on_host(tensors, "broadcast")) return bootstrap_->broadcast(tensors, root);
    check_alive();
    order_after_caller();
    GANTRY_NCCL_CHECK(ncclGroupStart());
    for (auto& t : tensors) {
      check_cuda(t, "broadcast");
      GANTRY_NCCL_CHECK(ncclBroadcast(t.data_ptr(), t.data_ptr(), static_cast<size_t>(t.numel()),
                                      nccl_type(t.scalar_type()), root, comm_, stream_));
    }
    GANTRY_NCCL_CHECK(ncclGroupEnd());
    std::string what = "broadcast from rank " + std::to_string(root);
    if (tensors.size() == 1) what = describe(what.c_str(), tensors.front().numel(), tensors.front().scalar_type());
    else what += " of " + std::to_string(tensors.size()) + " tensors";
    EventWork(record_done(std::move(what)), device_).wait();
  }

  void barrier() override {
    check_alive();
    GANTRY_CUDA_CHECK(cudaStreamSynchronize(stream_));
    bootstrap_->barrier();
  }

  std::vector<std::string> all_gather(const std::string& bytes) override { return bootstrap_->all_gather(bytes); }

  // Called from the watchdog's thread only, which is also the only caller of abort(): aborted_
  // cannot change between the check and the use of comm_.
  std::string device_stall(std::chrono::duration<double> older_than) override {
    if (aborted_) return {};
    // This runs on the watchdog's thread, whose current device would otherwise be GPU 0: a
    // context there for every rank of the node.
    if (cudaSetDevice(device_) != cudaSuccess) return {};
    ncclResult_t async = ncclSuccess;
    if (ncclCommGetAsyncError(comm_, &async) == ncclSuccess && async != ncclSuccess && !in_progress(async))
      return std::string("NCCL reported an asynchronous error on GPU ") + std::to_string(device_) + ": " +
             ncclGetErrorString(async) + last_error();
    std::lock_guard<std::mutex> lock(in_flight_mutex_);
    const cudaError_t rc = retire_completed();
    if (in_flight_.empty()) return {};
    const InFlight& oldest = in_flight_.front();
    const std::chrono::duration<double> age = std::chrono::steady_clock::now() - oldest.queued;
    if (age < older_than) return {};
    char tail[200];
    std::snprintf(tail, sizeof tail, ", queued %.1f s ago, has not completed on GPU %d (%zu collective(s) behind it)",
                  age.count(), device_, in_flight_.size() - 1);
    std::string out = "NCCL collective " + std::to_string(oldest.number) + " of this communicator, " + oldest.what + tail;
    if (rc != cudaErrorNotReady) out += std::string("; cudaEventQuery: ") + cudaGetErrorString(rc);
    return out;
  }

 private:
  // ncclInProgress (NCCL 2.14) is a non-blocking communicator's state, not an error.
  static bool in_progress(ncclResult_t rc) {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 14, 0)
    return rc == ncclInProgress;
#else
    (void)rc;
    return false;
#endif
  }
  // NCCL's own words on the last error, where it has them (2.13 and later).
  std::string last_error() const {
#if NCCL_VERSION_CODE >= NCCL_VERSION(2, 13, 0)
    const char* words = ncclGetLastError(comm_);
    if (words && *words) return std::string(" (") + words + ")";
#endif
    return {};
  }
  // A collective queued on stream_ whose event has not fired yet.
  struct InFlight {
    uint64_t number;
    std::string what;
    std::shared_ptr<Event> done;
    std::chrono::steady_clock::time_point queued;
  };

  static bool on_host(const std::vector<torch::Tensor>& tensors, const char* what) {
    size_t host = 0;
    for (const auto& t : tensors) host += t.device().is_cpu();
    if (host != 0 && host != tensors.size())
      throw CommError(std::string("NCCL communicator: ") + what + " of a list mixing host and CUDA tensors");
    return host != 0;
  }
  void check_cuda(const torch::Tensor& t, const char* what) const {
    if (!t.device().is_cuda())
      throw CommError(std::string("NCCL communicator: ") + what + " needs CUDA tensors, got " + t.device().str() +
                      " (use the MPI backend for CPU tensors)");
    if (!t.is_contiguous()) throw CommError(std::string("NCCL communicator: ") + what + " needs contiguous tensors");
  }
  // A training thread woken by the watchdog's ncclCommAbort must not queue work on the freed
  // communicator while the watchdog ends the job.
  void check_alive() const {
    if (aborted_) throw CommError("NCCL communicator: used after the watchdog aborted it (see its report)");
  }
  // The NCCL stream waits for everything queued so far on the caller's stream.
  void order_after_caller() {
    cudaEvent_t ready;
    GANTRY_CUDA_CHECK(cudaEventCreateWithFlags(&ready, cudaEventDisableTiming));
    GANTRY_CUDA_CHECK(cudaEventRecord(ready, current_stream(device_)));
    GANTRY_CUDA_CHECK(cudaStreamWaitEvent(stream_, ready, 0));
    GANTRY_CUDA_CHECK(cudaEventDestroy(ready));  // released once recorded work completes
  }
  // The event after the collective just queued, which stays on the list of those in flight
  // until it fires.
  std::shared_ptr<Event> record_done(std::string what) {
    auto done = std::make_shared<Event>();
    GANTRY_CUDA_CHECK(cudaEventRecord(done->event, stream_));
    std::lock_guard<std::mutex> lock(in_flight_mutex_);
    retire_completed();  // the list is as long as the GPU is behind the host, no longer
    in_flight_.push_back({++queued_, std::move(what), done, std::chrono::steady_clock::now()});
    return done;
  }
  // Under in_flight_mutex_: drops the collectives that have completed, oldest first, and returns
  // the oldest remaining one's status (cudaErrorNotReady while it runs).
  cudaError_t retire_completed() {
    while (!in_flight_.empty()) {
      const cudaError_t rc = cudaEventQuery(in_flight_.front().done->event);
      if (rc == cudaErrorNotReady) (void)cudaGetLastError();  // else LibTorch's next launch check reports it
      if (rc != cudaSuccess) return rc;
      in_flight_.pop_front();
    }
    return cudaSuccess;
  }

  std::unique_ptr<Communicator> bootstrap_;
  int device_ = 0;
  ncclComm_t comm_ = nullptr;
  std::atomic<bool> aborted_{false};
  cudaStream_t stream_ = nullptr;
  std::mutex in_flight_mutex_;  // guards in_flight_ and queued_: the watchdog's thread reads them
  std::deque<InFlight> in_flight_;
  uint64_t queued_ = 0;
};

}  // namespace

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, std::unique_ptr<Communicator> bootstrap) {
  return std::make_unique<NcclCommunicator>(runtime, std::move(bootstrap));
}

}  // namespace gantry::comm
