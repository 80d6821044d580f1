// Implements: the sharded sampler and the data stream. Each epoch is a seeded permutation of the
// global index space; global batch b is the slice [b*B, (b+1)*B) of it and rank r reads the
// contiguous r-th 1/world part of every global batch, so a seed gives the same global batches at
// any world size. The last incomplete global batch of an epoch is dropped. The stream assembles
// the next `prefetch` batches on `workers` background threads; its position is a small value
// that a checkpoint saves.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <deque>
#include <future>
#include <memory>
#include <vector>

#include "datasets/dataset.h"

namespace gantry::datasets {

class ShardedSampler {
 public:
  ShardedSampler(int64_t dataset_size, int64_t global_batch, int rank, int world_size, uint64_t seed);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t local_batch() const { return global_batch_ / world_size_; }
  int64_t global_batch() const { return global_batch_; }
  // The dataset indices of global batch `batch` (0-based within `epoch`), all ranks' parts.
  std::vector<int64_t> global_indices(int64_t epoch, int64_t batch);
  // This rank's part of that global batch.
  std::vector<int64_t> local_indices(int64_t epoch, int64_t batch);

 private:
  const std::vector<int64_t>& permutation(int64_t epoch);

  int64_t size_, global_batch_;
  int rank_, world_size_;
  uint64_t seed_;
  int64_t batches_per_epoch_;
  int64_t cached_epoch_ = -1;
  std::vector<int64_t> perm_;
};

// Where a stream stands: the next global batch it will yield.
struct StreamPosition {
  int64_t epoch = 0;
  int64_t batch = 0;  // global batch index within the epoch
};

struct StreamOptions {
  int workers = 1;      // threads that decode batches
  int prefetch = 2;     // batches assembled ahead of the training thread (0: decode in next())
  bool hflip = false;   // flip each image left-right with probability 1/2 (seeded per epoch and record)
  // Where next() delivers batches. CUDA (when available): workers fill pinned host tensors and
  // next() starts a non-blocking copy to the device. CPU: plain host tensors, no copy.
  torch::Device device = torch::kCPU;
  // The class label of every record of the dataset, in record order (a conditional GAN's): then
  // labels() gives each batch's. Null: no labels.
  std::shared_ptr<const std::vector<int64_t>> labels;
};

class WorkerPool;

class DataStream {
 public:
  DataStream(std::shared_ptr<const Dataset> dataset, int64_t global_batch, int rank, int world_size,
             uint64_t seed, StreamOptions options = {});
  ~DataStream();

  // This rank's part of the next global batch, shape [local_batch, C, H, W], values in [-1, 1],
  // on options.device. An error in a worker thread is rethrown here with its message.
  torch::Tensor next();
  // The labels of the batch next() returned last, [local_batch] int64 on the host; undefined
  // without options.labels (or before the first next()).
  const torch::Tensor& labels() const { return labels_; }
  // The position of the next batch next() returns (batches prefetched but not taken don't count).
  StreamPosition position() const { return position_; }
  // Continues from `position`; batches prefetched for the old position are dropped. A batch
  // index outside [0, batches_per_epoch) or a negative epoch is an std::out_of_range.
  void set_position(const StreamPosition& position);
  // Continues where a stream of global batch `saved_batch` stood at `position`: at the first
  // batch of this stream's size that takes none of the samples it had already handed out in that
  // epoch (fewer than one batch of them are skipped), or at the next epoch when none is left.
  // A run resumed with another train.batch_size; with the same, this is set_position.
  void resume_position(const StreamPosition& position, int64_t saved_batch);
  // Seconds next() spent waiting for data since the last call.
  double take_wait_seconds();

  const Dataset& dataset() const { return *dataset_; }
  int64_t batches_per_epoch() const { return sampler_.batches_per_epoch(); }
  int64_t global_batch() const { return sampler_.global_batch(); }

 private:
  StreamPosition advance(StreamPosition p) const;
  std::function<torch::Tensor()> batch_task(const StreamPosition& p);
  torch::Tensor labels_at(const StreamPosition& p);  // undefined without options_.labels
  void drain();

  std::shared_ptr<const Dataset> dataset_;
  ShardedSampler sampler_;
  uint64_t seed_;
  StreamOptions options_;
  StreamPosition position_;  // of the next batch handed out
  StreamPosition queued_;    // of the next batch to submit
  std::unique_ptr<WorkerPool> pool_;
  std::deque<std::pair<std::future<torch::Tensor>, torch::Tensor>> pending_;  // a batch, its labels
  torch::Tensor labels_;
  double wait_seconds_ = 0;
  bool pinned_ = false;  // host batches are page-locked for asynchronous copies to options_.device
};

}  // namespace gantry::datasets
