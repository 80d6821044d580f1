#!/usr/bin/env bash
# Tests (fault): surviving faults on 2-rank gaussian1d runs. kill -9 of one rank under
# scripts/gantry-launch (several times, at a random step too) still ends with the uninterrupted
# run's digest; SIGTERM to the supervisor checkpoints at the current step, exits 0 and resumes
# bit-exactly (SIGTERM to a bare mpirun: the resume is bit-exact); a NaN injected at
# step k is skipped and counted, or stops naming the step; a checkpoint write that fails (full
# disk) goes on or stops as configured, the previous checkpoint intact; a deterministic failure
# is not restarted forever. Usage: fault_e2e.sh GANTRY CONFIGS LAUNCH MPIEXEC [FLAGS...]
set -u
gantry=$1 configs=$2 launch=$3; shift 3
mpiexec=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() {  # NAME CONDITION-RESULT MESSAGE
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}
# Every checkpoint saved (checkpoint.every=1) keeps the steps slow enough to kill mid-run.
common=(--config "$configs/gaussian1d.yaml" --set train.batch_size=128 --set train.steps=400
        --set train.log_every=1 --set checkpoint.every=1 --set train.consistency_every=50)
run() {  # DIR ARGS...: a plain 2-rank run
  local dir=$1; shift
  timeout 120 "${mpiexec[@]}" -np 2 "$gantry" train "${common[@]}" --set run.dir="$dir" "$@"
}
digest() { "$gantry" inspect "$1/checkpoints/$(cat "$1/checkpoints/latest" 2>/dev/null)" 2>/dev/null | sed -n 's/^digest: //p'; }
logged_step() { tail -n 1 "$1/log.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2; }
wait_step() {  # DIR STEP: until log.jsonl reaches STEP (at most 60 s)
  for _ in $(seq 600); do [ "$(logged_step "$1")" -ge "$2" ] 2>/dev/null && return 0; sleep 0.1; done
  return 1
}
rank_pid() {  # DIR RANK: the pid of that rank of the run in DIR
  local pid
  for pid in $(pgrep -f "run.dir=$1( |$)"); do
    [ "$(tr '\0' '\n' < /proc/$pid/environ 2>/dev/null | grep '^OMPI_COMM_WORLD_RANK=' | cut -d= -f2)" = "$2" ] && echo "$pid" && return
  done
}

run "$work/reference" > "$work/reference.txt" 2>&1
check "uninterrupted reference run" $? "$(tail -n3 "$work/reference.txt")"
ref=$(digest "$work/reference")

# ---- kill -9 one rank at several steps and a random one; the supervisor restarts -------------
dir="$work/killed"
"$launch" --np 2 --max-restarts 4 --backoff 0 --gantry "$gantry" --log-dir "$work/killed-logs" \
  --launcher-arg --oversubscribe -- "${common[@]}" --set run.dir="$dir" > "$work/killed.txt" 2>&1 &
sup=$!
killed_at=""
for target in 40 150 $((200 + RANDOM % 150)); do
  wait_step "$dir" "$target" || break
  pid=$(rank_pid "$dir" 1)
  [ -n "$pid" ] && kill -9 "$pid" && killed_at+=" $(logged_step "$dir")"
  # the next attempt is running once the log has gone past what the killed one wrote
  sleep 2
done
wait $sup
rc=$?
check "kill -9 of rank 1 at steps$killed_at: the supervised job finishes" $rc "exit $rc; $(tail -n5 "$work/killed.txt")"
check "three kills were made" $([ "$(wc -w <<<"$killed_at")" = 3 ] && echo 0 || echo 1) "killed at:$killed_at"
n=$(grep -c 'failed: signal 9 (KILL) on rank 1' "$work/killed.txt")
check "each restart is logged with its cause (signal 9, rank 1)" $([ "$n" = 3 ] && echo 0 || echo 1) \
  "$n such lines: $(grep 'gantry-launch' "$work/killed.txt" | head -n 8)"
d=$(digest "$dir")
check "after the kills the final digest equals the uninterrupted run's" $([ -n "$ref" ] && [ "$d" = "$ref" ] && echo 0 || echo 1) "$d vs $ref"

# ---- SIGTERM to the supervisor (what Kubernetes or docker stop send to the job's entry point):
# the ranks checkpoint at the step they reached, the exit is 0, and --resume auto is bit-exact.
dir="$work/sigterm-launch"
"$launch" --np 2 --max-restarts 2 --backoff 0 --gantry "$gantry" --log-dir "$work/sigterm-launch-logs" \
  --launcher-arg --oversubscribe -- "${common[@]}" --set run.dir="$dir" > "$work/sigterm-launch.txt" 2>&1 &
sup=$!
wait_step "$dir" 100
kill -TERM $sup
wait $sup
rc=$?
check "SIGTERM to gantry-launch: exit 0" $rc "exit $rc; $(tail -n5 "$work/sigterm-launch.txt")"
stopped=$(sed -n 's/^gantry: stopping after step \([0-9]*\) on SIG.*/\1/p' "$work/sigterm-launch.txt" | head -n1)
latest=$(cat "$dir/checkpoints/latest" 2>/dev/null)
check "SIGTERM to gantry-launch: the checkpoint committed is the step it stopped at ($stopped)" \
  $([ -n "$stopped" ] && [ "$latest" = "$(printf 'step-%08d' "$stopped")" ] && echo 0 || echo 1) \
  "latest=$latest; $(grep -m2 'stopping\|gantry-launch' "$work/sigterm-launch.txt")"
check "SIGTERM to gantry-launch: it was not restarted" \
  $(grep -q "attempt 2" "$work/sigterm-launch.txt" && echo 1 || echo 0) "$(grep attempt "$work/sigterm-launch.txt")"
run "$dir" --resume auto > "$work/sigterm-launch-resume.txt" 2>&1
check "SIGTERM to gantry-launch: --resume auto finishes" $? "$(tail -n3 "$work/sigterm-launch-resume.txt")"
d=$(digest "$dir")
check "SIGTERM to gantry-launch: the resumed run's digest equals the uninterrupted run's" \
  $([ -n "$d" ] && [ "$d" = "$ref" ] && echo 0 || echo 1) "$d vs $ref"

# ---- SIGTERM to a bare mpirun mid-run, then --resume auto continues bit-exactly.
# OpenMPI 4.1's mpirun answers SIGTERM itself: SIGCONT to the ranks, SIGTERM a second later
# (odls_base_sigkill_timeout), SIGKILL a second after that, and exit 1 whatever the ranks did.
# So only the resume is asserted here; the supervisor above turns SIGTERM into the clean path.
dir="$work/sigterm"
"${mpiexec[@]}" -np 2 "$gantry" train "${common[@]}" --set run.dir="$dir" > "$work/sigterm.txt" 2>&1 &
job=$!  # mpirun itself
wait_step "$dir" 100
kill -TERM $job
wait $job
run "$dir" --resume auto > "$work/sigterm-resume.txt" 2>&1
check "SIGTERM to mpirun: --resume auto finishes" $? "$(tail -n3 "$work/sigterm-resume.txt")"
d=$(digest "$dir")
check "SIGTERM to mpirun: the resumed run's digest equals the uninterrupted run's" $([ -n "$d" ] && [ "$d" = "$ref" ] && echo 0 || echo 1) "$d vs $ref"

# ---- a NaN at step 7 on rank 1: skip (counted, replicas identical) or stop (step named) --------
short=(--set train.steps=20 --set checkpoint.every=5 --set train.consistency_every=1)
GANTRY_FAULT_NONFINITE=d:7:1 run "$work/nan-skip" "${short[@]}" > "$work/nan-skip.txt" 2>&1
rc=$?
check "NaN skip: the run finishes" $rc "exit $rc; $(tail -n3 "$work/nan-skip.txt")"
grep -q "non-finite loss or gradient in D's update at step 7; update skipped (1 in a row, 1 in all" "$work/nan-skip.txt"
check "NaN skip: the skip is reported with its step" $? "$(grep -m1 non-finite "$work/nan-skip.txt")"
grep -q '"skipped_updates": 1,' "$work/nan-skip/summary.json"
check "NaN skip: summary.json counts 1 skipped update" $? "$(grep skipped "$work/nan-skip/summary.json")"
GANTRY_FAULT_NONFINITE=g:7:0 run "$work/nan-stop" "${short[@]}" --set train.on_nonfinite=stop \
  > "$work/nan-stop.txt" 2>&1
rc=$?
check "NaN stop: exits non-zero" $([ $rc -ne 0 ] && echo 0 || echo 1) "exit $rc"
grep -q "gantry: error: non-finite loss or gradient in G's update at step 7; stopping (train.on_nonfinite: stop)" "$work/nan-stop.txt"
check "NaN stop: one line names the step and the network" $? "$(grep -m2 gantry: "$work/nan-stop.txt" | tail -n1)"
"$gantry" inspect "$work/nan-stop/checkpoints/step-00000005" > /dev/null 2>&1
check "NaN stop: the step-5 checkpoint is intact" $? "inspect failed"

# ---- a full disk at the step-10 save (rank 1): go on, or stop with step 5 intact ---------------
GANTRY_CHECKPOINT_FAULT=enospc:1:10 run "$work/disk-go" "${short[@]}" > "$work/disk-go.txt" 2>&1
rc=$?
check "full disk, continue: the run finishes" $rc "exit $rc; $(tail -n3 "$work/disk-go.txt")"
grep -q "step-00000010 not saved: rank 1: cannot write .*No space left on device.*training goes on" "$work/disk-go.txt"
check "full disk, continue: the failure is named" $? "$(grep -m1 warning "$work/disk-go.txt")"
[ ! -e "$work/disk-go/checkpoints/step-00000010" ] && [ -d "$work/disk-go/checkpoints/step-00000015" ]
check "full disk, continue: no step 10, later saves work" $? "$(ls "$work/disk-go/checkpoints")"
GANTRY_CHECKPOINT_FAULT=enospc:1:10 run "$work/disk-stop" "${short[@]}" --set checkpoint.on_failure=stop \
  > "$work/disk-stop.txt" 2>&1
rc=$?
check "full disk, stop: exits non-zero" $([ $rc -ne 0 ] && echo 0 || echo 1) "exit $rc"
grep -q "stopping (checkpoint.on_failure: stop); the previous one, .*step-00000005, is intact" "$work/disk-stop.txt"
check "full disk, stop: names the intact previous checkpoint" $? "$(grep -m1 error "$work/disk-stop.txt")"
[ "$(cat "$work/disk-stop/checkpoints/latest")" = step-00000005 ] && ! ls -d "$work/disk-stop/checkpoints/"*.tmp 2>/dev/null
check "full disk, stop: latest is step 5 and no half-written directory is left" $? "$(ls "$work/disk-stop/checkpoints")"
run "$work/disk-stop" "${short[@]}" --resume auto > "$work/disk-stop-resume.txt" 2>&1
check "full disk, stop: --resume auto continues from step 5" \
  $(grep -q 'resumed from .*step-00000005' "$work/disk-stop-resume.txt" && echo 0 || echo 1) "$(tail -n3 "$work/disk-stop-resume.txt")"

# ---- a deterministic failure (NaN stop at the same step) is not restarted forever -------------
GANTRY_FAULT_NONFINITE=d:12:0 "$launch" --np 2 --max-restarts 5 --backoff 0 --gantry "$gantry" \
  --launcher-arg --oversubscribe -- "${common[@]}" "${short[@]}" \
  --set train.on_nonfinite=stop --set run.dir="$work/deterministic" > "$work/deterministic.txt" 2>&1
rc=$?
n=$(grep -c '^gantry-launch: attempt [0-9]*:' "$work/deterministic.txt")
check "deterministic failure: stops after 2 attempts, non-zero" $([ $rc -ne 0 ] && [ "$n" = 2 ] && echo 0 || echo 1) \
  "exit $rc, $n attempts"
grep -q 'the same step failed the same way twice' "$work/deterministic.txt"
check "deterministic failure: says why" $? "$(grep gantry-launch "$work/deterministic.txt" | tail -n2)"

[ $failures -eq 0 ] && echo "all fault checks passed" || echo "$failures fault check(s) failed"
exit $((failures > 0))
