// Tests: the IDX, CIFAR-10 and Gaussian readers on fixtures in the real formats, and their
// errors for truncated, mislabelled and missing files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>

#include "datasets/dataset.h"
#include "fixtures.h"

namespace fs = std::filesystem;
using namespace gantry::datasets;
using namespace gantry::testing;

namespace {

std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const DataError& e) {
    return e.what();
  }
  return "";
}

float decoded(uint8_t byte) { return byte * (2.0f / 255.0f) - 1.0f; }

}  // namespace

TEST(IdxReader, RawAndGzipDecodeEveryPixel) {
  const auto dir = fresh_dir("idx");
  write_bytes(dir / "train-images-idx3-ubyte", idx_bytes(0x803, 10, 4, 3));
  write_bytes(dir / "t10k-images-idx3-ubyte.gz", idx_bytes(0x803, 6, 4, 3), /*gzip=*/true);
  for (const std::string split : {"train", "test"}) {
    const auto ds = open_dataset({"mnist", dir.string(), split});
    const int64_t n = split == "train" ? 10 : 6;
    ASSERT_EQ(ds->size(), n);
    EXPECT_EQ(ds->shape().channels, 1);
    EXPECT_EQ(ds->shape().height, 4);
    EXPECT_EQ(ds->shape().width, 3);
    const std::vector<int64_t> idx{n - 1, 0, 2};
    std::vector<float> out(idx.size() * 12);
    ds->read(idx.data(), static_cast<int64_t>(idx.size()), out.data());
    for (size_t i = 0; i < idx.size(); ++i)
      for (int64_t p = 0; p < 12; ++p) ASSERT_EQ(out[i * 12 + p], decoded(idx_pixel(idx[i], p))) << split;
  }
  // Byte 0 -> -1 and byte 255 -> +1 exactly.
  EXPECT_EQ(decoded(0), -1.0f);
  EXPECT_EQ(decoded(255), 1.0f);
}

TEST(IdxReader, TruncatedFileNamesFileAndSizes) {
  const auto dir = fresh_dir("idx-trunc");
  auto bytes = idx_bytes(0x803, 10, 4, 3);
  bytes.resize(bytes.size() - 5);
  write_bytes(dir / "train-images-idx3-ubyte", bytes);
  const std::string e = error_of([&] { open_dataset({"mnist", dir.string(), "train"}); });
  EXPECT_NE(e.find((dir / "train-images-idx3-ubyte").string()), std::string::npos) << e;
  EXPECT_NE(e.find("truncated: header says 10 images of 4x3 (136 bytes) but it has 131 bytes"), std::string::npos) << e;

  bytes.resize(9);  // shorter than the header
  write_bytes(dir / "train-images-idx3-ubyte", bytes);
  EXPECT_NE(error_of([&] { open_dataset({"mnist", dir.string(), "train"}); }).find("shorter than the 16-byte IDX header"),
            std::string::npos);
}

TEST(IdxReader, TruncatedGzipNamesFile) {
  const auto dir = fresh_dir("idx-gz");
  const auto file = dir / "train-images-idx3-ubyte.gz";
  write_bytes(file, idx_bytes(0x803, 200, 28, 28), /*gzip=*/true);
  const auto full = fs::file_size(file);
  fs::resize_file(file, full / 2);
  const std::string e = error_of([&] { open_idx_images(file.string(), "mnist"); });
  EXPECT_NE(e.find(file.string()), std::string::npos) << e;
  EXPECT_TRUE(e.find("gzip") != std::string::npos || e.find("truncated") != std::string::npos) << e;
}

TEST(IdxReader, WrongMagicNamesFile) {
  const auto dir = fresh_dir("idx-magic");
  write_bytes(dir / "train-images-idx3-ubyte", idx_bytes(0x801, 10, 4, 3));  // a labels file's magic
  const std::string e = error_of([&] { open_dataset({"fashion-mnist", dir.string(), "train"}); });
  EXPECT_NE(e.find((dir / "train-images-idx3-ubyte").string()), std::string::npos) << e;
  EXPECT_NE(e.find("bad magic number 0x00000801, expected 0x00000803"), std::string::npos) << e;
}

