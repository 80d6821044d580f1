// Implements: the dataset readers. IDX image files (MNIST, Fashion-MNIST) and CIFAR-10 binary
// batches are checked (magic, dimensions, exact size) when opened; records are then read with
// pread and decoded on demand, so a dataset is never resident as a whole. A .gz IDX file is inflated once
// into a cache file (atomic rename). The 1-D Gaussian computes record i from (seed, i).
#include "datasets/dataset.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>

#include "datasets/random.h"

namespace gantry::datasets {
namespace fs = std::filesystem;
namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// An open data file read with pread: thread-safe, and a file that shrinks under a running job
// gives a clear error instead of the SIGBUS a memory map would raise.
class RecordFile {
 public:
  explicit RecordFile(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw DataError("data file " + path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    ::fstat(fd_, &st);
    size_ = static_cast<size_t>(st.st_size);
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_RANDOM);  // records are read in a shuffled order
  }
  ~RecordFile() { ::close(fd_); }
  RecordFile(const RecordFile&) = delete;
  RecordFile& operator=(const RecordFile&) = delete;

  void read(size_t offset, size_t length, uint8_t* out) const {
    size_t done = 0;
    while (done < length) {
      const ssize_t n = ::pread(fd_, out + done, length - done, static_cast<off_t>(offset + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) throw DataError("data file " + path_ + ": read failed: " + std::strerror(errno));
      if (n == 0)
        throw DataError("data file " + path_ + ": truncated while training (no bytes at offset " +
                        std::to_string(offset + done) + " of the " + std::to_string(size_) + " it had)");
      done += static_cast<size_t>(n);
    }
  }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  int fd_ = -1;
  size_t size_ = 0;
};

std::string cache_directory_for(const fs::path& source, const std::string& cache_dir) {
  const fs::path next_to = fs::absolute(source).parent_path();
  const std::string folder = next_to.string();
  // A folder marked read-only counts as such even for root, who may write anywhere.
  const bool writable = ::access(folder.c_str(), W_OK) == 0 &&
                        (fs::status(next_to).permissions() & fs::perms::owner_write) != fs::perms::none;
  if (cache_dir.empty() && folder.rfind("/usr/", 0) != 0 && writable) return folder;
  std::string sub = folder;
  for (char& c : sub) if (c == '/') c = '_';
  if (!cache_dir.empty()) return (fs::path(cache_dir) / sub).string();
  if (const char* xdg = std::getenv("XDG_CACHE_HOME")) return (fs::path(xdg) / "gantry" / sub).string();
  if (const char* home = std::getenv("HOME")) return (fs::path(home) / ".cache" / "gantry" / sub).string();
  throw DataError("data file " + source.string() + ": its folder is read-only; set data.cache_dir");
}

// The inflated copy of `gz`, made once: in `cache_dir` (empty: next to the file, or the user's
// cache folder when that is read-only). Written to a private temporary name and renamed, so
// concurrent ranks and crashes never leave a half-written cache behind.
std::string inflate_to_cache(const std::string& gz, const std::string& cache_dir) {
  const fs::path dir = cache_directory_for(gz, cache_dir);
  const fs::path target = dir / fs::path(gz).filename().replace_extension("");
  std::error_code ec;
  if (fs::exists(target, ec) && fs::last_write_time(target, ec) >= fs::last_write_time(gz, ec)) return target.string();
  fs::create_directories(dir, ec);
  // Private to this process even across hosts and containers that share the folder (and pids).
  char host[256] = "host";
  ::gethostname(host, sizeof host - 1);
  const fs::path tmp = target.string() + ".tmp." + host + "." + std::to_string(::getpid()) + "." +
                       std::to_string(std::random_device{}());
  gzFile in = gzopen(gz.c_str(), "rb");
  if (!in) throw DataError("data file " + gz + ": cannot open: " + std::strerror(errno));
  std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
  if (!out) {
    gzclose(in);
    throw DataError("data file " + gz + ": cannot write its cache " + tmp.string() + " (set data.cache_dir)");
  }
  gzbuffer(in, 1 << 20);
  std::vector<char> chunk(1 << 20);
  std::string error;
  while (true) {
    const int n = gzread(in, chunk.data(), static_cast<unsigned>(chunk.size()));
    if (n < 0) {
      int code = 0;
      error = std::string("corrupt gzip stream: ") + gzerror(in, &code);
      break;
    }
    if (n == 0) break;
    out.write(chunk.data(), n);
  }
  int code = 0;
  const char* msg = gzerror(in, &code);
  if (error.empty() && code != Z_OK && code != Z_STREAM_END) error = std::string("corrupt gzip stream: ") + msg;
  const int rc = gzclose(in);
  if (error.empty() && rc == Z_BUF_ERROR) error = "truncated gzip stream";
  if (error.empty() && rc != Z_OK) error = "gzip error " + std::to_string(rc);
  if (error.empty() && !out.flush()) error = "cannot write its cache " + tmp.string();
  out.close();
  if (!error.empty()) {
    fs::remove(tmp, ec);
    throw DataError("data file " + gz + ": " + error);
  }
  fs::rename(tmp, target);
  return target.string();
}

uint32_t big_endian_u32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Fixed-size uint8 records in one or more files, decoded as x / 127.5 - 1. A record may
// start with a label byte (CIFAR-10), which is checked when the record is read.
class FileRecords : public Dataset {
 public:
  struct Segment {
    std::shared_ptr<RecordFile> file;
    size_t first_offset;  // bytes before the first record
    int64_t count;
  };

