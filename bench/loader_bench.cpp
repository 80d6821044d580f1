// Benchmark: data loader throughput per rank (records/s) for IDX (MNIST, Fashion-MNIST) and
// CIFAR-10 files and an image folder, with and without prefetch workers, to compare with what
// training consumes. Usage: loader_bench [MNIST_DIR] — the MNIST directory may hold only the t10k
// (test) files. CIFAR-10 files in the real format and an image folder (JPEG and PNG, written with
// stb) are generated into temporary directories.
#include <stb_image_write.h>

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
  DataStream stream(data, 2 * batch, 0, 2, 1, StreamOptions{workers, prefetch, spec.name == "cifar10" || spec.name == "images"});
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

  // Image folders: 2000 photos-like files (smooth gradients plus noise) at 128x128, JPEG
  // (quality 90) and PNG, decoded, resized to 32x32 RGB and flipped by the workers.
  for (const char* format : {"jpg", "png"}) {
    const fs::path images = fs::temp_directory_path() / (std::string("gantry-loader-bench-") + format);
    fs::remove_all(images);
    fs::create_directories(images);
    std::vector<uint8_t> px(128 * 128 * 3);
    for (int i = 0; i < 2000; ++i) {
      for (int y = 0; y < 128; ++y)
        for (int x = 0; x < 128; ++x)
          for (int c = 0; c < 3; ++c)
            px[(y * 128 + x) * 3 + c] = static_cast<uint8_t>((x * (c + 1) + y * (i % 7) + i + rng() % 24) & 0xff);
      char name[32];
      std::snprintf(name, sizeof name, "%05d.%s", i, format);
      const std::string path = (images / name).string();
      if (std::string(format) == "jpg") stbi_write_jpg(path.c_str(), 128, 128, 3, px.data(), 90);
      else stbi_write_png(path.c_str(), 128, 128, 3, px.data(), 128 * 3);
    }
    DatasetSpec spec{"images", images.string(), "train"};
    spec.resolution = 32;
    spec.channels = 3;
    report((std::string("images (generated 2000 ") + format + " 128x128 -> 32x32x3, hflip)").c_str(), spec);
    fs::remove_all(images);
  }
  return 0;
}
