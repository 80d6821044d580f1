#!/usr/bin/env bash
# Tests (e2e): sharded checkpoints on real Fashion-MNIST runs. Bit-exact resume after a kill
# (mlp and dcgan), resharding 2 -> 1 and 2 -> 3 ranks, crashes at every point of the commit
# protocol, corrupt checkpoints, retention, Python's torch.load, and preemption by signal.
# Usage: checkpoint_e2e.sh GANTRY CONFIG_DIR MPIEXEC [MPI FLAGS...]
set -u
gantry=$1 configs=$2 mpiexec=$3
shift 3
mpi_flags=("$@")
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0 failed=0

check() {  # check NAME COMMAND...: passes when the command succeeds
  local name=$1; shift
  if "$@"; then echo "ok   $name"; passed=$((passed + 1)); else echo "FAIL $name"; failed=$((failed + 1)); fi
}
# run NP RUN_DIR [--set ...]: a small job, 96 images a step so that 1, 2 and 3 ranks divide it.
run() {
  local np=$1 dir=$2; shift 2
  "$mpiexec" "${mpi_flags[@]}" -np "$np" "$gantry" train --config "$configs/fashion-mnist-dcgan.yaml" \
    --set run.dir="$dir" --set train.batch_size=96 --set train.log_every=5 --set train.sample_every=0 \
    --set model.dcgan.g_width=8 --set model.dcgan.d_width=8 --set checkpoint.every=10 "$@"
}
digest() { "$gantry" inspect "$1" 2>/dev/null | sed -n 's/^digest: //p'; }
same_nonempty() { [ -n "$1" ] && [ "$1" = "$2" ]; }
log_steps() { python3 -c 'import json,sys; print(" ".join(str(json.loads(l)["step"]) for l in open(sys.argv[1])))' "$1"; }
# losses_match A B STEP...: d_loss and g_loss of the logged steps agree within 1e-4 relative.
losses_match() {
  python3 - "$@" <<'PY'
import json, sys
a, b, steps = sys.argv[1], sys.argv[2], [int(s) for s in sys.argv[3:]]
la = {j["step"]: j for j in map(json.loads, open(a))}
lb = {j["step"]: j for j in map(json.loads, open(b))}
bad = [(s, k, la[s][k], lb[s][k]) for s in steps for k in ("d_loss", "g_loss")
       if abs(la[s][k] - lb[s][k]) > 1e-4 * abs(la[s][k])]
if bad: print("  differ:", bad)
sys.exit(1 if bad else 0)
PY
}

# ---- bit-exact resume: A runs 20 steps; B is killed after its step-10 checkpoint, then resumes --
# The DCGAN's run also warms up and decays its learning rates (optim.schedule), which a resume
# must pick up at the step it reached: both logs hold the schedule's rates at every logged step.
# lr_as_scheduled LOG: lr_g and lr_d at logged step s are the config's 8e-4 x the cosine factor
# of step s - 1 (warm-up over 8 steps, then the decay from step 8 of 20 toward 0; the logged steps
# 5, 10, 15 and 20 fall in the warm-up and the decay), to 1e-12 relative.
lr_as_scheduled() {
  python3 - "$1" <<'PY'
import json, math, sys
def factor(s):
    return (s + 1) / 8 if s < 8 else 0.5 * (1 + math.cos(math.pi * (s - 8) / 12))
bad = [(j["step"], k, j[k]) for j in map(json.loads, open(sys.argv[1])) for k in ("lr_g", "lr_d")
       if abs(j[k] - 8e-4 * factor(j["step"] - 1)) > 1e-12 * 8e-4]
if bad: print("  off schedule:", bad)
sys.exit(1 if bad else 0)
PY
}
for arch in mlp dcgan; do
  schedule=()
  [ $arch = dcgan ] && schedule=(--set optim.schedule=cosine --set optim.warmup_steps=8 --set optim.decay_start=0.25)
  run 2 "$work/$arch-A" --set model.arch=$arch --set train.steps=20 "${schedule[@]}" > "$work/$arch-A.out" 2>&1
  GANTRY_CHECKPOINT_FAULT=after_commit:1 run 2 "$work/$arch-B" --set model.arch=$arch --set train.steps=20 \
    "${schedule[@]}" > "$work/$arch-B1.out" 2>&1
  killed=$?
  run 2 "$work/$arch-B" --set model.arch=$arch --set train.steps=20 "${schedule[@]}" --resume auto \
    > "$work/$arch-B2.out" 2>&1
  check "$arch: the first half of B was killed (exit $killed)" [ $killed -ne 0 ]
  check "$arch: B resumed from step 10" grep -q "resumed from .*step-00000010 (step 10" "$work/$arch-B2.out"
  check "$arch: resumed digest == uninterrupted digest" \
    same_nonempty "$(digest "$work/$arch-A")" "$(digest "$work/$arch-B")"
  check "$arch: B's log.jsonl holds each step once" [ "$(log_steps "$work/$arch-B/log.jsonl")" = "5 10 15 20" ]
