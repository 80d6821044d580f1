#!/usr/bin/env bash
# Tests (fault): the collective watchdog. A rank stalled before a collective (GANTRY_COMM_FAULT)
# makes the job abort within comm.timeout_s + 10 s, naming the stalled rank, instead of hanging;
# a healthy run with a short timeout is untouched. Usage: watchdog_e2e.sh GANTRY CONFIGS MPIEXEC [FLAGS...]
set -u
gantry=$1 configs=$2; shift 2
mpiexec=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() {  # NAME CONDITION-RESULT MESSAGE
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}

# stall NP RANK SEQ: rank RANK sleeps before its collective number SEQ; timeout 3 s.
stall() {
  local np=$1 rank=$2 seq=$3 out="$work/stall-$1-$2-$3.txt" start rc elapsed
  start=$(date +%s)
  GANTRY_COMM_FAULT="stall:$rank:$seq" timeout 60 "${mpiexec[@]}" -x GANTRY_COMM_FAULT -np "$np" "$gantry" train \
    --config "$configs/gaussian1d.yaml" --set run.dir="$work/run-$np-$rank-$seq" --set train.batch_size=$((64 * np)) \
    --set comm.timeout_s=3 > "$out" 2>&1
  rc=$? elapsed=$(( $(date +%s) - start ))
  check "np$np stall rank $rank at #$seq: exits non-zero" $([ $rc -ne 0 ] && [ $rc -ne 124 ] && echo 0 || echo 1) "rc $rc"
  check "np$np stall rank $rank at #$seq: within timeout + 10 s" $([ $elapsed -le 13 ] && echo 0 || echo 1) "${elapsed} s"
  grep -q "watchdog: .* has not completed in 3 s (comm.timeout_s); .*rank $rank has not arrived" "$out"
  check "np$np stall rank $rank at #$seq: names rank $rank" $? "$(grep -m1 watchdog "$out" || tail -n3 "$out")"
  grep -q "aborted 1 communicator(s) (mpi) and now the job" "$out"
  check "np$np stall rank $rank at #$seq: the watched communicator's abort hook ran before MPI_Abort" $? \
    "$(grep -m1 watchdog "$out")"
  for other in $(seq 0 $((np - 1))); do
    [ "$other" = "$rank" ] && continue
    ! grep -q "rank $other has not arrived" "$out"
    check "np$np stall rank $rank at #$seq: does not blame rank $other" $? "$(grep -m1 watchdog "$out")"
  done
}

stall 2 1 30    # an async bucket all-reduce, in the middle of a D update
stall 3 2 45
stall 3 0 12

timeout 120 "${mpiexec[@]}" -np 2 "$gantry" train --config "$configs/gaussian1d.yaml" \
  --set run.dir="$work/healthy" --set comm.timeout_s=3 --set train.steps=300 > "$work/healthy.txt" 2>&1
check "healthy run with a 3 s timeout finishes" $? "$(tail -n3 "$work/healthy.txt")"

[ $failures -eq 0 ] && echo "all watchdog checks passed" || echo "$failures watchdog check(s) failed"
exit $((failures > 0))
