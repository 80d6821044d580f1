// Benchmark: data loader throughput per rank (records/s) for IDX (MNIST, Fashion-MNIST) and
// CIFAR-10 files, with and without prefetch workers, to compare with what training consumes.
// Usage: loader_bench [MNIST_DIR] — the MNIST directory may hold only the t10k (test) files.
// CIFAR-10 files in the real format are generated into a temporary directory.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>

#include "datasets/stream.h"

namespace fs = std::filesystem;
using namespace gantry::datasets;

namespace {

double records_per_second(const DatasetSpec& spec, int workers, int prefetch, int64_t batch, int batches) {
  std::shared_ptr<const Dataset> data = open_dataset(spec);
  // Rank 0 of 2: this rank reads half of every global batch, as in a 2-rank job.
  DataStream stream(data, 2 * batch, 0, 2, 1, StreamOptions{workers, prefetch, spec.name == "cifar10"});
  stream.next();  // warm: page cache, first permutation
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < batches; ++i) stream.next();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batches * batch / s;
}

void report(const char* what, const DatasetSpec& spec) {
  for (auto [workers, prefetch] : {std::pair{1, 0}, std::pair{1, 2}, std::pair{2, 4}}) {
    const double r = records_per_second(spec, workers, prefetch, 32, 400);
    std::printf("%-40s workers %d prefetch %d: %9.0f records/s per rank\n", what, workers, prefetch, r);
  }
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mnist = argc > 1 ? argv[1] : "../shared/data/mnist";
  if (fs::exists(mnist)) report("mnist t10k (real, .gz cached)", {"mnist", mnist, "test"});
  if (fs::exists("/usr/share/datasets/fashion-mnist"))
    report("fashion-mnist train (Debian, .gz cached)", {"fashion-mnist", "/usr/share/datasets/fashion-mnist", "train"});
  const fs::path dir = fs::temp_directory_path() / "gantry-loader-bench-cifar";
  fs::create_directories(dir);
  std::mt19937 rng(1);
  for (int f = 1; f <= 5; ++f) {
    std::ofstream out(dir / ("data_batch_" + std::to_string(f) + ".bin"), std::ios::binary);
    std::vector<char> record(3073);
    for (int r = 0; r < 10000; ++r) {
      record[0] = static_cast<char>(r % 10);
      for (int k = 1; k < 3073; ++k) record[k] = static_cast<char>(rng());
      out.write(record.data(), record.size());
    }
  }
  report("cifar10 train (generated, 5 x 10000, hflip)", {"cifar10", dir.string(), "train"});
  fs::remove_all(dir);
  return 0;
}