done
check "dcgan: A's learning rates follow optim.schedule" lr_as_scheduled "$work/dcgan-A/log.jsonl"
check "dcgan: resumed B's learning rates follow optim.schedule" lr_as_scheduled "$work/dcgan-B/log.jsonl"

# ---- resharding: A's step 10 (saved by 2 ranks) loads at 1 and 3 ranks -------------------------
saved=$(digest "$work/mlp-A/checkpoints/step-00000010")
for np in 1 3; do
  run $np "$work/reshard-$np" --set model.arch=mlp --set train.steps=20 \
    --resume "$work/mlp-A/checkpoints/step-00000010" > "$work/reshard-$np.out" 2>&1
  rc=$?
  check "reshard 2->$np: exit 0" [ $rc -eq 0 ]
  check "reshard 2->$np: loaded state digest == saved digest ($saved)" \
    grep -q "state digest $saved" "$work/reshard-$np.out"
  check "reshard 2->$np: training continues on A's global batches (losses within 1e-4)" \
    losses_match "$work/mlp-A/log.jsonl" "$work/reshard-$np/log.jsonl" 15 20
done

check "inspect --against: 2 vs 3 ranks differ only by float rounding" python3 - "$work/mlp-A" "$work/reshard-3" "$gantry" <<'PY'
import subprocess, sys
out = subprocess.run([sys.argv[3], "inspect", sys.argv[1], "--against", sys.argv[2]], capture_output=True, text=True).stdout
diffs = {l.split()[0]: float(l.split("=")[1]) for l in out.splitlines() if "max |a - b|" in l}
print("  ", diffs)
sys.exit(0 if diffs and diffs["generator/param"] < 1e-3 and diffs["train"] == 0 else 1)
PY

# ---- async saves write the same checkpoints as synchronous ones ---------------------------------
run 2 "$work/async" --set model.arch=mlp --set train.steps=20 --set checkpoint.async=true > "$work/async.out" 2>&1
check "async: step 10 written in the background" grep -q "step-00000010 committed in the background" "$work/async.out"
check "async: step 10 digest == synchronous step 10 digest" \
  same_nonempty "$(digest "$work/mlp-A/checkpoints/step-00000010")" "$(digest "$work/async/checkpoints/step-00000010")"

# ---- crash at each point of the commit protocol: the previous checkpoint always loads ----------
for point in after_shard:1 before_manifest:0 before_rename:0 before_latest:0; do
  dir="$work/crash-${point%%:*}"
  run 2 "$dir" --set model.arch=mlp --set train.steps=10 > "$dir.out1" 2>&1
  before=$(digest "$dir")
  GANTRY_CHECKPOINT_FAULT=$point run 2 "$dir" --set model.arch=mlp --set train.steps=20 --resume auto > "$dir.out2" 2>&1
  crashed=$?
  check "crash at $point: the job died (exit $crashed)" [ $crashed -ne 0 ]
  check "crash at $point: step 10 still verifies" same_nonempty "$before" "$(digest "$dir/checkpoints/step-00000010")"
  run 2 "$dir" --set model.arch=mlp --set train.steps=20 --resume auto > "$dir.out3" 2>&1
  check "crash at $point: --resume auto then finishes" grep -q "done, 20 steps" "$dir.out3"
  check "crash at $point: the finished run's digest == the uninterrupted run's" \
    same_nonempty "$(digest "$work/mlp-A")" "$(digest "$dir")"
  check "crash at $point: no .tmp left behind" [ -z "$(find "$dir/checkpoints" -name '*.tmp')" ]
