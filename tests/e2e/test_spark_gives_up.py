"""Healing stops where Spark's own limits do: once Spark gives up on the application
(``spark.executor.maxNumFailures``), ``node_status()`` and the driver's next Ray call say
so, and the driver lives on."""
from __future__ import annotations

import time

import psutil
import pytest
import ray
from tests.e2e.helpers import wait_until

from zoo_ray import RayContext
from zoo_ray.errors import ClusterLostError

pytestmark = pytest.mark.faults

#: One executor failure ends the application (YARN would otherwise start a second
#: ApplicationMaster, with new executors, and the application would go on): the module
#: needs an application of its own (``module_sc``), which it ends.
SPARK_ARGS = dict(num_executors=2, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g",
                  conf={"spark.executor.maxNumFailures": "1", "spark.yarn.maxAppAttempts": "1"})


def test_when_spark_gives_up_the_driver_is_told_why_and_lives_on(module_sc, cluster):
    sc = module_sc
    ctx = RayContext(sc, object_store_memory="128m")
    ctx.init()
    try:
        assert ray.get(ray.remote(lambda: "up").remote()) == "up"
        gateway = psutil.Process(ctx.address_info["gateway_node"]["pid"])
        worker = ctx.nodes[1]
        cluster.resource_manager.signal_container(worker["container"], "FORCEFUL_SHUTDOWN")
        killed = time.monotonic()
        try:
            wait_until(lambda: any(e.kind == "cluster lost" for e in ctx.events()), 180,
                  "the loss of the cluster")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; events: {ctx.events()}") from None
        lost = [e for e in ctx.events() if e.kind == "cluster lost"][0]
        print(f"Spark gave up {time.monotonic() - killed:.1f}s after the kill: {lost.message}")
        assert "Max number of executor failures (1) reached" in lost.message
        assert "init_spark_on_yarn" in lost.message
        with pytest.raises(ClusterLostError, match="Max number of executor failures"):
            ctx.node_status()
        # The next Ray call (Ray's auto-connect) says why, at once, not after Ray's retries.
        asked = time.monotonic()
        with pytest.raises(ClusterLostError, match="Max number of executor failures"):
            ray.get(ray.remote(lambda: 1).remote())
        assert time.monotonic() - asked < 5
        # The gateway's node went with the cluster.
        assert not gateway.is_running() or gateway.status() == psutil.STATUS_ZOMBIE
        # Ray aborts a driver that cannot reach its GCS for long enough (60 s by default,
        # DRIVER_GCS_WAIT_S under zoo_ray): this one is disconnected from the lost GCS.
        assert not ray.is_initialized()
        with pytest.raises(ClusterLostError):
            ray.put(1)
    finally:
        ctx.stop()
    assert not ctx.initialized
