// Implements: the MPI runtime (init, ranks, local ranks via MPI_COMM_TYPE_SHARED) and the MPI
// Communicator for CPU tensors. Lists of tensors are coalesced into one flat buffer per dtype so
// that a model's gradients cost one MPI call, not one per parameter.
#include "comm/communicator.h"

#include <mpi.h>
#include <unistd.h>

#include <cstring>
#include <map>

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
    default:
      throw CommError(std::string("MPI communicator: unsupported dtype ") +
                      std::string(c10::toString(type)));
  }
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(MPI_Comm parent) {
    GANTRY_MPI_CHECK(MPI_Comm_dup(parent, &comm_));
    // Errors come back as codes and become CommError, instead of MPI's default abort.
    GANTRY_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
    GANTRY_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    GANTRY_MPI_CHECK(MPI_Comm_size(comm_, &size_));
  }
  ~MpiCommunicator() override {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
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
                                       mpi_type(type), MPI_SUM, comm_));
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
  int rank_ = 0;
  int size_ = 1;
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

std::unique_ptr<Communicator> make_mpi_communicator(const Runtime& /*runtime*/) {
  return std::make_unique<MpiCommunicator>(MPI_COMM_WORLD);
}

}  // namespace gantry::comm
