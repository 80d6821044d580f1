// Implements: sharded checkpoints. The logical state (named tensors) is split across ranks by
// bytes; each rank writes its shard into step-N.tmp/, the ranks agree, and rank 0 commits with a
// manifest (per-tensor and per-file xxh3 checksums), a rename and an atomic `latest`. Shards are
// safetensors files (checkpoint_format.h), so Python reads them without unpickling. Loading
// verifies, reshards to any world size (each rank reads ~1/N of the files, the rest arrives by
// broadcast) and falls back to an older checkpoint when `auto` meets a corrupt one.
#pragma once

#include <torch/torch.h>

#include <exception>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>

#include "comm/communicator.h"
#include "trainer/checkpoint_format.h"

namespace gantry::checkpoint {

// Named tensors in a fixed (sorted) order: the logical state, independent of the world size.
using StateDict = std::map<std::string, torch::Tensor>;

struct Loaded {
  std::string dir;
  StateDict state;
  nlohmann::json manifest;
};

struct Options {
  std::string dir;         // <run.dir>/checkpoints
  // Retention after each commit of step N: the newest K checkpoints up to step N are kept, and
  // every checkpoint whose step is a multiple of M (0: none). Checkpoints past step N (left by a
  // run that resumed from an earlier one) are never deleted: they are the user's to remove. One
  // that load() found not to verify is not counted among the K.
  int64_t keep_last = 3;
  int64_t keep_every = 0;
};

// Give it a communicator of its own (not the training loop's) when saving asynchronously: its
// collectives then run on a background thread while training's run on the main one.
class Checkpointer {
 public:
  Checkpointer(comm::Communicator& comm, Options options);
  ~Checkpointer();  // waits for a save in flight

  // Rank 0 removes step-*.tmp directories that a crash left behind. Collective.
  void clean_leftovers();
  // Collective. Writes, agrees and commits step-N; applies retention. `meta` goes into the
  // manifest. Returns the committed directory; throws CheckpointError on every rank when any
  // rank failed, and then `latest` names the previous checkpoint (or may, when only its update
  // failed; the message says so). A retention failure after the commit is no save failure: it
  // waits in take_warning() (rank 0), as does the name an earlier step-N was moved to
  // (step-N.old-K) when one was already there.
  std::string save(const StateDict& state, int64_t step, const nlohmann::json& meta);
  // The warning of the last save (or of the async save that wait() returned), once; "" if none.
  std::string take_warning();
  // Copies `state` into host buffers kept from the previous async save (no page faults after the
  // first), then runs save() over the copy on a background thread. Only the copy stalls the
  // caller. At most one save is in flight: this first waits for the previous one.
  void save_async(const StateDict& state, int64_t step, nlohmann::json meta);
  // Waits for the save in flight, if any: its directory, or its CheckpointError rethrown.
  std::optional<std::string> wait();
  bool in_flight() const { return worker_.joinable(); }
  // Collective. `spec` is "auto" or a checkpoint directory (failure is an error). auto tries the
  // checkpoint `latest` names first (the run's last commit, which is not the highest step when
  // the run resumed from an earlier checkpoint), then the others newest first; the first that
  // verifies is loaded (none: nullopt). `warn` hears about checkpoints skipped by auto, about
  // newer checkpoints that it passed over, and about `latest` when auto resumed from another
  // checkpoint than it named (it is repointed).
  std::optional<Loaded> load(const std::string& spec, const std::function<void(const std::string&)>& warn);

 private:
  Loaded load_one(const std::string& dir);
  void point_latest_at(const std::string& dir, const std::function<void(const std::string&)>& warn);
  std::string apply_retention(int64_t committed_step);  // what it could not remove, as a warning

  comm::Communicator& comm_;
  Options options_;
  std::thread worker_;
  std::string worker_result_;
  std::exception_ptr worker_error_;
  std::string warning_;
  StateDict host_buffers_;  // the async save's private copy, reused
  std::set<std::string> unverified_;  // step-N names that load() skipped: retention does not count them
};

// The checkpoint directories under `checkpoints_dir`, newest step first (committed ones only).
std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir);

// The checkpoint `<checkpoints_dir>/latest` names (only ever a step-NNNNNNNN sibling).
std::string read_latest(const std::string& checkpoints_dir);

// Reads and verifies a whole checkpoint in one process (for `gantry inspect` and tests).
Loaded read_checkpoint(const std::string& dir);

// A digest of the logical state: names, dtypes, shapes and bytes, whatever world size saved it.
std::string digest(const StateDict& state);

std::string step_dir_name(int64_t step);

// The ranks' errors (empty: none) as one message: each distinct error once, after the ranks that
// hit it ("ranks 0, 2: ..."), and without ranks when every rank hit the same one; "" if none.
std::string join_rank_errors(const std::vector<std::string>& errors);

}  // namespace gantry::checkpoint
