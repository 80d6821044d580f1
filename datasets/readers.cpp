// Implements: the dataset readers. IDX image files (MNIST, Fashion-MNIST; raw or gzip) and
// CIFAR-10 binary batches are checked (magic, dimensions, exact size) when opened; records are
// then decoded on demand. The 1-D Gaussian computes record i from (seed, i).
#include "datasets/dataset.h"

#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "datasets/random.h"

namespace gantry::datasets {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Reads a whole file, inflating it when it is gzip. Throws DataError naming the file.
std::vector<uint8_t> read_file(const std::string& file) {
  std::vector<uint8_t> bytes;
  if (!fs::exists(file)) throw DataError("data file " + file + ": not found");
  if (ends_with(file, ".gz")) {
    gzFile gz = gzopen(file.c_str(), "rb");
    if (!gz) throw DataError("data file " + file + ": cannot open: " + std::strerror(errno));
    gzbuffer(gz, 1 << 20);
    std::vector<uint8_t> chunk(1 << 20);
    while (true) {
      const int n = gzread(gz, chunk.data(), static_cast<unsigned>(chunk.size()));
      if (n < 0) {
        int code = 0;
        std::string msg = gzerror(gz, &code);
        gzclose(gz);
        throw DataError("data file " + file + ": corrupt gzip stream: " + msg);
      }
      if (n == 0) break;
      bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
    }
    // gzread reports a stream cut short only through gzerror once it hits the end.
    int code = 0;
    const char* msg = gzerror(gz, &code);
    if (code != Z_OK && code != Z_STREAM_END) {
      std::string text = msg;
      gzclose(gz);
      throw DataError("data file " + file + ": corrupt gzip stream: " + text);
    }
    const int rc = gzclose(gz);
    if (rc == Z_BUF_ERROR) throw DataError("data file " + file + ": truncated gzip stream");
    if (rc != Z_OK) throw DataError("data file " + file + ": gzip error " + std::to_string(rc));
    return bytes;
  }
  std::ifstream in(file, std::ios::binary);
  if (!in) throw DataError("data file " + file + ": cannot open: " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  bytes.resize(static_cast<size_t>(in.tellg()));
  in.seekg(0);
  in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  if (!in) throw DataError("data file " + file + ": read failed");
  return bytes;
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Records of uint8 pixels stored back to back, decoded as x / 127.5 - 1.
class ByteRecords : public Dataset {
 public:
  ByteRecords(std::string name, RecordShape shape, std::vector<uint8_t> pixels)
      : name_(std::move(name)), shape_(shape), pixels_(std::move(pixels)) {}

  std::string name() const override { return name_; }
  int64_t size() const override { return static_cast<int64_t>(pixels_.size()) / shape_.numel(); }
  RecordShape shape() const override { return shape_; }
  void read(const int64_t* indices, int64_t n, float* out) const override {
    const int64_t len = shape_.numel();
    for (int64_t i = 0; i < n; ++i) {
      const uint8_t* src = pixels_.data() + indices[i] * len;
      for (int64_t k = 0; k < len; ++k) out[i * len + k] = src[k] * (2.0f / 255.0f) - 1.0f;
    }
  }

 private:
  std::string name_;
  RecordShape shape_;
  std::vector<uint8_t> pixels_;
};

class Gaussian1d : public Dataset {
 public:
  Gaussian1d(double mean, double std, int64_t size, uint64_t seed)
      : mean_(mean), std_(std), size_(size), seed_(seed) {}
  std::string name() const override { return "gaussian1d"; }
  int64_t size() const override { return size_; }
  RecordShape shape() const override { return {1, 1, 1}; }
  void read(const int64_t* indices, int64_t n, float* out) const override {
    for (int64_t i = 0; i < n; ++i) {
      random::Rng rng(random::key({seed_, random::kGaussianData, static_cast<uint64_t>(indices[i])}));
      float z;
      rng.fill_normal(&z, 1);
      out[i] = static_cast<float>(mean_ + std_ * z);
    }
  }

 private:
  double mean_, std_;
  int64_t size_;
  uint64_t seed_;
};

// The first of `candidates` (relative to dir) that exists, else a DataError listing them all.
std::string find_file(const std::string& dir, const std::vector<std::string>& candidates,
                      const std::string& what) {
  for (const auto& c : candidates) {
    const fs::path p = fs::path(dir) / c;
    if (fs::exists(p)) return p.string();
  }
  std::string tried;
  for (const auto& c : candidates) tried += (tried.empty() ? "" : ", ") + c;
  throw DataError(what + ": none of " + tried + " in " + dir +
                  " (set data.path to the directory that holds them)");
}

}  // namespace

std::unique_ptr<Dataset> open_idx_images(const std::string& file, const std::string& name) {
  std::vector<uint8_t> bytes = read_file(file);
  if (bytes.size() < 16)
    throw DataError("data file " + file + ": truncated: " + std::to_string(bytes.size()) +
                    " bytes, shorter than the 16-byte IDX header");
  const uint32_t magic = big_endian_u32(bytes.data());
  if (magic != 0x00000803)
    throw DataError("data file " + file + ": bad magic number 0x" +
                    [&] { char b[16]; std::snprintf(b, sizeof b, "%08x", magic); return std::string(b); }() +
                    ", expected 0x00000803 (IDX unsigned-byte images, 3 dimensions)");
  const uint64_t count = big_endian_u32(bytes.data() + 4);
  const uint64_t rows = big_endian_u32(bytes.data() + 8);
  const uint64_t cols = big_endian_u32(bytes.data() + 12);
  if (count == 0 || rows == 0 || cols == 0 || rows > 4096 || cols > 4096)
    throw DataError("data file " + file + ": implausible dimensions " + std::to_string(count) +
                    " x " + std::to_string(rows) + " x " + std::to_string(cols));
  const uint64_t expected = 16 + count * rows * cols;
  if (bytes.size() != expected)
    throw DataError("data file " + file + ": " +
                    (bytes.size() < expected ? "truncated" : "trailing bytes") + ": header says " +
                    std::to_string(count) + " images of " + std::to_string(rows) + "x" +
                    std::to_string(cols) + " (" + std::to_string(expected) + " bytes) but it has " +
                    std::to_string(bytes.size()) + " bytes");
  bytes.erase(bytes.begin(), bytes.begin() + 16);
  return std::make_unique<ByteRecords>(
      name, RecordShape{1, static_cast<int64_t>(rows), static_cast<int64_t>(cols)}, std::move(bytes));
}

std::unique_ptr<Dataset> open_cifar10(const std::vector<std::string>& files) {
  constexpr int64_t kRecord = 1 + 3 * 32 * 32;
  std::vector<uint8_t> pixels;
  for (const auto& file : files) {
    const std::vector<uint8_t> bytes = read_file(file);
    if (bytes.empty() || bytes.size() % kRecord != 0)
      throw DataError("data file " + file + ": " + std::to_string(bytes.size()) +
                      " bytes is not a whole number of 3073-byte CIFAR-10 records (truncated?)");
    const size_t n = bytes.size() / kRecord;
    for (size_t i = 0; i < n; ++i) {
      const uint8_t label = bytes[i * kRecord];
      if (label > 9)
        throw DataError("data file " + file + ": record " + std::to_string(i) + " has label " +
                        std::to_string(label) + ", CIFAR-10 labels are 0-9 (not a CIFAR-10 batch?)");
      pixels.insert(pixels.end(), bytes.begin() + i * kRecord + 1, bytes.begin() + (i + 1) * kRecord);
    }
  }
  return std::make_unique<ByteRecords>("cifar10", RecordShape{3, 32, 32}, std::move(pixels));
}

std::unique_ptr<Dataset> open_dataset(const DatasetSpec& spec) {
  const bool test = spec.split == "test";
  if (spec.name == "mnist" || spec.name == "fashion-mnist") {
    const std::string stem = test ? "t10k-images-idx3-ubyte" : "train-images-idx3-ubyte";
    const std::string file = find_file(spec.path, {stem, stem + ".gz", test ? "t10k-images.idx3-ubyte" : "train-images.idx3-ubyte"},
                                       spec.name + " " + spec.split + " images");
    return open_idx_images(file, spec.name);
  }
  if (spec.name == "cifar10") {
    std::string dir = spec.path;
    if (!fs::exists(fs::path(dir) / "test_batch.bin") && !fs::exists(fs::path(dir) / "data_batch_1.bin") &&
        fs::exists(fs::path(dir) / "cifar-10-batches-bin"))
      dir = (fs::path(dir) / "cifar-10-batches-bin").string();
    std::vector<std::string> files;
    if (test) {
      files.push_back(find_file(dir, {"test_batch.bin"}, "cifar10 test batch"));
    } else {
      for (int i = 1; i <= 5; ++i) {
        const std::string f = "data_batch_" + std::to_string(i) + ".bin";
        files.push_back(find_file(dir, {f}, "cifar10 training batch"));
      }
    }
    return open_cifar10(files);
  }
  if (spec.name == "gaussian1d")
    return std::make_unique<Gaussian1d>(spec.gaussian_mean, spec.gaussian_std, spec.gaussian_size, spec.seed);
  throw DataError("unknown dataset '" + spec.name + "'");
}

}  // namespace gantry::datasets
