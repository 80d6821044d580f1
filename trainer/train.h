// Implements: the `gantry train` flow: set up, train (k D updates, one G update, report, sample,
// check replicas) and finish.
#pragma once

#include <stdexcept>
#include <string>

#include "comm/communicator.h"
#include "trainer/config.h"

namespace gantry {

// An error that every rank has agreed on (each knows it), so main() can print it once on rank 0
// and exit cleanly instead of aborting the job.
class JobError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Intra-op threads for this rank: the cores this process may use, shared by the ranks on its node.
int threads_per_rank(const comm::ProcessInfo& info);

// `resume`: "" (a fresh run), "auto" (the newest checkpoint that verifies, if any) or a checkpoint
// directory. Returns normally also when SIGTERM/SIGUSR1 stopped the run after a checkpoint.
void train(const Config& config, comm::Runtime& runtime, const std::string& resume);

}  // namespace gantry