done

# ---- corruption is detected and auto falls back to step 10 -------------------------------------
for damage in truncate flip no-manifest; do
  dir="$work/corrupt-$damage"
  cp -r "$work/mlp-A" "$dir"
  ckpt="$dir/checkpoints/step-00000020"
  case $damage in
    truncate) truncate -s -100 "$ckpt/shard-00001-of-00002.safetensors"; names="shard-00001-of-00002.safetensors" ;;
    flip) python3 -c 'import sys; f=open(sys.argv[1],"r+b"); f.seek(2000); b=f.read(1); f.seek(2000); f.write(bytes([b[0]^0xff]))' \
            "$ckpt/shard-00000-of-00002.safetensors"; names="shard-00000-of-00002.safetensors" ;;
    no-manifest) rm "$ckpt/manifest.json"; names="manifest.json" ;;
  esac
  "$gantry" inspect "$ckpt" > /dev/null 2> "$dir.inspect"
  check "corrupt ($damage): inspect fails naming $names" grep -q "$names" "$dir.inspect"
  run 2 "$dir" --set model.arch=mlp --set train.steps=20 --resume auto > "$dir.out" 2>&1
  check "corrupt ($damage): auto reports it and falls back to step 10" \
    grep -q "resumed from .*step-00000010" "$dir.out"
  check "corrupt ($damage): the rerun recommits step 20 with A's digest" \
    same_nonempty "$(digest "$work/mlp-A")" "$(digest "$ckpt")"
  # The damaged copy is the user's to examine or remove: moved aside, never deleted.
  check "corrupt ($damage): the damaged step 20 is set aside as step-00000020.old-1, and the job says so" \
    bash -c "[ -d '$ckpt.old-1' ] && grep -q 'it is now .*step-00000020.old-1' '$dir.out'"
done
run 2 "$work/corrupt-path" --set model.arch=mlp --set train.steps=20 \
  --resume "$work/corrupt-flip/nonexistent" > "$work/corrupt-path.out" 2>&1
check "--resume PATH that does not verify is an error" [ $? -ne 0 ]

# ---- retention: keep_last 2 plus every multiple of 4 --------------------------------------------
run 2 "$work/retain" --set model.arch=mlp --set train.steps=9 --set checkpoint.every=1 \
  --set checkpoint.keep_last=2 --set checkpoint.keep_every=4 > "$work/retain.out" 2>&1
kept=$(ls "$work/retain/checkpoints" | tr '\n' ' ')
check "retention keeps steps 4, 8, 9 (kept: $kept)" \
  [ "$kept" = "latest step-00000004 step-00000008 step-00000009 " ]

# ---- resuming from an earlier checkpoint: new commits are kept, and auto follows them -----------
# Ranked by step alone, retention counted the abandoned step 20 among the newest two and deleted
# step 10 (with keep_last or more checkpoints past it, the new commit itself went at once), and
# auto then went back to step 20.
dir="$work/branch"
run 1 "$dir" --set model.arch=mlp --set train.steps=20 --set checkpoint.keep_last=2 > "$dir.out1" 2>&1
run 1 "$dir" --set model.arch=mlp --set train.steps=15 --set checkpoint.every=5 --set checkpoint.keep_last=2 \
  --resume "$dir/checkpoints/step-00000010" > "$dir.out2" 2>&1
kept=$(ls "$dir/checkpoints" | tr '\n' ' ')
check "resume from step 10 of 20: step 15 is committed and kept, step 20 left alone (kept: $kept)" \
  [ "$kept" = "latest step-00000010 step-00000015 step-00000020 " ]
