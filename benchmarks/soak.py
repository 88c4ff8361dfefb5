"""Soak: a workload under a random fault every minute, on 3 isolated hosts (#12).

    sudo python benchmarks/soak.py [--minutes 10] [--every 60] [--seed 1]

Starts its own local Hadoop with isolated hosts (needs root), a SparkContext with 3
executors and a RayContext. The main thread keeps a workload running, as a program or
a notebook cell does: batches of small Ray tasks (``max_retries=3``), an actor that keeps
a counter, Ray's cluster resources and a task on every executor's node. Every
``--every`` seconds a thread makes one fault from the matrix hit the cluster at random:

- ``kill -9`` of a worker's raylet, of the head's raylet, of the head's GCS;
- YARN kills a worker's container, or the head's (FORCEFUL_SHUTDOWN);
- a worker host's link goes down for 60 s, then up.

The time to whole after a fault (for the link, from when it is up again) is until a task
answered on every executor's node again. At the end it prints the tasks completed, failed
(raised to the driver: Ray's retries were not enough, or the cluster was rebuilt under
them) and lost (no answer within 60 s of their batch), how often the counter's value did not follow
the increments it acknowledged (its actor restarted without its state, or was lost with
the head), the time to whole after each fault, and the application's processes left on
any host and on the gateway once it stopped (must be 0). Not run in CI (it takes the
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
    """Small tasks, a counting actor and a task per node, run in the calling thread."""

    def __init__(self, ctx: Any) -> None:
        import ray

        self.ray = ray
        self.ctx = ctx
        self.counts: Counter[str] = Counter()
        self.acknowledged = 0
        #: (time, whether a task answered on every executor's node), one per round.
        self.seen: list[tuple[float, bool]] = []
        self._tally: Any = None
        self._expected = 0
        # Defined once, as a program does: Ray registers each with the GCS at first use.
        self._square = ray.remote(max_retries=3)(lambda x: x * x)
        self._answer = ray.remote(num_cpus=0)(lambda: 1)

    def _actor(self) -> Any:
        @self.ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
        class Tally:
            def __init__(self) -> None:
                self.count = 0

            def add(self) -> int:
                self.count += 1
                return self.count

        return Tally.remote()

    def run_until(self, end: float) -> None:
        while time.monotonic() < end:
            try:
                self._round()
            except Exception as exc:  # a rebuilt cluster voids the actor: start another
                self.counts[f"round error: {type(exc).__name__}"] += 1
                self.seen.append((time.monotonic(), False))
                self._tally = None
                time.sleep(1)

    def _round(self) -> None:
        ray = self.ray
        if self._tally is None:
            self._tally, self._expected = self._actor(), 0
            self.counts["actors started"] += 1
        deadline = time.monotonic() + 60  # for the whole batch, as one ray.wait would be
        for ref in [self._square.remote(i) for i in range(20)]:
            try:
                ray.get(ref, timeout=max(0.0, deadline - time.monotonic()))
                self.counts["completed"] += 1
            except ray.exceptions.GetTimeoutError:
                self.counts["lost"] += 1
            except ray.exceptions.RayError:
                self.counts["failed"] += 1
        value = ray.get(self._tally.add.remote(), timeout=60)
        self.acknowledged += 1
        if value != self._expected + 1:
            self.counts["counter restarted without its state"] += 1
        self._expected = value
        self.seen.append((time.monotonic(), self._whole()))

    def _whole(self) -> bool:
        ray = self.ray
        try:
            nodes = self.ctx.executor_nodes()
            # A state call of Ray's own, as a notebook makes: it must not wait on a lost GCS.
            if len(nodes) < _EXECUTORS or ray.cluster_resources().get("CPU", 0) < _EXECUTORS:
                return False
            for node_id in nodes:
                strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
                    node_id, soft=False)
                ray.get(self._answer.options(scheduling_strategy=strategy).remote(),
                        timeout=10)
            return True
        except Exception:
            return False


def time_to_whole(seen: list[tuple[float, bool]], hit: float) -> float | None:
    """Seconds from ``hit`` until the workload saw the cluster whole again (None: never).

    A YARN kill takes effect a moment after it is asked for: the cluster counts as
    whole only once it was seen broken after ``hit`` (or 15 s passed, for faults it
    rides out).
    """
    broken = False
    for at, whole in seen:
        if at < hit:
            continue
        if not whole:
            broken = True
        elif broken or at >= hit + 15:
            return at - hit
    return None


def _process(node: dict[str, Any], name: str) -> psutil.Process:
    return [p for p in psutil.Process(node["pid"]).children(recursive=True)
            if p.name() == name][0]


def fault(kind: str, ctx: Any, cluster: Any) -> None:
    """Cause one fault of the matrix."""
    head, worker = ctx.nodes[0], ctx.nodes[-1]
    if kind == "worker raylet":
        _process(worker, "raylet").kill()
    elif kind == "head raylet":
        _process(head, "raylet").kill()
    elif kind == "head gcs":
        _process(head, "gcs_server").kill()
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


class Faults(threading.Thread):
    """A random fault every ``every`` seconds, from a thread: no Ray call is made here."""

    def __init__(self, ctx: Any, cluster: Any, every: float, end: float,
                 rng: random.Random) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.ctx, self.cluster, self.every, self.end, self.rng = ctx, cluster, every, end, rng
        #: (kind, when it hit; for the link, when it was up again)
        self.hits: list[tuple[str, float]] = []

    def run(self) -> None:
        while time.monotonic() + self.every <= self.end:
            time.sleep(self.every / 2)
            kind = self.rng.choice(FAULTS)
            try:
                fault(kind, self.ctx, self.cluster)
            except (IndexError, psutil.Error, OSError) as exc:  # its target is gone already
                print(f"{kind}: not done ({exc!r})", flush=True)
                continue
            hit = time.monotonic()
            self.hits.append((kind, hit))
            print(f"{kind} at {hit:.0f}", flush=True)
            time.sleep(max(0.0, self.every / 2 - (time.monotonic() - hit)))


def _gateway_processes() -> set[int]:
    """This process's descendants, but for Spark's JVM (it lives as long as Python)."""
    return {p.pid for p in psutil.Process().children(recursive=True) if p.name() != "java"}


def _leftovers(cluster: Any, nodemanagers: set[int], before: set[int]) -> int:
    """The application's processes on any host, and on the gateway: none of those the
    local Hadoop had there ``before`` it started (its watchdog)."""
    left = len(_gateway_processes() - before)
    for host in cluster.network.hosts:
        out = subprocess.run(["ip", "netns", "pids", host.netns], capture_output=True,
                             text=True, check=False).stdout
        left += len({int(p) for p in out.split()} - nodemanagers)
    return left


def soak(cluster: Any, minutes: float, every: float, rng: random.Random) -> None:
    from zoo_ray import RayContext, init_spark_on_yarn

    before = _gateway_processes()
    sc = init_spark_on_yarn(hadoop_conf=str(cluster.hadoop_conf_dir),
                            num_executors=_EXECUTORS, executor_cores=1, executor_memory="512m",
                            driver_memory="512m", extra_executor_memory_for_ray="1g")
    ctx = RayContext(sc, object_store_memory="128m")
    ctx.init()
    end = time.monotonic() + minutes * 60
    faults = Faults(ctx, cluster, every, end, rng)
    faults.start()
    workload = Workload(ctx)
    workload.run_until(end)
    faults.join()
    ctx.stop()
    sc.stop()
    nodemanagers = {d.pid for d in cluster._daemons() if d.name.startswith("nodemanager")}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and _leftovers(cluster, nodemanagers, before):
        time.sleep(1)
    print("\nsoak figures")
    print(f"  faults: {len(faults.hits)}; tasks: {dict(workload.counts)}; counter increments "
          f"acknowledged: {workload.acknowledged}")
    for kind, hit in faults.hits:
        took = time_to_whole(workload.seen, hit)
        print(f"  {kind:17} whole after {'-' if took is None else f'{took:.1f} s'}")
    print(f"  processes of the application left on any host or the gateway: "
          f"{_leftovers(cluster, nodemanagers, before)}")


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
