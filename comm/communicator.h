// Implements: the Communicator interface that training code uses for every collective, and the
// process-level runtime (rank, local rank) it is created from. Backends live in comm/*.cpp;
// mpi.h and nccl.h never leak out of this folder.
#pragma once

#include <torch/torch.h>

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

enum class ReduceOp { kSum, kAverage };

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
  // In-place broadcast of every tensor in the list from `root`.
  virtual void broadcast(std::vector<torch::Tensor>& tensors, int root) = 0;
  virtual void barrier() = 0;
  // Gathers a small byte string from every rank; result[r] is rank r's.
  virtual std::vector<std::string> all_gather(const std::string& bytes) = 0;

  // Conveniences over the primitives above.
  void all_reduce(torch::Tensor& tensor, ReduceOp op);
  template <typename T>
  std::vector<T> all_gather_value(const T& value);
};

// Creates an MPI communicator over a private duplicate of the world, so that G's and D's
// traffic (or any other user) cannot interleave with anyone else's.
std::unique_ptr<Communicator> make_mpi_communicator(const Runtime& runtime);

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
