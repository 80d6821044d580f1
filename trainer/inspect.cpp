// Implements: checkpoint inspection (see inspect.h). Reads and verifies every shard in this one
// process; a checkpoint that fails verification is an error naming the file and tensor.
#include "trainer/inspect.h"

#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>

#include "trainer/checkpoint.h"

namespace gantry {
namespace fs = std::filesystem;

namespace {

// "generator/param/net.0.weight" -> "generator/param"; "train/step" -> "train".
std::string group_of(const std::string& name) {
  const auto first = name.find('/');
  if (first == std::string::npos) return name;
  const std::string head = name.substr(0, first);
  if (head == "train" || head == "data" || head == "rng") return head;
  const auto second = name.find('/', first + 1);
  return second == std::string::npos ? name : name.substr(0, second);
}

}  // namespace

std::string resolve_checkpoint_dir(const std::string& path) {
  fs::path p = path;
  if (fs::exists(p / "manifest.json")) return p.string();
  if (fs::exists(p / "checkpoints" / "latest")) p /= "checkpoints";
  if (fs::exists(p / "latest")) return checkpoint::read_latest(p.string());
  return p.string();  // read_checkpoint names what is missing
}

void inspect_checkpoint(const std::string& path, std::ostream& out) {
  const auto ckpt = checkpoint::read_checkpoint(resolve_checkpoint_dir(path));
  const auto& m = ckpt.manifest;
  int64_t shard_bytes = 0;
  for (const auto& s : m["shards"]) shard_bytes += s["bytes"].get<int64_t>();
  out << "checkpoint: " << ckpt.dir << "\n"
      << "step: " << m.value("step", int64_t{0}) << "\n"
      << "saved by: " << m.value("world_size", 0) << " rank(s), gantry " << m.value("gantry_version", "?")
      << ", LibTorch " << m.value("torch_version", "?") << "\n"
      << "config digest: " << m.value("config_digest", "?") << "\n"
      << "shards: " << m["shards"].size() << " files, " << shard_bytes << " bytes, all checksums verified\n";
  std::map<std::string, std::pair<int64_t, int64_t>> groups;  // tensors, bytes
  for (const auto& [name, t] : ckpt.state) {
    auto& g = groups[group_of(name)];
    g.first += 1;
    g.second += t.numel() * t.element_size();
  }
  for (const auto& [group, g] : groups)
    out << "  " << std::left << std::setw(24) << group << g.first << " tensors, " << g.second << " bytes\n";
  const std::string digest = checkpoint::digest(ckpt.state);
  if (digest != m.value("digest", ""))
    throw checkpoint::CheckpointError(ckpt.dir + ": the state's digest " + digest + " differs from the manifest's");
  out << "digest: " << digest << "\n";
}

void compare_checkpoints(const std::string& a_path, const std::string& b_path, std::ostream& out) {
  const auto a = checkpoint::read_checkpoint(resolve_checkpoint_dir(a_path));
  const auto b = checkpoint::read_checkpoint(resolve_checkpoint_dir(b_path));
  std::map<std::string, double> max_diff;
  std::map<std::string, int> missing;
  for (const auto& [name, t] : a.state) {
    const auto it = b.state.find(name);
    if (it == b.state.end() || it->second.sizes() != t.sizes()) {
      ++missing[group_of(name)];
      continue;
    }
    const double d = (t.to(torch::kFloat64) - it->second.to(torch::kFloat64)).abs().max().item<double>();
    auto& m = max_diff[group_of(name)];
    m = std::max(m, d);
  }
  for (const auto& [name, t] : b.state)
    if (!a.state.count(name)) ++missing[group_of(name)];
  out << "a: " << a.dir << "\nb: " << b.dir << "\n";
  for (const auto& [group, d] : max_diff) out << "  " << std::left << std::setw(24) << group << "max |a - b| = " << d << "\n";
  for (const auto& [group, n] : missing) out << "  " << std::left << std::setw(24) << group << n << " tensor(s) in only one, or of another shape\n";
  out << "digest a: " << checkpoint::digest(a.state) << "\ndigest b: " << checkpoint::digest(b.state) << "\n";
}

}  // namespace gantry
