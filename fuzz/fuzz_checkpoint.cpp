// Fuzz target: the checkpoint reader: manifest.json and a safetensors shard. The input's first two
// bytes give the manifest's length; the manifest follows and the shard is the rest. Each part must
// parse or throw one CheckpointError, and a parsed pair is cross-checked as loading does.
#include <algorithm>
#include <optional>

#include "trainer/checkpoint_format.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 2) return 0;
  using namespace gantry::checkpoint;
  const size_t n = std::min<size_t>(data[0] | (data[1] << 8), size - 2);
  const std::string_view manifest_text(reinterpret_cast<const char*>(data) + 2, n);
  const std::string_view shard(reinterpret_cast<const char*>(data) + 2 + n, size - 2 - n);
  std::optional<Manifest> manifest;
  try {
    manifest = parse_manifest(manifest_text, "manifest.json");
  } catch (const CheckpointError&) {
  }
  try {
    auto tensors = parse_safetensors(shard, "shard-00000-of-00001.safetensors");
    if (manifest && !manifest->shards.empty()) (void)match_shard(*manifest, 0, std::move(tensors), "shard");
  } catch (const CheckpointError&) {
  }
  return 0;
}
