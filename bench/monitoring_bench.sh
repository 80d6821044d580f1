#!/usr/bin/env bash
# Benchmark: what monitoring costs per training step on the fastest step gantry has
# (configs/gaussian1d.yaml). (1) the metric updates alone, in ns per call (monitoring_overhead.cpp);
# (2) the same inside real steps, log steps included (monitoring_step_cost.cpp); (3) whole runs
# with monitoring off and on, alternating, median seconds of summary.json (noisy on 2 cores).
# Usage: bench/monitoring_bench.sh [BUILD_DIR] [NP] [REPEATS]   (from the repository root)
set -eu
build=${1:-build} np=${2:-2} repeats=${3:-5}
flags=(--oversubscribe); [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

for i in 1 2 3; do "$build/bench/monitoring_step_cost"; done
"$build/bench/monitoring_overhead"

port=$((30000 + RANDOM % 20000))
for i in $(seq "$repeats"); do
  for mode in off on; do
    set=(--set run.dir="$work/$mode-$i")
    [ $mode = on ] && set+=(--set monitoring.port=$port --set monitoring.bind=127.0.0.1)
    mpirun "${flags[@]}" -np "$np" "$build/gantry" train --config configs/gaussian1d.yaml "${set[@]}" > /dev/null
    python3 -c 'import json,sys; print(sys.argv[1], json.load(open(sys.argv[2]))["seconds"])' $mode "$work/$mode-$i/summary.json"
  done
done | python3 -c '
import sys, statistics
t = {"off": [], "on": []}
for line in sys.stdin: m, s = line.split(); t[m].append(float(s))
off, on = statistics.median(t["off"]), statistics.median(t["on"])
print("runs: off", sorted(t["off"]), " on", sorted(t["on"]))
print(f"median seconds for 2000 steps: off {off:.3f}, on {on:.3f}; step {1e3 * off / 2000:.3f} ms; difference {100 * (on - off) / off:+.1f} %")'
