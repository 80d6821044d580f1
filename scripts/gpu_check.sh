#!/usr/bin/env bash
# Validates gantry's CUDA/NCCL path on a machine with a GPU and PyTorch installed (for example
# the device machine: PyTorch 2.x with CUDA, but no MPI, yaml-cpp or prometheus-cpp).
#
#   scripts/gpu_check.sh fetch-debs DIR   on a Debian machine with apt: downloads the .deb files of
#                                         the libraries gantry needs beyond LibTorch into DIR
#   scripts/gpu_check.sh run [DIR [STAGE...]]
#       on the GPU machine: unpacks DIR's .debs into a local prefix when the libraries are not
#       installed, configures gantry against PyTorch's LibTorch (torch.utils.cmake_prefix_path)
#       and the NCCL its wheel loads, builds (every compile error listed), then runs the stages
#       (all by default):
#         nccl       test_nccl: the NCCL communicator on CUDA tensors (np 1), and more ranks than
#                    GPUs as one clear error (np 2)
#         cuda-unit  the GanStep/precision/device and Adam unit tests, whose CUDA cases run here
#         train      np=1 Fashion-MNIST DCGAN training on the GPU with NCCL, fp32 and bf16
#         compare    bench/compare.sh --device cuda against that PyTorch, fp32 and bf16
#         unit       every unit test on this LibTorch
#         mpi        communicator and reducer tests on CPU tensors, the all-reduce benchmark
#       prints a report (also $OUT/gpu_check.txt when OUT is set); exits 1 if a stage failed.
#       Only the targets the chosen stages need are built. Training runs write under build-gpu/
#       (their log.jsonl is copied to $OUT). Environment: GANTRY_GPU_PRECISIONS (compare's, default
#       "fp32 bf16"), GANTRY_GPU_REPEATS (compare's rounds, default 1: about 4 minutes per
#       precision on an H100), GANTRY_GPU_UNIT_REGEX (unit's ctest -R).
#       A device lent for 15 minutes fits: `scripts/gpu_check.sh run DIR cuda-unit nccl compare`
#       with GANTRY_GPU_PRECISIONS=bf16. DIR (.gpu-debs) and build-gpu*/ are git-ignored: carry
#       DIR to the device machine by name. A CUDA or NCCL test that skips itself there fails.
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
  libcivetweb-dev civetweb libcurl4-openssl-dev libcurl4 libgtest-dev googletest
  ninja-build dataset-fashion-mnist)

fetch_debs() {
  local dir=$1
  mkdir -p "$dir"
  (cd "$dir" && apt-get download "${PACKAGES[@]}")
  du -sh "$dir"
}

# OpenMPI and what only it needs: left out where the machine has an MPI of its own, whose
# libraries these would shadow on LD_LIBRARY_PATH.
MPI_DEBS='openmpi|hwloc|libevent|pmix|fabric|ucx|ibverbs|rdmacm|libnl-|psm|xnvctrl|munge|ltdl|libudev|numa|pciaccess'

# A library the machine already has (its header is there) is left out too: a second copy's
# headers would mix with the machine's (libjpeg's jconfig.h lives in the multiarch folder, so
# Debian's jpeglib.h met Ubuntu's jconfig.h: "Wrong JPEG library version").
declare -A HEADER_OF=([libjpeg62-turbo]=jpeglib.h [libpng]=png.h [nlohmann-json3]=nlohmann/json.hpp
  [libcurl]=x86_64-linux-gnu/curl/curl.h [libgtest]=gtest/gtest.h [googletest]=gtest/gtest.h
  [libxxhash]=xxhash.h [libyaml-cpp]=yaml-cpp/yaml.h [libstb]=stb/stb_image.h)
on_machine() {  # deb file name -> whether the machine has that library's header
  local name=$1 key
  for key in "${!HEADER_OF[@]}"; do
    [[ $name == "$key"* ]] && [ -f "/usr/include/${HEADER_OF[$key]}" ] && return 0
  done
  return 1
}

