"""RayContext's pure logic (no cluster): start failures as one typed error, its state flags."""
from __future__ import annotations

import contextlib
import time

import pytest

from zoo_ray import context
from zoo_ray.context import RayContext, _raise_failures, _started_nodes
from zoo_ray.errors import (
    ClusterLostError,
    InvalidArgumentError,
    RayContextError,
    RayNodeStartError,
)
from zoo_ray.protocol import NodeFailure, NodeInfo, NodeOutcome


def _node(container, role="worker"):
    return NodeInfo(role=role, address="198.18.0.1:6379", pid=1, node_ip="198.18.0.1",
                    log_dir="/logs", temp_dir="/tmp/zoo-ray-x", container=container)


def test_node_failures_become_one_error_with_each_executor_and_its_log_tail():
    failures = [NodeFailure("start", "ray start exited with 2",
                            log_tail="Error: No such option: --no-such-flag",
                            container="container_3"),
                NodeFailure("timeout", "no answer in 5s",
                            container="this host (the driver's node)")]
    with pytest.raises(RayNodeStartError) as failure:
        _raise_failures(failures)
    text = str(failure.value)
    assert text.startswith("2 Ray node(s) failed to start; everything started was stopped.")
    assert "container_3: ray start exited with 2\nError: No such option: --no-such-flag" in text
    assert "this host (the driver's node): no answer in 5s" in text


def test_only_the_failed_outcomes_are_named():
    outcomes = [NodeOutcome("ok", "container_1", node=_node("container_1", "head")),
                NodeOutcome("skipped", "container_2"),
                NodeOutcome("error", "container_3", failure=NodeFailure(
                    "died", "the RayManager exited with 1 before it answered",
                    log_tail="ModuleNotFoundError: No module named 'psutil'",
                    container="container_3"))]
    with pytest.raises(RayNodeStartError) as failure:
        _started_nodes(outcomes, wanted=2)
    text = str(failure.value)
    assert "container_3: the RayManager exited with 1" in text and "psutil" in text
    assert "container_1" not in text and "container_2" not in text


def test_an_object_store_larger_than_shm_names_the_fix():
    shm = NodeFailure("shm", "object_store_memory=9 bytes exceeds the 8 bytes free in /dev/shm",
                      container="container_1")
    with pytest.raises(RayContextError, match="Lower object_store_memory below the free /dev/shm"):
        _raise_failures([shm])


def test_no_failure_raises_nothing_and_the_head_comes_first():
    outcomes = [NodeOutcome("ok", "container_2", node=_node("container_2")),
                NodeOutcome("idle", "container_9"),
                NodeOutcome("ok", "container_1", node=_node("container_1", "head"))]
    assert _raise_failures([]) is None
    nodes = _started_nodes(outcomes, wanted=2)
    assert [n.container for n in nodes] == ["container_1", "container_2"]


def test_too_few_nodes_or_no_head_is_an_error():
    with pytest.raises(RayNodeStartError, match="Only 1 of 2 executors"):
        _started_nodes([NodeOutcome("ok", "c1", node=_node("c1", "head"))], wanted=2)
    with pytest.raises(RayNodeStartError, match="Only 1 of 1"):
        _started_nodes([NodeOutcome("ok", "c1", node=_node("c1"))], wanted=1)


class _Conf(dict):
    def get(self, key, default=None):
        return super().get(key, default)


class _StubJavaContext:
    """The JVM side of a running SparkContext, as far as RayContext asks it."""

    def sc(self):
        return self

    def isStopped(self):
        return False


class _StubSparkContext:
    """Just what RayContext reads before it submits any job."""

    applicationId = "application_0_0001"

    def __init__(self, **conf):
        self._jsc = _StubJavaContext()
        self.conf = _Conf({"spark.executor.instances": "2", "spark.executor.cores": "1", **conf})

    def getConf(self):
        return self.conf

    def stop(self):
        self._jsc = None


