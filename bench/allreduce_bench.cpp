// Implements: an all-reduce benchmark in the style of nccl-tests' all_reduce_perf, over gantry's
// Communicator: for each size from --min to --max bytes (float32, doubling), the mean time of an
// in-place sum, algbw = bytes / time, busbw = algbw * 2 (n - 1) / n, and the number of wrong
// elements against the exact sum (the data are small integers, so every order of summation
// gives the same result). Blocking (the Communicator's all_reduce) and async (all_reduce_async
// on the progress thread, then wait) are both measured. --json FILE writes every row.
//   mpirun -np 2 build/bench/allreduce_bench [--min 4096] [--max 268435456] [--json out.json]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "comm/communicator.h"

using namespace gantry;
using Clock = std::chrono::steady_clock;

namespace {

struct Row {
  int64_t bytes;
  std::string mode;
  int iterations;
  double seconds;  // mean per all-reduce, the slowest rank's
  double algbw, busbw;
  int64_t wrong;
};

// Rank r's element i: small integers, so the sum over ranks is exact in float.
torch::Tensor rank_data(int64_t n, int rank) { return (torch::arange(n, torch::kInt64).remainder(13) + rank).to(torch::kFloat32); }

Row measure(comm::Communicator& comm, int64_t bytes, bool async) {
  const int n = comm.world_size(), r = comm.rank();
  const int64_t count = bytes / 4;
  torch::Tensor t = rank_data(count, r);
  auto reduce = [&] {
    if (async) comm.all_reduce_async(t, comm::ReduceOp::kSum)->wait();
    else comm.all_reduce(t, comm::ReduceOp::kSum);
  };
  // Correctness on a fresh copy, then timing (the values grow, which does not change the time).
  reduce();
  const torch::Tensor expected = torch::arange(count, torch::kInt64).remainder(13).to(torch::kFloat32) * n +
                                 static_cast<float>(n * (n - 1) / 2);
  torch::Tensor wrong = (t != expected).sum();
  comm.all_reduce(wrong, comm::ReduceOp::kSum);
  // Enough iterations for about 0.3 s, from 3 to 200, agreed on by every rank.
  const auto w0 = Clock::now();
  reduce();
  torch::Tensor estimate = torch::tensor({std::chrono::duration<double>(Clock::now() - w0).count()}, torch::kFloat64);
  comm.all_reduce(estimate, comm::ReduceOp::kAverage);
  const int iterations = static_cast<int>(std::clamp(0.3 / std::max(estimate.item<double>(), 1e-7), 3.0, 200.0));
  comm.barrier();
  const auto t0 = Clock::now();
  for (int i = 0; i < iterations; ++i) reduce();
  torch::Tensor elapsed =
      torch::tensor({std::chrono::duration<double>(Clock::now() - t0).count() / iterations}, torch::kFloat64);
  // The slowest rank's time: the collective is done when the last rank is.
  const auto all = comm.all_gather_value<double>(elapsed.item<double>());
  const double seconds = *std::max_element(all.begin(), all.end());
  const double algbw = static_cast<double>(bytes) / seconds / 1e9;
  return Row{bytes, async ? "async" : "blocking", iterations, seconds, algbw, algbw * 2.0 * (n - 1) / n,
             wrong.item<int64_t>()};
}

// How much of an async all-reduce hides behind work on the calling thread: the time of the
// all-reduce alone (c), of the work alone (m), and of both (launch, work, wait: b). Hidden
// fraction = (c + m - b) / min(c, m): 1 when fully overlapped, 0 when serialised. Two kinds of
// work: sleeping (the caller leaves the core, as a rank waiting on a GPU does), which shows
// whether the progress thread moves the collective without MPI calls from the caller; and a
// matmul loop on this rank's core, which shows what overlap can win when every core computes.
nlohmann::json measure_overlap(comm::Communicator& comm, int64_t bytes, bool sleep) {
  torch::Tensor t = rank_data(bytes / 4, comm.rank());
  const torch::Tensor a = torch::randn({256, 256}), b = torch::randn({256, 256});
  auto slowest = [&](double s) {
    const auto all = comm.all_gather_value<double>(s);
    return *std::max_element(all.begin(), all.end());
  };
  auto timed = [&](auto&& body) {
    comm.barrier();
    const auto t0 = Clock::now();
    for (int i = 0; i < 20; ++i) body();
    return slowest(std::chrono::duration<double>(Clock::now() - t0).count() / 20);
  };
  const double c = timed([&] { comm.all_reduce_async(t, comm::ReduceOp::kSum)->wait(); });
  for (int i = 0; i < 10; ++i) torch::mm(a, b);  // warm
  const auto m0 = Clock::now();
  for (int i = 0; i < 20; ++i) torch::mm(a, b);
  const double per_mm = slowest(std::chrono::duration<double>(Clock::now() - m0).count() / 20);
  const int mms = std::max(1, static_cast<int>(c / per_mm));
  auto work = [&] {
    if (sleep) std::this_thread::sleep_for(std::chrono::duration<double>(c));
    else
      for (int i = 0; i < mms; ++i) torch::mm(a, b);
  };
  const double m = timed(work);
  const double both = timed([&] {
    auto pending = comm.all_reduce_async(t, comm::ReduceOp::kSum);
    work();
    pending->wait();
  });
  return {{"bytes", bytes}, {"work", sleep ? "sleep" : "matmul"}, {"allreduce_us", c * 1e6}, {"work_us", m * 1e6},
          {"both_us", both * 1e6}, {"hidden_fraction", (c + m - both) / std::min(c, m)}};
}

}  // namespace

