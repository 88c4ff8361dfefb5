"""What zoo_ray's ``ray.get`` in slices of a second costs (#12): driver CPU and wall time.

    python benchmarks/get_slices.py [--refs 1000 10000 100000] [--wait 5]

While a RayContext runs, ``ray.get`` waits in slices of a second so that it can raise
``ClusterLostError`` when the cluster is lost (``driver_guard.watch_driver_calls``);
each slice asks Ray for every ref again. The worst case is a get of many refs that are
ready and one that is not: here ``--refs`` small objects put in the object store and
one task that ends after ``--wait`` seconds. Runs on a local Ray (no Hadoop: the cost is
the driver's), each size with Ray's own get and with zoo_ray's, alternating, twice, and
prints wall and CPU seconds and the ratio.
"""
from __future__ import annotations

import argparse
import time

import psutil
import ray
from ray._private.worker import Worker

from zoo_ray import driver_guard


def _cpu() -> float:
    times = psutil.Process().cpu_times()
    return times.user + times.system


@ray.remote(num_cpus=0)
def _sleep(seconds: float) -> None:
    time.sleep(seconds)


def _one_get(refs: list[ray.ObjectRef], wait: float) -> tuple[float, float]:
    slow = _sleep.remote(wait)
    started, cpu = time.monotonic(), _cpu()
    ray.get([*refs, slow])
    return time.monotonic() - started, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--refs", type=int, nargs="+", default=[1_000, 10_000, 100_000])
    parser.add_argument("--wait", type=float, default=5.0)
    args = parser.parse_args()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
    ray_get = Worker.get_objects
    rows = []
    try:
        for count in args.refs:
            refs = [ray.put(i) for i in range(count)]
            figures: dict[str, list[tuple[float, float]]] = {"ray": [], "zoo_ray": []}
            for _ in range(2):
                Worker.get_objects = ray_get  # type: ignore[method-assign]
                figures["ray"].append(_one_get(refs, args.wait))
                driver_guard.watch_driver_calls()
                figures["zoo_ray"].append(_one_get(refs, args.wait))
            rows.append((count, figures))
            del refs
    finally:
        Worker.get_objects = ray_get  # type: ignore[method-assign]
        ray.shutdown()
    print(f"\nray.get of N ready refs and one ready after {args.wait:.0f} s "
          "(best of 2; wall s / driver CPU s)")
    print(f"  {'N':>7} {'Ray wall':>9} {'Ray CPU':>8} {'zoo wall':>9} {'zoo CPU':>8} "
          f"{'CPU ratio':>9}")
    for count, figures in rows:
        ray_wall, ray_cpu = (min(run[i] for run in figures["ray"]) for i in (0, 1))
        zoo_wall, zoo_cpu = (min(run[i] for run in figures["zoo_ray"]) for i in (0, 1))
        print(f"  {count:>7} {ray_wall:9.2f} {ray_cpu:8.2f} {zoo_wall:9.2f} {zoo_cpu:8.2f} "
              f"{zoo_cpu / max(ray_cpu, 1e-9):9.2f}")


if __name__ == "__main__":
    main()
