// Implements: Checkpointer (see checkpoint.h): partition by bytes, durable writes (fsync of files
// and directories), the agree-then-commit protocol, verification with xxh3, resharding load,
// retention, and fault-injection points for the tests (GANTRY_CHECKPOINT_FAULT=point[:rank[:step]]:
// SIGKILL at after_shard, before_manifest, before_rename, before_latest, after_commit; enospc: the
// shard write fails as on a full disk).
#include "trainer/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

namespace gantry::checkpoint {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

using Piece = std::pair<const void*, size_t>;

// Writes the pieces back to back into `path` and fsyncs it.
void write_durable(const fs::path& path, const std::vector<Piece>& pieces) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw CheckpointError("cannot create " + path.string() + ": " + std::strerror(errno));
  for (const auto& [data, size] : pieces) {
    const char* p = static_cast<const char*>(data);
    size_t left = size;
    while (left > 0) {
      const ssize_t n = ::write(fd, p, left);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const std::string why = std::strerror(errno);
        ::close(fd);
        throw CheckpointError("cannot write " + path.string() + ": " + why);
      }
      p += n;
      left -= static_cast<size_t>(n);
    }
  }
  const int synced = ::fsync(fd), sync_errno = errno;
  const int closed = ::close(fd), close_errno = errno;  // closed even when the flush failed
  if (synced != 0 || closed != 0)
    throw CheckpointError("cannot flush " + path.string() + ": " + std::strerror(synced != 0 ? sync_errno : close_errno));
}

void write_durable(const fs::path& path, const std::string& text) { write_durable(path, {{text.data(), text.size()}}); }

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) throw CheckpointError("cannot open directory " + dir.string() + ": " + std::strerror(errno));
  const int synced = ::fsync(fd), why = errno;
  ::close(fd);
  if (synced != 0) throw CheckpointError("cannot flush directory " + dir.string() + ": " + std::strerror(why));
}

std::vector<char> read_all(const fs::path& path) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) throw CheckpointError(path.string() + ": missing or unreadable");
  std::vector<char> bytes(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  if (!in.read(bytes.data(), static_cast<std::streamsize>(bytes.size())))
    throw CheckpointError(path.string() + ": read failed");
  return bytes;
}

// Test hook: GANTRY_CHECKPOINT_FAULT=point[:rank[:step]] names a fault at `point` on `rank`
// (default 0) in the save of `step` (default: every save).
bool fault_requested(const char* point, int rank, int64_t step) {
  const char* spec = std::getenv("GANTRY_CHECKPOINT_FAULT");
  if (!spec) return false;
  char name[64] = {0};
  int target = 0;
  long long target_step = -1;
  std::sscanf(spec, "%63[^:]:%d:%lld", name, &target, &target_step);
  return std::string(name) == point && rank == target && (target_step < 0 || target_step == step);
}

// Points after_shard ... after_commit kill this process with SIGKILL there.
void maybe_fault(const char* point, int rank, int64_t step) {
  if (fault_requested(point, rank, step)) std::raise(SIGKILL);
}

// Which rank writes which tensor: largest first onto the least-loaded rank, so every rank
// writes about 1/world of the bytes. Deterministic, so every rank computes the same plan.
std::vector<std::vector<std::string>> partition(const StateDict& state, int world) {
  std::vector<std::pair<int64_t, std::string>> sizes;
  for (const auto& [name, t] : state) sizes.emplace_back(t.numel() * t.element_size(), name);
  std::sort(sizes.begin(), sizes.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  std::vector<std::vector<std::string>> plan(world);
  std::vector<int64_t> load(world, 0);
  for (const auto& [bytes, name] : sizes) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    plan[r].push_back(name);
    load[r] += bytes;
  }
  return plan;
}

Manifest read_manifest(const fs::path& dir) {
  const fs::path file = dir / "manifest.json";
  if (!fs::exists(file)) throw CheckpointError(file.string() + ": missing (the checkpoint was never committed)");
  const std::vector<char> bytes = read_all(file);
  return parse_manifest(std::string_view(bytes.data(), bytes.size()), file.string());
}

