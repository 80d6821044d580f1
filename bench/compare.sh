#!/usr/bin/env bash
# Benchmark: gantry against the same GAN step in Python PyTorch eager (bench/pytorch_reference.py,
# Debian's python3-torch: the same LibTorch 1.13). One process each, Fashion-MNIST, for `mlp` and
# `dcgan` (width 32) at batch 64 and 256 with 1 and 2 intra-op threads. The two run alternately,
# REPEATS times per case; prints images/s of both (medians) and the ratio gantry / PyTorch
# (median, min, max over the paired runs). gantry's figure is its log line's img_per_s over the
# whole loop (reading data included, the final checkpoint excluded); the reference's is its loop.
# It also prints the achieved GFLOP/s of both (FLOPs derived in pytorch_reference.py) as a fraction
# of this CPU's measured matmul GFLOP/s at the same thread count: the ceiling of either side.
# GPU side (scripts/gpu_check.sh): --device cuda [--precision bf16] runs both on the GPU against
# that machine's PyTorch ($PYTHON), one thread, with cuDNN benchmark mode on both sides; gantry's
# figure is then its second log line (the second half of the run) and the reference leaves as
# many warm-up steps out of its timing.
# Usage: bench/compare.sh [--device cpu|cuda] [--precision fp32|bf16] [BUILD_DIR] [REPEATS]
set -euo pipefail
device=cpu precision=fp32
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device=$2; shift 2 ;;
    --precision) precision=$2; shift 2 ;;
    *) break ;;
  esac
done
build=${1:-build} repeats=${2:-3}
python=${PYTHON:-/usr/bin/python3}  # Debian's, which has python3-torch; on a GPU machine, its PyTorch
data=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}  # dataset-fashion-mnist's files
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

steps_for() {  # arch batch: about 5 s of work per run (CPU); a few seconds of a GPU's
  if [ "$device" = cuda ]; then
    case $1-$2 in mlp-64) echo 4000 ;; mlp-256) echo 4000 ;; dcgan-64) echo 2000 ;; dcgan-256) echo 1000 ;; esac
    return
  fi
  case $1-$2 in
    mlp-64) echo 150 ;; mlp-256) echo 40 ;; dcgan-64) echo 20 ;; dcgan-256) echo 6 ;;
  esac
}
thread_counts="1 2"; [ "$device" = cuda ] && thread_counts=1

for i in $(seq "$repeats"); do
  for arch in mlp dcgan; do
    for batch in 64 256; do
      for threads in $thread_counts; do
        steps=$(steps_for $arch $batch)
        # The same step as bench/pytorch_reference.py's: its MLP widths (the defaults; the config
        # has the paper's wider ones), no dropout in the MLP's D and no moving average of G, which
        # the configs add.
        config=(--config configs/fashion-mnist-dcgan.yaml --set train.g_ema_kimg=0)
        [ $arch = mlp ] && config=(--config configs/mnist-mlp.yaml --set train.g_ema_kimg=0 --set model.mlp.d_dropout=0
                                   --set "model.mlp.g_hidden=[256,512]" --set "model.mlp.d_hidden=[512,256,128]")
        dir="$work/$arch-$batch-$threads-$i"
        log_every=$steps warmup=0
        if [ "$device" = cuda ]; then log_every=$((steps / 2)) warmup=$((steps / 2)); fi
        "$build/gantry" train "${config[@]}" --set data.name=fashion-mnist --set data.path="$data" --set run.dir="$dir" \
          --set train.steps=$steps --set train.batch_size=$batch --set train.threads=$threads \
          --set train.log_every=$log_every --set train.sample_every=0 --set train.consistency_every=0 \
          --set train.device=$device --set train.precision=$precision \
          --set train.deterministic=$([ "$device" = cuda ] && echo false || echo true) \
          --set checkpoint.every=0 > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
        gantry=$($python -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["img_per_s"])' "$dir/log.jsonl")
        ref=$($python bench/pytorch_reference.py --arch $arch --batch $batch --threads $threads \
                --steps $((steps - warmup)) --warmup $warmup --device $device --precision $precision \
                --data "$data/train-images-idx3-ubyte.gz")
        echo "$arch $batch $threads $gantry $ref"
        # Each pair as it finishes, so that a run cut short (a time limit) still shows what it measured.
        $python -c 'import json,sys; print("compare.sh: %s, round %s: gantry %.1f img/s, PyTorch %.1f" % (
          sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4])["img_per_s"]))' \
          "$arch b$batch ${threads}t" "$i" "$gantry" "$ref" >&2
      done
    done
  done
done > "$work/runs.txt"

$python - "$work/runs.txt" "$device" "$precision" <<'EOF'
import json, statistics, sys
cases = {}
for line in open(sys.argv[1]):
    arch, batch, threads, gantry, ref = line.split(" ", 4)
    cases.setdefault((arch, int(batch), int(threads)), []).append((float(gantry), json.loads(ref)))
print(f"device {sys.argv[2]}, precision {sys.argv[3]}")
print(f"{'case':22} {'gantry img/s':>12} {'pytorch img/s':>13} {'ratio median':>12} {'min':>6} {'max':>6}  GFLOP/s (of matmul)")
for key in sorted(cases):
    runs = cases[key]
    ratios = sorted(g / r["img_per_s"] for g, r in runs)
    g_med = statistics.median(g for g, _ in runs)
    r_med = statistics.median(r["img_per_s"] for _, r in runs)
    flop = runs[0][1]["step_gflop_per_image"]
    mm = statistics.median(r["matmul_gflops"] for _, r in runs)
    extra = (f"  gantry {g_med * flop:.1f} ({100 * g_med * flop / mm:.0f} %), "
             f"pytorch {r_med * flop:.1f} ({100 * r_med * flop / mm:.0f} %) of {mm:.1f}")
    print(f"{key[0]:5} b{key[1]:<4} {key[2]} thread(s) {g_med:12.0f} {r_med:13.0f} {statistics.median(ratios):12.2f} "
          f"{ratios[0]:6.2f} {ratios[-1]:6.2f}{extra}")
EOF
