"""RayContext and its collaborators without a cluster: start failures as one typed error,
the facade's states, a rebuild's refusals and the registration wait. The facade's
collaborators (ClusterNodes, Recovery's keeper and loss watch) are swapped for fakes
that keep to their interfaces; no private method is patched."""
from __future__ import annotations

import contextlib
import functools
import os
import threading
import time

import pytest
from tests.spark_stub import StubSparkContext

from zoo_ray import context, nodes
from zoo_ray.context import RayContext
from zoo_ray.errors import (
    ClusterLostError,
    InvalidArgumentError,
    RayContextError,
    RayNodeStartError,
)
from zoo_ray.nodes import GATEWAY, RunningCluster, raise_failures, started_nodes
from zoo_ray.protocol import HeadPlacement, NodeFailure, NodeInfo, NodeOutcome
from zoo_ray.recovery import Recovery


def _node(container, role="worker", executor_id=""):
    return NodeInfo(role=role, address="198.18.0.1:6379", pid=1, node_ip="198.18.0.1",
                    log_dir="/logs", temp_dir=f"/tmp/zoo-ray-{container}", container=container,
                    executor_id=executor_id)


def test_node_failures_become_one_error_with_each_executor_and_its_log_tail():
    failures = [NodeFailure("start", "ray start exited with 2",
                            log_tail="Error: No such option: --no-such-flag",
                            container="container_3"),
                NodeFailure("timeout", "no answer in 5s", container=GATEWAY)]
    with pytest.raises(RayNodeStartError) as failure:
        raise_failures(failures)
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
        started_nodes(outcomes, wanted=2)
    text = str(failure.value)
    assert "container_3: the RayManager exited with 1" in text and "psutil" in text
    assert "container_1" not in text and "container_2" not in text


def test_an_object_store_larger_than_shm_names_the_fix():
    shm = NodeFailure("shm", "object_store_memory=9 bytes exceeds the 8 bytes free in /dev/shm",
                      container="container_1")
    with pytest.raises(RayContextError, match="Lower object_store_memory below the free /dev/shm"):
        raise_failures([shm])
    on_gateway = NodeFailure("shm", "too big", container=GATEWAY)
    with pytest.raises(RayContextError, match="Lower driver_object_store_memory"):
        raise_failures([on_gateway])


def test_no_failure_raises_nothing_and_the_head_comes_first():
    outcomes = [NodeOutcome("ok", "container_2", node=_node("container_2")),
                NodeOutcome("idle", "container_9"),
                NodeOutcome("ok", "container_1", node=_node("container_1", "head"))]
    assert raise_failures([]) is None
    assert [n.container for n in started_nodes(outcomes, wanted=2)] == ["container_1",
                                                                        "container_2"]


def test_too_few_nodes_or_no_head_is_an_error():
    with pytest.raises(RayNodeStartError, match="Only 1 of 2 executors"):
        started_nodes([NodeOutcome("ok", "c1", node=_node("c1", "head"))], wanted=2)
    with pytest.raises(RayNodeStartError, match="Only 1 of 1"):
        started_nodes([NodeOutcome("ok", "c1", node=_node("c1"))], wanted=1)


def _cluster(address, *containers):
    """A RunningCluster at ``address`` with a node in each container, the first the head."""
    executor_nodes = tuple(_node(c, "head" if i == 0 else "worker", executor_id=str(i + 1))
                           for i, c in enumerate(containers))
    return RunningCluster(HeadPlacement(containers[0], address, False), executor_nodes,
                          _node("gateway", "worker"), {"gcs_address": address},
                          ("n1", "n2"))


def test_address_info_is_ray_s_plus_the_nodes_and_follows_what_joined():
    cluster = _cluster("198.18.0.1:1", "container_1", "container_2")
    info = cluster.address_info()
    assert info["address"] == "198.18.0.1:1" and info["gcs_address"] == "198.18.0.1:1"
    assert [n["container"] for n in info["nodes"]] == ["container_1", "container_2"]
    assert info["gateway_node"]["container"] == "gateway" and info["node_ids"] == ["n1", "n2"]
    assert NodeInfo(**info["nodes"][0]) == cluster.nodes[0]  # the record round-trips
    grown = cluster.joined(_node("container_3", executor_id="3"))
    assert grown.containers() == {"1": "container_1", "2": "container_2", "3": "container_3"}
    assert len(cluster.nodes) == 2  # a record, not a mutable list


