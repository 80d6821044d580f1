// Implements: ShardedSampler (seeded per-epoch Fisher-Yates permutation, contiguous per-rank
// slices of each global batch) and DataStream on top of it.
#include "datasets/stream.h"

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

DataStream::DataStream(std::shared_ptr<const Dataset> dataset, int64_t global_batch, int rank,
                       int world_size, uint64_t seed)
    : dataset_(std::move(dataset)),
      sampler_(dataset_->size(), global_batch, rank, world_size, seed) {}

torch::Tensor DataStream::next() {
  const auto indices = sampler_.local_indices(position_.epoch, position_.batch);
  const RecordShape s = dataset_->shape();
  torch::Tensor batch =
      torch::empty({static_cast<int64_t>(indices.size()), s.channels, s.height, s.width});
  dataset_->read(indices.data(), static_cast<int64_t>(indices.size()), batch.data_ptr<float>());
  if (++position_.batch == sampler_.batches_per_epoch()) {
    position_.batch = 0;
    ++position_.epoch;
  }
  return batch;
}

}  // namespace gantry::datasets
