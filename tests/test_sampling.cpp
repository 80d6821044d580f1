// Tests: the sharded sampler gives the same global batches at any world size, each rank its
// contiguous share, and the latent z of a global sample does not depend on the world size. The
// data stream's epochs, prefetching and resumed positions (also after a change of batch size).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
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

// ---- the data stream: prefetching, positions, worker errors, flips --------------------------

namespace {

using gantry::datasets::DataStream;
using gantry::datasets::StreamOptions;

// Record i is the single value i: batches show exactly which records they hold.
class IndexDataset : public gantry::datasets::Dataset {
 public:
  explicit IndexDataset(int64_t n, int64_t fail_at = -1) : n_(n), fail_at_(fail_at) {}
  std::string name() const override { return "index"; }
  int64_t size() const override { return n_; }
  gantry::datasets::RecordShape shape() const override { return {1, 1, 1}; }
  void read(const int64_t* idx, int64_t n, float* out) const override {
    for (int64_t i = 0; i < n; ++i) {
      if (idx[i] == fail_at_) throw gantry::datasets::DataError("data file fake.idx: record " + std::to_string(idx[i]) + " is unreadable");
      out[i] = static_cast<float>(idx[i]);
    }
  }

 private:
  int64_t n_, fail_at_;
};

std::vector<int64_t> values(const torch::Tensor& batch) {
  const torch::Tensor flat = batch.reshape({-1}).to(torch::kInt64);
  return {flat.data_ptr<int64_t>(), flat.data_ptr<int64_t>() + flat.numel()};
}

}  // namespace

TEST(DataStream, EveryRecordOnceAcrossRanksPerEpochAtWorldOneToFour) {
  constexpr int64_t kRecords = 1003, kBatch = 24;  // 41 full global batches; the last 19 records dropped
  auto data = std::make_shared<IndexDataset>(kRecords);
  for (int world = 1; world <= 4; ++world) {
    std::vector<std::unique_ptr<DataStream>> ranks;
    for (int r = 0; r < world; ++r)
      ranks.push_back(std::make_unique<DataStream>(data, kBatch, r, world, 5, StreamOptions{2, 3, false}));
    std::vector<int> seen(kRecords, 0);
    for (int64_t b = 0; b < ranks[0]->batches_per_epoch(); ++b)
      for (auto& s : ranks)
        for (int64_t v : values(s->next())) ++seen[v];
    int64_t once = 0;
    for (int c : seen) {
      ASSERT_LE(c, 1) << "world " << world;
      once += c;
    }
    EXPECT_EQ(once, (kRecords / kBatch) * kBatch) << "world " << world;  // the partial batch is dropped
    EXPECT_EQ(ranks[0]->position().epoch, 1);
    EXPECT_EQ(ranks[0]->position().batch, 0);
  }
}

TEST(DataStream, PrefetchedBatchesEqualSynchronousOnes) {
  auto data = std::make_shared<IndexDataset>(500);
  DataStream sync(data, 32, 1, 2, 9, StreamOptions{1, 0, false});
  DataStream ahead(data, 32, 1, 2, 9, StreamOptions{3, 4, false});
  for (int i = 0; i < 40; ++i) ASSERT_EQ(values(sync.next()), values(ahead.next())) << "batch " << i;  // 2.6 epochs
  EXPECT_GE(ahead.take_wait_seconds(), 0.0);
  EXPECT_EQ(ahead.take_wait_seconds(), 0.0);  // reset by the read
}