# Unpacks the .debs in $1 into $2 (dpkg-deb -x: no scripts run, nothing outside $2 touched),
# but for libraries the machine has; with $3 = no-mpi, OpenMPI's are left out too.
unpack_debs() {
  local dir=$1 prefix=$2 mode=${3:-}
  mkdir -p "$prefix"
  for deb in "$dir"/*.deb; do
    [ "$mode" = no-mpi ] && [[ $(basename "$deb") =~ ^(lib)?($MPI_DEBS) ]] && continue
    if on_machine "$(basename "$deb")"; then echo "using this machine's $(basename "$deb" | cut -d_ -f1)"; continue; fi
    dpkg-deb -x "$deb" "$prefix"
  done
  [ "$mode" = no-mpi ] && return
  # What update-alternatives would have linked: mpirun, mpiexec, mpicxx, ... -> their .openmpi.
  for tool in "$prefix"/usr/bin/*.openmpi; do ln -sf "$(basename "$tool")" "${tool%.openmpi}"; done
}

# Stages, in order; `run DIR STAGE...` runs only those named (build always runs first).
STAGES=(nccl cuda-unit train compare unit mpi)

# The build targets a stage needs (unit: all of them).
targets_for() {
  case $1 in
    nccl) echo test_nccl ;;
    cuda-unit) echo test_gan_step test_adam ;;
    train|compare) echo gantry ;;
    mpi) echo test_comm test_reducer allreduce_bench ;;
    bt=*) local exe=${1#bt=}; echo "${exe%%=*}" ;;
    *) echo all ;;
  esac
}

run_check() {
  # A mistyped stage is refused before the build, which would take minutes of a short GPU loan.
  local stage
  for stage in "${@:2}"; do
    [[ " ${STAGES[*]} " == *" $stage "* || $stage == bt=?*=?* ]] ||
      { echo "gantry: gpu_check.sh: unknown stage '$stage' (stages: ${STAGES[*]}, bt=TEST_EXE=GTEST_FILTER)" >&2; exit 2; }
  done
  local out=${OUT:-build-gpu}
  mkdir -p "$out"
  # Through a pipe rather than exec > >(tee): the script then waits for tee, so the report's last
  # lines are never cut off, and the stages' exit status is the script's.
  run_stages "$@" 2>&1 | tee "$out/gpu_check.txt"
  return "${PIPESTATUS[0]}"
}

run_stages() {
  local debs=${1:-} out=${OUT:-build-gpu} report
  shift || true
  local stages=("$@"); [ ${#stages[@]} -eq 0 ] && stages=("${STAGES[@]}")
  report="$out/gpu_check.txt"
  local python=${PYTHON:-python3}
  echo "== gantry GPU check, $(date -u +%FT%TZ), $(hostname), stages: ${stages[*]}"
  nvidia-smi -L || { echo "no GPU visible (nvidia-smi -L failed)"; exit 1; }
  local torch_prefix torch_dir
  torch_prefix=$($python -c 'import torch; print(torch.utils.cmake_prefix_path)')
  torch_dir=$($python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
  $python -c 'import torch; print("PyTorch", torch.__version__, "CUDA", torch.version.cuda, "devices", torch.cuda.device_count(), "NCCL", torch.cuda.nccl.version())'
  # Without CUDA in this PyTorch every CUDA test would skip itself, and the stages would "pass".
  $python -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' ||
    { echo "this PyTorch sees no CUDA device (a CPU-only wheel, or no driver): nothing here can be validated"; exit 1; }

  local prefix_path=$torch_prefix
  export FASHION_MNIST_DIR=/usr/share/datasets/fashion-mnist
  if [ -n "$debs" ]; then
    local prefix=$PWD/build-gpu-deps mode=
    if command -v mpirun >/dev/null; then
      mode=no-mpi
      echo "using this machine's MPI: $(command -v mpirun) ($(mpirun --version 2>&1 | head -1))"
    fi
    unpack_debs "$debs" "$prefix" $mode
    [ -d "$prefix$FASHION_MNIST_DIR" ] && FASHION_MNIST_DIR=$prefix$FASHION_MNIST_DIR
    local lib=$prefix/usr/lib/x86_64-linux-gnu
    export LD_LIBRARY_PATH=$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    if [ -z "$mode" ]; then
      export PATH=$prefix/usr/bin:$PATH
      export LD_LIBRARY_PATH=$lib/openmpi/lib:$LD_LIBRARY_PATH
      export OPAL_PREFIX=$prefix/usr         # relocated OpenMPI finds its components and help files here
      export OMPI_MCA_plm_rsh_agent=         # no ssh needed for one node
    fi
    prefix_path="$torch_prefix;$prefix/usr;$lib/cmake"
    echo "dependencies unpacked into $prefix"
  fi
  # The NCCL that PyTorch's wheel loads (nvidia-nccl-*), so that gantry and LibTorch share one;
  # else CMake's search (the CUDA toolkit's).
  local nccl_args=() nccl_dir
  nccl_dir=$($python -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null || true)
  if [ -n "$nccl_dir" ] && [ -f "$nccl_dir/include/nccl.h" ]; then
    nccl_args=(-DNCCL_INCLUDE_DIR="$nccl_dir/include" -DNCCL_LIBRARY="$(ls "$nccl_dir"/lib/libnccl.so* | head -1)")
    export LD_LIBRARY_PATH=$nccl_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
  export LD_LIBRARY_PATH=$torch_dir/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}

  local build=build-gpu
  echo "== configure and build against $torch_prefix"
  cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$prefix_path" \
    -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCUDAToolkit_ROOT=/usr/local/cuda "${nccl_args[@]}" \
    -DGANTRY_USE_CCACHE=OFF
  # -k 0: every compile error of this LibTorch in one report, not just the first.
  # A target that fails leaves the others built: the stages that need only those still run.
  local failed=() stage targets=()
  for stage in "${stages[@]}"; do read -ra more <<< "$(targets_for "$stage")"; targets+=("${more[@]}"); done
  [[ " ${targets[*]} " == *" all "* ]] && targets=(all)
  echo "building: ${targets[*]}"
  cmake --build $build -j "$(nproc)" --target "${targets[@]}" -- -k 0 || failed+=("build")
  # NCCL found and LibTorch with CUDA: comm/CMakeLists.txt defines GANTRY_TORCH_CUDA=1 only then.
  if grep -E "GANTRY_TORCH_CUDA=1" $build/build.ninja >/dev/null; then
    echo "comm compiled with NCCL and GANTRY_TORCH_CUDA=1"
  else
    failed+=("configure: no NCCL, or a LibTorch without CUDA (see CMake's feature summary above)")
  fi

  local mpi=(mpirun --oversubscribe); [ "$(id -u)" = 0 ] && mpi+=(--allow-run-as-root)
  # Runs a test command; a test that skipped itself for want of CUDA or NCCL is a failure here,
  # where both must work (other skips, such as OpenBLAS-only checks under MKL, are fine).
  gpu_tests() {
    local name=$1 log; shift
    log=$(mktemp)
    local rc=0
    "$@" 2>&1 | tee "$log" || rc=$?  # pipefail: the test's status (tee's is 0)
    [ "$rc" = 0 ] || failed+=("$name")
    if grep -qE "^(no CUDA device|built without NCCL|needs NCCL and a GPU)$" "$log"; then
      failed+=("$name: tests skipped for want of CUDA or NCCL")
    fi
    rm -f "$log"
  }
  for stage in "${stages[@]}"; do
    case $stage in
      nccl)
        echo "== NCCL communicator on CUDA tensors (np 1), and more ranks than GPUs (np 2)"
        gpu_tests "nccl np1" "${mpi[@]}" -np 1 $build/tests/test_nccl
        "${mpi[@]}" -np 2 $build/tests/test_nccl || failed+=("nccl np2") ;;
      cuda-unit)
        echo "== unit tests that use the GPU"
        gpu_tests "cuda unit tests" $build/tests/test_gan_step --gtest_filter='*Cuda*:Precision.*:Device.*'
        gpu_tests "cuda adam test" $build/tests/test_adam --gtest_filter='*Cuda*' ;;
      train)
        for precision in fp32 bf16; do
          echo "== np=1 training on the GPU: Fashion-MNIST DCGAN, train.device cuda, NCCL, $precision"
          # Under build-gpu/, not $OUT: checkpoints and the decoded data cache are far larger than
          # what comes back from the device machine; the log comes back. A fresh run directory each
          # time: gantry refuses to start a new run over an old one's checkpoints.
          rm -rf "$build/runs/cuda-$precision"
          $build/gantry train --config configs/fashion-mnist-dcgan.yaml --set run.dir="$build/runs/cuda-$precision" \
            --set data.path="$FASHION_MNIST_DIR" --set data.cache_dir="$build/data-cache" \
            --set train.steps=300 --set train.log_every=100 --set train.device=cuda --set comm.backend=nccl \
            --set train.precision=$precision || failed+=("cuda training ($precision)")
          # (a failed run may have no log: that is reported above, not a reason to stop the script)
          [ "$out" = "$build" ] || cp "$build/runs/cuda-$precision/log.jsonl" "$out/train-cuda-$precision.jsonl" 2>/dev/null || true
        done
        if [ "$(nvidia-smi -L | wc -l)" -lt 2 ]; then
          echo "== the same under mpirun -np 2 on one GPU: one clear error expected"
          rm -rf "$build/runs/cuda-np2"
          local np2
          np2=$("${mpi[@]}" -np 2 $build/gantry train --config configs/fashion-mnist-dcgan.yaml \
            --set run.dir="$build/runs/cuda-np2" --set data.path="$FASHION_MNIST_DIR" \
            --set data.cache_dir="$build/data-cache" --set train.steps=10 --set train.device=cuda 2>&1) &&
            failed+=("np2 on one GPU did not fail")
          echo "$np2" | tail -5
          # The error that says why, not some other failure (a data path, a build problem).
          echo "$np2" | grep -q "NCCL needs one GPU per rank" || failed+=("np2 on one GPU: not the one-GPU-per-rank error")
        fi ;;
      compare)
        for precision in ${GANTRY_GPU_PRECISIONS:-fp32 bf16}; do
          echo "== gantry vs PyTorch eager on the GPU ($precision)"
          PYTHON=$python bench/compare.sh --device cuda --precision $precision $build "${GANTRY_GPU_REPEATS:-1}" ||
            failed+=("compare ($precision)")
        done ;;
      unit)
        echo "== every unit test on this LibTorch"
        ctest --test-dir $build -L unit -j 8 --output-on-failure ${GANTRY_GPU_UNIT_REGEX:+-R "$GANTRY_GPU_UNIT_REGEX"} ||
          failed+=("unit tests") ;;
      mpi)
        echo "== communicator and reducer tests (CPU tensors, MPI), all-reduce benchmark"
        for np in 1 2; do
          "${mpi[@]}" -np $np $build/tests/test_comm || failed+=("comm np$np")
          "${mpi[@]}" -np $np $build/tests/test_reducer || failed+=("reducer np$np")
        done
        "${mpi[@]}" -np 2 $build/bench/allreduce_bench --max $((64 << 20)) --json "$out/allreduce_mpi.json" ||
          failed+=("allreduce bench") ;;
      bt=*)  # bt=TEST_EXE=GTEST_FILTER: a backtrace of a crashing test (cuda-gdb debugs host code too)
        local exe=${stage#bt=}; exe=${exe%%=*}
        echo "== backtrace of $exe --gtest_filter=${stage##*=}"
        cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args "$build/tests/$exe" --gtest_filter="${stage##*=}" 2>&1 |
          grep -v "^\[New Thread\|^\[Thread" | head -80 ;;
      *) echo "unknown stage $stage (stages: ${STAGES[*]})"; exit 2 ;;
    esac
  done
  echo "== report in $report"
  if [ ${#failed[@]} -gt 0 ]; then
    echo "FAILED: ${failed[*]}"
    exit 1
  fi
  echo "all stages passed: ${stages[*]}"
}

case ${1:-} in
  fetch-debs) fetch_debs "${2:?fetch-debs needs a directory}" ;;
  run) shift; run_check "$@" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