class _FakeNodes:
    """ClusterNodes without Spark: a start brings up the next cluster of ``clusters``."""

    def __init__(self, sc, options, app_id, token, clusters, seen):
        self.app_id, self.token, self.options = app_id, token, options
        self.current = None
        self._clusters, self.seen = clusters, seen

    def plan(self, head, wanted):
        return ("plan", head.address, wanted)

    def start(self, wanted, slots, driver_cores, progress, closing=lambda: False):
        self.seen.append(("start", wanted, slots, progress))
        self.closing = closing
        step = self._clusters.pop(0)
        if isinstance(step, BaseException):
            raise step
        if callable(step):
            step = step()
        self.current = step
        return step

    def join(self, node):
        self.current = self.current.joined(node)
        return self.current

    def stop(self, forget_address):
        self.seen.append(("stop", forget_address))


class _FakeKeeper:
    """A NodeKeeper that runs no thread: the test plays its thread's callbacks."""

    made: list[_FakeKeeper] = []

    def __init__(self, sc, plan, wanted, nodes, on_join, on_head_lost, on_spark_stopped,
                 events):
        self.plan, self.on_join, self.on_head_lost = plan, on_join, on_head_lost
        self.closing = False
        _FakeKeeper.made.append(self)

    @contextlib.contextmanager
    def jobs(self, description):
        yield

    def close(self):
        self.closing = True


class _FakeWatch:
    """A LossWatch that polls nothing."""

    made: list[_FakeWatch] = []

    def __init__(self, sc, containers, sizes):
        self.containers, self.sizes, self.losses = containers, sizes, []
        _FakeWatch.made.append(self)

    def close(self):
        pass


@pytest.fixture
def swapped(monkeypatch):
    """RayContext with fake nodes and a recovery whose keeper and watch are fakes; the
    clusters the nodes start, and what they were asked, are the fixture's."""
    clusters: list = []
    seen: list = []
    made: list[_FakeNodes] = []

    def make_nodes(*args):
        made.append(_FakeNodes(*args, clusters, seen))
        return made[-1]

    _FakeKeeper.made = []
    _FakeWatch.made = []
    monkeypatch.setattr(context, "ClusterNodes", make_nodes)
    monkeypatch.setattr(context, "Recovery", functools.partial(Recovery, keeper=_FakeKeeper,
                                                               watch=_FakeWatch))
    monkeypatch.setattr(context, "write_driver_token", lambda token: None)
    monkeypatch.setattr(context, "clear_driver_token", lambda: None)
    yield clusters, seen, made
    RayContext._active = None


def test_bad_arguments_are_invalid_argument_errors(swapped):
    sc = StubSparkContext(**{"spark.zoo_ray.rayMemory": str(2**30)})
    for wrong in (0, "2", True):
        with pytest.raises(InvalidArgumentError, match="num_ray_nodes"):
            RayContext(sc, num_ray_nodes=wrong)
    with pytest.raises(InvalidArgumentError, match="num_executors=3"):
        RayContext(sc, num_ray_nodes=3)
    with pytest.raises(InvalidArgumentError, match="extra_executor_memory_for_ray"):
        RayContext(sc, object_store_memory="1g")
    with pytest.raises(ValueError):  # InvalidArgumentError is a ValueError too
        RayContext(sc, object_store_memory="1g")
    with pytest.raises(InvalidArgumentError, match="ray_node_cpu_cores"):
        RayContext(sc, extra_params={"num_cpus": 2})
    # Executors with GPUs: their nodes offer their containers' own, no other number.
    RayContext(sc, extra_params={"num_gpus": 1}).stop()
    with_gpus = StubSparkContext(**{"spark.executor.resource.gpu.amount": "1"})
    with pytest.raises(InvalidArgumentError, match="Drop num-gpus"):
        RayContext(with_gpus, extra_params={"--num-gpus": 1})


