// Implements: the collective watchdog (see watchdog.h). The side channel is a private duplicate
// of the world: every watchdog thread keeps a receive posted for status requests and answers
// each with its rank's step, the number of collectives it has entered and the one it is blocked
// in, if any. A rank whose collective times out asks every other rank, waits a few seconds for
// the answers, names the ranks that have not arrived, and aborts the job.
#include "comm/watchdog.h"

#include <mpi.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace gantry::comm {
namespace {

constexpr int kRequestTag = 1, kReplyTag = 2;
constexpr double kAnswerWait_s = 5;     // how long a timed-out rank waits for the others' answers
constexpr double kTeardownWait_s = 10;  // how long it waits for its communicators' teardown
using Clock = std::chrono::steady_clock;

}  // namespace

struct Watchdog::Impl {
  MPI_Comm side = MPI_COMM_NULL;
  MPI_Request request = MPI_REQUEST_NULL;
  int64_t request_buf = 0;
  int rank = 0, size = 1;
};

Watchdog::Watchdog(const Runtime& runtime, double timeout_s, AbortJob abort_job)
    : runtime_(runtime), timeout_s_(timeout_s), abort_job_(std::move(abort_job)), impl_(std::make_unique<Impl>()) {
  impl_->rank = runtime.info().rank;
  impl_->size = runtime.info().world_size;
  // Without MPI_THREAD_MULTIPLE this thread may not call MPI: it still aborts on a timeout, but
  // cannot ask the other ranks where they are.
  if (runtime.info().thread_multiple && impl_->size > 1) {
    MPI_Comm_dup(MPI_COMM_WORLD, &impl_->side);
    MPI_Irecv(&impl_->request_buf, 1, MPI_INT64_T, MPI_ANY_SOURCE, kRequestTag, impl_->side, &impl_->request);
  }
  thread_ = std::thread([this] { run(); });
}

Watchdog::~Watchdog() {
  stop_ = true;
  thread_.join();
  if (impl_->side == MPI_COMM_NULL) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (finalized) return;
  MPI_Cancel(&impl_->request);
  MPI_Wait(&impl_->request, MPI_STATUS_IGNORE);
  MPI_Comm_free(&impl_->side);
}

Watchdog::Blocked Watchdog::block(const char* what, int64_t seq) {
  std::lock_guard<std::mutex> lock(mutex_);
  what_ = what;
  blocked_seq_ = seq;
  since_ = Clock::now();
  return Blocked(this);
}

Watchdog::Blocked::~Blocked() {
  if (!dog_) return;
  std::lock_guard<std::mutex> lock(dog_->mutex_);
  dog_->what_ = nullptr;
}

Watchdog::Status Watchdog::status() {
  std::lock_guard<std::mutex> lock(mutex_);
  const int64_t ms = what_ ? std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - since_).count() : 0;
  return Status{step_.load(), seq_.load(), what_ ? blocked_seq_ : 0, ms};
}

// Answers every status request that has arrived on the side channel.
void Watchdog::answer_requests() {
  if (impl_->side == MPI_COMM_NULL) return;
  for (;;) {
    int arrived = 0;
    MPI_Status st;
    MPI_Test(&impl_->request, &arrived, &st);
    if (!arrived) return;
    const Status mine = status();
    MPI_Send(&mine, sizeof mine, MPI_BYTE, st.MPI_SOURCE, kReplyTag, impl_->side);
    MPI_Irecv(&impl_->request_buf, 1, MPI_INT64_T, MPI_ANY_SOURCE, kRequestTag, impl_->side, &impl_->request);
  }
}

void Watchdog::run() {
  while (!stop_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    answer_requests();
    const Status mine = status();
    std::string report;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (what_ && std::chrono::duration<double>(Clock::now() - since_).count() >= timeout_s_) {
        char head[256];
        std::snprintf(head, sizeof head,
                      "gantry: rank %d: watchdog: %s (collective #%lld, step %lld) has not completed in %g s "
                      "(comm.timeout_s)",
                      impl_->rank, what_, static_cast<long long>(blocked_seq_), static_cast<long long>(mine.step),
                      timeout_s_);
        report = head;
      }
    }
    const bool host_blocked = !report.empty();
    if (!host_blocked) report = device_stalls();
    if (report.empty()) continue;
    end_job(report + others_report(mine, host_blocked));
    return;  // only where abort_job_ returned (tests)
  }
}

// The first watched communicator's description of a collective stalled on its device, as the
// head of a report; "" when none has one.
std::string Watchdog::device_stalls() {
  std::lock_guard<std::mutex> lock(watched_mutex_);
  for (const auto& [id, watched] : watched_) {
    std::string stall;
    try {
      stall = watched.second->device_stall(std::chrono::duration<double>(timeout_s_));
    } catch (const std::exception&) {
      continue;  // the training thread meets the same error at its next call
    }
    if (stall.empty()) continue;
    char head[128], tail[128];
    std::snprintf(head, sizeof head, "gantry: rank %d: watchdog: %s: ", impl_->rank, watched.first.c_str());
    std::snprintf(tail, sizeof tail, " (step %lld; comm.timeout_s %g s)", static_cast<long long>(step_.load()),
                  timeout_s_);
    return head + stall + tail;
  }
  return {};
}

