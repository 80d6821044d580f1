#!/usr/bin/env bash
# Sets up (Debian packages + build, via scripts/setup.sh) and runs every test with CTest:
# unit tests, communicator tests under mpirun -np 2 and -np 3, and end-to-end training runs.
# Extra arguments go to ctest (for example: scripts/test.sh -L unit).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
ctest --test-dir build --output-on-failure -j "${GANTRY_JOBS:-2}" "$@"