def test_an_elastic_range_is_checked_with_the_fix(swapped):
    sc = StubSparkContext()
    with pytest.raises(InvalidArgumentError, match="min_ray_nodes <= max_ray_nodes"):
        RayContext(sc, min_ray_nodes=3, max_ray_nodes=2)
    with pytest.raises(InvalidArgumentError, match="pass max_ray_nodes too"):
        RayContext(sc, min_ray_nodes=2)
    for wrong in (0, True, 1.5):
        with pytest.raises(InvalidArgumentError, match="whole number >= 1"):
            RayContext(sc, max_ray_nodes=wrong)
    with pytest.raises(InvalidArgumentError, match="not both"):
        RayContext(sc, num_ray_nodes=1, max_ray_nodes=2)
    for wrong in ("soon", 0, -5, "10 minutes"):
        with pytest.raises(InvalidArgumentError, match="is not a duration"):
            RayContext(sc, max_ray_nodes=2, idle_timeout=wrong)
    with pytest.raises(InvalidArgumentError, match="without dynamic allocation"):
        RayContext(StubSparkContext(**{"spark.dynamicAllocation.enabled": "true"}),
                   max_ray_nodes=2)
    with pytest.raises(InvalidArgumentError, match="a local master has none"):
        RayContext(StubSparkContext(**{"spark.master": "local[2]"}), max_ray_nodes=2)
    # init() starts min_ray_nodes nodes, in the executors there are (2 here).
    ranged = RayContext(sc, max_ray_nodes=4, idle_timeout="2m")
    assert ranged.options.scale is not None
    assert (ranged.options.scale.min_nodes, ranged.options.scale.max_nodes,
            ranged.options.scale.idle_timeout_s) == (1, 4, 120.0)
    assert ranged.options.num_ray_nodes == 1
    assert RayContext(sc, min_ray_nodes=3, max_ray_nodes=4).options.num_ray_nodes == 2
    assert RayContext(sc).options.scale is None


def test_initialized_is_false_while_starting_and_stop_is_idempotent(swapped):
    clusters, seen, _ = swapped
    ctx = RayContext(StubSparkContext())
    assert RayContext.get(initialize=False) is ctx
    clusters.append(lambda: seen.append(ctx.initialized) or _cluster("198.18.0.1:1", "c1"))
    ctx.stop()  # before init: nothing to stop, no error
    assert ctx.address_info == {} and ctx.events() == [] and ctx.lost_executors() == []
    info = ctx.init()
    assert info["address"] == ctx.address == "198.18.0.1:1" and ctx.initialized
    assert seen == [("start", 2, 2, True), False]
    ctx.stop()
    ctx.stop()
    assert seen[-1] == ("stop", True) and seen.count(("stop", True)) == 1
    assert not ctx.initialized and ctx.address_info == {} and ctx.address is None
    with pytest.raises(RayContextError, match="No RayContext exists"):
        RayContext.get()


def test_a_failed_start_stops_what_started_and_says_why(swapped):
    clusters, seen, _ = swapped
    ctx = RayContext(StubSparkContext())
    clusters.append(RayNodeStartError("1 Ray node(s) failed to start"))
    with pytest.raises(RayNodeStartError, match="failed to start"):
        ctx.init()
    assert seen[-1] == ("stop", True) and not ctx.initialized


def test_spark_stop_is_wrapped_once_however_often_init_runs(swapped):
    clusters, seen, _ = swapped
    sc = StubSparkContext()
    original = sc.stop
    ctx = RayContext(sc)
    clusters.extend(_cluster("198.18.0.1:1", "c1") for _ in range(4))
    for _ in range(3):
        ctx.init()
        ctx.stop()
    ctx.init()
    assert sc.stop._zoo_ray_original == original
    sc.stop()
    assert seen.count(("stop", True)) == 4 and not ctx.initialized and sc._jsc is None
    assert sc.stop == original


def test_executor_nodes_offer_what_is_left_of_ray_s_share_and_the_gateway_a_small_store(
        swapped):
    sc = StubSparkContext(**{"spark.zoo_ray.rayMemory": str(2 * 2**30)})
    spec = RayContext(sc, object_store_memory="512m").options.base_spec("app", "token")
    assert spec.memory == (2048 - 512 - 512) * 2**20 and spec.object_store_memory == 2**29
    assert spec.app_id == "app" and spec.token == "token"
    assert RayContext(sc).options.base_spec("a", "t").memory is None  # Ray sizes it itself
    assert RayContext(sc).options.driver_object_store_memory == 256 * 2**20
    with pytest.raises(InvalidArgumentError, match="75m"):
        RayContext(sc, driver_object_store_memory="10m")
    with pytest.raises(InvalidArgumentError, match="driver_object_store_memory"):
        RayContext(sc, driver_object_store_memory="lots")