// Reads, verifies and returns the tensors of the given shards.
StateDict read_shards(const fs::path& dir, const Manifest& manifest, const std::vector<int>& shards) {
  StateDict out;
  for (int s : shards) {
    const ShardEntry& info = manifest.shards.at(static_cast<size_t>(s));
    const fs::path file = dir / info.file;
    const std::vector<char> bytes = read_all(file);
    if (bytes.size() != info.bytes)
      throw CheckpointError(file.string() + ": " + std::to_string(bytes.size()) + " bytes, the manifest says " +
                            std::to_string(info.bytes) + " (truncated?)");
    if (hex64(XXH3_64bits(bytes.data(), bytes.size())) != info.xxh3)
      throw CheckpointError(file.string() + ": checksum mismatch (the file is corrupt)");
    auto tensors = parse_safetensors(std::string_view(bytes.data(), bytes.size()), file.string());
    out.merge(match_shard(manifest, s, std::move(tensors), file.string()));
  }
  return out;
}

// The step of a step-NNNNNNNN directory.
int64_t step_of(const std::string& dir) { return std::stoll(fs::path(dir).filename().string().substr(5)); }

// What step_dir_name() makes: "step-" and the step, zero-padded to eight digits (more past 10^8).
bool is_step_dir_name(const std::string& name) {
  const bool digits = name.size() >= 13 && name.size() <= 5 + 18 && name.rfind("step-", 0) == 0 &&
                      name.find_first_not_of("0123456789", 5) == std::string::npos;
  return digits && step_dir_name(std::stoll(name.substr(5))) == name;
}

// Points `<root>/latest` at the sibling `name` atomically: a new file renamed over the old one.
void write_latest(const fs::path& root, const std::string& name) {
  write_durable(root / "latest.tmp", name + "\n");
  fs::rename(root / "latest.tmp", root / "latest");
  fsync_dir(root);
}

}  // namespace

std::string join_rank_errors(const std::vector<std::string>& errors) {
  std::vector<std::pair<std::string, std::vector<size_t>>> distinct;  // in order of first appearance
  for (size_t r = 0; r < errors.size(); ++r) {
    if (errors[r].empty()) continue;
    auto it = std::find_if(distinct.begin(), distinct.end(), [&](const auto& d) { return d.first == errors[r]; });
    if (it == distinct.end()) distinct.push_back({errors[r], {r}});
    else it->second.push_back(r);
  }
  if (distinct.size() == 1 && distinct.front().second.size() == errors.size()) return distinct.front().first;
  std::string joined;
  for (const auto& [error, ranks] : distinct) {
    std::string who = ranks.size() == 1 ? "rank " : "ranks ";
    for (size_t i = 0; i < ranks.size(); ++i) who += (i ? ", " : "") + std::to_string(ranks[i]);
    joined += (joined.empty() ? "" : "; ") + who + ": " + error;
  }
  return joined;
}

namespace {

// Every rank's error joined into one message (join_rank_errors), or "" when all succeeded.
std::string agree(comm::Communicator& comm, const std::string& error) {
  return join_rank_errors(comm.all_gather(error));
}

// A name beside `dir` for a copy moved out of the way: "<dir>.old-K", the first K free. Not a
// step-NNNNNNNN name nor a .tmp one, so neither loading, retention nor leftover cleaning touch it.
fs::path set_aside_name(const fs::path& dir) {
  for (int k = 1;; ++k) {
    fs::path candidate = dir.string() + ".old-" + std::to_string(k);
    if (!fs::exists(candidate)) return candidate;
  }
}

}  // namespace

std::string step_dir_name(int64_t step) {
  char name[32];
  std::snprintf(name, sizeof name, "step-%08lld", static_cast<long long>(step));
  return name;
}