check "resume from step 10 of 20: latest names step 15" [ "$(cat "$dir/checkpoints/latest")" = step-00000015 ]
run 1 "$dir" --set model.arch=mlp --set train.steps=16 --set checkpoint.every=5 --set checkpoint.keep_last=2 \
  --resume auto > "$dir.out3" 2>&1
check "auto resumes from latest (step 15), not the abandoned step 20, and says so" \
  bash -c "grep -q 'resumed from .*step-00000015' '$dir.out3' && grep -q 'step-00000020 (from a run that went back past them)' '$dir.out3'"

# Reaching step 20 again: the abandoned step 20 is moved aside, not replaced (a crash between the
# two renames left neither copy, as both then had .tmp names that start-up removes).
abandoned=$(digest "$dir/checkpoints/step-00000020")
run 1 "$dir" --set model.arch=mlp --set train.steps=20 --set checkpoint.every=5 --set checkpoint.keep_last=2 \
  --resume auto > "$dir.out4" 2>&1
check "reaching step 20 again sets the abandoned step 20 aside intact, and says so" \
  bash -c "[ '$(digest "$dir/checkpoints/step-00000020.old-1")' = '$abandoned' ] && [ -n '$abandoned' ] &&
           grep -q 'it is now .*step-00000020.old-1' '$dir.out4'"

# ---- resuming a finished run: nothing to train and nothing rewritten ----------------------------
# (a launcher's retry after the job ended); past the checkpoint's step, train.steps is an error.
dir="$work/finished"
cp -r "$work/mlp-A" "$dir"
outputs() { (cd "$dir" && md5sum final.pt summary.json log.jsonl config.yaml checkpoints/latest); }
before=$(outputs)
run 2 "$dir" --set model.arch=mlp --set train.steps=20 --resume auto > "$dir.out1" 2>&1
rc=$? after=$(outputs)
check "resuming a finished run: exit 0, nothing to train, its outputs unchanged" \
  bash -c "[ $rc -eq 0 ] && grep -q 'nothing to train' '$dir.out1' && [ '$before' = '$after' ]"
final=$(md5sum < "$dir/final.pt")
rm "$dir/final.pt"
run 2 "$dir" --set model.arch=mlp --set train.steps=20 --resume auto > "$dir.out2" 2>&1
check "resuming a finished run without final.pt writes the same final.pt again" \
  [ "$final" = "$(md5sum < "$dir/final.pt" 2>/dev/null)" ]
