// Implements: preemption signals. SIGTERM and SIGUSR1 ask a training run for a checkpoint and a
// clean exit after the current step; one thread of gantry's own takes them with sigwait, so no
// signal handler ever runs on a thread that computes.
//
// Why not a handler: oneDNN's JIT GEMM kernels (LibTorch's, and GemmLinear's sgemm) point rsp into
// a heap workspace while they run, so the frame of a handler that interrupts one lands on the heap
// and corrupts it (oneDNN issue #4845, fixed upstream in 2026; Debian's oneDNN 2.7 has it). With a
// handler, a stop signal mid-step crashed about one 2-rank MLP run in three here.
#pragma once

namespace gantry {

// Blocks SIGTERM and SIGUSR1 in the calling thread, so in every thread it starts later, and
// starts the thread that takes them. Call it first thing in main, before any other thread exists
// (MPI's, LibTorch's, OpenMP's). Until armed, a stop signal ends the process as it would have by
// default. Calls after the first do nothing.
void route_stop_signals();

// While one exists, a stop signal is recorded for stop_signal_received() rather than ending the
// process. Throws std::logic_error if route_stop_signals() has not run.
class StopSignalsArmed {
 public:
  StopSignalsArmed();
  ~StopSignalsArmed();
  StopSignalsArmed(const StopSignalsArmed&) = delete;
  StopSignalsArmed& operator=(const StopSignalsArmed&) = delete;
};

// The last stop signal taken while armed (SIGTERM or SIGUSR1), or 0.
int stop_signal_received();

}  // namespace gantry
