// Implements: the MPI runtime (init, ranks, local ranks via MPI_COMM_TYPE_SHARED) and the MPI
// Communicator for CPU tensors. Lists of tensors are coalesced into one flat buffer per dtype so
// that a model's gradients cost one MPI call, not one per parameter; async all-reduces run on a
// progress thread of the communicator's own, over a communicator of their own.
#include "comm/communicator.h"

#include <mpi.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <deque>
#include <future>
#include <map>
#include <mutex>
#include <thread>

namespace gantry::comm {
namespace {

std::string mpi_error_string(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(code, text, &len);
  return std::string(text, len);
}

#define GANTRY_MPI_CHECK(expr)                                                               \
  do {                                                                                       \
    int gantry_mpi_rc = (expr);                                                              \
    if (gantry_mpi_rc != MPI_SUCCESS)                                                        \
      throw CommError(std::string(#expr) + " failed at " + __FILE__ + ":" +                  \
                      std::to_string(__LINE__) + ": " + mpi_error_string(gantry_mpi_rc));    \
  } while (0)

MPI_Datatype mpi_type(torch::ScalarType type) {
  switch (type) {
    case torch::kFloat32: return MPI_FLOAT;
    case torch::kFloat64: return MPI_DOUBLE;
    case torch::kInt32: return MPI_INT32_T;
    case torch::kInt64: return MPI_INT64_T;
    case torch::kUInt8: return MPI_UINT8_T;
    case torch::kBFloat16:
    case torch::kHalf: return MPI_UINT16_T;  // summed by the user ops below
    default:
      throw CommError(std::string("MPI communicator: unsupported dtype ") +
                      std::string(c10::toString(type)));
  }
}

// MPI has no 16-bit float types: their sums are user ops, accumulated in float per element.
template <typename T>
void sum_16bit(void* in, void* inout, int* len, MPI_Datatype* /*type*/) {
  const T* a = static_cast<const T*>(in);
  T* b = static_cast<T*>(inout);
  for (int i = 0; i < *len; ++i) b[i] = static_cast<T>(static_cast<float>(a[i]) + static_cast<float>(b[i]));
}

MPI_Op make_op(MPI_User_function* f) {
  MPI_Op op;
  MPI_Op_create(f, /*commute=*/1, &op);
  return op;
}

// The MPI_Op that sums `type`; the user ops are created at first use (MPI is initialised by then).
MPI_Op sum_op(torch::ScalarType type) {
  if (type == torch::kBFloat16) {
    static const MPI_Op bf16 = make_op(&sum_16bit<c10::BFloat16>);
    return bf16;
  }
  if (type == torch::kHalf) {
    static const MPI_Op f16 = make_op(&sum_16bit<c10::Half>);
    return f16;
  }
  return MPI_SUM;
}

// Runs async all-reduces one at a time, in submission order, on a thread of their own: OpenMPI
// makes little progress on a nonblocking collective outside MPI calls, so without this thread
// the reduction would only move at wait(). The thread is idle (blocked on a condition variable)
// between collectives.
class ProgressThread {
 public:
  explicit ProgressThread(MPI_Comm comm) : comm_(comm), thread_([this] { run(); }) {}
  ~ProgressThread() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    wake_.notify_one();
    thread_.join();
  }

  std::future<void> submit(torch::Tensor tensor, ReduceOp op, int world) {
    Task task{std::move(tensor), op, world, {}};
    std::future<void> done = task.done.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(std::move(task));
    }
    wake_.notify_one();
    return done;
  }

 private:
  struct Task {
    torch::Tensor tensor;
    ReduceOp op;
    int world;
    std::promise<void> done;
  };

  void run() {
    for (;;) {
      Task task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;
        task = std::move(queue_.front());
        queue_.pop_front();
      }
      try {
        reduce(task);
        task.done.set_value();
      } catch (...) {
        task.done.set_exception(std::current_exception());
      }
    }
  }

