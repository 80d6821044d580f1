// Implements: the Dataset interface (fixed-size records decoded to floats in [-1, 1]), the
// readers' factory, and the errors they raise. Readers: MNIST/Fashion-MNIST IDX (raw, or .gz
// inflated once into a cache), CIFAR-10 binary batches, and the synthetic 1-D Gaussian. File
// readers read records with pread and decode them on demand; read() is thread-safe.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace gantry::datasets {

// A bad or missing data file. The message names the file and what is wrong with it.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RecordShape {
  int64_t channels = 1;
  int64_t height = 1;
  int64_t width = 1;
  int64_t numel() const { return channels * height * width; }
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual std::string name() const = 0;
  virtual int64_t size() const = 0;
  virtual RecordShape shape() const = 0;
  // Decodes records indices[0..n) into out (n * shape().numel() floats), row after row.
  virtual void read(const int64_t* indices, int64_t n, float* out) const = 0;
};

struct DatasetSpec {
  std::string name;   // mnist | fashion-mnist | cifar10 | gaussian1d
  std::string path;   // directory holding the dataset's files
  std::string split;  // train | test
  double gaussian_mean = 0.0;
  double gaussian_std = 1.0;
  int64_t gaussian_size = 1 << 20;
  uint64_t seed = 0;
  std::string cache_dir;  // where .gz files are inflated; empty: next to them (or ~/.cache/gantry)
};

std::unique_ptr<Dataset> open_dataset(const DatasetSpec& spec);

// The readers, for tests and tools that name a file directly.
std::unique_ptr<Dataset> open_idx_images(const std::string& file, const std::string& name,
                                         const std::string& cache_dir = "");
std::unique_ptr<Dataset> open_cifar10(const std::vector<std::string>& files);

}  // namespace gantry::datasets
