// Implements: the collective watchdog. A thread per rank watches the training communicator's
// collectives; one that blocks longer than comm.timeout_s is reported with its name, the step
// and which ranks have not arrived (asked over a side channel that every rank's watchdog thread
// answers, so a rank whose training thread is stuck still answers), and the job is aborted so
// that a supervisor or scheduler can restart it instead of it hanging forever.
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
  // Collective: every rank constructs it (it opens its side channel). timeout_s > 0.
  Watchdog(const Runtime& runtime, double timeout_s);
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
  // Hooks run (on the watchdog's thread) just before it aborts the job; remove_abort_hook(id)
  // before what a hook refers to goes away.
  int add_abort_hook(std::string name, std::function<void()> hook);
  void remove_abort_hook(int id);
  // Counts one more collective entered on the watched communicator and returns its number.
  int64_t next_seq() { return ++seq_; }
  int64_t entered() const { return seq_; }

 private:
  struct Impl;
  void run();

  const Runtime& runtime_;
  const double timeout_s_;
  std::atomic<int64_t> step_{-1};
  std::atomic<int64_t> seq_{0};
  std::mutex mutex_;  // guards what_, blocked_seq_, since_, abort_hooks_
  const char* what_ = nullptr;
  int64_t blocked_seq_ = 0;
  std::chrono::steady_clock::time_point since_;
  std::map<int, std::pair<std::string, std::function<void()>>> abort_hooks_;  // guarded by mutex_
  int next_hook_ = 0;
  std::atomic<bool> stop_{false};
  std::unique_ptr<Impl> impl_;
  std::thread thread_;
};

// Wraps `inner` so that every collective it runs (and every wait on an async one) is watched.
// GANTRY_COMM_FAULT=stall:RANK:SEQ makes RANK sleep before its collective number SEQ (tests).
std::unique_ptr<Communicator> watch(std::unique_ptr<Communicator> inner, Watchdog& dog);

}  // namespace gantry::comm
