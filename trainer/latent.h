// Implements: the latent z (and WGAN-GP's interpolation weights) of global sample j in draw d,
// a pure function of (seed, stream, d, j). A rank makes only its rows, and the job's z is the
// same at any world size.
#pragma once

#include <torch/torch.h>

#include <vector>

#include "datasets/random.h"

namespace gantry {

// Rows first_index .. first_index + n of draw `draw`: [n, dim] standard normals. `pinned`: in
// page-locked memory, for an asynchronous copy to a GPU (from pageable memory that copy waits for
// the GPU to finish its queued work first).
inline torch::Tensor latent_rows(uint64_t seed, uint64_t stream, int64_t draw, int64_t first_index,
                                 int64_t n, int64_t dim, bool pinned = false) {
  torch::Tensor z = torch::empty({n, dim}, torch::TensorOptions().pinned_memory(pinned));
  float* out = z.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    random::Rng rng(random::key({seed, stream, static_cast<uint64_t>(draw), static_cast<uint64_t>(first_index + i)}));
    rng.fill_normal(out + i * dim, dim);
  }
  return z;
}

// Uniform(0, 1) values, one per row, for WGAN-GP's x_hat = eps * real + (1 - eps) * fake.
inline torch::Tensor uniform_rows(uint64_t seed, uint64_t stream, int64_t draw, int64_t first_index, int64_t n,
                                  bool pinned = false) {
  torch::Tensor u = torch::empty({n}, torch::TensorOptions().pinned_memory(pinned));
  float* out = u.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    random::Rng rng(random::key({seed, stream, static_cast<uint64_t>(draw), static_cast<uint64_t>(first_index + i)}));
    out[i] = static_cast<float>(rng.uniform());
  }
  return u;
}

// [n, cols] Uniform(0, 1) values, row i keyed as global sample first_index + i (train.augment's).
inline torch::Tensor uniform_table(uint64_t seed, uint64_t stream, int64_t draw, int64_t first_index, int64_t n,
                                   int64_t cols, bool pinned = false) {
  torch::Tensor u = torch::empty({n, cols}, torch::TensorOptions().pinned_memory(pinned));
  float* out = u.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    random::Rng rng(random::key({seed, stream, static_cast<uint64_t>(draw), static_cast<uint64_t>(first_index + i)}));
    for (int64_t k = 0; k < cols; ++k) out[i * cols + k] = static_cast<float>(rng.uniform());
  }
  return u;
}

// A conditional G's labels for rows first_index .. first_index + n of draw `draw`: each the label
// of a record drawn uniformly from `labels` (every record's, in record order), so classes come as
// often as in the data. [n] int64 (`pinned`: page-locked, as latent_rows').
inline torch::Tensor label_rows(uint64_t seed, uint64_t stream, int64_t draw, int64_t first_index, int64_t n,
                                const std::vector<int64_t>& labels, bool pinned = false) {
  torch::Tensor y = torch::empty({n}, torch::TensorOptions().dtype(torch::kInt64).pinned_memory(pinned));
  int64_t* out = y.data_ptr<int64_t>();
  const uint64_t records = labels.size();
  for (int64_t i = 0; i < n; ++i) {
    random::Rng rng(random::key({seed, stream, static_cast<uint64_t>(draw), static_cast<uint64_t>(first_index + i)}));
    out[i] = labels[rng.below(records)];
  }
  return y;
}

// Labels for a grid of `rows` x `cols` samples of a conditional G: row r shows class r % classes.
inline torch::Tensor grid_labels(int64_t rows, int64_t cols, int64_t classes) {
  return (torch::arange(rows, torch::kInt64) % classes).repeat_interleave(cols);
}

}  // namespace gantry
