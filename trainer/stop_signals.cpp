// Implements: preemption signals taken by a thread of their own (see stop_signals.h).
#include "trainer/stop_signals.h"

#include <pthread.h>

#include <atomic>
#include <csignal>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace gantry {
namespace {

std::once_flag g_routed_once;
std::atomic<bool> g_routed{false};
std::atomic<bool> g_armed{false};
std::atomic<int> g_received{0};

sigset_t stop_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGUSR1);
  return set;
}

// Ends the process by `signal` as its default action would: only this thread may take it.
[[noreturn]] void die_by(int signal) {
  std::signal(signal, SIG_DFL);
  sigset_t one;
  sigemptyset(&one);
  sigaddset(&one, signal);
  pthread_sigmask(SIG_UNBLOCK, &one, nullptr);
  raise(signal);
  std::abort();  // not reached: the default action of SIGTERM and SIGUSR1 is to terminate
}

void take_stop_signals() {
  const sigset_t set = stop_signals();
  for (;;) {
    int signal = 0;
    if (sigwait(&set, &signal) != 0) continue;
    if (!g_armed.load()) die_by(signal);
    g_received.store(signal);
  }
}

}  // namespace

void route_stop_signals() {
  std::call_once(g_routed_once, [] {
    const sigset_t set = stop_signals();
    if (pthread_sigmask(SIG_BLOCK, &set, nullptr) != 0) throw std::runtime_error("cannot block SIGTERM and SIGUSR1");
    std::thread(take_stop_signals).detach();
    g_routed.store(true);
  });
}

StopSignalsArmed::StopSignalsArmed() {
  if (!g_routed.load()) throw std::logic_error("stop signals are armed before route_stop_signals() ran");
  g_received.store(0);
  g_armed.store(true);
}

StopSignalsArmed::~StopSignalsArmed() { g_armed.store(false); }

int stop_signal_received() { return g_received.load(); }

}  // namespace gantry
