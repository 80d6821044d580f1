// Implements: the main() of the tests that run under mpirun. Only rank 0 prints GoogleTest's
// report; a failure on any rank fails every rank, so mpirun reports it.
#pragma once

#include <gtest/gtest.h>

#include <cstdio>
#include <functional>

#include "comm/communicator.h"

namespace gantry::testing {

// Initialises GoogleTest and MPI, points `runtime_out` at the process's Runtime for the tests,
// runs `setup` (thread counts and the like), then every test; returns the job-wide exit code.
inline int run_mpi_tests(int argc, char** argv, comm::Runtime*& runtime_out, const char* suite,
                         const std::function<void()>& setup = {}) {
  ::testing::InitGoogleTest(&argc, argv);
  comm::Runtime runtime(&argc, &argv);
  runtime_out = &runtime;
  if (setup) setup();
  if (runtime.info().rank != 0) {
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  int failed = RUN_ALL_TESTS() != 0;
  auto comm = comm::make_mpi_communicator(runtime);
  for (int f : comm->all_gather_value<int>(failed)) failed |= f;
  if (failed && runtime.info().rank == 0) std::fprintf(stderr, "%s tests failed on some rank\n", suite);
  runtime_out = nullptr;
  return failed;
}

}  // namespace gantry::testing