def _no_cluster_side_effects(ctx, monkeypatch):
    """A stub SparkContext has no status store to watch, and no record belongs in the cache."""
    monkeypatch.setattr(ctx, "_record", lambda: None)
    monkeypatch.setattr(ctx, "_watch_losses", lambda: None)


@pytest.fixture
def no_active_context():
    yield
    RayContext._active = None


def test_bad_arguments_are_invalid_argument_errors(no_active_context):
    sc = _StubSparkContext(**{"spark.zoo_ray.rayMemory": str(2**30)})
    for wrong in (0, "2", True):
        with pytest.raises(InvalidArgumentError, match="num_ray_nodes"):
            RayContext(sc, num_ray_nodes=wrong)
    with pytest.raises(InvalidArgumentError, match="num_executors=3"):
        RayContext(sc, num_ray_nodes=3)
    with pytest.raises(InvalidArgumentError, match="extra_executor_memory_for_ray"):
        RayContext(sc, object_store_memory="1g")
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError too
        RayContext(sc, object_store_memory="1g")


def test_initialized_is_false_while_starting_and_stop_is_idempotent(no_active_context,
                                                                     monkeypatch):
    ctx = RayContext(_StubSparkContext())
    assert RayContext.get(initialize=False) is ctx
    seen = []

    def start(wanted, slots, progress):
        seen.append(ctx.initialized)
        ctx.address_info = {"address": "198.18.0.1:1", "nodes": []}

    monkeypatch.setattr(ctx, "_start_cluster", start)
    _no_cluster_side_effects(ctx, monkeypatch)
    monkeypatch.setattr(ctx, "_stop_executor_nodes", lambda: seen.append("stop job"))
    ctx.stop()  # before init: nothing to stop, no error
    ctx.init()
    assert seen == [False] and ctx.initialized
    ctx.stop()
    ctx.stop()
    assert seen == [False, "stop job"] and not ctx.initialized
    with pytest.raises(RayContextError, match="No RayContext exists"):
        RayContext.get()


def test_spark_stop_is_wrapped_once_however_often_init_runs(no_active_context, monkeypatch):
    sc = _StubSparkContext()
    original = sc.stop
    ctx = RayContext(sc)
    monkeypatch.setattr(ctx, "_start_cluster", lambda wanted, slots, progress: setattr(
        ctx, "address_info", {"address": "198.18.0.1:1", "nodes": []}))
    stops = []
    _no_cluster_side_effects(ctx, monkeypatch)
    monkeypatch.setattr(ctx, "_stop_executor_nodes", lambda: stops.append("ray"))
    for _ in range(3):
        ctx.init()
        ctx.stop()
    ctx.init()
    assert sc.stop._zoo_ray_original == original
    sc.stop()
    assert stops == ["ray"] * 4 and not ctx.initialized and sc._jsc is None
    assert sc.stop == original


def test_executor_nodes_offer_what_is_left_of_ray_s_share_and_the_gateway_a_small_store(
        no_active_context):
    sc = _StubSparkContext(**{"spark.zoo_ray.rayMemory": str(2 * 2**30)})
    spec = RayContext(sc, object_store_memory="512m")._base_spec()
    assert spec.memory == (2048 - 512 - 512) * 2**20 and spec.object_store_memory == 2**29
    assert RayContext(sc)._base_spec().memory is None  # Ray sizes an unspecified store itself
    assert RayContext(sc).driver_object_store_memory == 256 * 2**20
    with pytest.raises(InvalidArgumentError, match="75m"):
        RayContext(sc, driver_object_store_memory="10m")
    with pytest.raises(InvalidArgumentError, match="driver_object_store_memory"):
        RayContext(sc, driver_object_store_memory="lots")


class _KeeperStub:
    """What a rebuild asks of the keeper that handed it the head's loss."""

    closing = False

    @contextlib.contextmanager
    def jobs(self, description):
        yield

    def close(self):
        self.closing = True