int main(int argc, char** argv) {
  comm::Runtime runtime(&argc, &argv);
  int64_t min_bytes = 4096, max_bytes = 256ll << 20;
  std::string json_path;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--min" && i + 1 < argc) min_bytes = std::stoll(argv[++i]);
    else if (a == "--max" && i + 1 < argc) max_bytes = std::stoll(argv[++i]);
    else if (a == "--json" && i + 1 < argc) json_path = argv[++i];
    else {
      std::fprintf(stderr, "usage: allreduce_bench [--min BYTES] [--max BYTES] [--json FILE]\n");
      return 2;
    }
  }
  torch::set_num_threads(1);
  auto comm = comm::make_mpi_communicator(runtime);
  const bool root = comm->rank() == 0;
  if (root) {
    std::printf("# gantry all_reduce (float32 sum, in place), %d ranks, backend %s\n", comm->world_size(),
                comm->backend_name().c_str());
    std::printf("%12s %9s %6s %12s %10s %10s %7s\n", "bytes", "mode", "iters", "time(us)", "algbw(GB/s)",
                "busbw(GB/s)", "wrong");
  }
  nlohmann::json rows = nlohmann::json::array();
  for (int64_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    for (bool async : {false, true}) {
      const Row row = measure(*comm, bytes, async);
      if (!root) continue;
      std::printf("%12lld %9s %6d %12.1f %10.3f %10.3f %7lld\n", static_cast<long long>(row.bytes), row.mode.c_str(),
                  row.iterations, row.seconds * 1e6, row.algbw, row.busbw, static_cast<long long>(row.wrong));
      std::fflush(stdout);
      rows.push_back({{"bytes", row.bytes}, {"mode", row.mode}, {"iterations", row.iterations},
                      {"time_us", row.seconds * 1e6}, {"algbw_gbps", row.algbw}, {"busbw_gbps", row.busbw},
                      {"wrong", row.wrong}});
    }
  }
  nlohmann::json overlap = nlohmann::json::array();
  for (bool sleep : {true, false}) {
    for (int64_t bytes : {int64_t{1} << 20, int64_t{4} << 20, int64_t{25} << 20}) {
      overlap.push_back(measure_overlap(*comm, bytes, sleep));
      const auto& o = overlap.back();
      if (root)
        std::printf("# overlap with %-6s %9lld bytes: all-reduce %6.0f us, work %6.0f us, both %6.0f us, hidden %.2f\n",
                    sleep ? "sleep," : "matmul", static_cast<long long>(bytes), o["allreduce_us"].get<double>(),
                    o["work_us"].get<double>(), o["both_us"].get<double>(), o["hidden_fraction"].get<double>());
    }
  }
  if (root && !json_path.empty())
    std::ofstream(json_path) << nlohmann::json{{"ranks", comm->world_size()}, {"backend", comm->backend_name()},
                                               {"rows", rows}, {"overlap", overlap}}.dump(2)
                             << "\n";
  return 0;
}