std::vector<std::string> list_checkpoints(const std::string& checkpoints_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(checkpoints_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!entry.is_directory() || !is_step_dir_name(name)) continue;
    found.emplace_back(step_of(name), entry.path().string());
  }
  std::sort(found.rbegin(), found.rend());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

std::string read_latest(const std::string& checkpoints_dir) {
  const fs::path file = fs::path(checkpoints_dir) / "latest";
  std::ifstream in(file);
  std::string name;
  if (!(in >> name)) throw CheckpointError(file.string() + ": missing or empty");
  // Only ever a step-NNNNNNNN sibling: `latest` never points out of the checkpoints folder.
  if (!is_step_dir_name(name))
    throw CheckpointError(file.string() + ": '" + name.substr(0, 64) + "' is not a step-NNNNNNNN checkpoint name");
  return (fs::path(checkpoints_dir) / name).string();
}

std::string digest(const StateDict& state) {
  std::string text;
  for (const auto& [name, t] : state) {
    text += name + '|' + c10::toString(t.scalar_type()) + '|';
    for (auto d : t.sizes()) text += std::to_string(d) + ',';
    text += '|' + hex64(tensor_hash(t.cpu())) + '\n';
  }
  return hex64(XXH3_64bits(text.data(), text.size()));
}

Loaded read_checkpoint(const std::string& dir) {
  const Manifest manifest = read_manifest(dir);
  std::vector<int> all(manifest.shards.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  return {dir, read_shards(dir, manifest, all), manifest.json};
}

Checkpointer::Checkpointer(comm::Communicator& comm, Options options) : comm_(comm), options_(std::move(options)) {}

Checkpointer::~Checkpointer() {
  if (worker_.joinable()) worker_.join();
}

void Checkpointer::save_async(const StateDict& state, int64_t step, json meta) {
  wait();
  for (const auto& [name, t] : state) {
    auto& buffer = host_buffers_[name];
    if (!buffer.defined() || buffer.sizes() != t.sizes() || buffer.scalar_type() != t.scalar_type())
      buffer = torch::empty(t.sizes(), t.options().device(torch::kCPU));
    buffer.copy_(t.detach());
  }
  worker_error_ = nullptr;
  worker_ = std::thread([this, step, meta = std::move(meta)] {
    try {
      worker_result_ = save(host_buffers_, step, meta);
    } catch (...) {
      worker_error_ = std::current_exception();
    }
  });
}

std::string Checkpointer::take_warning() { return std::exchange(warning_, std::string()); }

std::optional<std::string> Checkpointer::wait() {
  if (!worker_.joinable()) return std::nullopt;
  worker_.join();
  if (worker_error_) std::rethrow_exception(std::exchange(worker_error_, nullptr));
  return worker_result_;
}

void Checkpointer::clean_leftovers() {
  if (comm_.rank() == 0) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(options_.dir, ec)) {
      const std::string name = entry.path().filename().string();
      if (name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0) fs::remove_all(entry.path(), ec);
    }
  }
  comm_.barrier();
}

