// Tests (run under mpirun -np 1 and -np 2): the collective watchdog's two ways of seeing a stuck
// job, with the job's abort replaced by a callback that keeps the report. A collective that has
// been running on a device for comm.timeout_s (what the NCCL backend reports through
// Communicator::device_stall) and one that blocks its caller for that long both end the job
// once, after the timeout and not before, with the watched communicator torn down first and
// the other ranks' whereabouts in the report; one that completes in time is never reported.
// watchdog_e2e.sh covers the same through `gantry train` with the real MPI_Abort.
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <thread>

#include "comm/communicator.h"
#include "comm/watchdog.h"
#include "tests/mpi_test_main.h"

using namespace gantry;
using Clock = std::chrono::steady_clock;

namespace {
comm::Runtime* g_runtime = nullptr;

constexpr double kTimeout_s = 0.3;

// A communicator without traffic whose device work and blocking the test controls.
class FakeDevice final : public comm::Communicator {
 public:
  int rank() const override { return g_runtime->info().rank; }
  int world_size() const override { return g_runtime->info().world_size; }
  std::string backend_name() const override { return "fake-device"; }
  void all_reduce(std::vector<torch::Tensor>&, comm::ReduceOp) override {}
  std::shared_ptr<comm::Work> all_reduce_async(torch::Tensor, comm::ReduceOp) override { return nullptr; }
  void broadcast(std::vector<torch::Tensor>&, int) override {}
  std::vector<std::string> all_gather(const std::string& bytes) override { return {bytes}; }

  // Blocks its caller until release().
  void barrier() override {
    std::unique_lock<std::mutex> lock(mutex_);
    released_.wait(lock, [&] { return !holding_; });
  }
  void hold() { holding_ = true; }
  void release() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      holding_ = false;
    }
    released_.notify_all();
  }

  // A collective queued on the "device" now, which runs until complete().
  void queue() {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_at_ = Clock::now();
  }
  void complete() {
    std::lock_guard<std::mutex> lock(mutex_);
    queued_at_.reset();
  }
  std::string device_stall(std::chrono::duration<double> older_than) override {
    std::lock_guard<std::mutex> lock(mutex_);
    asked_ = older_than.count();
    if (!queued_at_ || Clock::now() - *queued_at_ < older_than) return {};
    return "fake collective 1 has not completed on the fake device";
  }
  void abort() override { aborted_ = true; }

  double asked() {
    std::lock_guard<std::mutex> lock(mutex_);
    return asked_;
  }
  bool aborted() const { return aborted_; }

 private:
  std::mutex mutex_;
  std::condition_variable released_;
  bool holding_ = false;
  std::optional<Clock::time_point> queued_at_;
  double asked_ = -1;
  std::atomic<bool> aborted_{false};
};

// Keeps the watchdog's report, when it came and whether `fake` had been torn down by then,
// instead of aborting the job.
struct Reports {
  std::mutex mutex;
  std::condition_variable arrived;
  std::vector<std::pair<std::string, Clock::time_point>> reports;
  std::atomic<FakeDevice*> fake{nullptr};
  std::atomic<bool> torn_down_first{false};

  comm::Watchdog::AbortJob callback() {
    return [this](const std::string& report) {
      torn_down_first = fake.load() && fake.load()->aborted();
      {
        std::lock_guard<std::mutex> lock(mutex);
        reports.emplace_back(report, Clock::now());
      }
      arrived.notify_all();
    };
  }
  bool wait_for_one(double seconds) {
    std::unique_lock<std::mutex> lock(mutex);
    return arrived.wait_for(lock, std::chrono::duration<double>(seconds), [&] { return !reports.empty(); });
  }
  size_t count() {
    std::lock_guard<std::mutex> lock(mutex);
    return reports.size();
  }
};

// A watchdog over a FakeDevice at `step`, its reports kept. Constructed on every rank (the
// watchdog's side channel is collective).
struct WatchedFake {
  Reports reports;
  comm::Watchdog dog;
  FakeDevice* fake;
  std::unique_ptr<comm::Communicator> comm;

  WatchedFake(double timeout_s, int64_t step) : dog(*g_runtime, timeout_s, reports.callback()) {
    auto owned = std::make_unique<FakeDevice>();
    fake = owned.get();
    reports.fake = fake;
    comm = comm::watch(std::move(owned), dog);
    dog.set_step(step);
  }
};

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Every rank waits here before the watchdogs go away, so that a rank's watchdog is still there
// to answer the reporting rank.
void all_ranks_done() { comm::make_mpi_communicator(*g_runtime)->barrier(); }

