"""A RayContext's life on the local Hadoop: start, stop, and a start again, timed apart.

    python benchmarks/context_lifecycle.py [--executors 3] [--rounds 3]

Starts its own local Hadoop (two NodeManagers) and one application of ``--executors``
executors (2 cores, 1 GiB heap, 2 GiB for Ray each, as the test suite's shared cluster).
Then, ``--rounds`` times on that application: ``RayContext.init()``, one Ray task, and
``RayContext.stop()``, each timed; and last ``sc.stop()``. The first round starts the
executors' Python workers too. Prints every figure and the medians, with the commit and the
machine. On two cores every figure is CPU-bound and varies between runs.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

from provenance import print_provenance


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    import ray

    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    print_provenance()
    spec = MiniClusterSpec(nodemanagers=2, nm_memory_mb=10240, nm_vcores=8)
    figures: dict[str, list[float]] = {"init": [], "first task": [], "stop": []}
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            started = time.monotonic()
            sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                                    num_executors=args.executors, executor_cores=2,
                                    executor_memory="1g", driver_memory="1g",
                                    extra_executor_memory_for_ray="2g", executor_timeout=900)
            print(f"init_spark_on_yarn (a fresh local Hadoop): {time.monotonic() - started:.1f}s")
            for _ in range(args.rounds):
                ctx = RayContext(sc, object_store_memory="1g")
                started = time.monotonic()
                ctx.init()
                figures["init"].append(time.monotonic() - started)
                started = time.monotonic()
                ray.get(ray.remote(lambda: 1).remote())
                figures["first task"].append(time.monotonic() - started)
                started = time.monotonic()
                ctx.stop()
                figures["stop"].append(time.monotonic() - started)
            started = time.monotonic()
            sc.stop()
            print(f"sc.stop(): {time.monotonic() - started:.1f}s")
    for name, values in figures.items():
        print(f"RayContext {name}: {' '.join(f'{v:.1f}' for v in values)} s; "
              f"median {statistics.median(values):.1f} s")


if __name__ == "__main__":
    sys.exit(main())