std::string Checkpointer::save(const StateDict& state, int64_t step, const json& meta) {
  const int rank = comm_.rank(), world = comm_.world_size();
  const fs::path root = options_.dir;
  const fs::path final_dir = root / step_dir_name(step);
  const fs::path tmp_dir = final_dir.string() + ".tmp";

  // 1. Every rank writes its shard into step-N.tmp/ and fsyncs it.
  json report;
  try {
    fs::create_directories(tmp_dir);
    std::vector<std::pair<std::string, torch::Tensor>> mine;
    json tensors = json::object();
    const auto plan = partition(state, world);
    for (const auto& name : plan[rank]) {
      const torch::Tensor t = state.at(name).detach().cpu().contiguous();
      mine.emplace_back(name, t);
      tensors[name] = {{"shard", rank}, {"dtype", dtype_tag(t.scalar_type())},
                       {"shape", t.sizes().vec()}, {"xxh3", hex64(tensor_hash(t))}};
    }
    // The header, then each tensor's bytes straight from the tensor: no serialized copy.
    const std::string header = safetensors_header(mine);
    std::vector<Piece> pieces{{header.data(), header.size()}};
    XXH3_state_t* hash = XXH3_createState();
    XXH3_64bits_reset(hash);
    XXH3_64bits_update(hash, header.data(), header.size());
    uint64_t bytes = header.size();
    for (const auto& [name, t] : mine) {
      const size_t n = t.numel() * t.element_size();
      pieces.emplace_back(t.data_ptr(), n);
      XXH3_64bits_update(hash, t.data_ptr(), n);
      bytes += n;
    }
    const std::string checksum = hex64(XXH3_64bits_digest(hash));
    XXH3_freeState(hash);
    const std::string file = shard_file_name(rank, world);
    if (fault_requested("enospc", rank, step))  // a full disk, as write(2) reports it
      throw CheckpointError("cannot write " + (tmp_dir / file).string() + ": " + std::strerror(ENOSPC) +
                            " (GANTRY_CHECKPOINT_FAULT)");
    write_durable(tmp_dir / file, pieces);
    report = {{"file", file}, {"bytes", bytes}, {"xxh3", checksum}, {"tensors", tensors}};
    maybe_fault("after_shard", rank, step);
  } catch (const std::exception& e) {
    report = {{"error", e.what()}};
  }

  // 2. The ranks agree that every write succeeded; otherwise nothing is committed.
  const auto reports = comm_.all_gather(report.dump());
  std::vector<std::string> errors;
  for (const auto& r : reports) {
    const json j = json::parse(r);
    errors.push_back(j.contains("error") ? j["error"].get<std::string>() : "");
  }
  const std::string failed = join_rank_errors(errors);
  if (!failed.empty()) {
    std::error_code ignored;  // a filesystem that failed the write may fail this too: the error stays the ranks' one
    if (rank == 0) fs::remove_all(tmp_dir, ignored);
    throw CheckpointError("checkpoint " + final_dir.string() + " not saved: " + failed);
  }

  // 3. Rank 0 writes the manifest, renames step-N.tmp to step-N, then points `latest` at it.
  std::string error;
  if (rank == 0) {
    bool renamed = false;
    std::string set_aside;  // where an earlier step-N went
    try {
      json manifest = meta;
      manifest["format"] = kFormat;
      manifest["step"] = step;
      manifest["world_size"] = world;
      manifest["digest"] = digest(state);
      manifest["shards"] = json::array();
      manifest["tensors"] = json::object();
      for (const auto& r : reports) {
        const json j = json::parse(r);
        manifest["shards"].push_back({{"file", j["file"]}, {"bytes", j["bytes"]}, {"xxh3", j["xxh3"]}});
        for (const auto& [name, t] : j["tensors"].items()) manifest["tensors"][name] = t;
      }
      maybe_fault("before_manifest", rank, step);
      write_durable(tmp_dir / "manifest.json", manifest.dump(1) + "\n");
      fsync_dir(tmp_dir);
      // A step-N already there is from a run that went back past it, or one that failed to
      // verify: it is moved aside, never deleted, and durably so before the new one takes its
      // name (a crash in between leaves it under its new name and the new one uncommitted).
      if (fs::exists(final_dir)) {
        const fs::path aside = set_aside_name(final_dir);
        fs::rename(final_dir, aside);
        fsync_dir(root);
        set_aside = aside.string();
      }
      maybe_fault("before_rename", rank, step);
      fs::rename(tmp_dir, final_dir);
      renamed = true;
      unverified_.erase(final_dir.filename().string());  // the name now holds a good checkpoint
      fsync_dir(root);
      if (!set_aside.empty())
        warning_ = "an earlier " + final_dir.string() + " was there (from a run that went back past it, or one that " +
                   "did not verify): it is now " + set_aside + "; remove it when it is no longer needed";
      maybe_fault("before_latest", rank, step);
      write_latest(root, step_dir_name(step));
    } catch (const std::exception& e) {
      error = e.what();
      // Renamed but `latest` not (durably) moved: auto resumes from what `latest` names.
      if (renamed)
        error += " (" + final_dir.filename().string() + " is complete on disk, but `latest` may still name the " +
                 "previous checkpoint, which --resume auto then resumes from)";
      // Not renamed: the earlier step-N goes back to its name, or the error says where it is.
      std::error_code back;
      if (!renamed && !set_aside.empty()) fs::rename(set_aside, final_dir, back);
      if (!set_aside.empty() && (renamed || back))
        error += " (the earlier " + final_dir.filename().string() + " is now " + set_aside + ")";
    }
    if (error.empty()) {  // committed: what retention cannot remove is a warning
      const std::string retention = apply_retention(step);
      if (!retention.empty()) warning_ += (warning_.empty() ? "" : "; ") + retention;
    }
  }
  if (const std::string e = agree(comm_, error); !e.empty())
    throw CheckpointError("checkpoint " + final_dir.string() + " not committed: " + e);
  maybe_fault("after_commit", rank, step);
  return final_dir.string();
}

