// Tests: the sharded sampler gives the same global batches at any world size, each rank its
// contiguous share, and the latent z of a global sample does not depend on the world size.
#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <set>

#include "datasets/stream.h"
#include "trainer/latent.h"

using gantry::datasets::ShardedSampler;

TEST(ShardedSampler, EpochIsAPermutationAndDropsTheLastPartialBatch) {
  ShardedSampler s(100, 12, 0, 1, 5);
  EXPECT_EQ(s.batches_per_epoch(), 8);  // 96 of 100 records; the last 4 are dropped
  std::set<int64_t> seen;
  for (int64_t b = 0; b < 8; ++b)
    for (int64_t i : s.global_indices(0, b)) seen.insert(i);
  EXPECT_EQ(seen.size(), 96u);
  EXPECT_GE(*seen.begin(), 0);
  EXPECT_LT(*seen.rbegin(), 100);
  EXPECT_NE(s.global_indices(0, 0), s.global_indices(1, 0));  // a new permutation each epoch
}

TEST(ShardedSampler, SameGlobalBatchesAtAnyWorldSizeAndContiguousShares) {
  constexpr int64_t kBatch = 96;
  ShardedSampler one(1000, kBatch, 0, 1, 42);
  for (int world : {2, 3, 4, 6}) {
    std::vector<ShardedSampler> ranks;
    for (int r = 0; r < world; ++r) ranks.emplace_back(1000, kBatch, r, world, 42);
    for (int64_t epoch : {0, 3})
      for (int64_t b : {0, 5, 9}) {
        const auto global = one.global_indices(epoch, b);
        std::vector<int64_t> joined;
        for (int r = 0; r < world; ++r) {
          EXPECT_EQ(ranks[r].global_indices(epoch, b), global);
          const auto local = ranks[r].local_indices(epoch, b);
          ASSERT_EQ(static_cast<int64_t>(local.size()), kBatch / world);
          EXPECT_TRUE(std::equal(local.begin(), local.end(), global.begin() + r * (kBatch / world)));
          joined.insert(joined.end(), local.begin(), local.end());
        }
        EXPECT_EQ(joined, global) << "world " << world;
      }
  }
}

TEST(ShardedSampler, RejectsABatchTheWorldDoesNotDivide) {
  EXPECT_THROW(ShardedSampler(1000, 95, 0, 2, 0), std::invalid_argument);
  EXPECT_THROW(ShardedSampler(10, 16, 0, 1, 0), gantry::datasets::DataError);
}

TEST(DataStream, AdvancesThroughEpochsAndRestoresItsPosition) {
  auto ds = gantry::datasets::open_dataset({"gaussian1d", "", "train", 0.0, 1.0, 40, 1});
  gantry::datasets::DataStream a(std::shared_ptr<const gantry::datasets::Dataset>(std::move(ds)), 16, 0, 1, 9);
  EXPECT_EQ(a.batches_per_epoch(), 2);
  a.next();
  a.next();
  EXPECT_EQ(a.position().epoch, 1);
  EXPECT_EQ(a.position().batch, 0);
  const auto pos = a.position();
  const torch::Tensor x = a.next();
  a.set_position(pos);
  EXPECT_TRUE(torch::equal(a.next(), x));
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{16, 1, 1, 1}));
}

TEST(Latent, RowsOfASampleDoNotDependOnTheSplit) {
  const torch::Tensor whole = gantry::latent_rows(7, gantry::random::kLatent, 11, 0, 96, 100);
  for (int world : {2, 3}) {
    const int64_t share = 96 / world;
    for (int r = 0; r < world; ++r) {
      const torch::Tensor part = gantry::latent_rows(7, gantry::random::kLatent, 11, r * share, share, 100);
      EXPECT_TRUE(torch::equal(part, whole.narrow(0, r * share, share)));
    }
  }
  // Another draw, stream or seed gives other values; the values look standard normal.
  EXPECT_FALSE(torch::equal(whole, gantry::latent_rows(7, gantry::random::kLatent, 12, 0, 96, 100)));
  EXPECT_FALSE(torch::equal(whole, gantry::latent_rows(8, gantry::random::kLatent, 11, 0, 96, 100)));
  const torch::Tensor big = gantry::latent_rows(1, gantry::random::kLatent, 0, 0, 1000, 100);
  EXPECT_NEAR(big.mean().item<double>(), 0.0, 0.02);  // 5 standard errors of 1e5 samples
  EXPECT_NEAR(big.std().item<double>(), 1.0, 0.015);
}

TEST(Rng, BelowIsUnbiasedEnough) {
  gantry::random::Rng rng(123);
  std::vector<int> counts(6, 0);
  for (int i = 0; i < 60000; ++i) ++counts[rng.below(6)];
  for (int c : counts) EXPECT_NEAR(c, 10000, 500);  // about 5 standard deviations (91)
}
