#!/usr/bin/env bash
# Tests (e2e): the sample and eval commands on a real checkpoint. A short MLP run on Fashion-MNIST
# (2,000 test records held out), then: `gantry sample` writes a grid of the asked size, the same
# bytes for the same seed and others for another seed; `--interpolate` writes rows x cols cells;
# `gantry eval --metric parzen` prints mean ± standard error with the real-data reference and
# appends one record to <run.dir>/eval.jsonl; a missing checkpoint is one clear error; and
# eval.frechet_every measures during training (eval.jsonl, console, gantry_frechet_distance).
# Usage: eval_e2e.sh GANTRY CONFIGS
set -u
gantry=$1 configs=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
check() {  # NAME COMMAND...: the command succeeds
  local name=$1; shift
  if "$@"; then echo "ok   $name"; else echo "FAIL $name"; failures=$((failures + 1)); fi
}
png_size() { python3 -c 'import struct,sys; d=open(sys.argv[1],"rb").read(24); print(*struct.unpack(">II", d[16:24]))' "$1"; }

run="$work/run"
"$gantry" train --config "$configs/fashion-mnist-dcgan.yaml" --set model.arch=mlp --set train.steps=30 \
  --set train.batch_size=64 --set train.log_every=10 --set train.sample_every=0 --set data.split=test \
  --set data.holdout=2000 --set run.dir="$run" > "$work/train.txt" 2>&1
check "a 30-step MLP run with a checkpoint" test -f "$run/checkpoints/latest"

"$gantry" sample --checkpoint "$run" --out "$work/a.png" --n 16 --seed 7 > "$work/sample.txt" 2>&1
check "sample: 16 samples make a 4 x 4 grid of 28 x 28 cells, 2-pixel gaps and border (122 x 122)" \
  test "$(png_size "$work/a.png")" = "122 122"
"$gantry" sample --checkpoint "$run" --out "$work/b.png" --n 16 --seed 7 > /dev/null 2>&1
check "sample: the same seed gives the same bytes" cmp -s "$work/a.png" "$work/b.png"
"$gantry" sample --checkpoint "$run" --out "$work/c.png" --n 16 --seed 8 > /dev/null 2>&1
check "sample: another seed gives other samples" bash -c "! cmp -s '$work/a.png' '$work/c.png'"
"$gantry" sample --checkpoint "$run" --out "$work/interp.png" --interpolate --rows 3 --cols 5 > /dev/null 2>&1
check "interpolate: 3 rows of 5 cells (152 x 92)" test "$(png_size "$work/interp.png")" = "152 92"

# Two threads here and one below, whatever this machine's core count ("every core" may be one).
"$gantry" eval --checkpoint "$run" --metric parzen --samples 1000 --threads 2 > "$work/parzen.txt" 2>&1
check "eval parzen: mean ± standard error, and the real-data reference" \
  grep -qE "parzen.*-?[0-9]+\.[0-9] ± [0-9]+\.[0-9].*" "$work/parzen.txt"
check "eval parzen: the real training data's figure is printed" grep -q "real training data as the samples" "$work/parzen.txt"
check "eval parzen: one record in eval.jsonl" \
  python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; assert len(r)==1 and "parzen_ll" in r[0], r' \
  "$run/eval.jsonl"

"$gantry" eval --checkpoint "$run" --metric parzen --samples 1000 --threads 1 > "$work/parzen1.txt" 2>&1
check "eval parzen --threads 1: the same figures as on 2 threads" \
  python3 -c 'import json,sys; a,b=[json.loads(l) for l in open(sys.argv[1])]; assert a["sigma"]==b["sigma"] and abs(a["parzen_ll"]-b["parzen_ll"])<1e-6 and abs(a["real_parzen_ll"]-b["real_parzen_ll"])<1e-6, (a,b)' \
  "$run/eval.jsonl"
