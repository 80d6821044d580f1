// Tests (unit): the checkpoint format read as untrusted input. A safetensors shard round-trips
// bit-exactly; damaged headers, offsets and shapes, and manifests with missing or mistyped fields
// or a shard outside the directory, are one CheckpointError naming the file and the field.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trainer/checkpoint_format.h"

namespace gantry::checkpoint {
namespace {

using nlohmann::json;

std::string shard_bytes(const std::vector<std::pair<std::string, torch::Tensor>>& tensors) {
  std::string out = safetensors_header(tensors);
  for (const auto& [name, t] : tensors) out.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
  return out;
}

// Rebuilds a shard with a hand-written header (the bytes after it unchanged).
std::string with_header(const json& header, const std::string& body) {
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text + body;
}

void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    FAIL() << "expected a CheckpointError containing: " << needle;
  } catch (const CheckpointError& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Safetensors, RoundTripsEveryDtypeBitExactly) {
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"a/weight", torch::randn({3, 4})},
      {"b/mean", torch::randn({5}, torch::kFloat64)},
      {"c/count", torch::tensor({7, -2}, torch::kInt64)},
      {"d/half", torch::randn({2, 2}).to(torch::kBFloat16)},
      {"e/empty", torch::empty({0, 3})},
      {"f/scalar", torch::tensor(1.5)},
  };
  const std::string bytes = shard_bytes(tensors);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(static_cast<unsigned char>(bytes[i])) << (8 * i);
  EXPECT_EQ(n % 8, 0u) << "the header is padded so that the data starts 8-byte aligned";
  EXPECT_EQ(bytes.size(), 8 + n + 4 * 12 + 8 * 5 + 8 * 2 + 2 * 4 + 0 + 4);
  const auto parsed = parse_safetensors(bytes, "s.safetensors");
  ASSERT_EQ(parsed.size(), tensors.size());
  for (const auto& [name, t] : tensors) {
    const torch::Tensor& p = parsed.at(name);
    EXPECT_EQ(p.scalar_type(), t.scalar_type()) << name;
    EXPECT_EQ(p.sizes(), t.sizes()) << name;
    EXPECT_EQ(tensor_hash(p), tensor_hash(t)) << name;
  }
}

