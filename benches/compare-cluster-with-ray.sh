#!/usr/bin/env bash
# The cross-node workloads on Ray 2.60 and on rayrs, one after the other on this machine: a
# head without CPUs and two nodes each (Ray's ray.cluster_utils.Cluster; our `rayrs start`
# processes), the same metric names, then the side-by-side table.
#
#   benches/compare-cluster-with-ray.sh            # about 3 minutes on 2 cores
#   benches/compare-cluster-with-ray.sh --quick    # small sizes, one round (a smoke test)
#
# Ray comes from the virtualenv benches/compare-with-ray.sh installs (the same one
# /work/shared/bench/ray-baseline.sh uses). The runs' JSON lines are kept in
# ${XDG_CACHE_HOME:-$HOME/.cache}/rayrs-bench/.
set -euo pipefail
cd "$(dirname "$0")/.."

quick=""
if [ "${1:-}" = "--quick" ]; then quick="--quick"; fi
cache=${XDG_CACHE_HOME:-$HOME/.cache}
venv=${RAY_BASELINE_VENV:-$cache/ray-baseline-venv}
out=$cache/rayrs-bench
mkdir -p "$out"
if [ ! -x "$venv/bin/python" ]; then
  echo "installing Ray 2.60 into $venv" >&2
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q 'ray[default]==2.60.0' numpy >&2
fi

# Build first, so that compiling never overlaps a measurement.
cargo build --release -p rayrs
rayrs=${CARGO_TARGET_DIR:-target}/release/rayrs

echo "running Ray's side (a local cluster of three nodes)" >&2
RAY_USAGE_STATS_ENABLED=0 "$venv/bin/python" benches/ray_cluster_bench.py $quick \
  >"$out/ray-cluster.jsonl" 2>"$out/ray-cluster.log" || { tail -20 "$out/ray-cluster.log" >&2; exit 1; }
"$venv/bin/ray" stop >/dev/null 2>&1 || true

echo "running ours" >&2
"$rayrs" microbenchmark --cluster --json $quick >"$out/ours-cluster.jsonl"

"$rayrs" report --ray "$out/ray-cluster.jsonl" --ours "$out/ours-cluster.jsonl" \
  --machine "$(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