  FileRecords(std::string name, RecordShape shape, bool label_byte, std::vector<Segment> segments)
      : name_(std::move(name)), shape_(shape), label_byte_(label_byte), segments_(std::move(segments)) {
    for (const auto& s : segments_) size_ += s.count;
  }

  std::string name() const override { return name_; }
  int64_t size() const override { return size_; }
  RecordShape shape() const override { return shape_; }
  void read(const int64_t* indices, int64_t n, float* out) const override {
    const int64_t len = shape_.numel();
    const int64_t stride = len + (label_byte_ ? 1 : 0);
    thread_local std::vector<uint8_t> buffer;
    buffer.resize(static_cast<size_t>(stride));
    const uint8_t* record = buffer.data();
    for (int64_t i = 0; i < n; ++i) {
      int64_t local = indices[i];
      const Segment* seg = segments_.data();
      while (local >= seg->count) local -= (seg++)->count;
      seg->file->read(seg->first_offset + static_cast<size_t>(local * stride), static_cast<size_t>(stride), buffer.data());
      if (label_byte_ && record[0] > 9)
        throw DataError("data file " + seg->file->path() + ": record " + std::to_string(local) + " has label " +
                        std::to_string(record[0]) + ", CIFAR-10 labels are 0-9 (not a CIFAR-10 batch?)");
      const uint8_t* src = record + (label_byte_ ? 1 : 0);
      for (int64_t k = 0; k < len; ++k) out[i * len + k] = src[k] * (2.0f / 255.0f) - 1.0f;
    }
  }