TEST(Safetensors, DamageIsOneErrorNamingTheFileAndField) {
  const std::string good = shard_bytes({{"w", torch::ones({4})}});
  const std::string body = good.substr(good.size() - 16);
  expect_error([&] { parse_safetensors(good.substr(0, 5), "x.st"); }, "x.st: header: the file is 5 bytes");
  expect_error([&] { parse_safetensors(good.substr(0, good.size() - 20), "x.st"); }, "runs past the end of the file");
  expect_error([&] { parse_safetensors(with_header(json::array(), body), "x.st"); }, "x.st: header: not a JSON object");
  expect_error([&] { parse_safetensors(std::string(8, '\0') + body, "x.st"); }, "x.st: header: not valid JSON");
  const json entry = {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", {0, 16}}};
  auto changed = [&](const char* key, json value) {
    json e = entry;
    if (value.is_null()) e.erase(key);
    else e[key] = value;
    return with_header({{"w", e}}, body);
  };
  expect_error([&] { parse_safetensors(changed("dtype", "F8"), "x.st"); }, "'w'.dtype: unknown dtype 'F8'");
  expect_error([&] { parse_safetensors(changed("dtype", nullptr), "x.st"); }, "'w'.dtype: missing");
  expect_error([&] { parse_safetensors(changed("shape", {5}), "x.st"); }, "does not hold 20 bytes");
  expect_error([&] { parse_safetensors(changed("shape", {-4}), "x.st"); }, "'w'.shape[0]: not a non-negative integer");
  expect_error([&] { parse_safetensors(changed("shape", {1ll << 40, 1ll << 40}), "x.st"); }, "size overflows");
  expect_error([&] { parse_safetensors(changed("data_offsets", {8, 24}), "x.st"); }, "data_offsets[1]: 24 is out of range");
  expect_error([&] { parse_safetensors(changed("data_offsets", {16, 0}), "x.st"); }, "does not hold 16 bytes");
  expect_error([&] { parse_safetensors(changed("data_offsets", "0-16"), "x.st"); }, "not a [begin, end] pair");
  // The tensors must tile the data: one region listed twice (allocated twice), a gap, bytes left over.
  const std::string two = shard_bytes({{"a", torch::ones({4})}, {"b", torch::ones({4})}});
  const std::string body2 = two.substr(two.size() - 32);
  auto pair = [&](json a_offsets, json b_offsets, const std::string& data) {
    return with_header({{"a", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", a_offsets}}},
                        {"b", {{"dtype", "F32"}, {"shape", {4}}, {"data_offsets", b_offsets}}}},
                       data);
  };
  EXPECT_EQ(parse_safetensors(pair({0, 16}, {16, 32}, body2), "x.st").size(), 2u);
  expect_error([&] { parse_safetensors(pair({0, 16}, {0, 16}, body2), "x.st"); },
               "'b'.data_offsets: starts at byte 0 where the tensors before it end at 16 (overlapping data)");
  expect_error([&] { parse_safetensors(pair({0, 16}, {0, 16}, body2.substr(16)), "x.st"); }, "overlapping data");
  expect_error([&] { parse_safetensors(pair({16, 32}, {16, 32}, body2), "x.st"); }, "(a gap)");
  expect_error([&] { parse_safetensors(changed("data_offsets", {0, 16}).append(4, '\0'), "x.st"); },
               "x.st: data: 4 bytes after the last tensor's");
}

json good_manifest() {
  return {{"format", kFormat},
          {"step", 20},
          {"world_size", 2},
          {"digest", "0123456789abcdef"},
          {"shards", {{{"file", "shard-00000-of-00001.safetensors"}, {"bytes", 64}, {"xxh3", "00"}}}},
          {"tensors", {{"w", {{"shard", 0}, {"dtype", "F32"}, {"shape", {4}}, {"xxh3", "00"}}}}}};
}

TEST(Manifest, ParsesTypedEntries) {
  const Manifest m = parse_manifest(good_manifest().dump(), "m.json");
  EXPECT_EQ(m.step, 20);
  EXPECT_EQ(m.world_size, 2);
  ASSERT_EQ(m.shards.size(), 1u);
  EXPECT_EQ(m.shards[0].bytes, 64u);
  ASSERT_EQ(m.tensors.size(), 1u);
  EXPECT_EQ(m.tensors[0].name, "w");
  EXPECT_EQ(m.tensors[0].dtype, torch::kFloat32);
  EXPECT_EQ(m.tensors[0].shape, std::vector<int64_t>{4});
}

TEST(Manifest, EveryBadFieldIsNamed) {
  auto with = [](const std::function<void(json&)>& edit) {
    json m = good_manifest();
    edit(m);
    return m.dump();
  };
  expect_error([&] { parse_manifest("{", "m.json"); }, "m.json: not valid JSON");
  expect_error([&] { parse_manifest(with([](json& m) { m["format"] = "gantry-checkpoint/1"; }), "m.json"); },
               "it is gantry-checkpoint/1, written by another gantry version");
  expect_error([&] { parse_manifest(with([](json& m) { m.erase("step"); }), "m.json"); }, "m.json: step: missing");
  expect_error([&] { parse_manifest(with([](json& m) { m["step"] = "20"; }), "m.json"); },
               "step: not a non-negative integer");
  expect_error([&] { parse_manifest(with([](json& m) { m["shards"] = 3; }), "m.json"); }, "shards: not an array");
  expect_error([&] { parse_manifest(with([](json& m) { m["shards"][0]["file"] = "../../etc/passwd"; }), "m.json"); },
               "shards[0].file: '../../etc/passwd' is not a file name inside the checkpoint directory");
  expect_error([&] { parse_manifest(with([](json& m) { m["shards"][0].erase("xxh3"); }), "m.json"); },
               "shards[0].xxh3: missing");
  expect_error([&] { parse_manifest(with([](json& m) { m["tensors"]["w"]["shard"] = 1; }), "m.json"); },
               "tensors.'w'.shard: 1 is out of range (at most 0)");
  expect_error([&] { parse_manifest(with([](json& m) { m["tensors"]["w"]["shape"] = {1000}; }), "m.json"); },
               "tensors.'w'.shape: the tensor is larger than its shard file");
  expect_error([&] { parse_manifest(with([](json& m) { m["config_digest"] = 5; }), "m.json"); },
               "config_digest: not a string");
}

TEST(Manifest, ShardsMustHoldExactlyTheListedTensors) {
  const torch::Tensor w = torch::arange(4, torch::kFloat32);
  json mj = good_manifest();
  mj["tensors"]["w"]["xxh3"] = hex64(tensor_hash(w));
  const Manifest m = parse_manifest(mj.dump(), "m.json");
  const auto ok = match_shard(m, 0, {{"w", w.clone()}}, "s");
  EXPECT_TRUE(torch::equal(ok.at("w"), w));
  expect_error([&] { match_shard(m, 0, {}, "s"); }, "s: tensor 'w' is missing");
  expect_error([&] { match_shard(m, 0, {{"w", w + 1}}, "s"); }, "'w': checksum mismatch");
  expect_error([&] { match_shard(m, 0, {{"w", w.to(torch::kFloat64)}}, "s"); }, "another dtype or shape");
  expect_error([&] { match_shard(m, 0, {{"w", w}, {"extra", w}}, "s"); }, "'extra' is not in the manifest");
}

}  // namespace
}  // namespace gantry::checkpoint