// Asks every other rank where it is. For a collective this rank is blocked in, names the ranks
// that have not entered it; for one stalled on the device, says where each rank is (this one
// included: its host may be blocked in a later collective, numbered on the host's count).
std::string Watchdog::others_report(const Status& mine, bool host_blocked) {
  // "at step 12, blocked 3004 ms in collective #40" or "at step 12, in no collective, last entered #39"
  auto where = [](const Status& s) {
    char words[160];
    if (s.blocked_seq > 0)
      std::snprintf(words, sizeof words, "at step %lld, blocked %lld ms in collective #%lld",
                    static_cast<long long>(s.step), static_cast<long long>(s.blocked_ms),
                    static_cast<long long>(s.blocked_seq));
    else
      std::snprintf(words, sizeof words, "at step %lld, in no collective, last entered #%lld",
                    static_cast<long long>(s.step), static_cast<long long>(s.seq));
    return std::string(words);
  };
  std::string out = host_blocked ? "" : "; this rank is " + where(mine);
  if (impl_->size == 1) return out;
  if (impl_->side == MPI_COMM_NULL) return out + "; the other ranks cannot be asked (MPI without MPI_THREAD_MULTIPLE)";
  const int64_t ask = 1;
  for (int r = 0; r < impl_->size; ++r)
    if (r != impl_->rank) MPI_Send(&ask, 1, MPI_INT64_T, r, kRequestTag, impl_->side);
  std::vector<bool> answered(impl_->size, false);
  std::vector<Status> theirs(impl_->size);
  int pending = impl_->size - 1;
  const auto deadline = Clock::now() + std::chrono::duration<double>(kAnswerWait_s);
  while (pending > 0 && Clock::now() < deadline) {
    answer_requests();  // another rank may be asking too
    int arrived = 0;
    MPI_Status st;
    MPI_Iprobe(MPI_ANY_SOURCE, kReplyTag, impl_->side, &arrived, &st);
    if (!arrived) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      continue;
    }
    Status s;
    MPI_Recv(&s, sizeof s, MPI_BYTE, st.MPI_SOURCE, kReplyTag, impl_->side, MPI_STATUS_IGNORE);
    if (!answered[st.MPI_SOURCE]) --pending;
    answered[st.MPI_SOURCE] = true;
    theirs[st.MPI_SOURCE] = s;
  }
  std::string silent;
  for (int r = 0; r < impl_->size; ++r) {
    if (r == impl_->rank) continue;
    if (!answered[r]) {
      silent += (silent.empty() ? "" : ", ") + std::to_string(r);
      continue;
    }
    const Status& s = theirs[r];
    if (!host_blocked)
      out += "; rank " + std::to_string(r) + " is " + where(s);
    else if (s.seq < mine.blocked_seq)  // it has not entered this collective
      out += "; rank " + std::to_string(r) + " has not arrived (" + where(s) + ")";
  }
  if (host_blocked && out.empty() && silent.empty()) out = "; every rank has arrived (the transport itself is stuck)";
  if (!silent.empty()) out += "; no answer from rank(s) " + silent + " (dead, or MPI itself is stuck)";
  return out;
}

// Says what happened first (a teardown that crashes or hangs must not swallow it), then tears
// down the watched communicators' own collectives (NCCL's would otherwise keep the GPU busy),
// waiting at most kTeardownWait_s for them, then ends the job.
void Watchdog::end_job(const std::string& report) {
  if (!abort_job_) {
    std::fprintf(stderr, "%s\n", report.c_str());
    std::fflush(stderr);
  }
  struct Teardown {
    std::mutex mutex;
    std::condition_variable done_cv;
    bool done = false;
    std::string aborted;
    size_t count = 0;
  };
  auto teardown = std::make_shared<Teardown>();
  std::thread([this, teardown] {
    std::string aborted;
    size_t count = 0;
    {
      std::lock_guard<std::mutex> lock(watched_mutex_);
      for (const auto& [id, watched] : watched_) {
        ++count;
        try {
          watched.second->abort();
          aborted += (aborted.empty() ? "" : ", ") + watched.first;
        } catch (const std::exception& e) {
          aborted += (aborted.empty() ? "" : ", ") + watched.first + " (failed: " + e.what() + ")";
        }
      }
    }
    std::lock_guard<std::mutex> lock(teardown->mutex);
    teardown->aborted = aborted;
    teardown->count = count;
    teardown->done = true;
    teardown->done_cv.notify_all();
  }).detach();  // a teardown that never returns is left behind: the job ends regardless (an
                // abort_job_ that returns, in tests, must only follow teardowns that do)
  std::string outcome;
  {
    std::unique_lock<std::mutex> lock(teardown->mutex);
    if (teardown->done_cv.wait_for(lock, std::chrono::duration<double>(kTeardownWait_s), [&] { return teardown->done; }))
      outcome = "aborted " + std::to_string(teardown->count) + " communicator(s)" +
                (teardown->aborted.empty() ? "" : " (" + teardown->aborted + ")") + " and now the job";
    else
      outcome = "tearing down the communicators did not return in " + std::to_string(static_cast<int>(kTeardownWait_s)) +
                " s; aborting the job";
  }
  if (abort_job_) return abort_job_(report + "; " + outcome);
  std::fprintf(stderr, "gantry: rank %d: watchdog: %s\n", impl_->rank, outcome.c_str());
  std::fflush(stderr);
  runtime_.abort(3);
}

