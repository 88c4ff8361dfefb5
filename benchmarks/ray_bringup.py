"""Ray bring-up and task throughput: zoo_ray's RayContext vs ray.util.spark, same YARN.

    python benchmarks/ray_bringup.py [--workers 2] [--tasks 10000] [--rounds 2]

Starts its own local Hadoop, then runs each contender in a fresh driver process
(so neither inherits the other's Ray state) with the same number of executors and
Ray worker nodes: the time from a running SparkContext to a usable Ray cluster,
and the rate of ``--tasks`` trivial tasks submitted at once (the median of three
batches). The contenders take turns going first, ``--rounds`` times each, since
on a small machine the one that runs first pays for cold caches. Prints every
figure, the medians and their ratios.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

_TASKS = textwrap.dedent("""
    import time, ray
    @ray.remote
    def noop():
        return 1
    ray.get([noop.remote() for _ in range(200)])  # warm the worker pools
    rates = []
    for _ in range(3):
        started = time.monotonic()
        assert sum(ray.get([noop.remote() for _ in range({tasks})])) == {tasks}
        rates.append({tasks} / (time.monotonic() - started))
    rate = sorted(rates)[1]
""")

_ZOO_RAY = textwrap.dedent("""
    import json, sys, time
    from zoo_ray import RayContext, init_spark_on_yarn
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors={workers}, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g")
    started = time.monotonic()
    ctx = RayContext(sc, object_store_memory="256m")
    ctx.init()
    import ray
    ray.init()
    bringup = time.monotonic() - started
""") + _TASKS + textwrap.dedent("""
    print(json.dumps({{"bringup_s": bringup, "tasks_per_s": rate}}))
    ctx.stop()
    sc.stop()
""")

_PEER = textwrap.dedent("""
    import json, os, secrets, sys, time
    token = secrets.token_urlsafe(32)
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token, PYSPARK_PYTHON=sys.executable)
    from pyspark.sql import SparkSession
    spark = (SparkSession.builder.master("yarn").appName("ray-util-spark")
             .config("spark.executor.instances", "{workers}").config("spark.executor.cores", "1")
             .config("spark.executor.memory", "512m").config("spark.driver.memory", "512m")
             .config("spark.executor.memoryOverhead", "1536m")
             .config("spark.yarn.archive", sys.argv[2])
             .config("spark.executorEnv.RAY_AUTH_MODE", "token")
             .config("spark.executorEnv.RAY_AUTH_TOKEN", token)
             .config("spark.executorEnv.PATH", os.environ["PATH"])
             .getOrCreate())
    while spark.sparkContext._jsc.sc().getExecutorMemoryStatus().size() - 1 < {workers}:
        time.sleep(0.5)
    from ray.util.spark import setup_ray_cluster, shutdown_ray_cluster
    started = time.monotonic()
    setup_ray_cluster(max_worker_nodes={workers}, num_cpus_worker_node=1, num_gpus_worker_node=0,
                      object_store_memory_worker_node=256 * 2**20)
    import ray
    ray.init()
    bringup = time.monotonic() - started
""") + _TASKS + textwrap.dedent("""
    print(json.dumps({{"bringup_s": bringup, "tasks_per_s": rate}}))
    shutdown_ray_cluster()
    spark.stop()
""")


def _run(script: str, args: list, env: dict) -> dict:
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True,
                            text=True, env=env, timeout=1200)
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    lines = [line for line in result.stdout.splitlines() if line.startswith('{"bringup_s"')]
    return json.loads(lines[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    from zoo_ray.minicluster import MiniCluster

    fill = dict(workers=args.workers, tasks=args.tasks)
    figures = {"zoo_ray": [], "ray_util_spark": []}
    with tempfile.TemporaryDirectory(prefix="zoo-ray-bench-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop") as cluster:
            env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
            env["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
            # ray.util.spark runs the `ray` script it finds on PATH, on the driver too.
            env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]
            conf = str(cluster.hadoop_conf_dir)
            peer_args = [conf, f"{cluster.default_fs}/bench/spark-jars.zip"]
            runs = {"zoo_ray": lambda: _run(_ZOO_RAY.format(**fill), [conf], env),
                    "ray_util_spark": lambda: _run(_PEER.format(**fill), peer_args, env)}
            for round_ in range(args.rounds):
                order = ["zoo_ray", "ray_util_spark"][::1 if round_ % 2 == 0 else -1]
                for name in order:
                    figures[name].append(runs[name]())
                    print(f"round {round_} {name}\t{json.dumps(figures[name][-1])}", flush=True)
                    if round_ == 0 and name == "zoo_ray":
                        # The peer gets zoo_ray's cached Spark jar archive too: only Ray
                        # bring-up differs.
                        archive = next(Path(os.environ.get("ZOO_RAY_CACHE_DIR") or
                                            Path.home() / ".cache" / "zoo_ray").glob("spark/*.zip"))
                        cluster.fs("-mkdir", "-p", "/bench")
                        cluster.fs("-put", "-f", str(archive), "/bench/spark-jars.zip")
    medians = {name: {key: statistics.median(run[key] for run in runs_)
                      for key in ("bringup_s", "tasks_per_s")}
               for name, runs_ in figures.items()}
    for name, values in medians.items():
        for key, value in values.items():
            print(f"{name}_{key}_median\t{value:.2f}")
    ours, peer = medians["zoo_ray"], medians["ray_util_spark"]
    print(f"bringup_ratio_zoo_ray_vs_peer\t{ours['bringup_s'] / peer['bringup_s']:.2f}")
    print(f"throughput_ratio_zoo_ray_vs_peer\t{ours['tasks_per_s'] / peer['tasks_per_s']:.2f}")


if __name__ == "__main__":
    main()
