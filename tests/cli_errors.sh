#!/usr/bin/env bash
# Tests (e2e): a user's mistakes give one clear line naming the key, file or line, and a
# non-zero exit; nothing is left half-written. Usage: cli_errors.sh GANTRY MPIEXEC [MPI FLAGS...]
set -u
gantry=$1; shift
mpiexec=$1; shift
mpi_flags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0

# expect_error NAME "REGEX" COMMAND...: the command exits non-zero and its stderr matches REGEX.
expect_error() {
  local name=$1 pattern=$2; shift 2
  local out rc
  out=$("$@" 2>&1 >/dev/null); rc=$?
  if [ $rc -eq 0 ]; then
    echo "FAIL $name: exit 0"; failures=$((failures + 1))
  elif ! grep -Eq -- "$pattern" <<<"$out"; then
    echo "FAIL $name: stderr does not match /$pattern/:"; echo "$out" | sed 's/^/    /'; failures=$((failures + 1))
  elif [ "$(grep -c 'gantry' <<<"$out")" -ne 1 ]; then
    echo "FAIL $name: expected one error line, got:"; echo "$out" | sed 's/^/    /'; failures=$((failures + 1))
  else
    echo "ok   $name: $(head -n1 <<<"$out")"; passed=$((passed + 1))
  fi
}

cat > "$work/good.yaml" <<YAML
run:
  dir: $work/run
data:
  name: gaussian1d
model:
  arch: mlp
train:
  steps: 2
  batch_size: 8
YAML
printf 'run:\n  dir: %s/run\ntrain:\n  steps: 2\n  stepz: 3\n' "$work" > "$work/unknown.yaml"
printf 'train:\n  steps: 2\n  batch_size: eight\n' > "$work/type.yaml"
printf 'train:\n  steps: 2\noptim:\n  d:\n    lr: -1\n' > "$work/range.yaml"

expect_error unknown-key "unknown.yaml:5: unknown key 'train.stepz' \(did you mean 'train.steps'\?\)" \
  "$gantry" train --config "$work/unknown.yaml"
expect_error wrong-type "type.yaml:3: train.batch_size: expected an integer, got 'eight'" \
  "$gantry" train --config "$work/type.yaml"
expect_error out-of-range "range.yaml:5: optim.d.lr: must be positive" \
  "$gantry" train --config "$work/range.yaml"
expect_error set-unknown "--set train.step=3: unknown key 'train.step'" \
  "$gantry" train --config "$work/good.yaml" --set train.step=3
expect_error set-type "--set train.steps=x: train.steps: expected an integer" \
  "$gantry" train --config "$work/good.yaml" --set train.steps=x
expect_error missing-config "nope.yaml: cannot open" "$gantry" train --config "$work/nope.yaml"
expect_error bad-backend "comm.backend: must be one of" \
  "$gantry" train --config "$work/good.yaml" --set comm.backend=gloo
# This machine has no GPU (the device machine has one, where NCCL is checked by hand: bench/RESULTS.md).
if ! nvidia-smi -L >/dev/null 2>&1; then
  expect_error nccl-without-gpu "comm.backend nccl: (no CUDA device is visible to rank 0|this gantry was built without NCCL)" \
    "$gantry" train --config "$work/good.yaml" --set comm.backend=nccl
fi
if ! nvidia-smi -L > /dev/null 2>&1; then
  expect_error cuda-without-gpu "train.device: cuda, but no CUDA device is usable here \\((this LibTorch was built without CUDA|no GPU is visible to this process)\\)" \
    "$gantry" train --config "$work/good.yaml" --set train.device=cuda
fi
expect_error batch-not-divisible "good.yaml:9: train.batch_size: 8 is not divisible by the world size 3" \
  "$mpiexec" "${mpi_flags[@]}" -np 3 "$gantry" train --config "$work/good.yaml"
# Found by every rank together, it is still a config mistake: exit 2, which launchers do not retry.
"$mpiexec" "${mpi_flags[@]}" -np 3 "$gantry" train --config "$work/good.yaml" >/dev/null 2>&1; rc=$?
if [ $rc -eq 2 ]; then echo "ok   batch-not-divisible exits 2"; passed=$((passed + 1));
else echo "FAIL batch-not-divisible: exit $rc, expected 2"; failures=$((failures + 1)); fi

# Data files: a truncated IDX file and one with a wrong magic number, named in the error.
mkdir -p "$work/mnist"
python3 - "$work/mnist" <<'PY'
import struct, sys
d = sys.argv[1]
header = struct.pack(">IIII", 0x803, 100, 28, 28)
open(d + "/train-images-idx3-ubyte", "wb").write(header + bytes(784 * 100 - 10))
open(d + "/t10k-images-idx3-ubyte", "wb").write(struct.pack(">IIII", 0x801, 100, 28, 28) + bytes(784 * 100))
PY
expect_error truncated-idx "train-images-idx3-ubyte: truncated: header says 100 images of 28x28" \
  "$mpiexec" "${mpi_flags[@]}" -np 2 "$gantry" train --config "$work/good.yaml" \
  --set data.name=mnist --set data.path="$work/mnist" --set run.dir="$work/run-trunc"
expect_error wrong-magic "t10k-images-idx3-ubyte: bad magic number 0x00000801" \
  "$gantry" train --config "$work/good.yaml" --set data.name=mnist --set data.path="$work/mnist" --set data.split=test

# A run that failed at start-up leaves no run directory behind.
if [ -e "$work/run-trunc" ]; then echo "FAIL truncated-idx left $work/run-trunc behind"; failures=$((failures + 1)); fi

# scripts/gpu_check.sh refuses a mistyped stage before it configures or builds anything.
gpu_check=$(dirname "$0")/../scripts/gpu_check.sh
expect_error gpu-check-stage "gpu_check.sh: unknown stage 'cuda-unt' \\(stages: nccl cuda-unit" \
  env OUT="$work/gpu" "$gpu_check" run "$work/no-debs" nccl cuda-unt
if [ -e "$work/gpu" ]; then echo "FAIL gpu-check-stage wrote $work/gpu"; failures=$((failures + 1)); fi

# Plain `gantry train` needs no --config: the built-in defaults (a Fashion-MNIST DCGAN), which a
# misspelt --set still names.
if "$gantry" train --print-config 2>&1 | grep -q '^  name: fashion-mnist$'; then
  echo "ok   train without --config prints the defaults"; passed=$((passed + 1))
else echo "FAIL train without --config: no defaults printed"; failures=$((failures + 1)); fi
expect_error no-config-unknown-key "--set train.stepz=3: unknown key" "$gantry" train --set train.stepz=3

echo "$passed passed, $failures failed"
[ $failures -eq 0 ]
