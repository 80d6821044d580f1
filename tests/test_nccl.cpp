// Tests (run under mpirun; every case skips where this build has no NCCL or no GPU is visible):
// the NCCL communicator on CUDA tensors. Exact sums and averages per dtype, collectives ordered
// after the caller's stream, host tensors routed through the MPI bootstrap, broadcast, the
// bucketed reducer with overlap on and off and at one rank, what the watchdog is told of a
// collective that has not run on the GPU, ncclCommAbort, and more ranks than GPUs on a node
// as one clear error. scripts/gpu_check.sh runs it on a GPU machine.
#include <gtest/gtest.h>

#include <cstdio>
#include <memory>
#include <string>

#include "comm/communicator.h"
#include "comm/reducer.h"
#include "tests/mpi_test_main.h"
#include "tests/small_models.h"

using namespace gantry;
using comm::ReduceOp;

namespace {
comm::Runtime* g_runtime = nullptr;

// Whether this rank can hold an NCCL communicator: NCCL compiled, CUDA visible, and a GPU of
// its own (NCCL refuses two ranks on one device).
std::string why_not_runnable() {
  if (!comm::nccl_compiled()) return "built without NCCL";
  if (!torch::cuda::is_available()) return "no CUDA device";
  if (g_runtime->info().local_size > static_cast<int>(torch::cuda::device_count()))
    return "more ranks on this node than GPUs";
  return "";
}

#define GANTRY_NEEDS_NCCL()                                     \
  do {                                                          \
    const std::string why = why_not_runnable();                 \
    if (!why.empty()) GTEST_SKIP() << why;                      \
  } while (0)

std::unique_ptr<comm::Communicator> make() {
  return comm::make_nccl_communicator(*g_runtime, comm::make_mpi_communicator(*g_runtime));
}

torch::Device gpu() { return torch::Device(torch::kCUDA, g_runtime->info().local_rank % torch::cuda::device_count()); }

TEST(NcclCommunicator, AllReduceSumAndAverageAreExactPerDtype) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  EXPECT_EQ(comm->backend_name(), "nccl");
  const int n = comm->world_size(), r = comm->rank();
  // Integer-valued floats: every sum is exact in every dtype, and so is the average of 2^k ranks.
  for (auto type : {torch::kFloat32, torch::kFloat64, torch::kBFloat16, torch::kHalf, torch::kInt64, torch::kInt32}) {
    // Built in int64, then cast: an arange in bf16 itself would round past 256.
    torch::Tensor t = ((torch::arange(1000, torch::kInt64).remainder(7) + 1) * (r + 1)).to(gpu(), type);
    comm->all_reduce(t, ReduceOp::kSum);
    const torch::Tensor expected = (torch::arange(1000, torch::kFloat64).remainder(7) + 1) * (n * (n + 1) / 2);
    EXPECT_TRUE(torch::equal(t.cpu().to(torch::kFloat64), expected)) << c10::toString(type);
  }
  torch::Tensor a = torch::full({4096}, static_cast<double>(2 * (r + 1)), torch::TensorOptions(torch::kFloat64).device(gpu()));
  comm->all_reduce(a, ReduceOp::kAverage);
  EXPECT_TRUE(torch::equal(a.cpu(), torch::full({4096}, static_cast<double>(n + 1), torch::kFloat64)));
}

TEST(NcclCommunicator, MixedListsCoalescePerDtypeAndKeepTheirShapes) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  const auto on = [](torch::ScalarType t) { return torch::TensorOptions(t).device(gpu()); };
  std::vector<torch::Tensor> list{torch::full({3, 5}, r + 1.0, on(torch::kFloat32)),
                                  torch::full({7}, static_cast<double>(r), on(torch::kInt64)),
                                  torch::full({2, 2, 2}, 2.0 * r, on(torch::kFloat32))};
  comm->all_reduce(list, ReduceOp::kSum);
  EXPECT_EQ(list[0].sizes(), torch::IntArrayRef({3, 5}));
  EXPECT_EQ(list[2].sizes(), torch::IntArrayRef({2, 2, 2}));
  EXPECT_TRUE(torch::equal(list[0].cpu(), torch::full({3, 5}, n * (n + 1) / 2.0, torch::kFloat32)));
  EXPECT_TRUE(torch::equal(list[1].cpu(), torch::full({7}, static_cast<double>(n * (n - 1) / 2), torch::kInt64)));
  EXPECT_TRUE(torch::equal(list[2].cpu(), torch::full({2, 2, 2}, 1.0 * n * (n - 1), torch::kFloat32)));
}

