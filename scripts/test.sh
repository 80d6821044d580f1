#!/usr/bin/env bash
# Sets up (Debian packages + build, via scripts/setup.sh) and runs every test with CTest: unit
# tests, communicator tests under mpirun -np 2 .. 4, end-to-end training runs and fault
# injection; then a short run of every fuzz target (scripts/fuzz.sh, GANTRY_FUZZ_SECONDS each,
# default 30; 0 skips it).
# Usage: scripts/test.sh [--sanitize] [ctest arguments]   (for example: scripts/test.sh -L unit)
#   --sanitize   build into build-asan/ with ASan + UBSan and run the suite there
# With ctest arguments or --sanitize, only ctest runs (no fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${1:-}" = "--sanitize" ]; then
  shift
  # LibTorch and OpenMPI allocate at start-up and never free: not gantry's leaks, so LSan is off.
  # Everything else (heap/stack overflows, use-after-free, UB) aborts the test that hit it.
  export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
  scripts/setup.sh --build-dir build-asan -DGANTRY_SANITIZE=address,undefined
  exec ctest --test-dir build-asan --output-on-failure -j "${GANTRY_JOBS:-2}" "$@"
fi

scripts/setup.sh
ctest --test-dir build --output-on-failure -j "${GANTRY_JOBS:-2}" "$@"
if [ $# -eq 0 ] && [ "${GANTRY_FUZZ_SECONDS:-30}" != 0 ]; then
  scripts/fuzz.sh --seconds "${GANTRY_FUZZ_SECONDS:-30}"
fi
