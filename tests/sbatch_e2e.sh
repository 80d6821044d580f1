#!/usr/bin/env bash
# Tests (fault): scripts/slurm/gantry.sbatch without Slurm. Stand-ins for srun (mpirun with
# --ntasks ranks; it can deliver Slurm's USR1 mid-run) and scontrol (records the requeue) check
# the argument handling, the --resume auto wiring, and requeue only after a preemption: the
# requeued job resumes and ends with the uninterrupted run's digest.
# Usage: sbatch_e2e.sh GANTRY CONFIGS SBATCH MPIEXEC [FLAGS...]
set -u
gantry=$1 configs=$2 sbatch=$3; shift 3
mpiexec=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
check() {
  if [ "$2" = 0 ]; then echo "ok   $1"; else echo "FAIL $1: $3"; failures=$((failures + 1)); fi
}

mkdir "$work/bin"
# srun [--opt[=v]|--ntasks N]... PROG ARGS...: records its arguments, runs PROG under mpirun;
# FAKE_SRUN_USR1_AT=DIR:STEP sends USR1 (Slurm's --signal) once DIR/log.jsonl reaches STEP.
cat > "$work/bin/srun" <<SRUN
#!/usr/bin/env bash
echo "srun \$*" >> "$work/srun.calls"
n=1
while [ \$# -gt 0 ]; do
  case "\$1" in --ntasks) n=\$2; shift 2 ;; -*) shift ;; *) break ;; esac
done
$(printf '%q ' "${mpiexec[@]}") -np "\$n" "\$@" &
job=\$!
if [ -n "\${FAKE_SRUN_USR1_AT:-}" ]; then
  dir=\${FAKE_SRUN_USR1_AT%:*} at=\${FAKE_SRUN_USR1_AT##*:}
  for _ in \$(seq 600); do
    s=\$(tail -n 1 "\$dir/log.jsonl" 2>/dev/null | grep -o '"step":[0-9]*' | cut -d: -f2)
    [ "\${s:-0}" -ge "\$at" ] && { kill -USR1 \$job; break; }
    sleep 0.1
  done
fi
wait \$job
SRUN
printf '#!/bin/sh\necho "scontrol $*" >> "%s/scontrol.calls"\n' "$work" > "$work/bin/scontrol"
chmod +x "$work/bin/srun" "$work/bin/scontrol"
export PATH="$work/bin:$PATH" GANTRY="$gantry" GANTRY_LAUNCH="$(dirname "$sbatch")/../gantry-launch" GANTRY_BACKOFF=0 SLURM_NTASKS=2 SLURM_SUBMIT_DIR="$work"
args=(--config "$configs/gaussian1d.yaml" --set train.batch_size=128 --set train.steps=300 --set train.log_every=1
      --set checkpoint.every=1)

SLURM_JOB_ID= "$sbatch" "${args[@]}" > "$work/noslurm.txt" 2>&1
check "outside Slurm: exit 2, said" $([ $? = 2 ] && grep -q 'not inside a Slurm job' "$work/noslurm.txt" && echo 0 || echo 1) "$(cat "$work/noslurm.txt")"
SLURM_JOB_ID=42 "$sbatch" --set train.steps=3 > "$work/noconfig.txt" 2>&1
check "no --config: exit 2 with the usage" $([ $? = 2 ] && grep -q 'usage: sbatch' "$work/noconfig.txt" && echo 0 || echo 1) "$(cat "$work/noconfig.txt")"
SLURM_JOB_ID=42 "$sbatch" "${args[@]}" --set train.stepz=3 > "$work/badkey.txt" 2>&1
check "a bad config key: exit 2 before srun, named" \
  $([ $? = 2 ] && grep -q "unknown key 'train.stepz'" "$work/badkey.txt" && [ ! -e "$work/srun.calls" ] && echo 0 || echo 1) "$(cat "$work/badkey.txt")"

timeout 120 "${mpiexec[@]}" -np 2 "$gantry" train "${args[@]}" --set run.dir="$work/reference" > "$work/reference.txt" 2>&1
check "uninterrupted reference run" $? "$(tail -n3 "$work/reference.txt")"

# First run of job 42: Slurm's USR1 at step 100 -> checkpoint, exit 0, requeue.
dir="$work/job42"
SLURM_JOB_ID=42 FAKE_SRUN_USR1_AT="$dir:100" timeout 120 "$sbatch" "${args[@]}" --set run.dir="$dir" \
  --resume "$work/elsewhere" > "$work/first.txt" 2>&1
rc=$?
check "preempted: exit 0" $rc "exit $rc; $(tail -n4 "$work/first.txt")"
grep -q "ignoring --resume $work/elsewhere" "$work/first.txt"
check "a --resume given is ignored, said" $? "$(head -n3 "$work/first.txt")"
grep -q -- "--ntasks 2 .*gantry train .*--resume auto$" "$work/srun.calls"
check "srun runs 2 tasks of gantry train ... --resume auto" $? "$(cat "$work/srun.calls")"
grep -q 'stopping after step .* on SIGUSR1' "$work/first.txt"
check "preempted: the ranks checkpointed on USR1" $? "$(tail -n4 "$work/first.txt")"
[ "$(cat "$work/scontrol.calls" 2>/dev/null)" = "scontrol requeue 42" ]
check "preempted: the job requeued itself" $? "$(cat "$work/scontrol.calls" 2>/dev/null)"

# The requeued run: resumes, finishes, no further requeue, the uninterrupted run's digest.
SLURM_JOB_ID=42 SLURM_RESTART_COUNT=1 timeout 120 "$sbatch" "${args[@]}" --set run.dir="$dir" > "$work/second.txt" 2>&1
rc=$?
check "requeued: exit 0, finished" $([ $rc = 0 ] && grep -q 'training finished (step-00000300)' "$work/second.txt" && echo 0 || echo 1) \
  "exit $rc; $(tail -n4 "$work/second.txt")"
grep -q 'resumed from .*checkpoints/step-' "$work/second.txt"
check "requeued: resumed from the preemption checkpoint" $? "$(grep -m1 gantry: "$work/second.txt")"
check "requeued: no second requeue" $([ "$(wc -l < "$work/scontrol.calls")" = 1 ] && echo 0 || echo 1) "$(cat "$work/scontrol.calls")"
a=$("$gantry" inspect "$dir/checkpoints/step-00000300" | sed -n 's/^digest: //p')
b=$("$gantry" inspect "$work/reference/checkpoints/step-00000300" | sed -n 's/^digest: //p')
check "requeued: the final digest equals the uninterrupted run's" $([ -n "$a" ] && [ "$a" = "$b" ] && echo 0 || echo 1) "$a vs $b"

[ $failures -eq 0 ] && echo "all sbatch checks passed" || echo "$failures sbatch check(s) failed"
exit $((failures > 0))