// A conditional G's labels in its updates: row j of a draw is the same whichever rank makes it;
// each is the label of a record drawn uniformly, so labels come at the data's frequencies (within
// 4 standard deviations over 8,000 draws); a grid's rows run through the classes.
TEST(Latent, ConditionalLabelsAreKeyedPerGlobalSampleAndFollowTheData) {
  const std::vector<int64_t> labels = {0, 3, 3, 1, 3, 0, 3, 3};  // label 1: 1 record of 8; label 3: 5 of 8
  const torch::Tensor all = gantry::label_rows(5, gantry::random::kFakeLabel, 2, 0, 8000, labels);
  EXPECT_TRUE(torch::equal(gantry::label_rows(5, gantry::random::kFakeLabel, 2, 3000, 1000, labels),
                           all.slice(0, 3000, 4000)));
  EXPECT_FALSE(torch::equal(gantry::label_rows(5, gantry::random::kFakeLabel, 3, 0, 8000, labels), all));
  const double ones = all.eq(1).to(torch::kFloat64).mean().item<double>();
  const double threes = all.eq(3).to(torch::kFloat64).mean().item<double>();
  EXPECT_NEAR(ones, 1.0 / 8, 4 * std::sqrt(1.0 / 8 * 7 / 8 / 8000));
  EXPECT_NEAR(threes, 5.0 / 8, 4 * std::sqrt(5.0 / 8 * 3 / 8 / 8000));
  EXPECT_EQ(all.eq(2).sum().item<int64_t>(), 0);  // no record has it
  EXPECT_TRUE(torch::equal(gantry::grid_labels(3, 2, 2), torch::tensor({0, 0, 1, 1, 0, 0}, torch::kInt64)));
}

// options.labels (a conditional GAN's): labels() is the label of each record of the batch next()
// returned, in its order, with prefetching or without, across epochs and after set_position; a
// label list that does not match the records is refused.
TEST(DataStream, LabelsFollowEachBatchsRecords) {
  auto data = std::make_shared<IndexDataset>(500);
  auto labels = std::make_shared<std::vector<int64_t>>();
  for (int64_t i = 0; i < 500; ++i) labels->push_back((i * 7) % 10);
  for (const int prefetch : {0, 3}) {
    StreamOptions options{2, prefetch, false};
    options.labels = labels;
    DataStream stream(data, 32, 1, 2, 9, options);
    EXPECT_FALSE(stream.labels().defined());
    for (int b = 0; b < 40; ++b) {  // 2.6 epochs
      const std::vector<int64_t> records = values(stream.next());
      const torch::Tensor y = stream.labels();
      ASSERT_EQ(y.numel(), static_cast<int64_t>(records.size()));
      for (size_t i = 0; i < records.size(); ++i)
        ASSERT_EQ(y[static_cast<int64_t>(i)].item<int64_t>(), (*labels)[records[i]]) << "batch " << b << " row " << i;
    }
    // Restored mid-epoch while batches are prefetched: the labels follow the new position's records.
    stream.set_position({1, 4});
    for (int b = 0; b < 12; ++b) {
      const std::vector<int64_t> records = values(stream.next());
      for (size_t i = 0; i < records.size(); ++i)
        ASSERT_EQ(stream.labels()[static_cast<int64_t>(i)].item<int64_t>(), (*labels)[records[i]])
            << "after set_position, batch " << b << " row " << i;
    }
  }
  DataStream unlabelled(data, 32, 0, 1, 9, StreamOptions{1, 0, false});
  unlabelled.next();
  EXPECT_FALSE(unlabelled.labels().defined());
  StreamOptions wrong{1, 0, false};
  wrong.labels = std::make_shared<std::vector<int64_t>>(499, 0);
  EXPECT_THROW(DataStream(data, 32, 0, 1, 9, wrong), gantry::datasets::DataError);
}

TEST(DataStream, RestoringAMidEpochPositionContinuesTheSameSequence) {
  auto data = std::make_shared<IndexDataset>(300);
  DataStream a(data, 30, 0, 3, 4, StreamOptions{2, 2, false});
  for (int i = 0; i < 13; ++i) a.next();  // epoch 1, batch 3 (10 batches an epoch)
  const auto pos = a.position();
  EXPECT_EQ(pos.epoch, 1);
  EXPECT_EQ(pos.batch, 3);
  std::vector<std::vector<int64_t>> expected;
  for (int i = 0; i < 12; ++i) expected.push_back(values(a.next()));
  DataStream b(data, 30, 0, 3, 4, StreamOptions{1, 3, false});
  b.next();  // something already prefetched is dropped by set_position
  b.set_position(pos);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(values(b.next()), expected[i]) << i;
}

