// Implements: the collective watchdog. A thread per rank watches the training communicator's
// collectives; one that blocks longer than comm.timeout_s is reported with its name, the step
// and which ranks have not arrived (asked over a side channel that every rank's watchdog thread
// answers, so a rank whose training thread is stuck still answers), and the job is aborted so
// that a supervisor or scheduler can restart it instead of it hanging forever. Collectives that
// run on a device after their call has returned (NCCL) are watched there too: one still running
// comm.timeout_s after it was queued, or an asynchronous NCCL error, ends the job the same way.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "comm/communicator.h"

namespace gantry::comm {

class Watchdog {
 public:
  // What ends the job, given the report: by default the report goes to stderr and the job is
  // aborted (Runtime::abort(3)). Tests pass their own, which may return; the watchdog then stops.
  using AbortJob = std::function<void(const std::string& report)>;

  // Collective: every rank constructs it (it opens its side channel). timeout_s > 0.
  Watchdog(const Runtime& runtime, double timeout_s, AbortJob abort_job = {});
  ~Watchdog();
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;

  // The training step, for reports.
  void set_step(int64_t step) { step_ = step; }

  // Marks the calling thread as blocked in collective number `seq` named `what` while the
  // returned object lives.
  class Blocked {
   public:
    explicit Blocked(Watchdog* dog) : dog_(dog) {}
    Blocked(Blocked&& other) noexcept : dog_(other.dog_) { other.dog_ = nullptr; }
    ~Blocked();

   private:
    Watchdog* dog_;
  };
  Blocked block(const char* what, int64_t seq);
  // A communicator to ask for collectives stalled on its device (Communicator::device_stall,
  // every poll) and to tear down (Communicator::abort) before the job is aborted. remove(id)
  // before it goes away: once remove returns, the watchdog's thread no longer touches it.
  int add_watched(std::string name, Communicator* comm);
  void remove_watched(int id);
  // Counts one more collective entered on the watched communicator and returns its number.
  int64_t next_seq() { return ++seq_; }
  int64_t entered() const { return seq_; }

 private:
  struct Impl;
  // What a rank says of itself when asked: its step, the collectives it has entered, the one it
  // is blocked in (0: none) and for how many milliseconds.
  struct Status {
    int64_t step, seq, blocked_seq, blocked_ms;
  };
  void run();
  Status status();
  void answer_requests();
  std::string device_stalls();
  std::string others_report(const Status& mine, bool host_blocked);
  void end_job(const std::string& report);

  const Runtime& runtime_;
  const double timeout_s_;
  std::atomic<int64_t> step_{-1};
  std::atomic<int64_t> seq_{0};
  const AbortJob abort_job_;
  std::mutex mutex_;  // guards what_, blocked_seq_, since_
  const char* what_ = nullptr;
  int64_t blocked_seq_ = 0;
  std::chrono::steady_clock::time_point since_;
  // Held while the watchdog's thread calls into a watched communicator, so that remove_watched
  // waits for such a call to return. Never taken together with mutex_.
  std::mutex watched_mutex_;
  std::map<int, std::pair<std::string, Communicator*>> watched_;  // guarded by watched_mutex_
  int next_watched_ = 0;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

// Wraps `inner` so that every collective it runs (and every wait on an async one) is watched.
// GANTRY_COMM_FAULT=stall:RANK:SEQ makes RANK sleep before its collective number SEQ (tests).
std::unique_ptr<Communicator> watch(std::unique_ptr<Communicator> inner, Watchdog& dog);

}  // namespace gantry::comm
