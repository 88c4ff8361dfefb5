"""Elastic Ray on YARN (#27): the cluster grows with Ray's demand, gives idle executors back
to the queue, and says what waits and why. On the secure local Hadoop (Kerberos, delegation
tokens that live a minute): each host holds one of the module's executors and not two, so a
third executor is demand YARN cannot meet."""
from __future__ import annotations

import time

import numpy as np
import pytest
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tests.e2e.helpers import SECURE_SPEC, wait_until

from zoo_ray import RayContext, scaler
from zoo_ray.minicluster import MiniCluster
from zoo_ray.spark_internals import live_executors

#: Shared with test_secure_cluster and test_yarn_takes_executors. An executor's container
#: (1920 MB) fits a host beside the ApplicationMaster (896 MB), and two do not.
SPEC = SECURE_SPEC
SPARK_ARGS = dict(num_executors=2, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g")
OBJECT_STORE = "128m"


@pytest.fixture(scope="module")
def cluster(own_cluster: MiniCluster) -> MiniCluster:
    """Replaces the session's cluster for every test in this module."""
    return own_cluster


@ray.remote(num_cpus=1)
def _busy(seconds: float) -> tuple[str, np.ndarray]:
    """A whole node's CPU for ``seconds``; 1.6 MB back, kept in that node's store."""
    time.sleep(seconds)
    return ray.get_runtime_context().get_node_id(), np.arange(200_000, dtype=np.float64)


@ray.remote(num_cpus=1)
class _Holder:
    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def _allocated(cluster: MiniCluster, app_id: str) -> tuple[int, int]:
    report = cluster.resource_manager.app(app_id)
    return int(report["allocatedMB"]), int(report["allocatedVCores"])


def _elastic(sc, **bounds) -> RayContext:
    """An elastic RayContext, started with one node (the other executor given back)."""
    ctx = RayContext(sc, object_store_memory=OBJECT_STORE, idle_timeout="5s", **bounds)
    ctx.init()
    wait_until(lambda: len(live_executors(sc)) == 1, 120, "one executor left")
    return ctx


def test_a_burst_grows_the_cluster_and_idle_executors_go_back_unless_they_hold_an_object(
        module_sc, cluster):
    sc = module_sc
    ctx = _elastic(sc, min_ray_nodes=1, max_ray_nodes=2)
    try:
        assert [s["pending"] for s in ctx.node_status()] == [""]
        head = ctx.node_status()[0]["node_id"]
        small = _allocated(cluster, sc.applicationId)

        started = time.monotonic()
        refs = [_busy.remote(45) for _ in range(2)]  # two nodes' CPUs
        grown_in = wait_until(lambda: sum(s["alive"] for s in ctx.node_status()) == 2, 120,
                              "two executor nodes")
        big = _allocated(cluster, sc.applicationId)
        results = ray.get(refs, timeout=300)
        print(f"grew from 1 to 2 nodes {grown_in:.1f} s after the burst; allocated "
              f"{small} -> {big} (MB, vcores); burst done in {time.monotonic() - started:.1f} s")
        assert big[0] > small[0] and big[1] > small[1]
        assert {node for node, _ in results} == {s["node_id"] for s in ctx.node_status()}
        assert [e.kind for e in ctx.events()].count("joined") == 1

        # The result on the new node, held by the driver, keeps it past the idle timeout.
        keep = refs[next(i for i, (node, _) in enumerate(results) if node != head)]
        del refs, results
        time.sleep(12)  # the idle timeout, a look and a margin
        assert len(live_executors(sc)) == 2
        _, values = ray.get(keep, timeout=60)
        assert np.array_equal(values, np.arange(200_000, dtype=np.float64))
        del keep, values
        wait_until(lambda: len(live_executors(sc)) == 1, 120,
                   "the idle node's executor given back once nothing is held")
        assert [s["node_id"] for s in ctx.node_status()] == [head]
        wait_until(lambda: _allocated(cluster, sc.applicationId) == small, 60,
                   "the ResourceManager's allocation back to one executor's")
        wait_until(lambda: [e.kind for e in ctx.events()].count("released") == 1, 30,
                   "the node keeper's record of the executor given back")
        assert ctx.lost_executors() == [], "a given-back executor is no loss"
    finally:
        ctx.stop()


def test_a_placement_group_scales_up_the_maximum_caps_and_an_actor_keeps_its_node(
        module_sc):
    sc = module_sc
    ctx = _elastic(sc, max_ray_nodes=2)
    try:
        head = ctx.node_status()[0]["node_id"]
        # Two bundles that must not share a node: a second node comes up for them.
        group = placement_group([{"CPU": 1}] * 2, strategy="STRICT_SPREAD")
        ray.get(group.ready(), timeout=180)
        assert len(live_executors(sc)) == 2
        # The group takes both nodes' CPUs: two more nodes' worth of tasks wait, and
        # max_ray_nodes=2 holds them; the card says so.
        waiting = [_busy.remote(1) for _ in range(2)]
        wait_until(lambda: "max_ray_nodes=2 reached: 2 pending requests wait" in repr(ctx), 60,
                   "the cap on the card")
        assert len(live_executors(sc)) == 2
        remove_placement_group(group)
        assert len(ray.get(waiting, timeout=120)) == 2
        del waiting  # held, their results would keep their nodes (a primary copy each)

        # An actor keeps its node past the idle timeout; once it ends, the node goes back.
        other = next(s["node_id"] for s in ctx.node_status() if s["node_id"] != head)
        holder = _Holder.options(scheduling_strategy=NodeAffinitySchedulingStrategy(
            other, soft=False)).remote()
        assert ray.get(holder.node.remote(), timeout=60) == other
        time.sleep(12)
        assert len(live_executors(sc)) == 2
        ray.kill(holder)
        wait_until(lambda: len(live_executors(sc)) == 1, 120,
                   "the actor's node given back once it ended")
        assert ctx.lost_executors() == []
    finally:
        ctx.stop()


def test_demand_yarn_cannot_meet_is_shown_with_the_queue(module_sc, monkeypatch):
    # Executors asked for 5 s and not granted are reported (60 s on a real cluster).
    monkeypatch.setattr(scaler, "_GRANT_WAIT_S", 5.0)
    sc = module_sc
    ctx = _elastic(sc, max_ray_nodes=3)
    try:
        # Three nodes' CPUs for a minute; the two hosts hold two executors.
        refs = [_busy.remote(60) for _ in range(3)]

        def waiting() -> list[str]:
            return [s["pending"] for s in ctx.node_status() if s["pending"]]

        wait_until(lambda: sum(s["alive"] for s in ctx.node_status()) == 2
                   and len(waiting()) == 1 and "waiting for YARN" in waiting()[0], 120,
                   "two nodes, and the executor YARN does not grant reported")
        print(f"node_status: {ctx.node_status()}\ncard: {ctx!r}")
        assert "queue default" in waiting()[0]
        assert "1 more asked of YARN; waiting for YARN" in repr(ctx)
        for ref in refs:
            ray.cancel(ref, force=True)
    finally:
        ctx.stop()
