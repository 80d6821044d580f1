// Implements: the Communicator interface that training code uses for every collective, and the
// process-level runtime (rank, local rank) it is created from. Backends live in comm/*.cpp;
// mpi.h and nccl.h never leak out of this folder.
#pragma once

#include <torch/torch.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gantry::comm {

// A failed collective or a backend error, with the call that failed in its message.
class CommError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A CUDA or NCCL call that failed; the message names the call and the error string.
class DeviceError : public CommError {
 public:
  using CommError::CommError;
};

enum class ReduceOp { kSum, kAverage };

// The transport a communicator uses. kAuto: NCCL when the models are on CUDA, else MPI.
enum class Backend { kAuto, kMpi, kNccl };
Backend parse_backend(const std::string& name);  // "auto" | "mpi" | "nccl"

// A collective started by all_reduce_async. wait() returns once the result may be used: on the
// CPU, the tensor holds it; on CUDA, work queued afterwards on the current stream sees it (an
// event wait, never a host sync). Exactly one wait() per Work; errors surface there.
class Work {
 public:
  virtual ~Work() = default;
  virtual void wait() = 0;
};

// Where this process sits in the job. Ranks come from the launcher (mpirun or srun);
// the local rank is the rank among processes that share this node.
struct ProcessInfo {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;
  int local_size = 1;
  std::string host;
  bool thread_multiple = false;  // MPI allows collectives from several threads at once
};

// Initialises the process group (MPI) for the lifetime of the object. Exactly one per process,
// owned by main(); communicators are created from it.
class Runtime {
 public:
  Runtime(int* argc, char*** argv);
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  const ProcessInfo& info() const { return info_; }

  // Kills every process of the job with `code`. For errors after which peers would hang.
  [[noreturn]] void abort(int code) const;

 private:
  ProcessInfo info_;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual std::string backend_name() const = 0;

  // In-place all-reduce of every tensor in the list. Tensors must be contiguous and live on the
  // backend's device; mixed dtypes are allowed. Every rank ends with bit-identical values.
  virtual void all_reduce(std::vector<torch::Tensor>& tensors, ReduceOp op) = 0;
  // Starts an in-place all-reduce of one contiguous tensor and returns at once. Collectives
  // started this way run in the order they were started, the same order on every rank, and
  // progress while the caller goes on computing (the MPI backend drives them from a thread of
  // its own; NCCL from a stream of its own). The tensor must not be touched until wait().
  virtual std::shared_ptr<Work> all_reduce_async(torch::Tensor tensor, ReduceOp op) = 0;
  // In-place broadcast of every tensor in the list from `root`.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  virtual void barrier() = 0;
  // Gathers a small byte string from every rank; result[r] is rank r's.
  virtual std::vector<std::string> all_gather(const std::string& bytes) = 0;
  // Called by the watchdog's thread while collectives may be blocked on others: tears down this
  // backend's in-flight collectives so that nothing waits on them (NCCL: ncclCommAbort, as
  // PyTorch's NCCL watchdog does). MPI's are ended by the MPI_Abort that follows: nothing here.
  virtual void abort() {}
  // Called by the watchdog's thread. A backend whose collectives go on running on a device after
  // the call has returned (NCCL) describes the oldest one that has been running there for
  // `older_than` or longer, or an asynchronous error the backend has reported; "" when there is
  // neither. A caller blocked inside a collective is the watchdog's own to see: MPI has nothing here.
  virtual std::string device_stall(std::chrono::duration<double> older_than) {
    (void)older_than;
    return {};
  }

  // Conveniences over the primitives above.
  void all_reduce(torch::Tensor& tensor, ReduceOp op);
  template <typename T>
  std::vector<T> all_gather_value(const T& value);
};

// Creates an MPI communicator over a private duplicate of the world, so that G's and D's
// traffic (or any other user) cannot interleave with anyone else's.
std::unique_ptr<Communicator> make_mpi_communicator(const Runtime& runtime);

// Creates an NCCL communicator on this rank's GPU (local rank modulo the visible devices); the
// ncclUniqueId travels over `bootstrap`, which also carries all_gather. Throws CommError when
// gantry was built without NCCL or no GPU is visible.
std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& runtime, std::unique_ptr<Communicator> bootstrap);
bool nccl_compiled();  // whether this build has the NCCL backend

// The communicator for `backend`; kAuto means NCCL when `models_on_cuda`, else MPI.
std::unique_ptr<Communicator> make_communicator(const Runtime& runtime, Backend backend, bool models_on_cuda);

template <typename T>
std::vector<T> Communicator::all_gather_value(const T& value) {
  static_assert(std::is_trivially_copyable_v<T>, "all_gather_value needs a trivially copyable type");
  std::string bytes(reinterpret_cast<const char*>(&value), sizeof(T));
  std::vector<T> out;
  for (const auto& b : all_gather(bytes)) {
    if (b.size() != sizeof(T)) throw CommError("all_gather_value: a rank sent a different size");
    T v;
    std::memcpy(&v, b.data(), sizeof(T));
    out.push_back(v);
  }
  return out;
}

}  // namespace gantry::comm