  void reduce(Task& task) {
    torch::Tensor& t = task.tensor;
    // Blocking, on this thread: OpenMPI's tuned all-reduce, which for every size measured
    // (bench/allreduce_bench) beat MPI_Iallreduce driven by MPI_Test here by 2-10x.
    GANTRY_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, t.data_ptr(), static_cast<int>(t.numel()), mpi_type(t.scalar_type()),
                                   sum_op(t.scalar_type()), comm_));
    if (task.op == ReduceOp::kAverage) t.div_(task.world);
  }

  MPI_Comm comm_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::thread thread_;  // last: starts once the members above exist
};

class FutureWork final : public Work {
 public:
  explicit FutureWork(std::future<void> done) : done_(std::move(done)) {}
  void wait() override { done_.get(); }

 private:
  std::future<void> done_;
};

class DoneWork final : public Work {
 public:
  void wait() override {}
};

class MpiCommunicator final : public Communicator {
 public:
  using Communicator::all_reduce;  // the one-tensor convenience

  MpiCommunicator(MPI_Comm parent, bool thread_multiple) {
    GANTRY_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    // Errors come back as codes and become CommError, instead of MPI's default abort.
    GANTRY_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    GANTRY_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    GANTRY_MPI_CHECK(MPI_Comm_size(comm_, &size_));
    // Async collectives get a communicator of their own, so that they never match a blocking
    // collective that the caller issues meanwhile. Without MPI_THREAD_MULTIPLE they run inline.
    if (thread_multiple && size_ > 1) {
      GANTRY_MPI_CHECK(MPI_Comm_dup(comm_, &async_comm_));
      GANTRY_MPI_CHECK(MPI_Comm_set_errhandler(async_comm_, MPI_ERRORS_RETURN));
      progress_ = std::make_unique<ProgressThread>(async_comm_);
    }
  }
  ~MpiCommunicator() override {
    progress_.reset();  // joins the thread before its communicator goes
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (finalized) return;
    if (async_comm_ != MPI_COMM_NULL) MPI_Comm_free(&async_comm_);
    MPI_Comm_free(&comm_);
  }

  int rank() const override { return rank_; }
  int world_size() const override { return size_; }
  std::string backend_name() const override { return "mpi"; }