int Watchdog::add_watched(std::string name, Communicator* comm) {
  std::lock_guard<std::mutex> lock(watched_mutex_);
  watched_[next_watched_] = {std::move(name), comm};
  return next_watched_++;
}

void Watchdog::remove_watched(int id) {
  std::lock_guard<std::mutex> lock(watched_mutex_);
  watched_.erase(id);
}

namespace {

// Sleeps forever before collective number `seq` on `rank`, per GANTRY_COMM_FAULT=stall:RANK:SEQ.
void maybe_stall(int rank, int64_t seq) {
  static const std::pair<int, int64_t> fault = [] {
    const char* spec = std::getenv("GANTRY_COMM_FAULT");
    int r = -1;
    long long s = -1;
    if (spec && std::sscanf(spec, "stall:%d:%lld", &r, &s) != 2) r = -1;
    return std::pair<int, int64_t>{r, s};
  }();
  if (rank == fault.first && seq == fault.second) {
    std::fprintf(stderr, "gantry: rank %d: fault injection: stalling before collective #%lld\n", rank,
                 static_cast<long long>(seq));
    std::this_thread::sleep_for(std::chrono::hours(24));
  }
}

class WatchedWork final : public Work {
 public:
  WatchedWork(std::shared_ptr<Work> inner, Watchdog& dog, int64_t seq) : inner_(std::move(inner)), dog_(dog), seq_(seq) {}
  void wait() override {
    auto blocked = dog_.block("all_reduce_async", seq_);
    inner_->wait();
  }

 private:
  std::shared_ptr<Work> inner_;
  Watchdog& dog_;
  int64_t seq_;
};

class WatchedCommunicator final : public Communicator {
 public:
  WatchedCommunicator(std::unique_ptr<Communicator> inner, Watchdog& dog)
      : inner_(std::move(inner)),
        dog_(dog),
        watched_(dog.add_watched(inner_->backend_name(), inner_.get())) {}
  ~WatchedCommunicator() override { dog_.remove_watched(watched_); }
  using Communicator::all_reduce;

  int rank() const override { return inner_->rank(); }
  int world_size() const override { return inner_->world_size(); }
  std::string backend_name() const override { return inner_->backend_name(); }

  void all_reduce(std::vector<torch::Tensor>& tensors, ReduceOp op) override {
    auto blocked = enter("all_reduce");
    inner_->all_reduce(tensors, op);
  }
  std::shared_ptr<Work> all_reduce_async(torch::Tensor tensor, ReduceOp op) override {
    maybe_stall(inner_->rank(), dog_.entered() + 1);
    const int64_t seq = dog_.next_seq();
    return std::make_shared<WatchedWork>(inner_->all_reduce_async(std::move(tensor), op), dog_, seq);
  }
  void broadcast(std::vector<torch::Tensor>& tensors, int root) override {
    auto blocked = enter("broadcast");
    inner_->broadcast(tensors, root);
  }
  void barrier() override {
    auto blocked = enter("barrier");
    inner_->barrier();
  }
  std::vector<std::string> all_gather(const std::string& bytes) override {
    auto blocked = enter("all_gather");
    return inner_->all_gather(bytes);
  }
  void abort() override { inner_->abort(); }
  std::string device_stall(std::chrono::duration<double> older_than) override {
    return inner_->device_stall(older_than);
  }

 private:
  Watchdog::Blocked enter(const char* what) {
    maybe_stall(inner_->rank(), dog_.entered() + 1);  // before counting it: it has not entered
    return dog_.block(what, dog_.next_seq());
  }

  std::unique_ptr<Communicator> inner_;
  Watchdog& dog_;
  int watched_;
};

}  // namespace

std::unique_ptr<Communicator> watch(std::unique_ptr<Communicator> inner, Watchdog& dog) {
  return std::make_unique<WatchedCommunicator>(std::move(inner), dog);
}

}  // namespace gantry::comm
