// Implements: the Dataset interface (fixed-size records decoded to floats in [-1, 1]), the
// readers' factory, and the errors they raise. Readers: MNIST/Fashion-MNIST IDX (raw, or .gz
// inflated once into a cache), CIFAR-10 binary batches, a folder of PNG/JPEG images, and the
// synthetic 1-D Gaussian. File readers read records with pread (images: decode them) on demand;
// read() is thread-safe.
#pragma once

#include <cstdint>
#include <functional>
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
  std::string name;   // mnist | fashion-mnist | cifar10 | images | gaussian1d
  std::string path;   // directory holding the dataset's files
  std::string split;  // train | test
  double gaussian_mean = 0.0;
  double gaussian_std = 1.0;
  int64_t gaussian_size = 1 << 20;
  uint64_t seed = 0;
  std::string cache_dir;  // where .gz files are inflated; empty: next to them (or ~/.cache/gantry)
  int64_t holdout = 0;    // leave out the last N records (held out for evaluation); 0: all
  int64_t resolution = 32;  // images: records are resolution x resolution
  int64_t channels = 3;     // images: 1 (gray) or 3 (RGB)
  // Warnings (skipped images); may be called from the threads that read records. Empty: none.
  std::function<void(const std::string&)> warn;
};

std::unique_ptr<Dataset> open_dataset(const DatasetSpec& spec);

// Records [begin, end) of `base` as a dataset of their own (a holdout split). Throws DataError
// when the range does not fit.
std::unique_ptr<Dataset> record_range(std::shared_ptr<const Dataset> base, int64_t begin, int64_t end);

// The class labels of the split's records, in record order (IDX label files, CIFAR-10's label
// bytes). Throws DataError naming the file when they are missing or do not match the images.
std::vector<int64_t> read_labels(const DatasetSpec& spec);

// The readers, for tests and tools that name a file directly.
std::unique_ptr<Dataset> open_idx_images(const std::string& file, const std::string& name,
                                         const std::string& cache_dir = "");
std::unique_ptr<Dataset> open_cifar10(const std::vector<std::string>& files);
// Every *.png / *.jpg / *.jpeg under `folder` (sorted by path) as a record of channels x
// resolution x resolution: centre-cropped to a square and resized. Files whose header cannot be
// read are skipped and named through `warn`; none readable is a DataError.
std::unique_ptr<Dataset> open_image_folder(const std::string& folder, int64_t resolution, int64_t channels,
                                           const std::function<void(const std::string&)>& warn = {});

}  // namespace gantry::datasets
