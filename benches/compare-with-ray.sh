#!/usr/bin/env bash
# Ray 2.60's `ray microbenchmark` and `rayrs microbenchmark`, one after the other on this
# machine (never at the same time), then one table: metric, Ray, ours, ratio. Writes the table
# into benches/RESULTS.md (between its markers; the notes around it are kept) and the ratios as
# a bar chart, benches/ratios.svg.
#
#   benches/compare-with-ray.sh                    # everything: about 25 minutes on 2 cores
#   benches/compare-with-ray.sh --filter 'tasks'   # only the metrics whose name contains it
#   benches/compare-with-ray.sh --reuse-ray        # keep the last Ray run, rerun only ours
#
# Ray (`ray[default]==2.60.0` and numpy) is installed on first use into a virtualenv under the
# user's cache dir: ${RAY_BASELINE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ray-baseline-venv}
# (the same one /work/shared/bench/ray-baseline.sh uses). The runs' JSON lines are kept in
# ${XDG_CACHE_HOME:-$HOME/.cache}/rayrs-bench/. RAY_ACTORS (default 100) sets how many actors
# Ray's `actor creation` snippet creates per call: Ray starts a Python process per actor, and
# 1,000 of them do not fit in a small machine's memory (rayrs creates 1,000; both are rates).
set -euo pipefail
cd "$(dirname "$0")/.."

filter=""
reuse_ray=0
while [ $# -gt 0 ]; do
  case "$1" in
    --filter) filter="$2"; shift 2 ;;
    --filter=*) filter="${1#--filter=}"; shift ;;
    --reuse-ray) reuse_ray=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done

cache=${XDG_CACHE_HOME:-$HOME/.cache}
venv=${RAY_BASELINE_VENV:-$cache/ray-baseline-venv}
out=$cache/rayrs-bench
mkdir -p "$out"
ray_json=$out/ray.jsonl
ours_json=$out/ours.jsonl

# 1. Build first, so that compiling never overlaps a measurement.
cargo build --release -p rayrs
rayrs=${CARGO_TARGET_DIR:-target}/release/rayrs

# 2. Ray.
if [ "$reuse_ray" = 1 ] && [ -s "$ray_json" ]; then
  echo "reusing the Ray run in $ray_json" >&2
else
  if [ ! -x "$venv/bin/ray" ]; then
    echo "installing Ray 2.60 into $venv" >&2
    python3 -m venv "$venv" >&2
    "$venv/bin/pip" install -q 'ray[default]==2.60.0' numpy >&2
  fi
  export RAY_USAGE_STATS_ENABLED=0
  echo "running ray microbenchmark (Ray's harness sleeps 10 s before each metric)" >&2
  # Ray's run ends with its Ray Client metrics, whose server can time out on a small machine;
  # the core metrics are printed by then, so a failure only stops us if none were.
  if ! TESTS_TO_RUN="$filter" "$venv/bin/ray" microbenchmark >"$out/ray.log" 2>&1; then
    tail -5 "$out/ray.log" >&2
    grep -q ' per second ' "$out/ray.log" || exit 1
    echo "ray microbenchmark failed after its core metrics (above); going on with them" >&2
    "$venv/bin/ray" stop >/dev/null 2>&1 || true
  fi
  "$venv/bin/python" - "$out/ray.log" >"$ray_json" <<'PY'
import json, re, sys
for line in open(sys.argv[1]):
    m = re.match(r"^(.*?) per second ([0-9.eE+-]+) \+- ([0-9.eE+-]+)", line.strip())
    if m:
        print(json.dumps({"name": m.group(1), "per_second": float(m.group(2)), "sd": float(m.group(3))}))
PY
  # `actor creation` is not in Ray's list: the same workload as ours, timed by Ray's helper.
  if [ -z "$filter" ] || [[ "actor creation" == *"$filter"* ]] \
    || [[ "actor creation, sharing processes" == *"$filter"* ]]; then
    echo "timing actor creation in Ray (${RAY_ACTORS:-100} actors per call)" >&2
    "$venv/bin/python" - "${RAY_ACTORS:-100}" >>"$ray_json" 2>"$out/ray-actors.log" <<'PY'
import json, sys
import ray
from ray._private.ray_microbenchmark_helpers import timeit

n = int(sys.argv[1])
ray.init()

@ray.remote(num_cpus=0)
class Actor:
    def small_value(self):
        return b"ok"

def create():
    actors = [Actor.remote() for _ in range(n)]
    ray.get([a.small_value.remote() for a in actors])
    for a in actors:
        ray.kill(a)

for r in timeit("actor creation", create, n, warmup_time_sec=0):
    if r:
        print(json.dumps({"name": r[0], "per_second": float(r[1]), "sd": float(r[2])}))
        # Ray has no actors sharing a process: the same workload is its figure for ours too.
        print(json.dumps({"name": r[0] + ", sharing processes", "per_second": float(r[1]), "sd": float(r[2])}))
ray.shutdown()
PY
  fi

  # Not in Ray's list either: nested tasks (recursive fib, each call blocked in `get` on its
  # two children) and Ray's scalability envelope of 1M tasks queued on a node (RAY_QUEUED
  # sets how many, default 1,000,000; the metric is a rate either way).
  if [ -z "$filter" ] || [[ "nested tasks fib" == *"$filter"* ]] \
    || [[ "single client 1M queued tasks and get" == *"$filter"* ]]; then
    echo "timing nested tasks and ${RAY_QUEUED:-1000000} queued tasks in Ray" >&2
    "$venv/bin/python" - "${RAY_QUEUED:-1000000}" "$filter" >>"$ray_json" 2>"$out/ray-nested.log" <<'PY'
import json, sys, time
import ray
from ray._private.ray_microbenchmark_helpers import timeit

queued, wanted = int(sys.argv[1]), sys.argv[2]
ray.init()

@ray.remote
def fib(n):
    if n < 2:
        return n
    return sum(ray.get([fib.remote(n - 1), fib.remote(n - 2)]))

@ray.remote
def small_value():
    return b"ok"

if "nested tasks fib".find(wanted) >= 0:
    # fib(15) makes 1,973 tasks.
    for r in timeit("nested tasks fib", lambda: ray.get(fib.remote(15)), 1973):
        if r:
            print(json.dumps({"name": r[0], "per_second": float(r[1]), "sd": float(r[2])}), flush=True)

name = "single client 1M queued tasks and get"
if name.find(wanted) >= 0:
    ray.get([small_value.remote() for _ in range(queued // 10)])
    start = time.perf_counter()
    ray.get([small_value.remote() for _ in range(queued)])
    rate = queued / (time.perf_counter() - start)
    print(json.dumps({"name": name, "per_second": rate, "sd": 0.0}), flush=True)
ray.shutdown()
PY
  fi
fi

# 3. Ours, after Ray has stopped.
args=(microbenchmark --json)
[ -n "$filter" ] && args+=(--filter "$filter")
"$rayrs" "${args[@]}" >"$ours_json"

# 4. The table, RESULTS.md and the chart.
cpu=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2 | sed 's/^ *//' || true)
mem=$(awk '/MemTotal/ {printf "%.0f GiB RAM", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
machine="${cpu:-unknown CPU}, $(nproc) cores, ${mem:-? RAM}, $(uname -sr); run $(date -u '+%Y-%m-%d %H:%M UTC') at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
"$rayrs" report --ray "$ray_json" --ours "$ours_json" --machine "$machine" \
  --markdown benches/RESULTS.md --svg benches/ratios.svg
echo "wrote benches/RESULTS.md and benches/ratios.svg (raw runs in $out)" >&2