 private:
  std::string name_;
  RecordShape shape_;
  bool label_byte_;
  std::vector<Segment> segments_;
  int64_t size_ = 0;
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

std::unique_ptr<Dataset> open_idx_images(const std::string& file, const std::string& name,
                                         const std::string& cache_dir) {
  if (!fs::exists(file)) throw DataError("data file " + file + ": not found");
  const std::string raw = ends_with(file, ".gz") ? inflate_to_cache(file, cache_dir) : file;
  auto mapped = std::make_shared<RecordFile>(raw);
  // Errors name the file the user gave, and the cache when that is what was read.
  const std::string named = raw == file ? file : raw + " (inflated from " + file + ")";
  const size_t size = mapped->size();
  uint8_t bytes[16] = {0};
  if (size >= 16) mapped->read(0, 16, bytes);
  if (size < 16)
    throw DataError("data file " + named + ": truncated: " + std::to_string(size) +
                    " bytes, shorter than the 16-byte IDX header");
  const uint32_t magic = big_endian_u32(bytes);
  if (magic != 0x00000803) {
    char hex[16];
    std::snprintf(hex, sizeof hex, "%08x", magic);
    throw DataError("data file " + named + ": bad magic number 0x" + hex +
                    ", expected 0x00000803 (IDX unsigned-byte images, 3 dimensions)");
  }
  const uint64_t count = big_endian_u32(bytes + 4);
  const uint64_t rows = big_endian_u32(bytes + 8);
  const uint64_t cols = big_endian_u32(bytes + 12);
  if (count == 0 || rows == 0 || cols == 0 || rows > 4096 || cols > 4096)
    throw DataError("data file " + named + ": implausible dimensions " + std::to_string(count) +
                    " x " + std::to_string(rows) + " x " + std::to_string(cols));
  const uint64_t expected = 16 + count * rows * cols;
  if (size != expected)
    throw DataError("data file " + named + ": " + (size < expected ? "truncated" : "trailing bytes") +
                    ": header says " + std::to_string(count) + " images of " + std::to_string(rows) + "x" +
                    std::to_string(cols) + " (" + std::to_string(expected) + " bytes) but it has " +
                    std::to_string(size) + " bytes");
  return std::make_unique<FileRecords>(
      name, RecordShape{1, static_cast<int64_t>(rows), static_cast<int64_t>(cols)}, /*label_byte=*/false,
      std::vector<FileRecords::Segment>{{mapped, 16, static_cast<int64_t>(count)}});
}

std::unique_ptr<Dataset> open_cifar10(const std::vector<std::string>& files) {
  constexpr int64_t kRecord = 1 + 3 * 32 * 32;
  std::vector<FileRecords::Segment> segments;
  for (const auto& file : files) {
    if (!fs::exists(file)) throw DataError("data file " + file + ": not found");
    auto mapped = std::make_shared<RecordFile>(file);
    const size_t size = mapped->size();
    if (size == 0 || size % kRecord != 0)
      throw DataError("data file " + file + ": " + std::to_string(size) +
                      " bytes is not a whole number of 3073-byte CIFAR-10 records (truncated?)");
    uint8_t first_label = 0;
    mapped->read(0, 1, &first_label);
    if (first_label > 9)  // every record's label is checked again when it is read
      throw DataError("data file " + file + ": record 0 has label " + std::to_string(first_label) +
                      ", CIFAR-10 labels are 0-9 (not a CIFAR-10 batch?)");
    segments.push_back({mapped, 0, static_cast<int64_t>(size / kRecord)});
  }
  return std::make_unique<FileRecords>("cifar10", RecordShape{3, 32, 32}, /*label_byte=*/true, std::move(segments));
}

// Records [begin, end) of another dataset, renumbered from 0.
class RecordRange : public Dataset {
 public:
  RecordRange(std::shared_ptr<const Dataset> base, int64_t begin, int64_t end)
      : base_(std::move(base)), begin_(begin), end_(end) {}
  std::string name() const override { return base_->name(); }
  int64_t size() const override { return end_ - begin_; }
  RecordShape shape() const override { return base_->shape(); }
  void read(const int64_t* indices, int64_t n, float* out) const override {
    thread_local std::vector<int64_t> shifted;
    shifted.assign(indices, indices + n);
    for (auto& i : shifted) i += begin_;
    base_->read(shifted.data(), n, out);
  }

