// Implements: ShardedSampler (seeded per-epoch Fisher-Yates permutation, contiguous per-rank
// slices of each global batch) and DataStream: indices are chosen on the training thread (the
// sampler is not shared), records are decoded on a small worker pool, and batches come back in
// order through futures, which also carry a worker's exception to next().
#include "datasets/stream.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>

#include "datasets/random.h"

namespace gantry::datasets {

ShardedSampler::ShardedSampler(int64_t dataset_size, int64_t global_batch, int rank, int world_size,
                               uint64_t seed)
    : size_(dataset_size), global_batch_(global_batch), rank_(rank), world_size_(world_size), seed_(seed) {
  if (global_batch <= 0 || world_size <= 0 || global_batch % world_size != 0)
    throw std::invalid_argument("ShardedSampler: global batch " + std::to_string(global_batch) +
                                " is not divisible by world size " + std::to_string(world_size));
  if (dataset_size < global_batch)
    throw DataError("dataset has " + std::to_string(dataset_size) +
                    " records, fewer than one global batch of " + std::to_string(global_batch));
  // The last incomplete global batch of an epoch is dropped, as every rank must get a full share.
  batches_per_epoch_ = dataset_size / global_batch;
}

const std::vector<int64_t>& ShardedSampler::permutation(int64_t epoch) {
  if (epoch != cached_epoch_) {
    perm_.resize(static_cast<size_t>(size_));
    for (int64_t i = 0; i < size_; ++i) perm_[i] = i;
    random::Rng rng(random::key({seed_, random::kPermutation, static_cast<uint64_t>(epoch)}));
    for (int64_t i = size_ - 1; i > 0; --i) {
      const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i + 1)));
      std::swap(perm_[i], perm_[j]);
    }
    cached_epoch_ = epoch;
  }
  return perm_;
}

std::vector<int64_t> ShardedSampler::global_indices(int64_t epoch, int64_t batch) {
  const auto& perm = permutation(epoch);
  return {perm.begin() + batch * global_batch_, perm.begin() + (batch + 1) * global_batch_};
}

std::vector<int64_t> ShardedSampler::local_indices(int64_t epoch, int64_t batch) {
  const auto& perm = permutation(epoch);
  const int64_t begin = batch * global_batch_ + rank_ * local_batch();
  return {perm.begin() + begin, perm.begin() + begin + local_batch()};
}

// A fixed set of threads running tasks in submission order. Destruction finishes the queued tasks
// (their futures may still be waited on) and joins.
class WorkerPool {
 public:
  explicit WorkerPool(int threads) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~WorkerPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto& t : threads_) t.join();
  }
  std::future<torch::Tensor> submit(std::function<torch::Tensor()> fn) {
    std::packaged_task<torch::Tensor()> task(std::move(fn));
    auto future = task.get_future();
    {
      std::lock_guard<std::mutex> lock(mutex_);
      tasks_.push_back(std::move(task));
    }
    ready_.notify_one();
    return future;
  }

 private:
  void run() {
    while (true) {
      std::packaged_task<torch::Tensor()> task;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !tasks_.empty(); });
        if (tasks_.empty()) return;
        task = std::move(tasks_.front());
        tasks_.pop_front();
      }
      task();  // an exception is stored in the future
    }
  }

  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::packaged_task<torch::Tensor()>> tasks_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

DataStream::DataStream(std::shared_ptr<const Dataset> dataset, int64_t global_batch, int rank,
                       int world_size, uint64_t seed, StreamOptions options)
    : dataset_(std::move(dataset)),
      sampler_(dataset_->size(), global_batch, rank, world_size, seed),
      seed_(seed),
      options_(options) {
  if (options_.labels && static_cast<int64_t>(options_.labels->size()) != dataset_->size())
    throw DataError(dataset_->name() + ": " + std::to_string(options_.labels->size()) + " labels for " +
                    std::to_string(dataset_->size()) + " records");
  if (options_.prefetch > 0) pool_ = std::make_unique<WorkerPool>(std::max(1, options_.workers));
  // Pinned memory needs a CUDA runtime; a CPU-only LibTorch never takes this branch.
  pinned_ = options_.device.is_cuda() && torch::cuda::is_available();
}

DataStream::~DataStream() { drain(); }

