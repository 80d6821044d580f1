#!/bin/bash
# A time-matched tuning probe for the Fashion-MNIST Fréchet distance (docs/RESULTS.md): train
# CONFIG (default configs/fashion-mnist-cdcgan.yaml) on 2 ranks for SECONDS, stop it with SIGUSR1
# (a checkpoint at the step reached), then score 10,000 samples of G's moving average with
# `gantry eval --metric frechet`. One line per probe is appended to runs/probes.txt.
#   bench/frechet_probe.sh 300 hinge --set train.loss=hinge
set -u
cd "$(dirname "$0")/.."
if [ $# -lt 2 ]; then echo "usage: $0 SECONDS NAME [--set key=value ...]" >&2; exit 2; fi
secs=$1; name=$2; shift 2
config=${CONFIG:-configs/fashion-mnist-cdcgan.yaml}
dir=runs/p-$name
root=(); [ "$(id -u)" = 0 ] && root=(--allow-run-as-root)
rm -rf "$dir"; mkdir -p runs
start=$(date +%s)
timeout -s USR1 "$secs" mpirun "${root[@]}" -np 2 build/gantry train --config "$config" \
  --set run.dir="$dir" --set train.steps=100000 --set train.sample_every=0 --set checkpoint.every=1000 \
  --set train.log_every=500 --set eval.frechet_every=0 "$@" > "$dir.log" 2>&1
build/gantry eval --checkpoint "$dir" --metric frechet > "$dir.eval" 2>&1 || { cat "$dir.eval" >&2; exit 1; }
step=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["step"])' "$dir/eval.jsonl")
fd=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["frechet_distance"])' "$dir/eval.jsonl")
echo "$name step $step frechet $fd $(( $(date +%s) - start ))s :: $*" | tee -a runs/probes.txt
