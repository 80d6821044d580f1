// Implements: what the libFuzzer targets share: a private scratch folder per process, and writing
// the fuzzer's bytes into the file name a reader expects. Readers that open files are fuzzed
// through real files (on the scratch folder), exactly as a user's data reaches them.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "datasets/dataset.h"

namespace gantry::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    const char* base = std::getenv("TMPDIR");
    auto d = std::filesystem::path(base ? base : "/tmp") / ("gantry-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

// A fresh empty folder `name` under the scratch folder.
inline std::filesystem::path fresh_dir(const std::string& name) {
  const auto d = scratch() / name;
  std::filesystem::remove_all(d);
  std::filesystem::create_directories(d);
  return d;
}

inline void write_file(const std::filesystem::path& path, const uint8_t* data, size_t size) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
}

// Decodes the first and the last record, as training would read them.
inline void read_first_and_last(const datasets::Dataset& d) {
  if (d.size() <= 0) return;
  const int64_t indices[2] = {0, d.size() - 1};
  std::vector<float> out(2 * static_cast<size_t>(d.shape().numel()));
  d.read(indices, 2, out.data());
}

// The labels of the test split of dataset `name` in `dir`.
inline void read_test_labels(const std::string& name, const std::filesystem::path& dir) {
  datasets::DatasetSpec spec;
  spec.name = name;
  spec.path = dir.string();
  spec.split = "test";
  (void)datasets::read_labels(spec);
}

}  // namespace gantry::fuzz
