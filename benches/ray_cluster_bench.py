"""Ray 2.60's side of `rayrs microbenchmark --cluster`: the same workloads, with the same
metric names, on a head without CPUs and two nodes of this machine (ray.cluster_utils),
timed with Ray's own `timeit` helper. Prints one JSON object per metric (as
`rayrs microbenchmark --json` does). Run by benches/compare-with-ray.sh --cluster."""

import json
import os
import sys
import time

import numpy as np
import ray
from ray._private.ray_microbenchmark_helpers import timeit
from ray.cluster_utils import Cluster

quick = "--quick" in sys.argv
per_node = max(1, (os.cpu_count() or 2) // 2)
batch = 100 if quick else 1000

cluster = Cluster()
cluster.add_node(num_cpus=0)
cluster.add_node(num_cpus=per_node, resources={"near": 1000})
cluster.add_node(num_cpus=per_node, resources={"far": 1000})
ray.init(address=cluster.address)
cluster.wait_for_nodes()

results = []


def emit(name, mean, sd):
    results.append({"name": name, "per_second": mean, "sd": sd})
    print(json.dumps(results[-1]), flush=True)


def run(name, fn, multiplier=1):
    for r in timeit(name, fn, multiplier):
        if r:
            emit(r[0], float(r[1]), float(r[2]))


@ray.remote
def small_value():
    return b"ok"


@ray.remote(num_cpus=0)
class Far:
    def small_value(self):
        return b"ok"


@ray.remote
def make_array(nbytes):
    return np.full(nbytes // 8, 7, dtype=np.uint64)


def spread():
    ray.get([small_value.options(scheduling_strategy="SPREAD").remote() for _ in range(batch)])


run("cluster: tasks async spread over 2 nodes", spread, batch)

far = Far.options(resources={"far": 1}).remote()
ray.get(far.small_value.remote())
run(
    "cluster: 1:1 actor calls async to another node",
    lambda: ray.get([far.small_value.remote() for _ in range(batch)]),
    batch,
)
run("cluster: 1:1 actor calls sync to another node", lambda: ray.get(far.small_value.remote()))

size = (64 << 20) if quick else (1 << 30)
label = (
    "cluster: get 64 MiB made on another node (gigabytes)"
    if quick
    else "cluster: get 1 GiB made on another node (gigabytes)"
)
stats = []
for _ in range(1 if quick else 4):
    made = make_array.options(resources={"far": 1}).remote(size)
    ray.wait([made], fetch_local=False)  # the transfer is what is timed
    start = time.perf_counter()
    arr = ray.get(made)
    elapsed = time.perf_counter() - start
    assert arr.nbytes == size and int(arr[-1]) == 7
    del arr
    stats.append(size / (1 << 30) / elapsed)
emit(label, float(np.mean(stats)), float(np.std(stats)))

ray.shutdown()
cluster.shutdown()
