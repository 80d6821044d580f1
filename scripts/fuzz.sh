#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, ASan + UBSan, fuzz/) into build-fuzz/ and runs each one for
# SECONDS on its seed corpus, fuzz/regressions/<target> (inputs that once crashed it) and
# everything earlier runs found. Prints, per target, the
# executions, edges covered and features, and fails on the first crash, leak-free OOM or timeout
# (libFuzzer writes the input that did it to build-fuzz/artifacts/<target>/).
# Usage: scripts/fuzz.sh [--seconds N] [target ...]     (default: 30 s each, every target)
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=30
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(fuzz_config fuzz_idx fuzz_cifar fuzz_image fuzz_checkpoint)

command -v clang++ >/dev/null || { echo "fuzz.sh: clang++ not found (scripts/setup.sh installs it)" >&2; exit 1; }
build=build-fuzz
if [ ! -f "$build/build.ninja" ]; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DGANTRY_FUZZ=ON -DGANTRY_SANITIZE=address,undefined -DGANTRY_BUILD_TESTS=OFF > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; exit 1; }
fi
# LibTorch and OpenMPI allocate at start-up and never free (not gantry's leaks): no leak checks.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:${ASAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
export OMP_NUM_THREADS=1
cmake --build "$build" -j "${GANTRY_JOBS:-2}" --target fuzzers
"$build/fuzz/fuzz_seeds" configs "$build/seeds" > /dev/null

status=0
printf '%-16s %10s %8s %8s %8s %8s\n' target seconds execs exec/s cov ft | tee "$build/fuzz-summary.txt"
for t in "${targets[@]}"; do
  corpus="$build/corpus/$t"
  mkdir -p "$corpus" "$build/artifacts/$t"
  log="$build/$t.log"
  # Inputs that once crashed a target (fixed since) are replayed first, every run.
  regressions=""; [ -d "fuzz/regressions/$t" ] && regressions="fuzz/regressions/$t"
  if "$build/fuzz/$t" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=3072 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$t/" "$corpus" "$build/seeds/$t" $regressions > "$log" 2>&1; then
    result=ok
  else
    result=FAILED
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n1 | cut -d' ' -f2)
  printf '%-16s %10s %8s %8s %8s %8s %s\n' "$t" "$seconds" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$result" |
    tee -a "$build/fuzz-summary.txt"
  if [ "$result" = FAILED ]; then
    grep -E -A25 '^==[0-9]+==ERROR|runtime error|deadly signal|ERROR: libFuzzer' "$log" | head -n 60 >&2 || tail -n 40 "$log" >&2
  fi
done
exit $status
