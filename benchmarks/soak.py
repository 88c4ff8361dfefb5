"""Soak: a workload under a random fault every minute, on 3 isolated hosts (#12).

    sudo python benchmarks/soak.py [--minutes 10] [--every 60] [--seed 1]

Starts its own local Hadoop with isolated hosts (needs root), a SparkContext with 3
executors and a RayContext. A thread keeps a workload running: batches of small Ray
tasks (``max_retries=3``) and an actor that keeps a counter. Every ``--every`` seconds
one fault from the matrix hits the cluster at random:

- ``kill -9`` of a worker's raylet, of the head's raylet, of the head's GCS;
- YARN kills a worker's container, or the head's (FORCEFUL_SHUTDOWN);
- a worker host's link goes down for 60 s, then up.

After each fault (for the link, once it is up again) it times how long until every
executor runs a live Ray node again and a task answers on each. At the end it prints
the tasks completed, failed (raised to the driver: Ray's retries were not enough, or the
cluster was rebuilt under them) and lost (never answered), how often the counter's value
did not follow the increments it acknowledged (its actor restarted without its state, or
was lost with the head), the time to whole after each fault, and the application's
processes left on any host once it stopped (must be 0). Not run in CI (it takes the
minutes it is given).
"""
from __future__ import annotations

import argparse
import random
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

_EXECUTORS = 3


class Workload:
    """Small tasks and a counting actor, kept busy from a thread; counts what happened."""

    def __init__(self) -> None:
        import ray

        self.ray = ray
        self.counts: Counter[str] = Counter()
        self.acknowledged = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-workload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(120)

    def _actor(self) -> Any:
        @self.ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
        class Tally:
            def __init__(self) -> None:
                self.count = 0

            def add(self) -> int:
                self.count += 1
                return self.count

        return Tally.remote()

    def _run(self) -> None:
        ray = self.ray
        square = ray.remote(max_retries=3)(lambda x: x * x)
        tally, expected = None, 0
        while not self._stop.is_set():
            try:
                if tally is None:
                    tally, expected = self._actor(), 0
                    self.counts["actors started"] += 1
                refs = [square.remote(i) for i in range(20)]
                done, pending = ray.wait(refs, num_returns=len(refs), timeout=60)
                self.counts["lost"] += len(pending)
                for ref in done:
                    try:
                        ray.get(ref)
                        self.counts["completed"] += 1
                    except ray.exceptions.RayError:
                        self.counts["failed"] += 1
                value = ray.get(tally.add.remote(), timeout=60)
                self.acknowledged += 1
                if value != expected + 1:
                    self.counts["counter restarted without its state"] += 1
                expected = value
            except Exception as exc:  # a rebuilt cluster voids the actor: start another
                self.counts[f"batch error: {type(exc).__name__}"] += 1
                tally = None
                time.sleep(1)


def _whole(ctx: Any) -> bool:
    import ray

    try:
        nodes = ctx.executor_nodes()
        if len(nodes) < _EXECUTORS:
            return False
        for node_id in nodes:
            strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                node_id, soft=False)
            ray.get(ray.remote(num_cpus=0)(lambda: 1).options(
                scheduling_strategy=strategy).remote(), timeout=10)
        return True
    except Exception:
        return False


def _time_to_whole(ctx: Any, hit: float) -> float | None:
    """Seconds from ``hit`` until the cluster is whole again, None if not within 240 s.

    A YARN kill takes effect a moment after it is asked for: the cluster counts as
    whole only once it was seen broken (or 15 s passed, for faults it rides out).
    """
    deadline = hit + 15
    while time.monotonic() < deadline and _whole(ctx):
        time.sleep(0.5)
    deadline = hit + 240
    while time.monotonic() < deadline:
        if _whole(ctx):
            return time.monotonic() - hit
        time.sleep(1)
    return None


def _process(ctx: Any, node: dict[str, Any], name: str) -> psutil.Process:
    return [p for p in psutil.Process(node["pid"]).children(recursive=True)
            if p.name() == name][0]


def fault(kind: str, ctx: Any, cluster: Any) -> None:
    """Cause one fault of the matrix."""
    head, worker = ctx.nodes[0], ctx.nodes[-1]
    if kind == "worker raylet":
        _process(ctx, worker, "raylet").kill()
    elif kind == "head raylet":
        _process(ctx, head, "raylet").kill()
    elif kind == "head gcs":
        _process(ctx, head, "gcs_server").kill()
    elif kind in ("worker container", "head container"):
        victim = worker if kind == "worker container" else head
        cluster.resource_manager.signal_container(victim["container"], "FORCEFUL_SHUTDOWN")
    elif kind == "worker link":
        host = [h for h in cluster.network.hosts if h.ip == worker["node_ip"]][0]
        subprocess.run(["ip", "link", "set", host.veth, "down"], check=True)
        time.sleep(60)
        subprocess.run(["ip", "link", "set", host.veth, "up"], check=True)


FAULTS = ["worker raylet", "head raylet", "head gcs", "worker container", "head container",
          "worker link"]


def _leftovers(cluster: Any, nodemanagers: set[int]) -> int:
    left = 0
    for host in cluster.network.hosts:
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                             text=True, check=False).stdout
        left += len({int(p) for p in out.split()} - nodemanagers)
    return left


def soak(cluster: Any, minutes: float, every: float, rng: random.Random) -> None:
    from zoo_ray import RayContext, init_spark_on_yarn

    sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                            num_executors=_EXECUTORS, executor_cores=1, executor_memory="512m",
                            driver_memory="512m", extra_executor_memory_for_ray="1g")
    ctx = RayContext(sc, object_store_memory="128m")
    ctx.init()
    workload = Workload()
    workload.start()
    wholes: list[tuple[str, float | None]] = []
    end = time.monotonic() + minutes * 60
    while time.monotonic() + every <= end:
        time.sleep(every / 2)
        kind = rng.choice(FAULTS)
        fault(kind, ctx, cluster)
        hit = time.monotonic()  # after a link is up again: what it took from then
        took = _time_to_whole(ctx, hit)
        wholes.append((kind, took))
        print(f"{kind}: whole again after "
              f"{'never (within 240 s)' if took is None else f'{took:.1f}s'}", flush=True)
        time.sleep(max(0.0, every / 2 - (time.monotonic() - hit)))
    workload.stop()
    counter_ok = workload.acknowledged
    ctx.stop()
    sc.stop()
    nodemanagers = {d.pid for d in cluster._daemons() if d.name.startswith("nodemanager")}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _leftovers(cluster, nodemanagers):
        time.sleep(1)
    print("\nsoak figures")
    print(f"  faults: {len(wholes)}; tasks: {dict(workload.counts)}; counter increments "
          f"acknowledged: {counter_ok}")
    for kind, took in wholes:
        print(f"  {kind:17} whole after {'-' if took is None else f'{took:.1f} s'}")
    print(f"  processes of the application left on any host: "
          f"{_leftovers(cluster, nodemanagers)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from zoo_ray.minicluster import MiniCluster, MiniClusterSpec

    spec = MiniClusterSpec(nodemanagers=_EXECUTORS, nm_memory_mb=3072, nm_vcores=4,
                           isolated_hosts=True)
    with tempfile.TemporaryDirectory(prefix="zoo-ray-soak-") as tmp:
        with MiniCluster(Path(tmp) / "hadoop", spec=spec) as cluster:
            soak(cluster, args.minutes, args.every, random.Random(args.seed))


if __name__ == "__main__":
    main()
