// Implements: the fuzzers' seed corpora, written by the real writers: configs/*.yaml, IDX and
// CIFAR-10 files in their formats, PNG and JPEG files from stb_image_write, and a manifest plus
// safetensors shard from the checkpoint format's own functions.
// Usage: fuzz_seeds CONFIG_DIR OUT_DIR (makes OUT_DIR/<target>/...).
#include <stb_image_write.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trainer/checkpoint_format.h"

namespace fs = std::filesystem;

namespace {

void put(const fs::path& file, const std::string& bytes) {
  fs::create_directories(file.parent_path());
  std::ofstream(file, std::ios::binary) << bytes;
}

std::string be32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8), static_cast<char>(v)};
}

std::string gzip(const std::string& raw) {
  z_stream z{};
  deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY);
  std::string out(compressBound(raw.size()) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(raw.data()));
  z.avail_in = raw.size();
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = out.size();
  deflate(&z, Z_FINISH);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

void append(void* context, void* data, int size) {
  static_cast<std::string*>(context)->append(static_cast<const char*>(data), size);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::cerr << "usage: fuzz_seeds CONFIG_DIR OUT_DIR\n";
    return 2;
  }
  const fs::path out = argv[2];

  int n = 0;
  for (const auto& entry : fs::directory_iterator(argv[1])) {
    std::ifstream in(entry.path());
    std::string text((std::istreambuf_iterator<char>(in)), {});
    put(out / "fuzz_config" / entry.path().filename(), text);
    put(out / "fuzz_config" / ("set-" + entry.path().filename().string()),
        text + "--set train.batch_size=96\n--set model.arch=mlp\n--set comm.bucket_mb=1\n");
    ++n;
  }

  // IDX: three 4x5 images and their labels; raw and gzip.
  std::string images = std::string("\0\0\x08\x03", 4) + be32(3) + be32(4) + be32(5);
  for (int i = 0; i < 60; ++i) images += static_cast<char>(i * 4);
  const std::string labels = std::string("\0\0\x08\x01", 4) + be32(2) + std::string("\x07\x03", 2);
  put(out / "fuzz_idx" / "images", std::string(1, '\0') + images);
  put(out / "fuzz_idx" / "images-gz", std::string(1, '\0') + gzip(images));
  put(out / "fuzz_idx" / "labels", std::string(1, '\1') + labels);

  // CIFAR-10: two records of a label byte and 3x32x32 pixels.
  std::string cifar;
  for (int r = 0; r < 2; ++r) {
    cifar += static_cast<char>(r + 3);
    for (int i = 0; i < 3072; ++i) cifar += static_cast<char>((i * 7 + r) & 0xff);
  }
  put(out / "fuzz_cifar" / "two-records", cifar);

  // Images: 6x4 PNG and JPEG, gray and RGB (the first byte picks channels and resolution).
  for (int comp : {1, 3}) {
    std::vector<uint8_t> px(6 * 4 * comp);
    for (size_t i = 0; i < px.size(); ++i) px[i] = static_cast<uint8_t>(i * 11);
    std::string png, jpg;
    stbi_write_png_to_func(append, &png, 6, 4, comp, px.data(), 6 * comp);
    stbi_write_jpg_to_func(append, &jpg, 6, 4, comp, px.data(), 90);
    put(out / "fuzz_image" / ("png-" + std::to_string(comp)), std::string(1, static_cast<char>(comp == 3 ? 9 : 8)) + png);
    put(out / "fuzz_image" / ("jpg-" + std::to_string(comp)), std::string(1, static_cast<char>(comp == 3 ? 3 : 2)) + jpg);
  }

  // Checkpoint: a manifest and the shard it describes, as Checkpointer::save writes them.
  using gantry::checkpoint::hex64;
  using gantry::checkpoint::tensor_hash;
  std::vector<std::pair<std::string, torch::Tensor>> tensors = {
      {"generator/fc.weight", torch::arange(6, torch::kFloat32).reshape({2, 3})},
      {"train/step", torch::tensor(int64_t{20})},
      {"discriminator/bn.running_mean", torch::ones({3}, torch::kFloat64)}};
  std::string shard = gantry::checkpoint::safetensors_header(tensors);
  nlohmann::json listed = nlohmann::json::object();
  for (const auto& [name, t] : tensors) {
    shard.append(static_cast<const char*>(t.data_ptr()), t.numel() * t.element_size());
    listed[name] = {{"shard", 0}, {"dtype", gantry::checkpoint::dtype_tag(t.scalar_type())},
                    {"shape", t.sizes().vec()}, {"xxh3", hex64(tensor_hash(t))}};
  }
  const nlohmann::json manifest = {
      {"format", gantry::checkpoint::kFormat}, {"step", 20}, {"world_size", 1}, {"digest", "0"},
      {"config_digest", "abc"},
      {"shards", {{{"file", gantry::checkpoint::shard_file_name(0, 1)}, {"bytes", shard.size()}, {"xxh3", "0"}}}},
      {"tensors", listed}};
  const std::string text = manifest.dump(1);
  const std::string length{static_cast<char>(text.size() & 0xff), static_cast<char>(text.size() >> 8)};
  put(out / "fuzz_checkpoint" / "manifest-and-shard", length + text + shard);
  std::cout << "fuzz_seeds: " << n << " configs and the other seeds in " << out << "\n";
  return 0;
}