// The value to reduce is written by the last of a queue of slow kernels on the caller's stream,
// and the collective is started before they finish: only the event ordering makes NCCL read the
// written value. Afterwards, a kernel queued on the caller's stream must see the reduced one.
TEST(NcclCommunicator, CollectivesAreOrderedAfterTheCallersStreamAndBeforeItsNextWork) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  torch::Tensor busy = torch::randn({4096, 4096}, torch::TensorOptions().device(gpu()));
  torch::Tensor t = torch::zeros({1 << 20}, torch::TensorOptions().device(gpu()));
  for (int round = 0; round < 5; ++round) {
    for (int i = 0; i < 20; ++i) busy = torch::mm(busy, busy).div_(busy.size(0));  // ~3 ms each
    t.fill_(static_cast<float>(r + 1 + round));
    auto work = comm->all_reduce_async(t, ReduceOp::kSum);
    work->wait();
    const torch::Tensor doubled = t * 2;  // queued on the caller's stream after wait()
    const double expected = n * (n + 1) / 2.0 + n * round;
    EXPECT_EQ(t.min().item<double>(), expected) << "round " << round;
    EXPECT_EQ(t.max().item<double>(), expected) << "round " << round;
    EXPECT_EQ(doubled.min().item<double>(), 2 * expected) << "round " << round;
  }
}

TEST(NcclCommunicator, HostTensorsTakeTheMpiBootstrapAndMixedListsAreRefused) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  torch::Tensor host = torch::full({10}, static_cast<double>(r + 1), torch::kFloat64);
  comm->all_reduce(host, ReduceOp::kSum);
  EXPECT_TRUE(torch::equal(host, torch::full({10}, n * (n + 1) / 2.0, torch::kFloat64)));
  torch::Tensor async_host = torch::full({10}, static_cast<float>(r), torch::kFloat32);
  comm->all_reduce_async(async_host, ReduceOp::kSum)->wait();
  EXPECT_EQ(async_host.max().item<double>(), n * (n - 1) / 2.0);

  std::vector<torch::Tensor> mixed{torch::zeros({2}), torch::zeros({2}, torch::TensorOptions().device(gpu()))};
  try {
    comm->all_reduce(mixed, ReduceOp::kSum);
    ADD_FAILURE() << "a list of host and CUDA tensors was accepted";
  } catch (const comm::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("mixing host and CUDA"), std::string::npos) << e.what();
  }
}

TEST(NcclCommunicator, BroadcastFromEveryRoot) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  const int r = comm->rank();
  for (int root = 0; root < comm->world_size(); ++root) {
    std::vector<torch::Tensor> list{torch::full({100}, static_cast<float>(r * 10 + 1), torch::TensorOptions().device(gpu())),
                                    torch::full({3}, static_cast<double>(r), torch::TensorOptions(torch::kFloat64).device(gpu()))};
    comm->broadcast(list, root);
    EXPECT_EQ(list[0].min().item<double>(), root * 10 + 1);
    EXPECT_EQ(list[0].max().item<double>(), root * 10 + 1);
    EXPECT_EQ(list[1].max().item<double>(), root);
  }
}

// DCGAN training on the GPU through the bucketed reducer: overlap on (buckets launched from
// autograd hooks on NCCL's stream) and off give the same parameters. Both modes sum the same
// buckets over the same ranks, so with NCCL's fixed ring order per size they agree bit for bit.
TEST(NcclCommunicator, ReducerOverlapOnAndOffGiveIdenticalParametersOnTheGpu) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  auto train = [&](bool overlap) { return gantry::testing::train_small_dcgan(*comm, overlap, gpu()); };
  at::globalContext().setDeterministicCuDNN(true);
  at::globalContext().setBenchmarkCuDNN(false);
  const auto on = train(true), off = train(false);
  ASSERT_EQ(on.size(), off.size());
  for (size_t i = 0; i < on.size(); ++i) {
    EXPECT_TRUE(torch::equal(on[i], off[i])) << "parameter " << i << ": max difference "
                                             << (on[i] - off[i]).abs().max().item<double>();
  }
}