StreamPosition DataStream::advance(StreamPosition p) const {
  if (++p.batch == sampler_.batches_per_epoch()) {
    p.batch = 0;
    ++p.epoch;
  }
  return p;
}

std::function<torch::Tensor()> DataStream::batch_task(const StreamPosition& p) {
  // The batch's memory is allocated here, on the training thread: pinned memory is registered
  // with this thread's CUDA device (a worker thread would use device 0's context).
  const RecordShape s = dataset_->shape();
  const torch::Tensor out = torch::empty({sampler_.local_batch(), s.channels, s.height, s.width},
                                         torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(pinned_));
  return [dataset = dataset_, indices = sampler_.local_indices(p.epoch, p.batch), epoch = p.epoch,
          seed = seed_, hflip = options_.hflip, s, batch = out] {
    dataset->read(indices.data(), static_cast<int64_t>(indices.size()), batch.data_ptr<float>());
    if (hflip) {  // reverse every row of the chosen images, in place
      float* x = batch.data_ptr<float>();
      const int64_t rows = s.channels * s.height;
      for (size_t i = 0; i < indices.size(); ++i) {
        random::Rng rng(random::key({seed, random::kFlip, static_cast<uint64_t>(epoch), static_cast<uint64_t>(indices[i])}));
        if (!(rng.next_u64() & 1)) continue;
        for (int64_t r = 0; r < rows; ++r) {
          float* row = x + (static_cast<int64_t>(i) * rows + r) * s.width;
          std::reverse(row, row + s.width);
        }
      }
    }
    return batch;
  };
}

torch::Tensor DataStream::labels_at(const StreamPosition& p) {
  if (!options_.labels) return torch::Tensor();
  const std::vector<int64_t> indices = sampler_.local_indices(p.epoch, p.batch);
  // Page-locked where batches are: the copy to the GPU is then asynchronous, like the batch's.
  torch::Tensor out = torch::empty({static_cast<int64_t>(indices.size())},
                                   torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pinned_));
  int64_t* y = out.data_ptr<int64_t>();
  for (size_t i = 0; i < indices.size(); ++i) y[i] = options_.labels->at(static_cast<size_t>(indices[i]));
  return out;
}

torch::Tensor DataStream::next() {
  const auto start = std::chrono::steady_clock::now();
  torch::Tensor batch;
  if (!pool_) {
    batch = batch_task(position_)();
    labels_ = labels_at(position_);
  } else {
    if (pending_.empty()) queued_ = position_;
    while (static_cast<int>(pending_.size()) <= options_.prefetch) {
      pending_.emplace_back(pool_->submit(batch_task(queued_)), labels_at(queued_));
      queued_ = advance(queued_);
    }
    auto [future, labels] = std::move(pending_.front());
    pending_.pop_front();
    batch = future.get();  // rethrows a worker's error
    labels_ = std::move(labels);
  }
  // From pinned memory the copy is asynchronous on the current stream, which orders it before
  // the kernels that use the batch (and the caching host allocator keeps the pinned block until
  // the copy is done).
  if (options_.device != batch.device()) batch = batch.to(options_.device, /*non_blocking=*/pinned_);
  position_ = advance(position_);
  wait_seconds_ += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return batch;
}

void DataStream::drain() {
  for (auto& [f, labels] : pending_) f.wait();
  pending_.clear();
}

void DataStream::set_position(const StreamPosition& position) {
  if (position.epoch < 0 || position.batch < 0 || position.batch >= batches_per_epoch())
    throw std::out_of_range("data stream position (epoch " + std::to_string(position.epoch) + ", batch " +
                            std::to_string(position.batch) + ") is outside an epoch of " +
                            std::to_string(batches_per_epoch()) + " batches");
  drain();
  position_ = position;
}

void DataStream::resume_position(const StreamPosition& position, int64_t saved_batch) {
  StreamPosition p = position;
  if (saved_batch != global_batch() && saved_batch > 0) {
    const int64_t handed_out = p.batch * saved_batch;  // of this epoch's permutation
    p.batch = (handed_out + global_batch() - 1) / global_batch();
  }
  if (p.batch >= batches_per_epoch()) {
    p.batch = 0;
    ++p.epoch;
  }
  set_position(p);
}

double DataStream::take_wait_seconds() { return std::exchange(wait_seconds_, 0.0); }

}  // namespace gantry::datasets
