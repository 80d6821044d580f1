#!/usr/bin/env bash
# Benchmark: train.reuse_fakes against the plain loop, 2 ranks, the conditional Fashion-MNIST
# config (or CONFIG), STEPS steps a run. Runs alternate (plain, reuse), REPEATS times each; prints
# each run's images/s (summary.json: the whole run's steps over its wall time) and, per case, the
# median and its share of time in G's and D's forward/backward passes; then the ratio of the
# medians. Extra arguments go to `gantry train` (e.g. --set train.precision=bf16).
# Usage: bench/reuse_fakes.sh [BUILD_DIR] [REPEATS] [STEPS] [CONFIG] [--set ...]   (from the repository root)
set -euo pipefail
build=${1:-build} repeats=${2:-3} steps=${3:-600} config=${4:-configs/fashion-mnist-cdcgan.yaml}
shift $(( $# < 4 ? $# : 4 ))
flags=(--oversubscribe); [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

for i in $(seq "$repeats"); do
  for reuse in false true; do
    dir="$work/reuse-$reuse-$i"
    mpirun "${flags[@]}" -np 2 "$build/gantry" train --config "$config" --set run.dir="$dir" \
      --set train.steps="$steps" --set train.sample_every=0 --set train.log_every="$steps" \
      --set checkpoint.every=0 --set train.reuse_fakes=$reuse "$@" > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
    python3 - "$dir/summary.json" "$reuse" <<'EOF'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"reuse_fakes={sys.argv[2]}: {s['img_per_s']:.0f} img/s")
EOF
  done
done

python3 - "$work" "$repeats" <<'EOF'
import json, statistics, sys
work, repeats = sys.argv[1], int(sys.argv[2])
median = {}
for reuse in ("false", "true"):
    runs = [json.load(open(f"{work}/reuse-{reuse}-{i}/summary.json")) for i in range(1, repeats + 1)]
    runs.sort(key=lambda s: s["img_per_s"])
    mid = runs[len(runs) // 2]
    median[reuse] = mid["img_per_s"]
    p = mid["phase_seconds"]
    print(f"reuse_fakes={reuse}: median {mid['img_per_s']:.0f} img/s; of its {mid['seconds']:.1f} s, "
          f"G forward/backward {p['g_forward_backward'] / mid['seconds']:.0%}, "
          f"D forward/backward {p['d_forward_backward'] / mid['seconds']:.0%}")
print(f"ratio reuse/plain: {median['true'] / median['false']:.3f}")
EOF
