#!/usr/bin/env bash
# Benchmark: the training step's breakdown for the MLP GAN and the DCGAN (Fashion-MNIST, one
# intra-op thread per rank, the same per-rank batch) at np=1, and at np=2 with the all-reduce
# overlapped with backward (comm.overlap: true) and after it (false). Runs alternate, REPEATS times
# each; for each case it prints the median images/s and, from summary.json's phase_seconds of the
# median run, the share of wall time in D and G forward/backward, the optimizer, the exposed
# all-reduce (what training waited for after backward) and data wait. Then the 2-rank scaling
# efficiency: np=2 images/s over twice np=1's.
# Usage: bench/step_breakdown.sh [BUILD_DIR] [REPEATS] [PER_RANK_BATCH]   (from the repository root)
set -euo pipefail
build=${1:-build} repeats=${2:-3} batch=${3:-64}
flags=(--oversubscribe); [ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT

run() {  # arch np overlap repeat
  local arch=$1 np=$2 overlap=$3 i=$4 config steps
  case $arch in  # the MLP at the widths of the results so far (the config now has wider ones)
    mlp) config=(--config configs/mnist-mlp.yaml --set "model.mlp.g_hidden=[256,512]"
                 --set "model.mlp.d_hidden=[512,256,128]") steps=300 ;;
    dcgan) config=(--config configs/fashion-mnist-dcgan.yaml) steps=40 ;;
  esac
  local dir="$work/$arch-np$np-$overlap-$i"
  mpirun "${flags[@]}" -np "$np" "$build/gantry" train "${config[@]}" --set data.name=fashion-mnist \
    --set run.dir="$dir" --set train.steps=$steps --set train.batch_size=$((batch * np)) --set train.threads=1 \
    --set train.sample_every=0 --set train.consistency_every=0 --set train.log_every=$steps \
    --set checkpoint.every=0 --set comm.overlap="$overlap" > "$dir.log" 2>&1 || { cat "$dir.log"; exit 1; }
  echo "$arch np$np overlap=$overlap $dir/summary.json"
}

for i in $(seq "$repeats"); do
  for arch in mlp dcgan; do
    run $arch 1 true "$i"
    run $arch 2 true "$i"
    run $arch 2 false "$i"
  done
done > "$work/runs.txt"

python3 - "$work/runs.txt" "$batch" <<'EOF'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    arch, np, overlap, path = line.split()
    runs.setdefault((arch, np, overlap), []).append(json.load(open(path)))
print(f"per-rank batch {sys.argv[2]}, 1 thread per rank; shares of wall time from the median run")
print(f"{'case':28} {'img/s':>8} {'D f/b':>7} {'G f/b':>7} {'optim':>7} {'exposed AR':>10} {'data':>7} {'other':>7}")
median = {}
for key, rs in runs.items():
    rs.sort(key=lambda s: s["img_per_s"])
    m = rs[len(rs) // 2]
    median[key] = statistics.median(s["img_per_s"] for s in rs)
    p, t = m["phase_seconds"], m["seconds"]
    share = lambda k: f"{100 * p[k] / t:6.1f}%"
    print(f"{' '.join(key):28} {median[key]:8.0f} {share('d_forward_backward')} {share('g_forward_backward')} "
          f"{share('optimizer')} {share('exposed_allreduce'):>10} {share('data_wait')} {share('other')}"
          f"   (img/s min {rs[0]['img_per_s']:.0f}, max {rs[-1]['img_per_s']:.0f})")
for arch in ("mlp", "dcgan"):
    one = median[(arch, "np1", "overlap=true")]
    for overlap in ("true", "false"):
        two = median[(arch, "np2", f"overlap={overlap}")]
        print(f"{arch}: 2-rank scaling efficiency, overlap {overlap}: {100 * two / (2 * one):.1f} %")
EOF
