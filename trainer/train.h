// Implements: the `gantry train` flow: set up, train (k D updates, one G update, report, sample,
// check replicas) and finish.
#pragma once

#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>

#include "comm/communicator.h"
#include "trainer/config.h"
#include "trainer/models.h"

namespace gantry {

// An error that every rank has agreed on (each knows it), so main() can print it once on rank 0
// and exit cleanly instead of aborting the job.
class JobError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The cores this process may run on: its CPU affinity set, or fewer when a cgroup CPU quota
// (Docker's --cpus, a Kubernetes CPU limit, systemd's CPUQuota) allows less.
int available_cores();

// The CPU quota that cgroups put on this process, in whole cores rounded up, or 0 when none does.
// `self` is the text of /proc/self/cgroup; `root` is where cgroups are mounted (/sys/fs/cgroup).
// cgroup v2: cpu.max ("QUOTA PERIOD", or "max PERIOD") of the process's cgroup and each of its
// ancestors; v1: cpu.cfs_quota_us / cpu.cfs_period_us under the cpu controller's mount. The
// smallest limit found wins.
int cgroup_cpu_limit(const std::filesystem::path& root, const std::string& self);

// Intra-op threads for this rank: the cores this process may use, shared by the ranks on its node.
int threads_per_rank(const comm::ProcessInfo& info);

// Sample quality of the live models, measured on rank 0 (eval.frechet_every): a function of G,
// which it must leave as it found it.
using QualityProbe = std::function<double(GanModels&)>;
// Builds the probe once, on rank 0 only, before training starts (it may train a classifier).
using QualityProbeFactory = std::function<QualityProbe()>;

// `resume`: "" (a fresh run), "auto" (the newest checkpoint that verifies, if any) or a checkpoint
// directory. Returns normally also when SIGTERM/SIGUSR1 stopped the run after a checkpoint.
// `frechet`: how to measure eval.frechet_every's Fréchet distance (app/main.cpp gives eval's);
// needed when that key is set.
void train(const Config& config, comm::Runtime& runtime, const std::string& resume,
           const QualityProbeFactory& frechet = {});

}  // namespace gantry
