// Tests (run under mpirun -np 1 to 4): the bucketed gradient reducer. Exact averages for many
// bucket sizes, uneven tensors and an unused parameter; buckets launched during backward, not
// after; 16-bit transport; mismatched parameter lists as a clear error; WGAN-GP's double backward
// reduced once per update; overlap on and off giving bit-identical training; the bucket path at
// one rank when asked (as test_nccl uses it on one GPU).
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>

#include "comm/communicator.h"
#include "tests/mpi_test_main.h"
#include "comm/reducer.h"
#include "tests/small_models.h"
#include "trainer/gan_step.h"
#include "trainer/latent.h"

using namespace gantry;
using comm::ReduceOp;

namespace {
comm::Runtime* g_runtime = nullptr;

// Forwards to the MPI communicator and counts the async all-reduces started through it.
class CountingCommunicator final : public comm::Communicator {
 public:
  CountingCommunicator() : inner_(comm::make_mpi_communicator(*g_runtime)) {}
  using Communicator::all_reduce;
  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string backend_name() const override { return inner_->backend_name(); }
  void all_reduce(std::vector<torch::Tensor>& tensors, ReduceOp op) override {
    reduced += static_cast<int>(tensors.size());
    inner_->all_reduce(tensors, op);
  }
  std::shared_ptr<comm::Work> all_reduce_async(torch::Tensor tensor, ReduceOp op) override {
    ++launched;
    ++reduced;
    return inner_->all_reduce_async(std::move(tensor), op);
  }
  void broadcast(std::vector<torch::Tensor>& tensors, int root) override { inner_->broadcast(tensors, root); }
  void barrier() override { inner_->barrier(); }
  std::vector<std::string> all_gather(const std::string& bytes) override { return inner_->all_gather(bytes); }

  int launched = 0;  // async all-reduces
  int reduced = 0;   // tensors all-reduced, async or blocking