std::string Checkpointer::apply_retention(int64_t committed_step) {
  std::string failed;
  int64_t kept = 0;
  std::vector<std::string> dirs;
  try {
    dirs = list_checkpoints(options_.dir);  // newest first
  } catch (const std::exception& e) {
    failed = options_.dir + " (cannot list it: " + e.what() + ")";
  }
  for (const auto& dir : dirs) {
    const int64_t step = step_of(dir);
    // Past the commit: a branch that a resume from an earlier checkpoint went back past. Ranked
    // by step, the new commits would sort below it and be deleted at once.
    if (step > committed_step) continue;
    // One that a resume found not to verify takes no place among the last K: it would push out a
    // good one. It stays while fewer than K good ones are newer.
    const int64_t keep = std::max<int64_t>(options_.keep_last, 1);
    if (unverified_.count(fs::path(dir).filename().string())) {
      if (kept < keep) continue;
    } else if (kept++ < keep) {
      continue;  // the commit itself first
    }
    if (options_.keep_every > 0 && step % options_.keep_every == 0) continue;
    std::error_code ec;
    if (fault_requested("retention", 0, committed_step)) ec = std::make_error_code(std::errc::permission_denied);
    else fs::remove_all(dir, ec);
    if (ec) failed += (failed.empty() ? "" : ", ") + dir + " (" + ec.message() + "; it may be partly removed)";
  }
  if (failed.empty()) return "";
  return "checkpoint " + (fs::path(options_.dir) / step_dir_name(committed_step)).string() +
         " committed, but retention could not remove " + failed;
}

Loaded Checkpointer::load_one(const std::string& dir) {
  const int rank = comm_.rank(), world = comm_.world_size();
  Manifest manifest;
  StateDict mine;
  std::string error;
  try {
    manifest = read_manifest(dir);
    std::vector<int> shards;  // this rank reads files rank, rank + world, ...
    for (int s = rank; s < static_cast<int>(manifest.shards.size()); s += world) shards.push_back(s);
    mine = read_shards(dir, manifest, shards);
  } catch (const std::exception& e) {
    error = e.what();
  }
  if (const std::string e = agree(comm_, error); !e.empty()) throw CheckpointError(e);

  // Each shard's tensors arrive from the rank that read it.
  Loaded out{dir, {}, manifest.json};
  const int shards = static_cast<int>(manifest.shards.size());
  for (int s = 0; s < shards; ++s) {
    std::vector<std::string> names;
    std::vector<torch::Tensor> tensors;
    for (const TensorEntry& t : manifest.tensors) {
      if (t.shard != s) continue;
      names.push_back(t.name);
      tensors.push_back(s % world == rank ? mine.at(t.name).contiguous()
                                          : torch::empty(t.shape, torch::TensorOptions().dtype(t.dtype)));
    }
    comm_.broadcast(tensors, s % world);
    for (size_t i = 0; i < names.size(); ++i) out.state[names[i]] = tensors[i];
  }
  return out;
}