def _running_context(monkeypatch):
    """A RayContext that init()ed on a stub SparkContext, its head at 198.18.0.1:1."""
    from ray._private import services

    ctx = RayContext(_StubSparkContext())
    monkeypatch.setattr(ctx, "_start_cluster", lambda wanted, slots, progress: setattr(
        ctx, "address_info", {"address": "198.18.0.1:1", "nodes": []}))
    _no_cluster_side_effects(ctx, monkeypatch)
    monkeypatch.setattr(ctx, "_keep_nodes", lambda: None)
    monkeypatch.setattr(ctx, "_stop_nodes", lambda forget_address: None)
    monkeypatch.setattr(context.spark_internals, "is_stopped", lambda sc: False)
    monkeypatch.setenv("RAY_ADDRESS", "198.18.0.1:1")
    ctx.init()
    ctx._keeper = _KeeperStub()
    # Looked up at each call: zoo_ray patches Ray's function at the first refusal.
    return ctx, lambda address: services.canonicalize_bootstrap_address(address)


def test_a_rebuild_refuses_the_lost_head_meanwhile_and_joins_the_new_one(no_active_context,
                                                                         monkeypatch):
    ctx, resolve = _running_context(monkeypatch)

    def start_again(keeper):
        with pytest.raises(ClusterLostError, match="starting a new Ray cluster; retry"):
            resolve("198.18.0.1:1")
        ctx.address_info = {"address": "198.18.0.2:2", "nodes": [
            {"executor_id": "3", "container": "container_3"}]}
        monkeypatch.setenv("RAY_ADDRESS", "198.18.0.2:2")
        return 1

    monkeypatch.setattr(ctx, "_start_again", start_again)
    ctx._rebuild()
    event = ctx.events()[-1]
    assert (event.kind, event.container) == ("rebuilt", "container_3")
    assert "a node starts in each executor Spark adds, up to 2" in event.message
    assert resolve("198.18.0.1:1") == "198.18.0.1:1"  # refused no more
    ctx.stop()


def test_a_rebuild_that_fails_loses_the_cluster_until_stop(no_active_context, monkeypatch):
    ctx, resolve = _running_context(monkeypatch)

    def start_again(keeper):
        raise RayNodeStartError("no executor registered within 180s")

    monkeypatch.setattr(ctx, "_start_again", start_again)
    ctx._rebuild()
    assert [e.kind for e in ctx.events()] == ["cluster lost"]
    with pytest.raises(ClusterLostError, match=r"no executor registered.*stop\(\) and init"):
        ctx.node_status()
    with pytest.raises(ClusterLostError, match="no new Ray cluster could start"):
        resolve("198.18.0.1:1")
    ctx.stop()
    assert resolve("198.18.0.1:1") == "198.18.0.1:1" and not ctx.initialized


def test_stop_during_a_rebuild_ends_the_wait_for_nodes_to_register(no_active_context,
                                                                   monkeypatch):
    # The new head's GCS does not answer: stop() (closing the keeper) a second into the
    # wait ends it within a slice, not after init_timeout.
    import threading

    import ray

    from zoo_ray import driver_guard

    ctx, _ = _running_context(monkeypatch)
    ctx.init_timeout = 120
    connected = type("Connected", (), {"address_info": {}})()
    monkeypatch.setattr(ray, "init", lambda **kwargs: connected)
    asked = []

    def gcs_that_does_not_answer(timeout=None):
        asked.append(timeout)
        time.sleep(timeout)
        raise ray.exceptions.RpcError("Timed out while waiting for GCS", rpc_code=4)

    monkeypatch.setattr(driver_guard, "node_table", gcs_that_does_not_answer)
    keeper = ctx._keeper
    threading.Timer(1.0, setattr, (keeper, "closing", True)).start()
    started = time.monotonic()
    with pytest.raises(RayNodeStartError, match=r"stop\(\) was called"):
        ctx._connect_and_verify(2)
    assert time.monotonic() - started < 10
    assert asked and max(asked) <= 1.0
    ctx.stop()