 private:
  std::unique_ptr<comm::Communicator> inner_;
};

// Uneven sizes, in registration order; the gradient of parameter i on rank r is
// coefficient(i, r), integer-valued, so every sum is exact and the average is a single division.
const std::vector<int64_t> kSizes{1, 7, 1000, 33, 4096, 5, 300};
torch::Tensor coefficient(size_t i, int rank, int64_t size) {
  return (torch::arange(size, torch::kFloat32).remainder(17) + 1) * static_cast<float>((rank + 1) * (i + 2));
}

struct Params {
  std::vector<torch::Tensor> used;
  torch::Tensor unused;
  std::vector<torch::Tensor> all() const {
    std::vector<torch::Tensor> a = used;
    a.insert(a.begin() + 2, unused);  // in the middle, so that its bucket has used neighbours
    return a;
  }
};

Params make_params() {
  Params p;
  for (int64_t size : kSizes) p.used.push_back(torch::zeros({size}, torch::requires_grad()));
  p.unused = torch::zeros({11}, torch::requires_grad());
  return p;
}

torch::Tensor loss_of(const Params& p, int rank) {
  torch::Tensor loss = torch::zeros({});
  for (size_t i = 0; i < p.used.size(); ++i) loss = loss + (p.used[i] * coefficient(i, rank, kSizes[i])).sum();
  return loss;
}

comm::ReducerOptions options(int64_t bucket_bytes, bool overlap) {
  comm::ReducerOptions o;
  o.bucket_bytes = bucket_bytes;
  o.first_bucket_bytes = std::max<int64_t>(1, bucket_bytes / 4);
  o.overlap = overlap;
  return o;
}

class BucketSizes : public ::testing::TestWithParam<std::tuple<int64_t, bool>> {};

TEST_P(BucketSizes, AveragesExactlyAndZeroFillsUnusedParameters) {
  const auto [bucket_bytes, overlap] = GetParam();
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const int n = comm->world_size(), r = comm->rank();
  Params p = make_params();
  auto reducer = comm::make_reducer(*comm, p.all(), options(bucket_bytes, overlap));
  for (int update = 0; update < 2; ++update) {  // a second update reuses the buckets
    for (auto& t : p.all()) t.mutable_grad() = torch::Tensor();
    reducer->prepare();
    loss_of(p, r).backward();
    reducer->finish();
    for (size_t i = 0; i < p.used.size(); ++i) {
      torch::Tensor sum = torch::zeros({kSizes[i]});
      for (int k = 0; k < n; ++k) sum += coefficient(i, k, kSizes[i]);
      EXPECT_TRUE(torch::equal(p.used[i].grad(), sum / n)) << "parameter " << i << ", update " << update;
    }
    ASSERT_TRUE(p.unused.grad().defined());
    EXPECT_TRUE(torch::equal(p.unused.grad(), torch::zeros({11})));
  }
  int64_t total = 0;
  for (int64_t b : reducer->bucket_bytes()) total += b;
  if (n == 1) {
    EXPECT_EQ(reducer->bytes_reduced(), 0);  // nothing to average
    return;
  }
  int64_t elements = 11;
  for (int64_t s : kSizes) elements += s;
  EXPECT_EQ(total, 4 * elements);
  EXPECT_EQ(reducer->bytes_reduced(), 2 * total);
  if (bucket_bytes == 20000 && overlap) {
    // Packed from the last parameter back (300, 5, 4096, 33, 1000, the unused 11, 7, 1 elements):
    // the first bucket within first_bucket_bytes (5000), the others within 20000. Ignoring the
    // first cap would give {17736, 4076}; applying it to every bucket {1220, 16384, 4208}.
    EXPECT_EQ(reducer->bucket_bytes(), (std::vector<int64_t>{1220, 16516, 4076}));
  }
  if (!overlap) EXPECT_EQ(reducer->bucket_bytes().size(), 1u);
  for (size_t b = 0; overlap && b < reducer->bucket_bytes().size(); ++b) {  // within its cap, or one tensor
    const int64_t bytes = reducer->bucket_bytes()[b];
    const int64_t cap = b == 0 ? std::max<int64_t>(1, bucket_bytes / 4) : bucket_bytes;  // options()' first cap
    const bool one_tensor = bytes == 4 * 11 ||  // the unused parameter, or a used one
                            std::count_if(kSizes.begin(), kSizes.end(), [&](int64_t s) { return 4 * s == bytes; });
    EXPECT_TRUE(bytes <= cap || one_tensor) << "bucket " << b << ": " << bytes << " bytes";
  }
}

INSTANTIATE_TEST_SUITE_P(Reducer, BucketSizes,
                         ::testing::Combine(::testing::Values(4, 64, 1000, 5000, 20000, 25 << 20),
                                            ::testing::Bool()));

TEST(Reducer, LaunchesBucketsDuringBackward) {
  CountingCommunicator comm;
  if (comm.world_size() == 1) GTEST_SKIP() << "one rank reduces nothing";
  Params p = make_params();
  std::vector<torch::Tensor> used = p.used;  // every parameter gets a gradient, so every bucket fills
  auto reducer = comm::make_reducer(comm, used, options(5000, true));
  const int buckets = static_cast<int>(reducer->bucket_bytes().size());
  ASSERT_GE(buckets, 3);
  reducer->prepare();
  loss_of(p, comm.rank()).backward();
  // Before finish(): every bucket but the last is on its way (the last is reduced in finish()).
  EXPECT_EQ(comm.launched, buckets - 1);
  reducer->finish();
  EXPECT_EQ(comm.launched, buckets - 1);
  EXPECT_EQ(comm.reduced, buckets);  // each exactly once

  CountingCommunicator inline_comm;
  auto after = comm::make_reducer(inline_comm, used, options(5000, false));
  after->prepare();
  loss_of(p, comm.rank()).backward();
  EXPECT_EQ(inline_comm.reduced, 0);  // overlap off: nothing until finish()
  after->finish();
  EXPECT_EQ(inline_comm.reduced, 1);
  EXPECT_EQ(inline_comm.launched, 0);
}

// ReducerOptions::reduce_single_rank: the whole bucket path even where one rank has nothing to
// average (test_nccl runs the same on a GPU). The averages stay exact, every bucket is reduced
// once per update, and with overlap all but the last are launched during backward.
TEST(Reducer, BucketsEvenAtOneRankWhenAsked) {
  for (const bool overlap : {true, false}) {
    CountingCommunicator comm;
    const int n = comm.world_size(), r = comm.rank();
    Params p = make_params();
    comm::ReducerOptions o = options(5000, overlap);
    o.reduce_single_rank = true;
    auto reducer = comm::make_reducer(comm, p.all(), o);
    const int buckets = static_cast<int>(reducer->bucket_bytes().size());
    ASSERT_GE(buckets, overlap ? 3 : 1);
    int64_t total = 0;
    for (int64_t b : reducer->bucket_bytes()) total += b;
    for (int update = 1; update <= 2; ++update) {
      for (auto& t : p.all()) t.mutable_grad() = torch::Tensor();
      const int launched = comm.launched, reduced = comm.reduced;
      reducer->prepare();
      loss_of(p, r).backward();
      EXPECT_EQ(comm.launched - launched, overlap ? buckets - 1 : 0) << "during backward, update " << update;
      reducer->finish();
      EXPECT_EQ(comm.reduced - reduced, buckets) << "update " << update;
      for (size_t i = 0; i < p.used.size(); ++i) {
        torch::Tensor sum = torch::zeros({kSizes[i]});
        for (int k = 0; k < n; ++k) sum += coefficient(i, k, kSizes[i]);
        EXPECT_TRUE(torch::equal(p.used[i].grad(), sum / n)) << "parameter " << i << ", update " << update;
      }
      EXPECT_TRUE(torch::equal(p.unused.grad(), torch::zeros({11})));
    }
    EXPECT_EQ(reducer->bytes_reduced(), 2 * total) << "overlap " << overlap;
  }
}

TEST(Reducer, SixteenBitTransportIsWithinItsRounding) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  const int n = comm->world_size(), r = comm->rank();
  for (auto [dtype, eps] : {std::pair{torch::kBFloat16, 1.0 / 128}, std::pair{torch::kHalf, 1.0 / 1024}}) {
    torch::Tensor w = torch::zeros({1000}, torch::requires_grad());
    comm::ReducerOptions o = options(1024, true);
    o.wire_dtype = dtype;
    auto reducer = comm::make_reducer(*comm, {w}, o);
    // Rank r sends (1 + r) g: the mean is (n + 1) / 2 g, a third or more away from any one rank's.
    const torch::Tensor g = torch::linspace(-3, 3, 1000) * (1 + r);
    reducer->prepare();
    (w * g).sum().backward();
    reducer->finish();
    const torch::Tensor exact = torch::linspace(-3, 3, 1000) * ((n + 1) / 2.0);
    EXPECT_EQ(w.grad().scalar_type(), torch::kFloat32);
    // Rounding of each rank's value, of each partial sum and of the division: a few ulps.
    const double error = (w.grad() - exact).abs().max().item<double>();
    EXPECT_TRUE(torch::allclose(w.grad(), exact, 4 * eps, 1e-6)) << dtype << " max error " << error;
    if (n == 1) continue;  // nothing travels
    EXPECT_EQ(reducer->bucket_bytes(), std::vector<int64_t>{2000});  // 1000 elements of 2 bytes on the wire
    EXPECT_EQ(reducer->bytes_reduced(), 2000);
    EXPECT_GT(error, 0) << dtype << ": exact, so the gradients did not travel in 16 bits";
  }
}