  void all_reduce(std::vector<torch::Tensor>& tensors, ReduceOp op) override {
    // Group by dtype; each group is one MPI_Allreduce on a flat buffer (or in place when the
    // group is a single tensor).
    std::map<torch::ScalarType, std::vector<torch::Tensor*>> groups;
    for (auto& t : tensors) {
      check_cpu(t, "all_reduce");
      groups[t.scalar_type()].push_back(&t);
    }
    for (auto& [type, group] : groups) {
      torch::Tensor flat;
      if (group.size() == 1) {
        flat = *group[0];
      } else {
        std::vector<torch::Tensor> views;
        views.reserve(group.size());
        for (auto* t : group) views.push_back(t->reshape({-1}));
        flat = torch::cat(views);
      }
      if (size_ > 1) {
        GANTRY_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, flat.data_ptr(), count(flat),
                                       mpi_type(type), sum_op(type), comm_));
      }
      if (op == ReduceOp::kAverage && size_ > 1) {
        if (!torch::isFloatingType(type))
          throw CommError("all_reduce: average of an integer tensor");
        flat.div_(size_);
      }
      if (group.size() > 1) {
        int64_t offset = 0;
        for (auto* t : group) {
          const int64_t n = t->numel();
          t->copy_(flat.narrow(0, offset, n).view(t->sizes()));
          offset += n;
        }
      }
    }
  }

  std::shared_ptr<Work> all_reduce_async(torch::Tensor tensor, ReduceOp op) override {
    check_cpu(tensor, "all_reduce_async");
    count(tensor);
    if (op == ReduceOp::kAverage && !torch::isFloatingType(tensor.scalar_type()))
      throw CommError("all_reduce_async: average of an integer tensor");
    if (size_ == 1) return std::make_shared<DoneWork>();
    if (!progress_) {  // no thread may call MPI beside the caller: reduce now
      all_reduce(tensor, op);
      return std::make_shared<DoneWork>();
    }
    return std::make_shared<FutureWork>(progress_->submit(std::move(tensor), op, size_));
  }

  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    if (size_ == 1) return;
    for (auto& t : tensors) {
      check_cpu(t, "broadcast");
      GANTRY_MPI_CHECK(MPI_Bcast(t.data_ptr(), count(t), mpi_type(t.scalar_type()), root, comm_));
    }
  }

  void barrier() override { GANTRY_MPI_CHECK(MPI_Barrier(comm_)); }

  std::vector<std::string> all_gather(const std::string& bytes) override {
    int mine = static_cast<int>(bytes.size());
    std::vector<int> sizes(size_);
    GANTRY_MPI_CHECK(MPI_Allgather(&mine, 1, MPI_INT, sizes.data(), 1, MPI_INT, comm_));
    std::vector<int> displs(size_, 0);
    int total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[r] = total;
      total += sizes[r];
    }
    std::string all(static_cast<size_t>(total), '\0');
    GANTRY_MPI_CHECK(MPI_Allgatherv(bytes.data(), mine, MPI_CHAR, all.data(), sizes.data(),
                                    displs.data(), MPI_CHAR, comm_));
    std::vector<std::string> out;
    out.reserve(size_);
    for (int r = 0; r < size_; ++r) out.push_back(all.substr(displs[r], sizes[r]));
    return out;
  }

 private:
  static void check_cpu(const torch::Tensor& t, const char* what) {
    if (!t.device().is_cpu())
      throw CommError(std::string("MPI communicator: ") + what + " needs CPU tensors, got " +
                      t.device().str() + " (use the NCCL backend for CUDA)");
    if (!t.is_contiguous())
      throw CommError(std::string("MPI communicator: ") + what + " needs contiguous tensors");
  }
  static int count(const torch::Tensor& t) {
    if (t.numel() > std::numeric_limits<int>::max())
      throw CommError("MPI communicator: tensor larger than INT_MAX elements");
    return static_cast<int>(t.numel());
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  MPI_Comm async_comm_ = MPI_COMM_NULL;
  int rank_ = 0;
  int size_ = 1;
  std::unique_ptr<ProgressThread> progress_;
};

}  // namespace

Runtime::Runtime(int* argc, char*** argv) {
  int initialized = 0;
  GANTRY_MPI_CHECK(MPI_Initialized(&initialized));
  if (!initialized) {
    int provided = 0;
    // Async checkpoints (and communication threads) call MPI beside the training loop.
    GANTRY_MPI_CHECK(MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided));
  }
  int provided = MPI_THREAD_SINGLE;
  GANTRY_MPI_CHECK(MPI_Query_thread(&provided));
  info_.thread_multiple = provided == MPI_THREAD_MULTIPLE;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  GANTRY_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &info_.rank));
  GANTRY_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &info_.world_size));
  MPI_Comm node;
  GANTRY_MPI_CHECK(
      MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, info_.rank, MPI_INFO_NULL, &node));
  GANTRY_MPI_CHECK(MPI_Comm_rank(node, &info_.local_rank));
  GANTRY_MPI_CHECK(MPI_Comm_size(node, &info_.local_size));
  MPI_Comm_free(&node);
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  info_.host = host;
}

Runtime::~Runtime() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

void Runtime::abort(int code) const {
  MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);
}

void Communicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  std::vector<torch::Tensor> list{tensor};
  all_reduce(list, op);
}

std::unique_ptr<Communicator> make_mpi_communicator(const Runtime& runtime) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD, runtime.info().thread_multiple);
}

Backend parse_backend(const std::string& name) {
  if (name == "auto") return Backend::kAuto;
  if (name == "mpi") return Backend::kMpi;
  if (name == "nccl") return Backend::kNccl;
  throw CommError("unknown communication backend '" + name + "' (auto, mpi or nccl)");
}

std::unique_ptr<Communicator> make_communicator(const Runtime& runtime, Backend backend, bool models_on_cuda) {
  if (backend == Backend::kNccl || (backend == Backend::kAuto && models_on_cuda))
    return make_nccl_communicator(runtime, make_mpi_communicator(runtime));
  return make_mpi_communicator(runtime);
}

}  // namespace gantry::comm