TEST(IdxReader, TrailingBytesAreAnError) {
  const auto dir = fresh_dir("idx-trail");
  auto bytes = idx_bytes(0x803, 3, 2, 2);
  bytes.push_back(0);
  write_bytes(dir / "x.idx", bytes);
  EXPECT_NE(error_of([&] { open_idx_images((dir / "x.idx").string(), "mnist"); }).find("trailing bytes"),
            std::string::npos);
}

TEST(IdxReader, MissingDirectoryNamesWhatWasLookedFor) {
  const std::string e = error_of([] { open_dataset({"mnist", "/nonexistent/mnist", "train"}); });
  EXPECT_NE(e.find("train-images-idx3-ubyte"), std::string::npos) << e;
  EXPECT_NE(e.find("/nonexistent/mnist"), std::string::npos) << e;
  EXPECT_NE(e.find("data.path"), std::string::npos) << e;
}

TEST(Cifar10Reader, FiveTrainingBatchesInOrderChannelPlanar) {
  const auto dir = fresh_dir("cifar");
  for (int f = 1; f <= 5; ++f) write_bytes(dir / ("data_batch_" + std::to_string(f) + ".bin"), cifar_bytes(f, 3));
  write_bytes(dir / "test_batch.bin", cifar_bytes(9, 2));
  const auto train = open_dataset({"cifar10", dir.string(), "train"});
  ASSERT_EQ(train->size(), 15);
  EXPECT_EQ(train->shape().channels, 3);
  EXPECT_EQ(train->shape().height, 32);
  const std::vector<int64_t> idx{7};  // file 3, record 1
  std::vector<float> out(3072);
  train->read(idx.data(), 1, out.data());
  for (int64_t p = 0; p < 3072; ++p) ASSERT_EQ(out[p], decoded(cifar_pixel(3, 1, p)));
  // Channel-planar: out[c*1024 + y*32 + x] is channel c of pixel (y, x).
  EXPECT_EQ(out[1024 + 5], decoded(cifar_pixel(3, 1, 1024 + 5)));
  const auto test = open_dataset({"cifar10", dir.string(), "test"});
  EXPECT_EQ(test->size(), 2);
}

TEST(Cifar10Reader, TruncatedAndMislabelledFilesNameTheFile) {
  const auto dir = fresh_dir("cifar-bad");
  auto bytes = cifar_bytes(0, 3);
  bytes.resize(bytes.size() - 100);
  write_bytes(dir / "test_batch.bin", bytes);
  std::string e = error_of([&] { open_dataset({"cifar10", dir.string(), "test"}); });
  EXPECT_NE(e.find((dir / "test_batch.bin").string()), std::string::npos) << e;
  EXPECT_NE(e.find("not a whole number of 3073-byte CIFAR-10 records"), std::string::npos) << e;

  // Labels are checked as records are read (opening does not read the whole file).
  bytes = cifar_bytes(0, 3);
  bytes[3073] = 42;  // record 1's label
  write_bytes(dir / "test_batch.bin", bytes);
  const auto ds = open_dataset({"cifar10", dir.string(), "test"});
  std::vector<float> out(3072);
  const int64_t record = 1;
  e = error_of([&] { ds->read(&record, 1, out.data()); });
  EXPECT_NE(e.find((dir / "test_batch.bin").string() + ": record 1 has label 42"), std::string::npos) << e;
  bytes[0] = 200;  // record 0's label is checked when the file is opened
  write_bytes(dir / "test_batch.bin", bytes);
  EXPECT_NE(error_of([&] { open_dataset({"cifar10", dir.string(), "test"}); }).find("record 0 has label 200"),
            std::string::npos);

  e = error_of([&] { open_dataset({"cifar10", dir.string(), "train"}); });
  EXPECT_NE(e.find("data_batch_1.bin"), std::string::npos) << e;
}