 private:
  std::shared_ptr<const Dataset> base_;
  int64_t begin_, end_;
};

std::unique_ptr<Dataset> record_range(std::shared_ptr<const Dataset> base, int64_t begin, int64_t end) {
  if (begin < 0 || end > base->size() || begin >= end)
    throw DataError(base->name() + ": records [" + std::to_string(begin) + ", " + std::to_string(end) +
                    ") do not fit its " + std::to_string(base->size()) + " records (data.holdout too large?)");
  return std::make_unique<RecordRange>(std::move(base), begin, end);
}

std::vector<int64_t> read_labels(const DatasetSpec& spec) {
  const bool test = spec.split == "test";
  std::vector<int64_t> labels;
  if (spec.name == "mnist" || spec.name == "fashion-mnist") {
    const std::string stem = test ? "t10k-labels-idx1-ubyte" : "train-labels-idx1-ubyte";
    const std::string file = find_file(spec.path, {stem, stem + ".gz", test ? "t10k-labels.idx1-ubyte" : "train-labels.idx1-ubyte"},
                                       spec.name + " " + spec.split + " labels");
    gzFile in = gzopen(file.c_str(), "rb");  // reads raw files too
    if (!in) throw DataError("data file " + file + ": cannot open: " + std::strerror(errno));
    std::vector<uint8_t> bytes;
    std::vector<uint8_t> chunk(1 << 16);
    int n = 0;
    while ((n = gzread(in, chunk.data(), static_cast<unsigned>(chunk.size()))) > 0) bytes.insert(bytes.end(), chunk.begin(), chunk.begin() + n);
    gzclose(in);
    if (n < 0 || bytes.size() < 8 || big_endian_u32(bytes.data()) != 0x00000801 ||
        bytes.size() != 8 + size_t{big_endian_u32(bytes.data() + 4)})
      throw DataError("data file " + file + ": not an IDX label file (magic 0x00000801, then a count and that many bytes)");
    for (size_t i = 8; i < bytes.size(); ++i) labels.push_back(bytes[i]);
  } else if (spec.name == "cifar10") {
    open_dataset(spec);  // finds and checks the batches, naming what is missing or malformed
    std::string dir = spec.path;
    if (!fs::exists(fs::path(dir) / "test_batch.bin") && !fs::exists(fs::path(dir) / "data_batch_1.bin"))
      dir = (fs::path(dir) / "cifar-10-batches-bin").string();
    std::vector<std::string> files;
    if (test) files.push_back((fs::path(dir) / "test_batch.bin").string());
    else for (int i = 1; i <= 5; ++i) files.push_back((fs::path(dir) / ("data_batch_" + std::to_string(i) + ".bin")).string());
    constexpr size_t kRecord = 1 + 3 * 32 * 32;
    for (const auto& f : files) {
      RecordFile file(f);
      for (size_t off = 0; off + kRecord <= file.size(); off += kRecord) {
        uint8_t label = 0;
        file.read(off, 1, &label);
        labels.push_back(label);
      }
    }
  } else {
    throw DataError("dataset '" + spec.name + "' has no labels");
  }
  return labels;
}

std::unique_ptr<Dataset> open_dataset(const DatasetSpec& spec) {
  if (spec.holdout > 0) {
    DatasetSpec all = spec;
    all.holdout = 0;
    std::shared_ptr<const Dataset> base = open_dataset(all);
    const int64_t n = base->size();
    if (spec.holdout >= n)
      throw DataError(spec.name + " " + spec.split + ": data.holdout " + std::to_string(spec.holdout) +
                      " leaves no records to train on (it has " + std::to_string(n) + ")");
    return record_range(std::move(base), 0, n - spec.holdout);
  }
  const bool test = spec.split == "test";
  if (spec.name == "mnist" || spec.name == "fashion-mnist") {
    const std::string stem = test ? "t10k-images-idx3-ubyte" : "train-images-idx3-ubyte";
    const std::string file = find_file(spec.path, {stem, stem + ".gz", test ? "t10k-images.idx3-ubyte" : "train-images.idx3-ubyte"},
                                       spec.name + " " + spec.split + " images");
    return open_idx_images(file, spec.name, spec.cache_dir);
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
  if (spec.name == "images") return open_image_folder(spec.path, spec.resolution, spec.channels, spec.warn);
  if (spec.name == "gaussian1d")
    return std::make_unique<Gaussian1d>(spec.gaussian_mean, spec.gaussian_std, spec.gaussian_size, spec.seed);
  throw DataError("unknown dataset '" + spec.name + "'");
}

}  // namespace gantry::datasets