"$gantry" eval --checkpoint "$run" --metric parzen --threads -2 > /dev/null 2> "$work/threads.txt"
rc=$?
check "eval --threads -2: a usage error that names the flag" bash -c "[ $rc = 2 ] && grep -q -- '--threads must be' '$work/threads.txt'"
"$gantry" eval --checkpoint "$run" --metric parzen --threads 4294967297 > /dev/null 2> "$work/threads.txt"
rc=$?
check "eval --threads 2^32+1: a usage error, not a silent wrap to 1 thread" \
  bash -c "[ $rc = 2 ] && grep -q -- '--threads must be 0 (every core) to 1024' '$work/threads.txt'"

"$gantry" sample --checkpoint "$run" --out "$work/t.png" --n 16 --seed 7 --truncation 1 > /dev/null 2>&1
check "sample --truncation 1: the prior as trained, the same bytes as without the flag" cmp -s "$work/a.png" "$work/t.png"
"$gantry" sample --checkpoint "$run" --out "$work/t.png" --truncation 0.5x > /dev/null 2> "$work/trunc.txt"
rc=$?
check "sample --truncation 0.5x: a usage error that names the flag" bash -c "[ $rc = 2 ] && grep -q -- \"--truncation needs a number, got '0.5x'\" '$work/trunc.txt'"

"$gantry" sample --checkpoint "$work/nope" --out "$work/x.png" > /dev/null 2> "$work/missing.txt"
rc=$?
check "a missing checkpoint: non-zero exit and one line naming it" \
  bash -c "[ $rc -ne 0 ] && [ \$(grep -c gantry '$work/missing.txt') = 1 ] && grep -q '$work/nope' '$work/missing.txt'"

# eval.frechet_every during training: a record in eval.jsonl at each multiple and at the end, the
# console line, and the gauge on the metrics endpoint (checked against eval.jsonl's last value).
probe="$work/probe"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$gantry" train --config "$configs/fashion-mnist-dcgan.yaml" --set model.arch=mlp --set train.steps=25 \
  --set train.batch_size=64 --set train.log_every=10 --set train.sample_every=0 --set data.split=test \
  --set data.holdout=2000 --set data.cache_dir="$work/cache" --set eval.frechet_every=10 \
  --set eval.frechet_samples=500 --set monitoring.port=$port --set monitoring.bind=127.0.0.1 \
  --set monitoring.linger_s=3 --set run.dir="$probe" > "$work/probe.txt" 2>&1 &
train_pid=$!
scraped=""
for _ in $(seq 600); do  # until the run's last measurement is on the endpoint (at most 60 s)
  scraped=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1], timeout=2).read().decode())' \
    "http://127.0.0.1:$port/metrics" 2>/dev/null)
  grep -q '^gantry_frechet_distance_step 25' <<<"$scraped" && break
  sleep 0.1
done
wait $train_pid
check "eval.frechet_every=10: the run finishes" test $? = 0
check "eval.frechet_every=10: records at steps 10, 20 and 25 (the end) in eval.jsonl, positive distances" \
  python3 -c 'import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]
assert [x["step"] for x in r]==[10,20,25] and all(x["frechet_distance"]>0 and x["samples"]==500 for x in r), r' \
  "$probe/eval.jsonl"
check "eval.frechet_every=10: the classifier is trained once and cached in data.cache_dir" \
  bash -c "ls '$work/cache'/gantry-classifier-* > /dev/null && [ \$(grep -c 'Fréchet distance at step' '$work/probe.txt') = 3 ]"
last=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[-1])["frechet_distance"])' "$probe/eval.jsonl" 2>/dev/null)
check "eval.frechet_every=10: gantry_frechet_distance on /metrics is the last measurement ($last)" \
  python3 -c 'import sys; v=[float(l.split()[1]) for l in sys.argv[1].splitlines() if l.startswith("gantry_frechet_distance ")]
assert len(v)==1 and abs(v[0]-float(sys.argv[2]))<=1e-6*abs(v[0]), (v, sys.argv[2])' "$scraped" "$last"