TEST(Gaussian1d, DeterministicPerIndexWithTheConfiguredMoments) {
  DatasetSpec spec{"gaussian1d", "", "train", 4.0, 1.25, 1 << 20, 3};
  const auto a = open_dataset(spec);
  const auto b = open_dataset(spec);
  constexpr int64_t n = 200000;
  std::vector<int64_t> idx(n);
  for (int64_t i = 0; i < n; ++i) idx[i] = i;
  std::vector<float> xa(n), xb(n);
  a->read(idx.data(), n, xa.data());
  b->read(idx.data(), n, xb.data());
  EXPECT_EQ(xa, xb);
  double sum = 0, sq = 0;
  for (float v : xa) sum += v, sq += double{v} * v;
  const double mean = sum / n, std = std::sqrt(sq / n - mean * mean);
  // Standard errors: 1.25/sqrt(n) = 0.0028 for the mean, about 0.002 for the std; 5 sigma.
  EXPECT_NEAR(mean, 4.0, 0.014);
  EXPECT_NEAR(std, 1.25, 0.01);
  // A record does not depend on which other records are read with it.
  const int64_t one = 12345;
  float x;
  a->read(&one, 1, &x);
  EXPECT_EQ(x, xa[one]);
}

TEST(IdxReader, GzipIsInflatedOnceIntoTheCacheAtomically) {
  const auto dir = fresh_dir("idx-cache");
  const auto cache = dir / "cache";
  write_bytes(dir / "train-images-idx3-ubyte.gz", idx_bytes(0x803, 10, 4, 3), /*gzip=*/true);
  DatasetSpec spec{"mnist", dir.string(), "train"};
  spec.cache_dir = cache.string();
  const auto a = open_dataset(spec);
  std::vector<fs::path> files;
  for (const auto& e : fs::recursive_directory_iterator(cache))
    if (e.is_regular_file()) files.push_back(e.path());
  ASSERT_EQ(files.size(), 1u);  // the inflated file, and no temporary left behind
  EXPECT_EQ(files[0].filename(), "train-images-idx3-ubyte");
  EXPECT_EQ(fs::file_size(files[0]), 16u + 10 * 12);
  const auto written = fs::last_write_time(files[0]);
  const auto b = open_dataset(spec);  // reuses the cache
  EXPECT_EQ(fs::last_write_time(files[0]), written);
  std::vector<float> out(12);
  const int64_t idx = 9;
  b->read(&idx, 1, out.data());
  EXPECT_EQ(out[5], decoded(idx_pixel(9, 5)));
}

TEST(IdxReader, ATruncatedGzipLeavesNoCache) {
  const auto dir = fresh_dir("idx-cache-bad");
  const auto gz = dir / "train-images-idx3-ubyte.gz";
  write_bytes(gz, idx_bytes(0x803, 300, 28, 28), /*gzip=*/true);
  fs::resize_file(gz, fs::file_size(gz) / 2);
  DatasetSpec spec{"mnist", dir.string(), "train"};
  spec.cache_dir = (dir / "cache").string();
  EXPECT_NE(error_of([&] { open_dataset(spec); }).find(gz.string()), std::string::npos);
  for (const auto& e : fs::recursive_directory_iterator(dir / "cache"))
    EXPECT_FALSE(e.is_regular_file()) << e.path();
}

TEST(IdxReader, AFileTruncatedWhileTrainingIsAClearError) {
  const auto dir = fresh_dir("idx-shrink");
  const auto file = dir / "train-images-idx3-ubyte";
  write_bytes(file, idx_bytes(0x803, 10, 4, 3));
  const auto ds = open_dataset({"mnist", dir.string(), "train"});
  fs::resize_file(file, 16 + 5 * 12);  // records 5..9 are gone
  std::vector<float> out(12);
  const int64_t ok = 2, gone = 8;
  ds->read(&ok, 1, out.data());
  const std::string e = error_of([&] { ds->read(&gone, 1, out.data()); });
  EXPECT_NE(e.find(file.string()), std::string::npos) << e;
  EXPECT_NE(e.find("truncated while training"), std::string::npos) << e;
}
