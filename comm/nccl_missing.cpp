// Implements: the NCCL factory of a build without the CUDA toolkit or NCCL: asking for the
// backend is a clear error rather than a link failure.
#include "comm/communicator.h"

namespace gantry::comm {

bool nccl_compiled() { return false; }

std::unique_ptr<Communicator> make_nccl_communicator(const Runtime& /*runtime*/,
                                                     std::unique_ptr<Communicator> /*bootstrap*/) {
  throw CommError("comm.backend nccl: this gantry was built without NCCL (CMake found no CUDA toolkit "
                  "with nccl.h); rebuild with CUDA and NCCL installed, or use comm.backend: mpi");
}

}  // namespace gantry::comm
