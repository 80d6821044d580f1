#!/usr/bin/env bash
# Tests (e2e): the metrics of a real 2-rank run, scraped by a real Prometheus (Debian's server) on
# loopback through the file_sd file that rank 0 writes. Both targets are up; every PromQL
# expression of monitoring/grafana/gantry.json and monitoring/alerts.yml returns data; the scraped
# gantry_loss and gantry_r1_penalty (train.r1_gamma is on) equal log.jsonl's at the same step.
# Skips (exit 77) only without the server.
# Usage: monitoring_e2e.sh GANTRY CONFIG_DIR MONITORING_DIR MPIEXEC [MPI FLAGS...]
set -u
gantry=$1 configs=$2 monitoring=$3 mpiexec=$4
shift 4
mpi_flags=("$@")
prometheus=/usr/bin/prometheus
promtool=/usr/bin/promtool
if [ ! -x "$prometheus" ]; then
  echo "SKIP: $prometheus is not installed (Debian package 'prometheus'; scripts/setup.sh installs it)"
  exit 77
fi
steps=4000 linger=25

work=$(mktemp -d)
train_pid="" prom_pid=""
cleanup() {
  [ -n "$prom_pid" ] && kill "$prom_pid" 2>/dev/null && wait "$prom_pid" 2>/dev/null
  [ -n "$train_pid" ] && kill "$train_pid" 2>/dev/null && wait "$train_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAIL $*"; for f in "$work"/train.out "$work"/prometheus.log; do echo "--- $f"; tail -20 "$f"; done; exit 1; }

# Free loopback ports: two consecutive ones for the ranks, one for Prometheus.
read -r rank_port prom_port < <(python3 - <<'PY'
import random, socket
def free(p):
    with socket.socket() as s:
        try: s.bind(("127.0.0.1", p)); return True
        except OSError: return False
while True:
    a, b = random.randrange(20000, 60000, 2), random.randrange(20001, 60000, 2)
    if free(a) and free(a + 1) and free(b) and b not in (a, a + 1): print(a, b); break
PY
)
echo "ranks on 127.0.0.1:$rank_port-$((rank_port + 1)), Prometheus on 127.0.0.1:$prom_port"

"$promtool" check rules "$monitoring/alerts.yml" > "$work/promtool.out" 2>&1 || { cat "$work/promtool.out"; fail "promtool check rules"; }
"$promtool" check config "$monitoring/prometheus.yml" > "$work/promtool.out" 2>&1 || { cat "$work/promtool.out"; fail "promtool check config"; }
echo "ok   promtool accepts prometheus.yml and alerts.yml"

"$mpiexec" "${mpi_flags[@]}" -np 2 "$gantry" train --config "$configs/gaussian1d.yaml" --set run.dir="$work/run" \
  --set train.steps=$steps --set train.log_every=100 --set checkpoint.every=1000 --set train.consistency_every=0 \
  --set train.r1_gamma=0.1 \
  --set monitoring.port=$rank_port --set monitoring.bind=127.0.0.1 --set monitoring.linger_s=$linger \
  > "$work/train.out" 2>&1 &
train_pid=$!
for _ in $(seq 150); do [ -f "$work/run/prometheus-targets.json" ] && break; sleep 0.2; done
[ -f "$work/run/prometheus-targets.json" ] || fail "no $work/run/prometheus-targets.json"

cat > "$work/prometheus.yml" <<YML
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: ["$monitoring/alerts.yml"]
scrape_configs:
  - job_name: gantry
    honor_labels: true
    file_sd_configs: [{files: ["$work/run/prometheus-targets.json"], refresh_interval: 1s}]
YML
"$prometheus" --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address=127.0.0.1:$prom_port --log.level=warn > "$work/prometheus.log" 2>&1 &
prom_pid=$!

python3 - "$prom_port" "$work/run" "$monitoring/grafana/gantry.json" $steps <<'PY' || fail "checks against Prometheus"
import json, re, sys, time, urllib.parse, urllib.request
port, run_dir, dashboard, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
run = run_dir.rstrip("/").split("/")[-1]
base = f"http://127.0.0.1:{port}"
failed = 0

def get(path, **params):
    url = base + path + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)

def query(expr):
    j = get("/api/v1/query", query=expr)
    assert j["status"] == "success", j
    return j["data"]["result"]

def check(name, ok, detail=""):
    global failed
    print(("ok   " if ok else "FAIL ") + name + ("" if ok else f"  ({detail})"))
    failed += not ok

def wait_for(what, fn, timeout):
    end = time.time() + timeout
    while time.time() < end:
        try:
            value = fn()
            if value: return value
        except Exception:
            pass
        time.sleep(0.5)
    return None

targets = wait_for("targets up", lambda: (lambda t: t if len(t) == 2 and all(x["health"] == "up" for x in t) else None)(
    get("/api/v1/targets")["data"]["activeTargets"]), 40)
