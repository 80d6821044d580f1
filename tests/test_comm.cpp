// Tests (run under mpirun -np 1 to 4): the MPI communicator's collectives, blocking and async,
// with exact expected values (the reducers are in test_reducer.cpp).
#include <gtest/gtest.h>

#include <memory>

#include "comm/communicator.h"
#include "tests/mpi_test_main.h"
#include "comm/reducer.h"

using namespace gantry::comm;

namespace {
Runtime* g_runtime = nullptr;

std::unique_ptr<Communicator> make() { return make_mpi_communicator(*g_runtime); }
}  // namespace

TEST(MpiCommunicator, RanksAndLocalRanks) {
  auto comm = make();
  const auto& info = g_runtime->info();
  EXPECT_EQ(comm->rank(), info.rank);
  EXPECT_EQ(comm->world_size(), info.world_size);
  // Everything runs on one node here, so local ranks are the ranks.
  EXPECT_EQ(info.local_rank, info.rank);
  EXPECT_EQ(info.local_size, info.world_size);
  EXPECT_EQ(comm->backend_name(), "mpi");
}

TEST(MpiCommunicator, AllReduceSumAndAverageAreExact) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  torch::Tensor t = torch::full({1000}, static_cast<float>(r));
  comm->all_reduce(t, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(t, torch::full({1000}, n * (n - 1) / 2.0f)));

  torch::Tensor a = torch::arange(10, torch::kFloat64) * (r + 1);
  comm->all_reduce(a, ReduceOp::kAverage);
  // mean over ranks of (r + 1) * i = i * (n + 1) / 2
  EXPECT_TRUE(torch::allclose(a, torch::arange(10, torch::kFloat64) * ((n + 1) / 2.0), 0, 1e-12));
}

TEST(MpiCommunicator, AllReduceOfAMixedListCoalescesPerDtype) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  std::vector<torch::Tensor> list{torch::full({3, 4}, r + 1.0f), torch::full({7}, int64_t{r}),
                                  torch::full({2, 2, 2}, 2.0f * r), torch::full({5}, 0.5 * r, torch::kFloat64)};
  comm->all_reduce(list, ReduceOp::kSum);
  const double ranks = n * (n - 1) / 2.0;
  EXPECT_TRUE(torch::equal(list[0], torch::full({3, 4}, static_cast<float>(ranks + n))));
  EXPECT_TRUE(torch::equal(list[1], torch::full({7}, static_cast<int64_t>(ranks))));
  EXPECT_TRUE(torch::equal(list[2], torch::full({2, 2, 2}, static_cast<float>(2 * ranks))));
  EXPECT_TRUE(torch::equal(list[3], torch::full({5}, 0.5 * ranks, torch::kFloat64)));
  EXPECT_EQ(list[0].sizes(), (std::vector<int64_t>{3, 4}));  // shapes survive the flat buffer
}

TEST(MpiCommunicator, AsyncAllReducesCompleteInOrderAndExactly) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  // Several in flight at once, of uneven sizes, started before any is waited on.
  std::vector<torch::Tensor> tensors;
  std::vector<std::shared_ptr<Work>> works;
  for (int64_t size : {1, 1000, 4097, 65536, 3}) {
    tensors.push_back(torch::arange(size, torch::kFloat32) * static_cast<float>(r + 1));
    works.push_back(comm->all_reduce_async(tensors.back(), size % 2 ? ReduceOp::kSum : ReduceOp::kAverage));
  }
  // Meanwhile the blocking communicator still works: async traffic has a communicator of its own.
  torch::Tensor blocking = torch::ones({8});
  comm->all_reduce(blocking, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(blocking, torch::full({8}, static_cast<float>(n))));
  for (auto& w : works) w->wait();
  const float sum_of_factors = n * (n + 1) / 2.0f;  // sum over ranks of (r + 1)
  for (const auto& t : tensors) {
    const bool sum = t.numel() % 2;
    const torch::Tensor expected = torch::arange(t.numel(), torch::kFloat32) * (sum ? sum_of_factors : sum_of_factors / n);
    EXPECT_TRUE(torch::equal(t, expected)) << t.numel();
  }
}

TEST(MpiCommunicator, SixteenBitSumsAreAccumulatedPerElement) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    // Small integers are exact in both formats, so the sums are too.
    torch::Tensor t = torch::arange(64, torch::TensorOptions().dtype(dtype)) + r;
    comm->all_reduce_async(t, ReduceOp::kSum)->wait();
    const torch::Tensor expected = torch::arange(64, torch::kFloat32) * n + n * (n - 1) / 2.0f;
    EXPECT_TRUE(torch::equal(t.to(torch::kFloat32), expected)) << dtype;
  }
}

TEST(MpiCommunicator, BroadcastFromAnyRoot) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  for (int root = 0; root < n; ++root) {
    std::vector<torch::Tensor> list{torch::full({4}, static_cast<float>(r)), torch::full({2}, int64_t{10 * r})};
    comm->broadcast(list, root);
    EXPECT_TRUE(torch::equal(list[0], torch::full({4}, static_cast<float>(root))));
    EXPECT_TRUE(torch::equal(list[1], torch::full({2}, int64_t{10 * root})));
  }
}

TEST(MpiCommunicator, AllGatherOfValuesAndStrings) {
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  const auto values = comm->all_gather_value<uint64_t>(1000 + r);
  ASSERT_EQ(static_cast<int>(values.size()), n);
  for (int i = 0; i < n; ++i) EXPECT_EQ(values[i], 1000u + i);
  const auto strings = comm->all_gather(std::string(r, 'x'));  // rank 0 sends nothing
  for (int i = 0; i < n; ++i) EXPECT_EQ(strings[i], std::string(i, 'x'));
  comm->barrier();
}

TEST(MpiCommunicator, StridedTensorsAreRefusedWithAClearError) {
  auto comm = make();
  torch::Tensor strided = torch::zeros({4, 4}).select(1, 0);
  try {
    comm->all_reduce(strided, ReduceOp::kSum);
    FAIL() << "a strided tensor was accepted";
  } catch (const CommError& e) {
    EXPECT_NE(std::string(e.what()).find("contiguous"), std::string::npos);
  }
}

int main(int argc, char** argv) { return gantry::testing::run_mpi_tests(argc, argv, g_runtime, "comm"); }
