#!/usr/bin/env bash
# Benchmark: gantry against the same GAN step in Python PyTorch eager (bench/pytorch_reference.py,
# Debian's python3-torch: the same LibTorch 1.13). One process each, Fashion-MNIST, for `mlp` and
# `dcgan` (width 32) at batch 64 and 256 with 1 and 2 intra-op threads. The two run alternately,
# REPEATS times per case; prints images/s of both (medians) and the ratio gantry / PyTorch
# (median, min, max over the paired runs). gantry's figure is its log line's img_per_s over the
# whole loop (reading data included, the final checkpoint excluded); the reference's is its loop.
# For the DCGAN it also prints the achieved GFLOP/s (FLOPs derived in pytorch_reference.py) as a
# fraction of this CPU's measured matmul GFLOP/s at the same thread count.
# Usage: bench/compare.sh [BUILD_DIR] [REPEATS]   (from the repository root)
set -euo pipefail
build=${1:-build} repeats=${2:-3}
python=/usr/bin/python3  # Debian's, which has python3-torch
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

steps_for() {  # arch batch: about 5 s of work per run
  case $1-$2 in
    mlp-64) echo 150 ;; mlp-256) echo 40 ;; dcgan-64) echo 20 ;; dcgan-256) echo 6 ;;
  esac
}

for i in $(seq "$repeats"); do
  for arch in mlp dcgan; do
    for batch in 64 256; do
      for threads in 1 2; do
        steps=$(steps_for $arch $batch)
        config=configs/fashion-mnist-dcgan.yaml; [ $arch = mlp ] && config=configs/mnist-mlp.yaml
        dir="$work/$arch-$batch-$threads-$i"
        "$build/gantry" train --config $config --set data.name=fashion-mnist --set run.dir="$dir" \
          --set train.steps=$steps --set train.batch_size=$batch --set train.threads=$threads \
          --set train.log_every=$steps --set train.sample_every=0 --set train.consistency_every=0 \
          --set checkpoint.every=0 > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
        gantry=$($python -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["img_per_s"])' "$dir/log.jsonl")
        ref=$($python bench/pytorch_reference.py --arch $arch --batch $batch --threads $threads --steps $steps)
        echo "$arch $batch $threads $gantry $ref"
      done
    done
  done
done > "$work/runs.txt"

$python - "$work/runs.txt" <<'EOF'
import json, statistics, sys
cases = {}
for line in open(sys.argv[1]):
    arch, batch, threads, gantry, ref = line.split(" ", 4)
    cases.setdefault((arch, int(batch), int(threads)), []).append((float(gantry), json.loads(ref)))
print(f"{'case':22} {'gantry img/s':>12} {'pytorch img/s':>13} {'ratio median':>12} {'min':>6} {'max':>6}  dcgan GFLOP/s (of matmul)")
for key in sorted(cases):
    runs = cases[key]
    ratios = sorted(g / r["img_per_s"] for g, r in runs)
    g_med = statistics.median(g for g, _ in runs)
    r_med = statistics.median(r["img_per_s"] for _, r in runs)
    extra = ""
    if key[0] == "dcgan":
        flop = runs[0][1]["step_gflop_per_image"]
        mm = statistics.median(r["matmul_gflops"] for _, r in runs)
        extra = f"  gantry {g_med * flop:.1f}, pytorch {r_med * flop:.1f} of {mm:.1f} ({100 * g_med * flop / mm:.0f} %)"
    print(f"{key[0]:5} b{key[1]:<4} {key[2]} thread(s) {g_med:12.0f} {r_med:13.0f} {statistics.median(ratios):12.2f} "
          f"{ratios[0]:6.2f} {ratios[-1]:6.2f}{extra}")
EOF
