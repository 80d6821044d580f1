#!/usr/bin/env bash
# The main job: set up and build, then a short 2-rank DCGAN run on Fashion-MNIST that writes
# sample grids to runs/fashion-mnist-dcgan/samples/ and metrics to runs/fashion-mnist-dcgan/log.jsonl.
# Run it again to continue from the last checkpoint: STEPS=600 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
mpi_flags=(--oversubscribe)
[ "$(id -u)" -eq 0 ] && mpi_flags+=(--allow-run-as-root)
mpirun "${mpi_flags[@]}" -np 2 build/gantry train --config configs/fashion-mnist-dcgan.yaml \
  --set train.steps="${STEPS:-300}" --resume auto "$@"
echo "samples: $(ls -d runs/fashion-mnist-dcgan/samples/*.png | tail -n 1)"
