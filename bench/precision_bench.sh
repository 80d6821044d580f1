#!/usr/bin/env bash
# Benchmark: train.precision bf16 against fp32 on this machine's CPU (one process, one thread,
# Fashion-MNIST), for `mlp` and `dcgan` at batch 64 and 256. The two run alternately, REPEATS
# times per case; prints the images/s medians (from the log line over the whole loop) and the
# ratio bf16 / fp32 (median, min, max over the pairs). On a GPU: DEVICE=cuda.
# Usage: bench/precision_bench.sh [BUILD_DIR] [REPEATS]
set -euo pipefail
build=${1:-build} repeats=${2:-3} device=${DEVICE:-cpu}
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
steps_for() { case $1-$2 in mlp-64) echo 150 ;; mlp-256) echo 40 ;; dcgan-64) echo 20 ;; dcgan-256) echo 6 ;; esac; }
for i in $(seq "$repeats"); do
  for arch in mlp dcgan; do
    for batch in 64 256; do
      steps=$(steps_for $arch $batch)
      for precision in fp32 bf16; do
        dir="$work/$arch-$batch-$precision-$i"
        "$build/gantry" train --config configs/fashion-mnist-dcgan.yaml --set model.arch=$arch --set run.dir="$dir" \
          --set train.steps=$steps --set train.batch_size=$batch --set train.threads=1 --set train.device=$device \
          --set train.precision=$precision --set train.log_every=$steps --set train.sample_every=0 \
          --set train.consistency_every=0 --set checkpoint.every=0 > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
        echo "$arch $batch $precision $(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["img_per_s"])' "$dir/log.jsonl")"
      done
    done
  done
done > "$work/runs.txt"
python3 - "$work/runs.txt" <<'PY'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    arch, batch, precision, ips = line.split()
    runs.setdefault((arch, int(batch)), {}).setdefault(precision, []).append(float(ips))
print(f"{'case':12} {'fp32 img/s':>10} {'bf16 img/s':>10} {'bf16/fp32 median':>16} {'min':>6} {'max':>6}")
for key in sorted(runs):
    fp32, bf16 = runs[key]["fp32"], runs[key]["bf16"]
    ratios = sorted(b / f for f, b in zip(fp32, bf16))
    print(f"{key[0]:5} b{key[1]:<5} {statistics.median(fp32):10.0f} {statistics.median(bf16):10.0f} "
          f"{statistics.median(ratios):16.2f} {ratios[0]:6.2f} {ratios[-1]:6.2f}")
PY
