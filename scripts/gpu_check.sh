#!/usr/bin/env bash
# Validates gantry's CUDA/NCCL path on a machine with a GPU and PyTorch installed (for example
# the device machine: PyTorch 2.x with CUDA, but no MPI, yaml-cpp or prometheus-cpp).
#
#   scripts/gpu_check.sh fetch-debs DIR   on a Debian machine with apt: downloads the .deb files of
#                                         the libraries gantry needs beyond LibTorch into DIR
#   scripts/gpu_check.sh run [DIR]        on the GPU machine: unpacks DIR's .debs into a local
#                                         prefix when the libraries are not installed, configures
#                                         gantry against PyTorch's LibTorch
#                                         (torch.utils.cmake_prefix_path), builds, runs the
#                                         communicator and reducer tests, the unit tests (their
#                                         CUDA cases included), np=1 training runs on the GPU with
#                                         NCCL in fp32 and bf16, the all-reduce benchmark, and the
#                                         GPU side of bench/compare.sh against that PyTorch;
#                                         prints a report (also $OUT/gpu_check.txt when OUT is set)
set -euo pipefail
cd "$(dirname "$0")/.."

# Beyond LibTorch: MPI, YAML, JSON, PNG, xxhash, prometheus-cpp and GoogleTest, with the
# libraries they pull in that a minimal image lacks. Never glibc or libstdc++: those stay the host's.
PACKAGES=(libopenmpi-dev libopenmpi3 openmpi-bin openmpi-common libhwloc15 libevent-core-2.1-7
  libevent-pthreads-2.1-7 libpmix2 libfabric1 libucx0 libibverbs1 librdmacm1 libnl-3-200 libnl-route-3-200
  libpsm2-2 libpsm-infinipath1 ibverbs-providers libxnvctrl0 libmunge2 libltdl7 libudev1 libnuma1 libpciaccess0
  libhwloc-plugins
  libyaml-cpp-dev libyaml-cpp0.7 nlohmann-json3-dev libpng-dev libpng16-16 libjpeg62-turbo-dev libjpeg62-turbo libxxhash-dev libxxhash0 libstb-dev libstb0
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0 libcivetweb1
  libcivetweb-dev libcurl4-openssl-dev libcurl4 libgtest-dev googletest
  zlib1g-dev ninja-build dataset-fashion-mnist)

fetch_debs() {
  local dir=$1
  mkdir -p "$dir"
  (cd "$dir" && apt-get download "${PACKAGES[@]}")
  du -sh "$dir"
}

# Unpacks every .deb in $1 into $2 (dpkg-deb -x: no scripts run, nothing outside $2 touched).
unpack_debs() {
  local dir=$1 prefix=$2
  mkdir -p "$prefix"
  for deb in "$dir"/*.deb; do dpkg-deb -x "$deb" "$prefix"; done
  # What update-alternatives would have linked: mpirun, mpiexec, mpicxx, ... -> their .openmpi.
  for tool in "$prefix"/usr/bin/*.openmpi; do ln -sf "$(basename "$tool")" "${tool%.openmpi}"; done
}

run_check() {
  local debs=${1:-} out=${OUT:-build-gpu} report
  mkdir -p "$out"
  report="$out/gpu_check.txt"
  exec > >(tee "$report") 2>&1
  local python=${PYTHON:-python3}
  echo "== gantry GPU check, $(date -u +%FT%TZ), $(hostname)"
  nvidia-smi -L || { echo "no GPU visible (nvidia-smi -L failed)"; exit 1; }
  local torch_prefix
  torch_prefix=$($python -c 'import torch; print(torch.utils.cmake_prefix_path)')
  $python -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count())'

  local prefix_path=$torch_prefix
  export FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
  if [ -n "$debs" ] && ! command -v mpirun >/dev/null; then
    local prefix=$PWD/build-gpu-deps
    unpack_debs "$debs" "$prefix"
    [ -d "$prefix$FASHION_MNIST_DIR" ] && FASHION_MNIST_DIR=$prefix$FASHION_MNIST_DIR
    local lib=$prefix/usr/lib/x86_64-linux-gnu
    export PATH=$prefix/usr/bin:$PATH
    export LD_LIBRARY_PATH=$lib:$lib/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    export OPAL_PREFIX=$prefix/usr         # relocated OpenMPI finds its components and help files here
    export OMPI_MCA_plm_rsh_agent=         # no ssh needed for one node
    prefix_path="$torch_prefix;$prefix/usr;$lib/cmake"
    echo "dependencies unpacked into $prefix"
  fi

  local build=build-gpu
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix_path" \
    -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCUDAToolkit_ROOT=/usr/local/cuda
  cmake --build $build -j "$(nproc)"

  local mpi=(mpirun --oversubscribe); [ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
  echo "== communicator and reducer tests (CPU tensors, MPI)"
  for np in 1 2; do
    "${mpi[@]}" -np $np $build/tests/test_comm
    "${mpi[@]}" -np $np $build/tests/test_reducer
  done
  local failed=()
  echo "== unit tests (Precision.CudaUpdatesMatchTheCpu runs on the GPU here)"
  ctest --test-dir $build -L unit --output-on-failure || failed+=("unit tests")
  for precision in fp32 bf16; do
    echo "== np=1 training on the GPU: Fashion-MNIST DCGAN, train.device cuda, NCCL, $precision"
    $build/gantry train --config configs/fashion-mnist-dcgan.yaml --set run.dir="$out/cuda-$precision" \
      --set data.path="$FASHION_MNIST_DIR" --set data.cache_dir="$out/data-cache" \
      --set train.steps=200 --set train.log_every=50 --set train.device=cuda --set comm.backend=nccl \
      --set train.precision=$precision || failed+=("cuda training ($precision)")
  done
  echo "== all-reduce benchmark (MPI, CPU tensors)"
  "${mpi[@]}" -np 2 $build/bench/allreduce_bench --max $((64 << 20)) --json "$out/allreduce_mpi.json" ||
    failed+=("allreduce bench")
  for precision in fp32 bf16; do
    echo "== gantry vs PyTorch eager on the GPU ($precision)"
    PYTHON=$python bench/compare.sh --device cuda --precision $precision $build 3 || failed+=("compare ($precision)")
  done
  echo "== report in $report"
  if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
  fi
}

case ${1:-} in
  fetch-debs) fetch_debs "${2:?fetch-debs needs a directory}" ;;
  run) run_check "${2:-}" ;;
  *) sed -n '2,15p' "$0"; exit 2 ;;
esac