TEST(Watchdog, ACollectiveStalledOnTheDeviceEndsTheJobAfterTheTimeout) {
  const int rank = g_runtime->info().rank, last = g_runtime->info().world_size - 1;
  {
    WatchedFake w(kTimeout_s, 7);
    Reports& reports = w.reports;
    FakeDevice* fake = w.fake;
    // On the last rank, in a function of its own: a failed ASSERT returns from it, not from the
    // test, so every rank still reaches all_ranks_done().
    auto stall_and_check = [&] {
      const auto queued = Clock::now();
      fake->queue();
      ASSERT_TRUE(reports.wait_for_one(kTimeout_s + 3)) << "no report for a collective stalled on the device";
      const std::string report = reports.reports[0].first;
      const double after = std::chrono::duration<double>(reports.reports[0].second - queued).count();
      EXPECT_GE(after, kTimeout_s) << report;
      EXPECT_LT(after, kTimeout_s + 2) << report;
      EXPECT_EQ(fake->asked(), kTimeout_s);
      EXPECT_TRUE(reports.torn_down_first) << "the watched communicator was not torn down before the job";
      EXPECT_TRUE(contains(report, "gantry: rank " + std::to_string(rank) +
                                       ": watchdog: fake-device: fake collective 1 has not completed on the fake "
                                       "device (step 7; comm.timeout_s 0.3 s)"))
          << report;
      EXPECT_TRUE(contains(report, "; aborted 1 communicator(s) (fake-device) and now the job")) << report;
      EXPECT_TRUE(contains(report, "; this rank is at step 7, in no collective, last entered #0")) << report;
      for (int r = 0; r < last; ++r)
        EXPECT_TRUE(contains(report, g_runtime->info().thread_multiple
                                         ? "; rank " + std::to_string(r) + " is at step 7, in no collective, last entered #0"
                                         : "; the other ranks cannot be asked"))
            << report;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      EXPECT_EQ(reports.count(), 1u) << "the watchdog reported more than once";
    };
    if (rank == last) stall_and_check();
    all_ranks_done();
    if (rank != last) EXPECT_EQ(reports.count(), 0u) << reports.reports[0].first;
  }
}

TEST(Watchdog, ADeviceCollectiveThatCompletesInTimeIsNotReported) {
  // A longer timeout than the others', so that a loaded machine's scheduling cannot stretch a
  // 0.2 s collective past it.
  const double timeout_s = 1.5;
  {
    WatchedFake w(timeout_s, 0);
    Reports& reports = w.reports;
    FakeDevice* fake = w.fake;
    for (int i = 0; i < 3; ++i) {
      fake->queue();
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      fake->complete();
    }
    EXPECT_FALSE(reports.wait_for_one(timeout_s + 0.5)) << reports.reports[0].first;
    EXPECT_EQ(fake->asked(), timeout_s) << "the watchdog did not ask the communicator";
    EXPECT_FALSE(fake->aborted());
    all_ranks_done();
  }
}

TEST(Watchdog, ACollectiveThatBlocksItsCallerNamesTheRanksThatHaveNotArrived) {
  const int rank = g_runtime->info().rank, last = g_runtime->info().world_size - 1;
  {
    WatchedFake w(kTimeout_s, 3);
    Reports& reports = w.reports;
    FakeDevice* fake = w.fake;
    auto block_and_check = [&] {  // on the last rank; see the test above
      fake->hold();
      const auto entered = Clock::now();
      std::thread caller([&] { w.comm->barrier(); });
      const bool reported = reports.wait_for_one(kTimeout_s + 3);
      fake->release();
      caller.join();
      ASSERT_TRUE(reported) << "no report for a collective that blocked its caller";
      const std::string report = reports.reports[0].first;
      EXPECT_GE(std::chrono::duration<double>(reports.reports[0].second - entered).count(), kTimeout_s) << report;
      EXPECT_TRUE(contains(report, "gantry: rank " + std::to_string(rank) +
                                       ": watchdog: barrier (collective #1, step 3) has not completed in 0.3 s "
                                       "(comm.timeout_s)"))
          << report;
      for (int r = 0; r < last; ++r)
        EXPECT_TRUE(contains(report, g_runtime->info().thread_multiple
                                         ? "; rank " + std::to_string(r) +
                                               " has not arrived (at step 3, in no collective, last entered #0)"
                                         : "; the other ranks cannot be asked"))
            << report;
      EXPECT_TRUE(contains(report, "; aborted 1 communicator(s) (fake-device) and now the job")) << report;
      EXPECT_TRUE(reports.torn_down_first) << "the watched communicator was not torn down before the job";
    };
    if (rank == last) block_and_check();
    all_ranks_done();
  }
}

}  // namespace

int main(int argc, char** argv) { return gantry::testing::run_mpi_tests(argc, argv, g_runtime, "Watchdog"); }
