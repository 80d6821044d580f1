#!/usr/bin/env bash
# Installs every Debian package gantry needs (idempotent, non-interactive), then builds build/gantry.
# Usage: scripts/setup.sh [--no-build] [--build-dir DIR] [extra cmake -D options...]
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  build-essential cmake ninja-build ccache pkg-config
  clang libclang-rt-14-dev  # libFuzzer and the sanitizer runtimes for scripts/fuzz.sh
  libtorch-dev python3-torch
  libopenblas0-openmp
  libopenmpi-dev openmpi-bin
  libyaml-cpp-dev prometheus-cpp-dev libcurl4-openssl-dev
  libgtest-dev libgmock-dev googletest
  nlohmann-json3-dev libpng-dev libjpeg62-turbo-dev zlib1g-dev libxxhash-dev libstb-dev
  prometheus
  dataset-fashion-mnist
)

sudo_cmd=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup.sh: need root or sudo to install packages" >&2; exit 1; }
  sudo_cmd=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Debian's LibTorch calls whatever libblas.so.3 the alternatives system points at; the netlib
# reference BLAS made a GAN step 5-10x slower on these machines, so select OpenBLAS (OpenMP).
for alt in libblas.so.3-x86_64-linux-gnu liblapack.so.3-x86_64-linux-gnu; do
  target=$(update-alternatives --list "$alt" 2>/dev/null | grep openblas | head -n1 || true)
  if [ -n "$target" ]; then "${sudo_cmd[@]}" update-alternatives --set "$alt" "$target" >/dev/null; fi
done

[ "${1:-}" = "--no-build" ] && exit 0
build=build
if [ "${1:-}" = "--build-dir" ]; then build=$2; shift 2; fi

cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$build" -j "${GANTRY_JOBS:-2}"