// The bucketed reducer's GPU path at any rank count, one GPU included (reduce_single_rank): the
// post-hooks fire on autograd's CUDA thread, each bucket's all-reduce is ordered after the copies
// into it on NCCL's stream, and the averages come back exact in fp32 (integer-valued gradients)
// and within bf16's rounding on a bf16 wire. The test above compares identical code at one rank,
// where the reducer otherwise does nothing.
TEST(NcclCommunicator, ReducerBucketsOnTheGpuEvenAtOneRank) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  const int n = comm->world_size(), r = comm->rank();
  const std::vector<int64_t> sizes{1, 7, 1000, 33, 4096, 5, 300};
  auto coefficient = [&](size_t i, int rank) {
    return ((torch::arange(sizes[i], torch::kFloat32).remainder(17) + 1) * static_cast<float>((rank + 1) * (i + 2)))
        .to(gpu());
  };
  for (const bool overlap : {true, false})
    for (const auto wire : {torch::kFloat32, torch::kBFloat16}) {
      std::vector<torch::Tensor> params;
      for (int64_t size : sizes) params.push_back(torch::zeros({size}, torch::TensorOptions().device(gpu())).requires_grad_());
      comm::ReducerOptions o;
      o.bucket_bytes = 5000;
      o.first_bucket_bytes = 1250;
      o.overlap = overlap;
      o.wire_dtype = wire;
      o.reduce_single_rank = true;
      auto reducer = comm::make_reducer(*comm, params, o);
      ASSERT_GE(reducer->bucket_bytes().size(), overlap ? 3u : 1u);
      for (int update = 1; update <= 2; ++update) {
        for (auto& p : params) p.mutable_grad() = torch::Tensor();
        reducer->prepare();
        torch::Tensor loss = torch::zeros({}, torch::TensorOptions().device(gpu()));
        for (size_t i = 0; i < params.size(); ++i) loss = loss + (params[i] * coefficient(i, r)).sum();
        loss.backward();
        reducer->finish();
        for (size_t i = 0; i < params.size(); ++i) {
          torch::Tensor mean = torch::zeros({sizes[i]}, torch::TensorOptions().device(gpu()));
          for (int k = 0; k < n; ++k) mean += coefficient(i, k);
          mean /= n;
          const torch::Tensor& got = params[i].grad();
          ASSERT_TRUE(got.defined()) << "parameter " << i;
          if (wire == torch::kFloat32) {
            EXPECT_TRUE(torch::equal(got, mean)) << "parameter " << i << ", overlap " << overlap << ", update " << update;
          } else {  // each rank's value, the partial sums and the division rounded to bf16: a few ulps
            EXPECT_TRUE(torch::allclose(got, mean, 4.0 / 128, 1e-6))
                << "parameter " << i << ", overlap " << overlap << ", max error " << (got - mean).abs().max().item<double>();
          }
        }
      }
      EXPECT_GT(reducer->bytes_reduced(), 0);
    }
}

// What the watchdog's thread asks at every poll: a collective still queued behind a busy stream
// is named, with its size, once it is older than the timeout asked about; nothing is said
// before that, or after it has run.
TEST(NcclCommunicator, DeviceStallNamesACollectiveThatHasNotRunOnTheGpu) {
  GANTRY_NEEDS_NCCL();
  auto comm = make();
  torch::Tensor busy = torch::randn({4096, 4096}, torch::TensorOptions().device(gpu()));
  torch::Tensor t = torch::ones({1 << 20}, torch::TensorOptions().device(gpu()));
  EXPECT_EQ(comm->device_stall(std::chrono::seconds(0)), "");
  for (int i = 0; i < 100; ++i) busy = torch::mm(busy, busy).div_(busy.size(0));  // ~0.3 s on an H100
  auto work = comm->all_reduce_async(t, ReduceOp::kSum);
  const std::string stall = comm->device_stall(std::chrono::seconds(0));
  EXPECT_NE(stall.find("all_reduce of 1,048,576 Float elements"), std::string::npos) << stall;
  EXPECT_NE(stall.find("has not completed on GPU"), std::string::npos) << stall;
  EXPECT_EQ(comm->device_stall(std::chrono::seconds(60)), "") << "a collective younger than the timeout";
  work->wait();
  torch::cuda::synchronize();
  EXPECT_EQ(comm->device_stall(std::chrono::seconds(0)), "") << "a collective that has run";
  EXPECT_EQ(t.max().item<double>(), comm->world_size());
}

// What the watchdog does before MPI_Abort: ncclCommAbort returns, the communicator is then
// destroyed without waiting on its stream, and a fresh communicator works afterwards.
TEST(NcclCommunicator, AbortTearsDownTheCommunicatorWithoutHanging) {
  GANTRY_NEEDS_NCCL();
  {
    auto comm = make();
    torch::Tensor t = torch::ones({1 << 16}, torch::TensorOptions().device(gpu()));
    comm->all_reduce_async(t, ReduceOp::kSum)->wait();
    comm->abort();
    comm->abort();  // a second abort is a no-op
  }
  auto fresh = make();
  torch::Tensor t = torch::ones({8}, torch::TensorOptions().device(gpu()));
  fresh->all_reduce(t, ReduceOp::kSum);
  EXPECT_EQ(t.max().item<double>(), fresh->world_size());
}

// More ranks on a node than GPUs: NCCL would refuse two ranks on one device deep inside
// ncclCommInitRank; gantry says so first, naming the counts. Runs where ranks outnumber GPUs.
TEST(NcclCommunicator, MoreRanksThanGpusIsOneClearError) {
  if (!comm::nccl_compiled() || !torch::cuda::is_available()) GTEST_SKIP() << "needs NCCL and a GPU";
  const int local_size = g_runtime->info().local_size;
  if (local_size <= static_cast<int>(torch::cuda::device_count())) GTEST_SKIP() << "every rank has a GPU";
  try {
    make();
    ADD_FAILURE() << "an NCCL communicator was created with " << local_size << " ranks on "
                  << torch::cuda::device_count() << " GPU(s)";
  } catch (const comm::CommError& e) {
    EXPECT_NE(std::string(e.what()).find("GPU"), std::string::npos) << e.what();
    std::printf("as expected: %s\n", e.what());
  }
}

}  // namespace

int main(int argc, char** argv) { return gantry::testing::run_mpi_tests(argc, argv, g_runtime, "NCCL"); }
