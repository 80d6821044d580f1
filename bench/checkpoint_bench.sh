#!/usr/bin/env bash
# Benchmark: checkpoint save and load time for a ~100 MB training state (a wide MLP GAN: 8.0 M
# parameters, x3 with Adam's two moments) at np=1 and np=2, against this disk's raw bandwidth
# measured by dd in the same run, and the training stall of an async save.
# Usage: bench/checkpoint_bench.sh [build/gantry]   (writes to a temporary directory under runs/)
set -euo pipefail
cd "$(dirname "$0")/.."
gantry=${1:-build/gantry}
work=$(mktemp -d runs/bench-checkpoint.XXXX)
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi+=(--allow-run-as-root)
wide=(--set model.arch=mlp --set model.mlp.g_hidden=[1024,2048] --set model.mlp.d_hidden=[2048,1024,512]
      --set train.log_every=0 --set train.sample_every=0 --set train.batch_size=64)

dd if=/dev/zero of="$work/dd" bs=1M count=100 conv=fdatasync 2> "$work/dd.w"
dd if="$work/dd" of=/dev/null bs=1M 2> "$work/dd.r"
echo "dd write (fdatasync): $(tail -n1 "$work/dd.w" | awk -F, '{print $NF}')"
echo "dd read (page cache): $(tail -n1 "$work/dd.r" | awk -F, '{print $NF}')"

for np in 1 2; do
  for rep in 1 2 3; do
    dir="$work/np$np-$rep"
    "${mpi[@]}" -np $np "$gantry" train --config configs/fashion-mnist-dcgan.yaml --set run.dir="$dir" "${wide[@]}" \
      --set train.steps=2 > "$dir.save" 2>&1
    "${mpi[@]}" -np $np "$gantry" train --config configs/fashion-mnist-dcgan.yaml --set run.dir="$dir" "${wide[@]}" \
      --set train.steps=2 --resume auto > "$dir.load" 2>&1
    bytes=$(du -sb "$dir/checkpoints/step-00000002" | cut -f1)
    save=$(sed -n 's/.*step-00000002 (\([0-9.]*\) s).*/\1/p' "$dir.save")
    load=$(sed -n 's/.* in \([0-9.]*\) s; state digest.*/\1/p' "$dir.load")
    python3 -c "import sys; b,s,l=float(sys.argv[1]),float(sys.argv[2]),float(sys.argv[3]); print(f'np={sys.argv[4]} rep {sys.argv[5]}: {b/1e6:.1f} MB  save {s:.3f} s ({b/s/1e6:.0f} MB/s)  load {l:.3f} s ({b/l/1e6:.0f} MB/s)')" \
      "$bytes" "$save" "$load" $np $rep
  done
done

for np in 1 2; do
  dir="$work/async-np$np"
  "${mpi[@]}" -np $np "$gantry" train --config configs/fashion-mnist-dcgan.yaml --set run.dir="$dir" "${wide[@]}" \
    --set train.steps=100 --set checkpoint.every=20 --set checkpoint.async=true > "$dir.out" 2>&1
  echo "async np=$np copy stalls: $(sed -n 's/.*training stalled \([0-9.]*\) s for the copy.*/\1/p' "$dir.out" | tr '\n' ' ')s"
  grep -q "waiting for the previous save" "$dir.out" && echo "  (some saves waited for the previous one: $(grep -o '[0-9.]* s waiting' "$dir.out" | tr '\n' ' '))"
done