# An earlier checkpoint resumed at its own step is another ending: its outputs are written.
dir2="$work/finished-earlier"
cp -r "$dir" "$dir2"
run 2 "$dir2" --set model.arch=mlp --set train.steps=10 --resume "$dir2/checkpoints/step-00000010" > "$dir2.out" 2>&1
check "resuming step 10 of a 20-step run at train.steps 10 writes step 10's summary and log" \
  bash -c "! grep -q 'nothing to train' '$dir2.out' && grep -q '\"steps\": 10' '$dir2/summary.json' &&
           [ \"\$(wc -l < '$dir2/log.jsonl')\" -eq 2 ]"
before=$(outputs)
run 2 "$dir" --set model.arch=mlp --set train.steps=15 --resume auto > "$dir.out3" 2>&1
rc=$? after=$(outputs)
check "train.steps below the checkpoint's step: exit 2, named, nothing changed" \
  bash -c "[ $rc -eq 2 ] && grep -q 'train.steps: 15 is below step 20 of' '$dir.out3' && [ '$before' = '$after' ]"

# ---- a resume that fails changes nothing: config.yaml stays the run's --------------------------
dir="$work/none-verify"
cp -r "$work/mlp-A" "$dir"
for m in "$dir"/checkpoints/step-*/manifest.json; do echo '{ not json' > "$m"; done
before=$(cd "$dir" && md5sum config.yaml log.jsonl)
run 2 "$dir" --set model.arch=mlp --set train.steps=40 --set train.batch_size=48 --resume auto > "$dir.out" 2>&1
rc=$? after=$(cd "$dir" && md5sum config.yaml log.jsonl)
check "no checkpoint verifies: one error naming them, config.yaml and log.jsonl untouched" \
  bash -c "[ $rc -eq 1 ] && grep -q 'no checkpoint in .* verifies' '$dir.out' && [ '$before' = '$after' ]"

# ---- a new run never overwrites a run directory that holds checkpoints --------------------------
run 2 "$work/mlp-A" --set model.arch=mlp --set train.steps=20 > "$work/overwrite.out" 2>&1
check "a fresh run refuses a run.dir with checkpoints" \
  bash -c "[ $? -ne 0 ] && grep -q 'already holds checkpoints' '$work/overwrite.out'"

# ---- a tampered manifest: a shard outside the checkpoint, an old format -------------------------
tamper="$work/tamper/checkpoints/step-00000020"
mkdir -p "$work/tamper/checkpoints" && cp -r "$work/mlp-A/checkpoints/step-00000020" "$tamper"
python3 - "$tamper/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
m["shards"][0]["file"] = "../../../../etc/passwd"
json.dump(m, open(sys.argv[1], "w"))
PY
"$gantry" inspect "$tamper" > /dev/null 2> "$work/tamper.inspect"
check "a manifest naming ../../etc/passwd is refused, naming the field" \
  grep -q "manifest.json: shards\[0\].file: .* is not a file name inside the checkpoint directory" "$work/tamper.inspect"
sed -i 's#gantry-checkpoint/2#gantry-checkpoint/1#' "$tamper/manifest.json"
"$gantry" inspect "$tamper" > /dev/null 2> "$work/tamper-format.inspect"
check "a format/1 manifest is named as another gantry version's" \
  grep -q "it is gantry-checkpoint/1, written by another gantry version" "$work/tamper-format.inspect"

# ---- Python reads a shard (safetensors: JSON header + raw bytes) with the manifest's checksums ---
check "python3 reads a shard as safetensors, every tensor matching the manifest" /usr/bin/python3 - \
  "$work/mlp-A/checkpoints/step-00000020" <<'PY'
import json, struct, sys, torch
dtypes = {"F32": torch.float32, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32, "U8": torch.uint8}
ckpt = sys.argv[1]
manifest = json.load(open(ckpt + "/manifest.json"))
for s, shard in enumerate(manifest["shards"]):
    data = open(ckpt + "/" + shard["file"], "rb").read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[8 + n + b:8 + n + end]), dtype=dtypes[e["dtype"]]).reshape(e["shape"])
        m = manifest["tensors"][name]
        assert m["shard"] == s and m["shape"] == list(t.shape) and m["dtype"] == e["dtype"], name
PY

# ---- preemption: SIGUSR1 to mpirun, or SIGTERM to one rank: checkpoint, exit 0, resume ----------
for how in usr1-mpirun term-rank; do
  dir="$work/preempt-$how"
  run 2 "$dir" --set model.arch=mlp --set train.steps=100000 --set checkpoint.every=0 > "$dir.out" 2>&1 &
  job=$!
  for _ in $(seq 200); do [ -s "$dir/log.jsonl" ] && break; sleep 0.1; done
  # $job is the subshell running `run`; mpirun is its child, and the ranks are mpirun's.
  if [ $how = usr1-mpirun ]; then pkill -USR1 -P $job; else pkill -TERM -n -f "run.dir=$dir"; fi
  wait $job
  rc=$?
  check "preempt ($how): exit 0 after a checkpoint" \
    bash -c "[ $rc -eq 0 ] && grep -q 'stopping after step' '$dir.out' && [ -f '$dir/checkpoints/latest' ]" ||
    { echo "  exit $rc; the job's last lines:"; grep -v '^\[' "$dir.out" | tail -n 6 | sed 's/^/  /'; }
  stopped=$(sed -n 's/.*stopping after step \([0-9]*\).*/\1/p' "$dir.out")
  run 2 "$dir" --set model.arch=mlp --set train.steps=$((stopped + 5)) --resume auto > "$dir.resume" 2>&1
  check "preempt ($how): resumes at step $stopped" \
    bash -c "[ -n '$stopped' ] && grep -q 'resumed from .*(step $stopped' '$dir.resume' && grep -q 'done, $((stopped + 5)) steps' '$dir.resume'"
done

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
