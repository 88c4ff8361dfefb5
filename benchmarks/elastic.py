"""Elastic against fixed: a bursty workload's container-seconds and completion time.

    python benchmarks/elastic.py [--executors 3] [--task-s 10] [--pause-s 60] [--idle-timeout 10s]

Starts its own local Hadoop, then, each in a fresh driver process on the same cluster,
a RayContext of ``--executors`` executors (1 core each) held from start to end (fixed)
and an elastic one (``min_ray_nodes=1``, ``max_ray_nodes=--executors``). Each runs the
same workload: a burst of 2 x executors tasks of one CPU for ``--task-s`` seconds, an
idle pause of ``--pause-s`` seconds, and the same burst again. Printed for each: the
workload's wall time, and the vcore- and memory-seconds the ResourceManager counted for
the application during it (its ``vcoreSeconds`` and ``memorySeconds``, read before and
after); for the elastic run, the time from each burst's submission to the first task
on a node that was not there when the burst came (demand to a new node taking work).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from provenance import print_provenance


def usage(rm: Any, app_id: str) -> tuple[float, float]:
    """(vcore-seconds, MB-seconds) the ResourceManager has counted for the application."""
    report = rm.app(app_id)
    return float(report["vcoreSeconds"]), float(report["memorySeconds"])


def one_run(conf: str, executors: int, elastic: bool, task_s: float, pause_s: float,
            idle_timeout: str) -> dict[str, Any]:
    """The workload in this (fresh) driver process."""
    import ray

    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.yarn import ResourceManager

    sc = init_spark_on_yarn(hadoop_conf=conf, num_executors=executors, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g",
                            # The figures in docs/benchmarks.md were taken with a container
                            # ApplicationMaster: its vcore is taken out below.
                            conf={"spark.yarn.unmanagedAM.enabled": "false"})
    bounds = dict(min_ray_nodes=1, max_ray_nodes=executors, idle_timeout=idle_timeout)
    ctx = RayContext(sc, object_store_memory="128m", **(bounds if elastic else {}))
    ctx.init()
    ray.init()
    rm = ResourceManager.from_conf(conf)

    @ray.remote(num_cpus=1)
    def work(seconds: float) -> tuple[str, float]:
        started = time.time()
        time.sleep(seconds)
        return ray.get_runtime_context().get_node_id(), started

    try:
        time.sleep(15 if elastic else 0)  # the elastic one gives its spare executors back
        before, began = usage(rm, sc.applicationId), time.monotonic()
        to_new_node = []
        for burst in range(2):
            there = {s["node_id"] for s in ctx.node_status() if s["alive"]}
            submitted = time.time()
            results = ray.get([work.remote(task_s) for _ in range(2 * executors)])
            new = [started for node, started in results if node not in there]
            if new:
                to_new_node.append(min(new) - submitted)
            if burst == 0:
                time.sleep(pause_s)
        wall = time.monotonic() - began
        after = usage(rm, sc.applicationId)
    finally:
        ctx.stop()
        sc.stop()
    return {"wall_s": wall, "vcore_s": after[0] - before[0], "mb_s": after[1] - before[1],
            "to_new_node_s": to_new_node}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executors", type=int, default=3)
    parser.add_argument("--task-s", type=float, default=10.0)
    parser.add_argument("--pause-s", type=float, default=60.0)
    parser.add_argument("--idle-timeout", default="10s")
    parser.add_argument("--one", nargs=2, metavar=("CONF", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        conf, mode = args.one
        print(json.dumps(one_run(conf, args.executors, mode == "elastic", args.task_s,
                                 args.pause_s, args.idle_timeout)), flush=True)
        return

    from zoo_ray.minicluster import MiniCluster

    print_provenance()
    results = {}
    with tempfile.TemporaryDirectory(prefix="zoo-ray-elastic-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop") as cluster:
            conf = str(cluster.hadoop_conf_dir)
            for mode in ("fixed", "elastic"):
                done = subprocess.run(
                    [sys.executable, __file__, "--executors", str(args.executors),
                     "--task-s", str(args.task_s), "--pause-s", str(args.pause_s),
                     "--idle-timeout", args.idle_timeout, "--one", conf, mode],
                    capture_output=True, text=True, timeout=1800,
                    env={**os.environ, "HADOOP_CONF_DIR": conf})
                if done.returncode != 0:
                    raise RuntimeError(done.stderr[-4000:])
                line = [x for x in done.stdout.splitlines() if x.startswith("{")][-1]
                results[mode] = json.loads(line)
                print(f"{mode:8s} {json.dumps(results[mode])}", flush=True)
    fixed, elastic = results["fixed"], results["elastic"]
    print(f"elastic / fixed: vcore-seconds {elastic['vcore_s'] / fixed['vcore_s']:.2f} "
          f"(goal <= 0.60), memory-seconds {elastic['mb_s'] / fixed['mb_s']:.2f}, "
          f"completion {elastic['wall_s'] / fixed['wall_s']:.2f} (goal <= 1.15)")
    # Both hold an ApplicationMaster of one vcore throughout: the executors' share alone.
    ours, theirs = (run["vcore_s"] - run["wall_s"] for run in (elastic, fixed))
    print(f"executors only (the ApplicationMaster's vcore taken out): elastic / fixed "
          f"vcore-seconds {ours / theirs:.2f}")
    print("demand to a new node taking work: "
          + ", ".join(f"{s:.1f} s" for s in elastic["to_new_node_s"]))


if __name__ == "__main__":
    main()