// A run resumed with another train.batch_size: the saved batch index counts batches of the saved
// size. The new stream continues in the same epoch after every sample already handed out (fewer
// than one batch skipped), or in the next epoch when none is left; out-of-range positions are an
// error, not a read past the epoch's permutation.
TEST(DataStream, ResumingWithAnotherBatchSizeTakesNoSampleTwice) {
  auto data = std::make_shared<IndexDataset>(100);
  DataStream small(data, 10, 0, 1, 4, StreamOptions{1, 0, false});  // 10 batches an epoch
  for (int i = 0; i < 17; ++i) small.next();                         // epoch 1, batch 7
  ASSERT_EQ(small.position().batch, 7);
  std::set<int64_t> handed_out;
  {
    DataStream replay(data, 10, 0, 1, 4, StreamOptions{1, 0, false});
    replay.set_position({1, 0});
    for (int i = 0; i < 7; ++i)
      for (int64_t v : values(replay.next())) handed_out.insert(v);
  }
  DataStream big(data, 20, 0, 1, 4, StreamOptions{1, 0, false});  // 5 batches an epoch
  big.resume_position(small.position(), 10);                      // 70 handed out: batch 4 (80-99)
  EXPECT_EQ(big.position().epoch, 1);
  EXPECT_EQ(big.position().batch, 4);
  for (int64_t v : values(big.next())) EXPECT_EQ(handed_out.count(v), 0u) << "record " << v << " again";
  EXPECT_EQ(big.position().epoch, 2);
  big.resume_position({1, 9}, 10);  // 90 handed out: no batch of 20 left in epoch 1
  EXPECT_EQ(big.position().epoch, 2);
  EXPECT_EQ(big.position().batch, 0);
  big.resume_position({3, 2}, 20);  // the same size: the same position
  EXPECT_EQ(big.position().batch, 2);
  DataStream shrunk(data, 5, 0, 1, 4, StreamOptions{1, 0, false});
  shrunk.resume_position({0, 4}, 20);  // 80 handed out: batch 16 of 20
  EXPECT_EQ(shrunk.position().batch, 16);
  EXPECT_THROW(big.set_position({1, 5}), std::out_of_range);  // batch 5 of 5 batches
  EXPECT_THROW(big.set_position({1, -1}), std::out_of_range);
}

TEST(DataStream, AWorkerErrorReachesTheTrainingThreadWithItsMessage) {
  auto data = std::make_shared<IndexDataset>(100, /*fail_at=*/37);
  DataStream s(data, 10, 0, 1, 1, StreamOptions{2, 3, false});
  try {
    for (int i = 0; i < 10; ++i) s.next();
    FAIL() << "record 37 was never read";
  } catch (const gantry::datasets::DataError& e) {
    EXPECT_NE(std::string(e.what()).find("fake.idx: record 37 is unreadable"), std::string::npos);
  }
  // Destroying the stream with work in flight joins cleanly (the test would hang otherwise).
}

TEST(DataStream, HflipMirrorsAboutHalfTheImagesDeterministically) {
  class Ramp : public gantry::datasets::Dataset {  // every image is 0, 1, 2, 3 along its width
   public:
    std::string name() const override { return "ramp"; }
    int64_t size() const override { return 400; }
    gantry::datasets::RecordShape shape() const override { return {1, 2, 4}; }
    void read(const int64_t*, int64_t n, float* out) const override {
      for (int64_t i = 0; i < n * 8; ++i) out[i] = static_cast<float>(i % 4);
    }
  };
  auto data = std::make_shared<Ramp>();
  DataStream a(data, 400, 0, 1, 3, StreamOptions{1, 0, true}), b(data, 400, 0, 1, 3, StreamOptions{2, 2, true});
  const torch::Tensor x = a.next();
  EXPECT_TRUE(torch::equal(x, b.next()));  // the flips are a function of (seed, epoch, record)
  const torch::Tensor ramp = torch::arange(4, torch::kFloat32).expand({2, 4});
  int64_t flipped = 0;
  for (int64_t i = 0; i < 400; ++i) {
    const bool plain = torch::equal(x[i][0], ramp), mirrored = torch::equal(x[i][0], ramp.flip({1}));
    ASSERT_TRUE(plain || mirrored) << i;
    flipped += mirrored;
  }
  EXPECT_NEAR(flipped, 200, 50);  // 5 standard deviations of Binomial(400, 1/2)
  EXPECT_FALSE(torch::equal(x, a.next()));  // epoch 1 flips other images
}
