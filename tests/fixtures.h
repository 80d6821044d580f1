// Test fixtures written in the datasets' real formats: IDX image files (raw or gzip) and
// CIFAR-10 binary batches, with pixel values that are a known function of (record, position).
#pragma once

#include <zlib.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

namespace gantry::testing {

inline uint8_t idx_pixel(int64_t record, int64_t pos) { return static_cast<uint8_t>((record * 7 + pos * 3) % 256); }
inline uint8_t cifar_pixel(int64_t file, int64_t record, int64_t pos) {
  return static_cast<uint8_t>((file * 31 + record * 5 + pos) % 256);
}

inline std::filesystem::path fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("gantry-" + name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline std::vector<uint8_t> idx_bytes(uint32_t magic, uint32_t n, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> b;
  for (uint32_t v : {magic, n, rows, cols})
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<uint8_t>(v >> s));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < int64_t{rows} * cols; ++p) b.push_back(idx_pixel(i, p));
  return b;
}

inline void write_bytes(const std::filesystem::path& path, const std::vector<uint8_t>& bytes, bool gzip = false) {
  if (gzip) {
    gzFile gz = gzopen(path.c_str(), "wb");
    gzwrite(gz, bytes.data(), static_cast<unsigned>(bytes.size()));
    gzclose(gz);
  } else {
    std::ofstream(path, std::ios::binary).write(reinterpret_cast<const char*>(bytes.data()),
                                                static_cast<std::streamsize>(bytes.size()));
  }
}

inline std::vector<uint8_t> cifar_bytes(int64_t file, int64_t records) {
  std::vector<uint8_t> b;
  for (int64_t r = 0; r < records; ++r) {
    b.push_back(static_cast<uint8_t>((file + r) % 10));
    for (int64_t p = 0; p < 3072; ++p) b.push_back(cifar_pixel(file, r, p));
  }
  return b;
}

}  // namespace gantry::testing
