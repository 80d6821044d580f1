// Implements: a checkpoint's on-disk format, read as untrusted input. Shards are safetensors
// files (an 8-byte little-endian header length, a JSON header of dtype/shape/data_offsets, then
// raw bytes), so loading never unpickles; the manifest is JSON, parsed into typed entries with
// every field checked. Errors are CheckpointErrors naming the file and the field.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace gantry::checkpoint {

// A checkpoint that cannot be written or read: names the directory, file or tensor.
class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline constexpr const char* kFormat = "gantry-checkpoint/2";

struct ShardEntry {
  std::string file;  // a plain file name inside the checkpoint directory
  uint64_t bytes = 0;
  std::string xxh3;
};

struct TensorEntry {
  std::string name;  // the logical name ("generator/fc1.weight")
  int shard = 0;     // index into Manifest::shards
  torch::ScalarType dtype = torch::kFloat32;
  std::vector<int64_t> shape;
  std::string xxh3;
};

struct Manifest {
  nlohmann::json json;  // the whole manifest, meta included (every field below checked)
  int64_t step = 0;
  int world_size = 1;
  std::string digest;
  std::vector<ShardEntry> shards;
  std::vector<TensorEntry> tensors;  // sorted by name
};

std::string hex64(uint64_t v);
uint64_t tensor_hash(const torch::Tensor& t);  // xxh3 of the contiguous bytes
std::string shard_file_name(int shard, int shards);
const char* dtype_tag(torch::ScalarType type);  // safetensors' name: "F32", "BF16", ...

// The safetensors header (length prefix, JSON, space padding to 8 bytes) for `tensors`, whose
// bytes follow it back to back in this order.
std::string safetensors_header(const std::vector<std::pair<std::string, torch::Tensor>>& tensors);
// Every tensor of a safetensors file, copied out of `data`. Offsets, sizes and shapes are checked
// against the file's length before anything is allocated.
std::map<std::string, torch::Tensor> parse_safetensors(std::string_view data, const std::string& file);

// Parses and validates manifest.json's text.
Manifest parse_manifest(std::string_view text, const std::string& file);
// Checks that shard `shard`'s tensors (as parsed from `file`) are those the manifest lists, with
// their dtypes, shapes and checksums; returns them under their logical names.
std::map<std::string, torch::Tensor> match_shard(const Manifest& manifest, int shard,
                                                 std::map<std::string, torch::Tensor> parsed,
                                                 const std::string& file);

}  // namespace gantry::checkpoint