// A crash between a commit's rename and its `latest` update (or a newer checkpoint that no longer
// verifies) leaves `latest` naming another checkpoint than the one auto resumed from. Until the
// next save moved it, `gantry sample`/`eval`/`inspect` on the run would read that one, and a run
// resumed at its last step saves nothing more: rank 0 points `latest` at what was loaded.
void Checkpointer::point_latest_at(const std::string& dir, const std::function<void(const std::string&)>& warn) {
  if (comm_.rank() != 0) return;
  const fs::path root = options_.dir;
  const std::string name = fs::path(dir).filename().string();
  std::string named;
  try {
    named = fs::path(read_latest(root.string())).filename().string();
  } catch (const CheckpointError&) {
    // missing or unreadable: rewritten below
  }
  if (named == name) return;
  try {
    write_latest(root, name);
    warn((root / "latest").string() + " named " + (named.empty() ? std::string("nothing readable") : named) +
         "; it now names " + name + ", the checkpoint resumed from");
  } catch (const std::exception& e) {
    warn("could not point " + (root / "latest").string() + " at " + name + ": " + e.what());
  }
}

std::optional<Loaded> Checkpointer::load(const std::string& spec,
                                         const std::function<void(const std::string&)>& warn) {
  if (spec != "auto") {
    fs::path dir = spec;
    if (fs::exists(dir / "latest") && !fs::exists(dir / "manifest.json"))  // a checkpoints folder
      dir = read_latest(dir.string());
    return load_one(dir.string());
  }
  // Rank 0 lists the candidates for every rank: ranks on a shared filesystem may see its
  // directories differently for a while (NFS attribute caches after a restart), and ranks that
  // tried different checkpoints would load different states or wait on each other forever.
  std::string listed;
  if (comm_.rank() == 0) {
    auto candidates = list_checkpoints(options_.dir);  // newest first
    try {  // `latest` first: the run's last commit
      const std::string named = read_latest(options_.dir);
      const auto it = std::find_if(candidates.begin(), candidates.end(), [&](const std::string& c) {
        return fs::path(c).filename() == fs::path(named).filename();
      });
      if (it != candidates.end()) std::rotate(candidates.begin(), it, it + 1);
    } catch (const CheckpointError&) {
      // missing or unreadable: newest first
    }
    for (const auto& c : candidates) listed += c + "\n";
  }
  std::vector<std::string> candidates;
  std::istringstream lines(comm_.all_gather(listed).front());
  for (std::string line; std::getline(lines, line);) candidates.push_back(line);
  std::string failures;  // each candidate's reason, for the error when none verifies
  for (const auto& dir : candidates) {
    try {
      Loaded loaded = load_one(dir);
      point_latest_at(dir, warn);
      std::string newer;  // from rank 0's listing, as every rank has it
      for (const auto& other : candidates)
        if (step_of(other) > step_of(dir)) newer += (newer.empty() ? "" : ", ") + fs::path(other).filename().string();
      if (!newer.empty())
        warn("resuming from " + fs::path(dir).filename().string() + ", the last commit; " + newer +
             " (from a run that went back past them) stay on disk, unused and never deleted by retention");
      return loaded;
    } catch (const CheckpointError& e) {
      unverified_.insert(fs::path(dir).filename().string());
      warn(std::string("skipping checkpoint that does not verify: ") + e.what());
      failures += std::string(failures.empty() ? "" : "; ") + e.what();
    }
  }
  // Starting from scratch here would overwrite the run's log and, through retention, delete the
  // checkpoints that did not load (another gantry's format, a file system that failed to read).
  if (!candidates.empty())
    throw CheckpointError("no checkpoint in " + options_.dir + " verifies (" + failures +
                          "); nothing was changed: restore one, or start afresh with another run.dir");
  return std::nullopt;
}

}  // namespace gantry::checkpoint
