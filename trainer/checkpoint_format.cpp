// Implements: safetensors shards and the typed manifest (see checkpoint_format.h). Everything read
// here comes from disk and may be damaged or hostile: sizes are checked with overflow-safe
// arithmetic before any allocation, and JSON fields are type-checked one by one.
#include "trainer/checkpoint_format.h"

#include <xxhash.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <limits>
#include <tuple>

namespace gantry::checkpoint {
namespace {

using nlohmann::json;

// safetensors' dtype names, and the ones gantry writes.
constexpr std::pair<torch::ScalarType, const char*> kDtypes[] = {
    {torch::kFloat32, "F32"}, {torch::kFloat64, "F64"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
    {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
    {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"},
};

// Raises CheckpointError "<file>: <field>: <what>".
[[noreturn]] void fail(const std::string& file, const std::string& field, const std::string& what) {
  throw CheckpointError(file + ": " + field + ": " + what);
}

torch::ScalarType parse_dtype(const json& j, const std::string& file, const std::string& field) {
  if (!j.is_string()) fail(file, field, "not a string");
  const auto& tag = j.get_ref<const std::string&>();
  for (const auto& [t, name] : kDtypes)
    if (tag == name) return t;
  fail(file, field, "unknown dtype '" + tag.substr(0, 16) + "'");
}

uint64_t parse_uint(const json& j, const std::string& file, const std::string& field, uint64_t max) {
  if (!j.is_number_unsigned() && !(j.is_number_integer() && j.get<int64_t>() >= 0))
    fail(file, field, "not a non-negative integer");
  const uint64_t v = j.get<uint64_t>();
  if (v > max) fail(file, field, std::to_string(v) + " is out of range (at most " + std::to_string(max) + ")");
  return v;
}

const json& member(const json& object, const char* key, const std::string& file, const std::string& where) {
  const auto it = object.find(key);
  if (it == object.end()) fail(file, where + key, "missing");
  return *it;
}

// Dimensions as int64 and their product in bytes, refusing anything that overflows.
std::vector<int64_t> parse_shape(const json& j, torch::ScalarType dtype, const std::string& file,
                                 const std::string& field, uint64_t* nbytes) {
  if (!j.is_array()) fail(file, field, "not an array");
  if (j.size() > 16) fail(file, field, std::to_string(j.size()) + " dimensions (at most 16)");
  std::vector<int64_t> shape;
  uint64_t n = c10::elementSize(dtype);
  for (size_t i = 0; i < j.size(); ++i) {
    const uint64_t d = parse_uint(j[i], file, field + "[" + std::to_string(i) + "]",
                                  static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    if (__builtin_mul_overflow(n, d, &n)) fail(file, field, "the tensor's size overflows");
    shape.push_back(static_cast<int64_t>(d));
  }
  *nbytes = n;
  return shape;
}

std::string in_quotes(const std::string& name) { return "'" + name.substr(0, 200) + "'"; }

}  // namespace

std::string hex64(uint64_t v) {
  char s[17];
  std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(v));
  return s;
}

uint64_t tensor_hash(const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  return XXH3_64bits(c.data_ptr(), c.numel() * c.element_size());
}

const char* dtype_tag(torch::ScalarType type) {
  for (const auto& [t, tag] : kDtypes)
    if (t == type) return tag;
  throw CheckpointError(std::string("cannot save tensors of dtype ") + c10::toString(type));
}

std::string shard_file_name(int shard, int shards) {
  char s[64];
  std::snprintf(s, sizeof s, "shard-%05d-of-%05d.safetensors", shard, shards);
  return s;
}

std::string safetensors_header(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  json header = json::object();
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const uint64_t bytes = static_cast<uint64_t>(t.numel()) * t.element_size();
    header[name] = {{"dtype", dtype_tag(t.scalar_type())}, {"shape", t.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  if (tensors.empty()) header["__metadata__"] = json::object();
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t n = text.size();
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  return out + text;
}

std::map<std::string, torch::Tensor> parse_safetensors(std::string_view data, const std::string& file) {
  if (data.size() < 8) fail(file, "header", "the file is " + std::to_string(data.size()) + " bytes (truncated?)");
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(data[i])) << (8 * i);
  if (n > data.size() - 8)
    fail(file, "header", "its length " + std::to_string(n) + " runs past the end of the file (" +
                             std::to_string(data.size()) + " bytes; truncated?)");
  json header;
  try {
    header = json::parse(data.substr(8, n));
  } catch (const json::exception& e) {
    fail(file, "header", std::string("not valid JSON: ") + e.what());
  }
  if (!header.is_object()) fail(file, "header", "not a JSON object");
  const std::string_view body = data.substr(8 + n);
  struct Entry {
    std::string name;
    torch::ScalarType dtype;
    std::vector<int64_t> shape;
    uint64_t begin, end;
  };
  std::vector<Entry> entries;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = in_quotes(name);
    if (!entry.is_object()) fail(file, where, "not an object");
    const torch::ScalarType dtype = parse_dtype(member(entry, "dtype", file, where + "."), file, where + ".dtype");
    uint64_t nbytes = 0;
    const std::vector<int64_t> shape =
        parse_shape(member(entry, "shape", file, where + "."), dtype, file, where + ".shape", &nbytes);
    const json& offsets = member(entry, "data_offsets", file, where + ".");
    if (!offsets.is_array() || offsets.size() != 2) fail(file, where + ".data_offsets", "not a [begin, end] pair");
    const uint64_t begin = parse_uint(offsets[0], file, where + ".data_offsets[0]", body.size());
    const uint64_t end = parse_uint(offsets[1], file, where + ".data_offsets[1]", body.size());
    if (end < begin || end - begin != nbytes)
      fail(file, where + ".data_offsets", "[" + std::to_string(begin) + ", " + std::to_string(end) + "] does not hold " +
                                              std::to_string(nbytes) + " bytes of the tensor's shape and dtype");
    entries.push_back({name, dtype, shape, begin, end});
  }
  // The tensors tile the data exactly, as the safetensors format requires: no two share bytes
  // (a crafted header could otherwise list one region thousands of times and multiply what is
  // allocated), no gaps, nothing after the last. Checked before anything is allocated.
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) {
    return std::tie(a.begin, a.end) < std::tie(b.begin, b.end);
  });
  uint64_t covered = 0;
  for (const Entry& e : entries) {
    if (e.begin != covered)
      fail(file, in_quotes(e.name) + ".data_offsets",
           "starts at byte " + std::to_string(e.begin) + " where the tensors before it end at " +
               std::to_string(covered) + (e.begin < covered ? " (overlapping data)" : " (a gap)"));
    covered = e.end;
  }
  if (covered != body.size())
    fail(file, "data", std::to_string(body.size() - covered) + " bytes after the last tensor's (truncated header, or trailing bytes)");
  std::map<std::string, torch::Tensor> out;
  for (Entry& e : entries) {
    torch::Tensor t = torch::empty(e.shape, torch::TensorOptions().dtype(e.dtype));
    if (e.end > e.begin) std::memcpy(t.data_ptr(), body.data() + e.begin, e.end - e.begin);
    out.emplace(std::move(e.name), std::move(t));
  }
  return out;
}

Manifest parse_manifest(std::string_view text, const std::string& file) {
  Manifest m;
  try {
    m.json = json::parse(text);
  } catch (const json::exception& e) {
    throw CheckpointError(file + ": not valid JSON: " + e.what());
  }
  const json& j = m.json;
  if (!j.is_object()) throw CheckpointError(file + ": not a JSON object");
  const auto format = j.find("format");
  if (format == j.end() || !format->is_string() || format->get_ref<const std::string&>() != kFormat) {
    const std::string found = format != j.end() && format->is_string() ? format->get<std::string>().substr(0, 64) : "";
    throw CheckpointError(file + ": not a " + kFormat + " manifest" +
                          (found.rfind("gantry-checkpoint/", 0) == 0
                               ? " (it is " + found + ", written by another gantry version; its shards cannot be read)"
                               : ""));
  }
  m.step = static_cast<int64_t>(parse_uint(member(j, "step", file, ""), file, "step", uint64_t{1} << 62));
  m.world_size = static_cast<int>(parse_uint(member(j, "world_size", file, ""), file, "world_size", 1 << 20));
  if (m.world_size < 1) fail(file, "world_size", "must be at least 1");
  const json& digest = member(j, "digest", file, "");
  if (!digest.is_string()) fail(file, "digest", "not a string");
  m.digest = digest.get<std::string>();
  for (const char* key : {"config_digest", "gantry_version", "torch_version"})
    if (j.contains(key) && !j[key].is_string()) fail(file, key, "not a string");

  const json& shards = member(j, "shards", file, "");
  if (!shards.is_array()) fail(file, "shards", "not an array");
  if (shards.size() > (1u << 20)) fail(file, "shards", "more than 2^20 shards");
  for (size_t i = 0; i < shards.size(); ++i) {
    const std::string where = "shards[" + std::to_string(i) + "]";
    const json& s = shards[i];
    if (!s.is_object()) fail(file, where, "not an object");
    ShardEntry e;
    const json& name = member(s, "file", file, where + ".");
    if (!name.is_string()) fail(file, where + ".file", "not a string");
    e.file = name.get<std::string>();
    // A plain name inside the checkpoint directory: the manifest never points elsewhere.
    if (e.file.empty() || e.file == "." || e.file == ".." || e.file.find('/') != std::string::npos ||
        e.file.find('\0') != std::string::npos)
      fail(file, where + ".file", in_quotes(e.file) + " is not a file name inside the checkpoint directory");
    e.bytes = parse_uint(member(s, "bytes", file, where + "."), file, where + ".bytes",
                         static_cast<uint64_t>(std::numeric_limits<int64_t>::max()));
    const json& hash = member(s, "xxh3", file, where + ".");
    if (!hash.is_string()) fail(file, where + ".xxh3", "not a string");
    e.xxh3 = hash.get<std::string>();
    m.shards.push_back(std::move(e));
  }

  const json& tensors = member(j, "tensors", file, "");
  if (!tensors.is_object()) fail(file, "tensors", "not an object");
  for (const auto& [name, t] : tensors.items()) {
    const std::string where = "tensors." + in_quotes(name);
    if (!t.is_object()) fail(file, where, "not an object");
    TensorEntry e;
    e.name = name;
    e.shard = static_cast<int>(parse_uint(member(t, "shard", file, where + "."), file, where + ".shard",
                                          m.shards.empty() ? 0 : m.shards.size() - 1));
    if (m.shards.empty()) fail(file, where + ".shard", "the manifest lists no shards");
    e.dtype = parse_dtype(member(t, "dtype", file, where + "."), file, where + ".dtype");
    uint64_t nbytes = 0;
    e.shape = parse_shape(member(t, "shape", file, where + "."), e.dtype, file, where + ".shape", &nbytes);
    if (nbytes > m.shards[e.shard].bytes)
      fail(file, where + ".shape", "the tensor is larger than its shard file");
    const json& hash = member(t, "xxh3", file, where + ".");
    if (!hash.is_string()) fail(file, where + ".xxh3", "not a string");
    e.xxh3 = hash.get<std::string>();
    m.tensors.push_back(std::move(e));
  }
  return m;
}

std::map<std::string, torch::Tensor> match_shard(const Manifest& manifest, int shard,
                                                 std::map<std::string, torch::Tensor> parsed,
                                                 const std::string& file) {
  std::map<std::string, torch::Tensor> out;
  for (const TensorEntry& e : manifest.tensors) {
    if (e.shard != shard) continue;
    auto it = parsed.find(e.name);
    if (it == parsed.end()) throw CheckpointError(file + ": tensor " + in_quotes(e.name) + " is missing");
    const torch::Tensor& t = it->second;
    if (t.scalar_type() != e.dtype || t.sizes().vec() != e.shape)
      throw CheckpointError(file + ": tensor " + in_quotes(e.name) + " has another dtype or shape than the manifest says");
    if (hex64(tensor_hash(t)) != e.xxh3)
      throw CheckpointError(file + ": tensor " + in_quotes(e.name) + ": checksum mismatch (the file is corrupt)");
    out.emplace(e.name, std::move(it->second));
    parsed.erase(it);
  }
  if (!parsed.empty())
    throw CheckpointError(file + ": tensor " + in_quotes(parsed.begin()->first) + " is not in the manifest");
  return out;
}

}  // namespace gantry::checkpoint