def _running(swapped, monkeypatch):
    """A RayContext that init()ed on a stub SparkContext, its head at 198.18.0.1:1, and a
    resolver of addresses as a ray.init() would resolve them."""
    from ray._private import services

    clusters, seen, _ = swapped
    ctx = RayContext(StubSparkContext())
    clusters.append(_cluster("198.18.0.1:1", "c1", "c2"))
    monkeypatch.setenv("RAY_ADDRESS", "198.18.0.1:1")
    ctx.init()
    # Looked up at each call: zoo_ray patches Ray's function at the first refusal.
    return ctx, _FakeKeeper.made[-1], lambda address: services.canonicalize_bootstrap_address(
        address)


def test_a_joined_node_is_in_the_address_info_and_the_loss_watch(swapped, monkeypatch):
    ctx, keeper, _ = _running(swapped, monkeypatch)
    watch = _FakeWatch.made[-1]
    assert watch.containers == {"1": "c1", "2": "c2"}
    assert watch.sizes["object_store_memory"] == "Ray's default"
    keeper.on_join(_node("container_7", executor_id="7"))
    assert [n["container"] for n in ctx.nodes] == ["c1", "c2", "container_7"]
    assert watch.containers["7"] == "container_7"
    ctx.stop()


def test_a_rebuild_refuses_the_lost_head_meanwhile_and_joins_the_new_one(swapped, monkeypatch):
    ctx, keeper, resolve = _running(swapped, monkeypatch)
    clusters, seen, _ = swapped

    def new_cluster():
        with pytest.raises(ClusterLostError, match="starting a new Ray cluster; retry"):
            resolve("198.18.0.1:1")
        monkeypatch.setenv("RAY_ADDRESS", "198.18.0.2:2")
        return _cluster("198.18.0.2:2", "container_3")

    clusters.append(new_cluster)
    keeper.on_head_lost()
    assert seen[-2:] == [("stop", False), ("start", 2, 2, False)]
    made = swapped[2][-1]
    assert made.closing() is False
    keeper.closing = True  # the registration wait of a rebuild ends when stop() closes
    assert made.closing() is True
    keeper.closing = False
    event = ctx.events()[-1]
    assert (event.kind, event.container) == ("rebuilt", "container_3")
    assert "a node starts in each executor Spark adds, up to 2" in event.message
    assert resolve("198.18.0.1:1") == "198.18.0.1:1"  # refused no more
    assert ctx.address == "198.18.0.2:2"
    assert _FakeKeeper.made[-1] is not keeper  # the new cluster has a keeper of its own
    assert _FakeKeeper.made[-1].plan == ("plan", "198.18.0.2:2", 2)
    ctx.stop()


def test_a_rebuild_that_fails_loses_the_cluster_until_stop(swapped, monkeypatch):
    ctx, keeper, resolve = _running(swapped, monkeypatch)
    clusters, _, _ = swapped
    clusters.append(RayNodeStartError("no executor registered within 180s"))
    keeper.on_head_lost()
    assert [e.kind for e in ctx.events()] == ["cluster lost"]
    with pytest.raises(ClusterLostError, match=r"no executor registered.*stop\(\) and init"):
        ctx.node_status()
    with pytest.raises(ClusterLostError, match="no new Ray cluster could start"):
        resolve("198.18.0.1:1")
    ctx.stop()
    assert resolve("198.18.0.1:1") == "198.18.0.1:1" and not ctx.initialized


def test_stop_during_the_registration_wait_ends_it_within_a_slice(monkeypatch):
    # The new head's GCS does not answer: closing (stop() during a rebuild) a second into
    # the wait ends it within a slice, not after the timeout.
    import ray

    connected = type("Connected", (), {"address_info": {}})()
    monkeypatch.setattr(ray, "init", lambda **kwargs: connected)
    monkeypatch.setenv("RAY_ADDRESS", "198.18.0.1:1")
    asked = []

    def gcs_that_does_not_answer(timeout=None):
        asked.append(timeout)
        time.sleep(timeout)
        raise ray.exceptions.RpcError("Timed out while waiting for GCS", rpc_code=4)

    monkeypatch.setattr(nodes, "node_table", gcs_that_does_not_answer)
    closed = threading.Event()
    threading.Timer(1.0, closed.set).start()
    started = time.monotonic()
    with pytest.raises(RayNodeStartError, match=r"stop\(\) was called"):
        nodes.wait_registered("198.18.0.2:2", 2, timeout=120, verbose=False,
                              closing=closed.is_set)
    assert time.monotonic() - started < 10
    assert asked and max(asked) <= 1.0


