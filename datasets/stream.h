// Implements: the sharded sampler and the data stream. Each epoch is a seeded permutation of the
// global index space; global batch b is the slice [b*B, (b+1)*B) of it and rank r reads the
// contiguous r-th 1/world part of every global batch, so a seed gives the same global batches at
// any world size. The stream's position is a small value that a checkpoint can save.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "datasets/dataset.h"

namespace gantry::datasets {

class ShardedSampler {
 public:
  ShardedSampler(int64_t dataset_size, int64_t global_batch, int rank, int world_size, uint64_t seed);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t local_batch() const { return global_batch_ / world_size_; }
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

class DataStream {
 public:
  DataStream(std::shared_ptr<const Dataset> dataset, int64_t global_batch, int rank, int world_size,
             uint64_t seed);

  // This rank's part of the next global batch, shape [local_batch, C, H, W], values in [-1, 1].
  torch::Tensor next();
  StreamPosition position() const { return position_; }
  void set_position(const StreamPosition& position) { position_ = position; }
  const Dataset& dataset() const { return *dataset_; }
  int64_t batches_per_epoch() const { return sampler_.batches_per_epoch(); }

 private:
  std::shared_ptr<const Dataset> dataset_;
  ShardedSampler sampler_;
  StreamPosition position_;
};

}  // namespace gantry::datasets
