#!/usr/bin/env bash
# Benchmark: peak memory (max RSS, getrusage via GNU time) of a training run as the dataset file
# grows. MNIST-format IDX files of RECORDS_SMALL and RECORDS_BIG 28x28 records (random pixels)
# are generated under a temporary directory; the same MLP GAN run (global batch 100, STEPS steps,
# prefetch on) trains on each, one process. Records are read with pread on demand, so peak memory
# should not follow the file's size (only the epoch's permutation, 8 bytes a record, does).
# Usage: bench/memory_bench.sh [build/gantry] [STEPS] [RECORDS_SMALL] [RECORDS_BIG]
set -euo pipefail
cd "$(dirname "$0")/.."
gantry=${1:-build/gantry}
steps=${2:-300}
sizes=("${3:-100000}" "${4:-1600000}")
work=$(mktemp -d "${TMPDIR:-/tmp}/gantry-memory-bench.XXXX")
trap 'rm -rf "$work"' EXIT

be32() { printf "\\x$(printf %02x $(($1 >> 24 & 255)))\\x$(printf %02x $(($1 >> 16 & 255)))\\x$(printf %02x $(($1 >> 8 & 255)))\\x$(printf %02x $(($1 & 255)))"; }

printf "%-12s %12s %14s %14s %10s\n" records file_MB peak_RSS_MB resident_would_MB seconds
for n in "${sizes[@]}"; do
  dir="$work/mnist-$n"
  mkdir -p "$dir"
  { be32 2051; be32 "$n"; be32 28; be32 28; head -c $((n * 784)) /dev/urandom; } > "$dir/train-images-idx3-ubyte"
  file_bytes=$(stat -c %s "$dir/train-images-idx3-ubyte")
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/rss-$n" "$gantry" train --config configs/mnist-mlp.yaml \
    --set "model.mlp.g_hidden=[256,512]" --set "model.mlp.d_hidden=[512,256,128]" --set data.path="$dir" --set run.dir="$work/run-$n" --set train.steps="$steps" \
    --set train.log_every=100 --set train.sample_every=0 --set checkpoint.every=0 > "$work/log-$n" 2>&1 ||
    { cat "$work/log-$n"; exit 1; }
  end=$(date +%s.%N)
  rss_kb=$(tail -n1 "$work/rss-$n")
  # What holding the file as floats would take (4 bytes a pixel), for scale.
  printf "%-12s %12.1f %14.1f %14.1f %10.1f\n" "$n" "$(echo "$file_bytes / 1048576" | bc -l)" \
    "$(echo "$rss_kb / 1024" | bc -l)" "$(echo "$n * 784 * 4 / 1048576" | bc -l)" "$(echo "$end - $start" | bc -l)"
  rm -rf "$dir"
done