def test_the_registration_wait_counts_live_nodes_and_names_the_shortfall(monkeypatch):
    import ray

    connected = type("Connected", (), {"address_info": {"session_dir": "/s"}})()
    monkeypatch.setattr(ray, "init", lambda **kwargs: connected)
    table = [{"NodeID": "b", "Alive": True}, {"NodeID": "a", "Alive": True},
             {"NodeID": "x", "Alive": False}]
    monkeypatch.setattr(nodes, "node_table", lambda timeout=None: table)
    monkeypatch.setenv("RAY_ADDRESS", "")
    info, ids = nodes.wait_registered("198.18.0.2:2", 2, timeout=5, verbose=False,
                                      closing=lambda: False)
    assert info == {"session_dir": "/s"} and ids == ("a", "b")
    assert os.environ["RAY_ADDRESS"] == "198.18.0.2:2"
    with pytest.raises(RayNodeStartError, match="Only 2 of 3 Ray nodes registered"):
        nodes.wait_registered("198.18.0.2:2", 3, timeout=1.5, verbose=False,
                              closing=lambda: False)


def test_a_gateway_node_that_cannot_spawn_leaves_no_work_dir(swapped, monkeypatch, tmp_path):
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))

    def no_python(spec):
        raise OSError("no such interpreter")

    monkeypatch.setattr(nodes, "spawn_manager", no_python)
    options = RayContext(StubSparkContext()).options
    try:
        nodes.GatewayNode(options, "application_0_0001", "token",
                          HeadPlacement("c1", "127.0.0.1:6379", False), driver_cores=0)
    except OSError as failed:
        # Checked while the failure is held (its traceback keeps the node alive, as a
        # caller's would), not after a garbage collection removed it anyway.
        assert "no such interpreter" in str(failed) and list(tmp_path.iterdir()) == []
    else:
        raise AssertionError("the spawn failure was swallowed")


def test_stopping_the_nodes_forgets_the_cluster_and_only_then_the_address(swapped,
                                                                          monkeypatch):
    sc = StubSparkContext()
    sc.stop()  # a stopped SparkContext: no stop job to run
    cluster_nodes = nodes.ClusterNodes(sc, RayContext(StubSparkContext()).options,
                                       "application_0_0001", "token")
    cluster_nodes.current = _cluster("198.18.0.1:1", "c1")
    monkeypatch.setenv("RAY_ADDRESS", "198.18.0.1:1")
    cluster_nodes.stop(forget_address=False)
    assert cluster_nodes.current is None and os.environ["RAY_ADDRESS"] == "198.18.0.1:1"
    cluster_nodes.stop(forget_address=True)
    assert "RAY_ADDRESS" not in os.environ


def test_status_without_a_cluster_asks_ray_nothing(monkeypatch):
    from zoo_ray import status

    def no_gcs(timeout=None):
        raise AssertionError("asked Ray's node table without a cluster")

    monkeypatch.setattr(status, "node_table", no_gcs)
    assert status.registrations(None) == {} and status.store_usage(None) == {}


def test_a_restarted_node_s_live_registration_wins(monkeypatch):
    from zoo_ray import status

    cluster = _cluster("198.18.0.1:1", "c1", "c2")
    table = [{"NodeID": "old", "Alive": False,
              "ObjectStoreSocketName": "/tmp/zoo-ray-c1/session/sockets/plasma_store"},
             {"NodeID": "new", "Alive": True,
              "ObjectStoreSocketName": "/tmp/zoo-ray-c1/session2/sockets/plasma_store"},
             {"NodeID": "other", "Alive": True,
              "ObjectStoreSocketName": "/tmp/zoo-ray-elsewhere/sockets/plasma_store"}]
    monkeypatch.setattr(status, "node_table", lambda timeout=None: table)
    found = status.registrations(cluster)
    assert list(found) == ["c1"] and found["c1"][1]["NodeID"] == "new"
    assert found["c1"][0] is cluster.nodes[0]