# model.conditional (configs/fashion-mnist-cdcgan.yaml): a short conditional DCGAN on the test split's first 8,000 records; its sample grids
# and `gantry sample` draw a row per class, --class K draws one class, and --class is refused where
# it cannot apply.
cond="$work/cond"
"$gantry" train --config "$configs/fashion-mnist-cdcgan.yaml" --set train.steps=20 \
  --set model.dcgan.g_width=8 --set model.dcgan.d_width=8 --set train.log_every=10 --set train.sample_every=10 \
  --set data.split=test --set data.holdout=2000 --set data.cache_dir="$work/cache" --set run.dir="$cond" \
  > "$work/cond.txt" 2>&1
check "model.conditional: a 20-step conditional DCGAN run ends with a checkpoint" test -f "$cond/checkpoints/latest"
check "model.conditional: its sample grids have a row per class (10 rows of 8: 242 x 302)" \
  test "$(png_size "$cond/samples/step-00000020.png" 2>/dev/null)" = "242 302"
"$gantry" sample --checkpoint "$cond" --out "$work/cond-grid.png" --n 20 > "$work/cond-sample.txt" 2>&1
size=$(png_size "$work/cond-grid.png" 2>/dev/null)
check "sample, conditional: --n 20 gives a row per class, 10 x 2 (62 x 302; got $size)" \
  bash -c "[ '$size' = '62 302' ] && grep -q 'a row per class' '$work/cond-sample.txt'"
"$gantry" sample --checkpoint "$cond" --out "$work/cond-3.png" --n 16 --class 3 > "$work/cond-3.txt" 2>&1
size=$(png_size "$work/cond-3.png" 2>/dev/null)
check "sample, conditional: --class 3 --n 16 gives a 4 x 4 grid of class 3 (122 x 122; got $size)" \
  bash -c "[ '$size' = '122 122' ] && grep -q 'class 3' '$work/cond-3.txt'"
"$gantry" sample --checkpoint "$cond" --out "$work/cond-4.png" --n 16 --class 4 > /dev/null 2>&1
check "sample, conditional: another class gives other samples from the same latents" \
  bash -c "! cmp -s '$work/cond-3.png' '$work/cond-4.png'"
# The classifier the probe above cached (the same records): the label agreement is a fraction.
"$gantry" eval --checkpoint "$cond" --metric frechet --samples 500 --threads 2 > "$work/cond-eval.txt" 2>&1
check "eval frechet, conditional: the label agreement is printed and recorded in eval.jsonl" \
  bash -c "grep -q 'conditional G: the classifier labels' '$work/cond-eval.txt' && python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readlines()[-1]); assert 0 <= r[\"label_agreement\"] <= 1, r' '$cond/eval.jsonl'"
check "eval frechet, conditional: a distance and floor for each of the 10 classes, over all 500 samples and 2,000 records" \
  bash -c "grep -q 'within each class' '$work/cond-eval.txt' && python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readlines()[-1])[\"per_class\"]; assert [c[\"class\"] for c in r] == list(range(10)), r; assert sum(c[\"samples\"] for c in r) == 500 and sum(c[\"test_records\"] for c in r) == 2000, r; assert all(c[\"distance\"] > 0 and c[\"floor\"] > 0 for c in r), r' '$cond/eval.jsonl'"
"$gantry" sample --checkpoint "$cond" --out "$work/x.png" --class 10 > /dev/null 2> "$work/class10.txt"
rc=$?
check "sample --class 10 of 10 classes: a usage error naming the range" \
  bash -c "[ $rc = 2 ] && grep -q -- '--class must be 0..9, got 10' '$work/class10.txt'"
"$gantry" sample --checkpoint "$run" --out "$work/x.png" --class 1 > /dev/null 2> "$work/class-plain.txt"
rc=$?
check "sample --class on an unconditional G: a usage error saying so" \
  bash -c "[ $rc = 2 ] && grep -q 'is not conditional' '$work/class-plain.txt'"

[ $failures -eq 0 ] && echo "all sample/eval checks passed" || { cat "$work/train.txt" "$work/parzen.txt" "$work/sample.txt" "$work/probe.txt" "$work/cond.txt" "$work/cond-eval.txt"; echo "$failures sample/eval check(s) failed"; }
exit $failures
