"""What the node keeper costs while nothing changes (#12): CPU on the driver, Spark jobs.

    python benchmarks/keeper_idle.py [--seconds 60]

Starts its own local Hadoop, a SparkContext with 2 executors and a RayContext, then
measures for ``--seconds`` with the keeper watching Spark's executor list (every 2 s)
and again with it closed: the keeper thread's own CPU time, the driver's Python process
and Spark's JVM (where the keeper's calls are answered), and the Spark jobs the keeper
ran. Prints every figure and the ratio of the two.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

_TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) of one thread of this process, from /proc."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * _TICK_S


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return times.user + times.system


def _measure(seconds: float, jvm: psutil.Process, keeper: Any) -> dict[str, float]:
    driver = psutil.Process()
    native = keeper._thread.native_id if keeper is not None else None
    start = (_cpu(driver), _cpu(jvm), _thread_cpu(native) if native else 0.0)
    time.sleep(seconds)
    end = (_cpu(driver), _cpu(jvm), _thread_cpu(native) if native else 0.0)
    return {"driver": end[0] - start[0], "jvm": end[1] - start[1],
            "keeper thread": end[2] - start[2]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    args = parser.parse_args()
    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    spec = MiniClusterSpec(nodemanagers=2, nm_memory_mb=8192, nm_vcores=8)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-keeper-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir), num_executors=2,
                                    executor_cores=1, executor_memory="512m",
                                    driver_memory="512m", extra_executor_memory_for_ray="1g")
            ctx = RayContext(sc, object_store_memory="128m")
            ctx.init()
            try:
                # Spark's JVM, not one of the local Hadoop's (also children of this process).
                jvm = psutil.Process(sc._gateway.proc.pid)
                keeper = ctx._recovery._keeper  # the node keeper thread of healing
                watching = _measure(args.seconds, jvm, keeper)
                jobs = len(sc.statusTracker().getJobIdsForGroup(keeper._group))
                keeper.close()
                closed = _measure(args.seconds, jvm, None)
            finally:
                ctx.stop()
                sc.stop()
    print(f"\nkeeper idle cost over {args.seconds:.0f} s, nothing changing (CPU seconds)")
    print(f"  {'':14} {'watching':>9} {'closed':>9}")
    for key in ("keeper thread", "driver", "jvm"):
        print(f"  {key:14} {watching[key]:9.2f} {closed[key]:9.2f}")
    print(f"  keeper's CPU share of one core: {watching['keeper thread'] / args.seconds:.3%}; "
          f"Spark jobs it ran: {jobs}")
    ratio = (watching["driver"] + watching["jvm"]) / max(closed["driver"] + closed["jvm"], 1e-9)
    print(f"  driver + JVM, watching / closed: {ratio:.2f}")


if __name__ == "__main__":
    main()