TEST(Reducer, MismatchedParameterListsAreAClearErrorNotAHang) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  if (comm->world_size() == 1) GTEST_SKIP() << "needs two ranks to disagree";
  std::vector<torch::Tensor> params{torch::zeros({10}, torch::requires_grad())};
  if (comm->rank() == 1) params.push_back(torch::zeros({3}, torch::requires_grad()));
  try {
    comm::make_reducer(*comm, params, comm::ReducerOptions{});
    FAIL() << "mismatched parameter lists were accepted";
  } catch (const comm::CommError& e) {  // on every rank, naming the rank that differs
    EXPECT_NE(std::string(e.what()).find("rank 1 has 2 tensors (13 elements)"), std::string::npos) << e.what();
  }
}


TEST(Reducer, WganGpDoubleBackwardIsReducedOncePerUpdate) {
  CountingCommunicator comm;
  if (comm.world_size() == 1) GTEST_SKIP() << "one rank reduces nothing";
  Config c = gantry::testing::small_dcgan_config("wgan-gp");
  c.comm.overlap = "true";
  c.comm.bucket_mb = 1e-9;  // every parameter a bucket of its own: one launch per parameter
  c.comm.first_bucket_mb = 1e-9;
  GanStep step(make_models(c, {1, 28, 28}), c, comm);
  const int64_t d_params = static_cast<int64_t>(step.models().d->parameters().size());
  const int64_t g_params = static_cast<int64_t>(step.models().g->parameters().size());
  const torch::Tensor real = torch::rand({4, 1, 28, 28}) * 2 - 1;
  const torch::Tensor z = latent_rows(1, random::kLatent, 0, 0, 4, 8);
  const torch::Tensor mix = uniform_rows(1, random::kPenaltyMix, 0, 0, 4);
  // Every gradient all-reduced exactly once per update (the counter also sees the communicator's
  // other all-reduces: none inside an update here, since the DCGAN's buffers sync separately).
  for (int update = 1; update <= 2; ++update) {
    const int before = comm.reduced;
    step.d_update(real, z, mix);
    EXPECT_EQ(comm.reduced - before, d_params) << "update " << update;
    step.g_update(z);
    EXPECT_EQ(comm.reduced - before, d_params + g_params) << "update " << update;
  }
}

// Ten steps of a small DCGAN with small buckets, overlap on and off, from the same initial models
// and data: the parameters come out bit-identical (at two ranks; see below for more).
TEST(Reducer, OverlapOnAndOffGiveBitIdenticalParameters) {
  auto comm = comm::make_mpi_communicator(*g_runtime);
  auto train = [&](bool overlap) { return gantry::testing::train_small_dcgan(*comm, overlap, torch::kCPU); };
  const auto on = train(true), off = train(false);
  ASSERT_EQ(on.size(), off.size());
  // Two ranks' sum a + b does not depend on how the gradients were bucketed. From three ranks on,
  // OpenMPI picks its all-reduce algorithm by message size, and with it the order of the sum, so
  // the two modes agree to rounding only: after 10 Adam steps of at most lr = 2e-4 each, well
  // within 1e-5 (1/200 of the distance a parameter can move).
  for (size_t i = 0; i < on.size(); ++i) {
    if (comm->world_size() <= 2) EXPECT_TRUE(torch::equal(on[i], off[i])) << "parameter " << i;
    else EXPECT_LT((on[i] - off[i]).abs().max().item<double>(), 1e-5) << "parameter " << i;
  }
}

}  // namespace

int main(int argc, char** argv) {
  return gantry::testing::run_mpi_tests(argc, argv, g_runtime, "reducer", [] { torch::set_num_threads(1); });
}