check("both ranks' targets are up", targets is not None, get("/api/v1/targets")["data"]["activeTargets"] if targets is None else "")
if targets:
    check("targets carry run and rank labels",
          sorted((t["labels"].get("run"), t["labels"].get("rank")) for t in targets) == [(run, "0"), (run, "1")],
          [t["labels"] for t in targets])

# The last log step has been scraped: from now on the job statistics no longer change.
done = wait_for("final step", lambda: query("gantry_logged_step") and float(query("gantry_logged_step")[0]["value"][1]) == steps, 150)
check(f"gantry_logged_step reached {steps}", bool(done), query("gantry_logged_step"))
time.sleep(2)  # a couple more scrapes: every rate() window holds samples after the last step

# gantry_loss against log.jsonl at the same step.
logged = {j["step"]: j for j in map(json.loads, open(run_dir + "/log.jsonl"))}[steps]
for network, key in (("discriminator", "d_loss"), ("generator", "g_loss")):
    r = query(f'gantry_loss{{network="{network}"}}')
    v = float(r[0]["value"][1]) if len(r) == 1 else None
    check(f"scraped gantry_loss{{network=\"{network}\"}} == log.jsonl {key} at step {steps}",
          v is not None and abs(v - logged[key]) <= 1e-12 * abs(logged[key]), f"{v} vs {logged[key]}")
for inp, key in (("real", "d_real"), ("fake", "d_fake")):
    r = query(f'gantry_discriminator_score{{input="{inp}"}}')
    check(f"scraped D score input={inp} == log.jsonl {key}",
          len(r) == 1 and abs(float(r[0]["value"][1]) - logged[key]) <= 1e-12, r)
r = query("gantry_r1_penalty")
check(f"scraped gantry_r1_penalty == log.jsonl r1_penalty at step {steps}",
      len(r) == 1 and "r1_penalty" in logged and abs(float(r[0]["value"][1]) - logged["r1_penalty"]) <= 1e-12 * logged["r1_penalty"],
      (r, logged.get("r1_penalty")))
per_rank = {x["metric"]["rank"]: float(x["value"][1]) for x in query("gantry_steps_total")}
check(f"each rank's gantry_steps_total is {steps}", per_rank == {"0": steps, "1": steps}, per_rank)
check("gantry_nonfinite_total is 0 on every rank", all(float(x["value"][1]) == 0 for x in query("gantry_nonfinite_total")))

# Every PromQL expression of the dashboard, with Grafana's variables filled in.
def exprs(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "expr": yield v
            else: yield from exprs(v)
    elif isinstance(node, list):
        for v in node: yield from exprs(v)
board = json.load(open(dashboard))
panel_exprs = list(exprs(board["panels"]))
check("the dashboard has PromQL expressions", len(panel_exprs) >= 10, len(panel_exprs))
for e in panel_exprs:
    if "gantry_frechet_distance" in e:  # only with eval.frechet_every (tests/eval_e2e.sh scrapes it)
        continue
    if "gantry_cr_penalty" in e:  # only with train.cr_weight, which gaussian1d cannot translate
        continue                           # (tests/test_monitoring.cpp checks the gauge)
    q = e.replace("$__rate_interval", "15s").replace("$run", run)
    r = query(q)
    check(f"dashboard: {e}", len(r) > 0, "empty result")
runs = get("/api/v1/label/run/values", **{"match[]": "gantry_rank_info"})["data"]
check("dashboard variable run: label_values(gantry_rank_info, run) lists the run", run in runs, runs)

# Every alert rule, loaded and evaluated by Prometheus: healthy, not firing, and its expression
# (as "quantity > bool threshold") returns a series for the run.
rules = wait_for("rules evaluated", lambda: (lambda rs: rs if rs and all(r.get("health") == "ok" for r in rs) else None)(
    [r for g in get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]), 20)
all_rules = [r for g in get("/api/v1/rules")["data"]["groups"] for r in g["rules"]]
check("alerts.yml: every rule loaded and evaluated without error", rules is not None and len(rules) >= 4,
      [(r["name"], r.get("health"), r.get("lastError")) for r in all_rules])
for rule in all_rules:
    q = re.sub(r"(>=|<=|==|!=|>|<)\s*([-+0-9.eE]+)\s*$", r"\1 bool \2", rule["query"])
    check(f"alert {rule['name']}: {q} returns data", len(query(q)) > 0, "empty result")
    check(f"alert {rule['name']} is not firing on a healthy run", rule.get("state") == "inactive", rule.get("state"))
sys.exit(1 if failed else 0)
PY

wait "$train_pid"
rc=$?
train_pid=""
[ $rc -eq 0 ] || fail "the training job exited with $rc"
echo "ok   the training job finished (exit 0)"
