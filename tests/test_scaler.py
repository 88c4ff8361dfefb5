"""The elastic cluster's Scaler without a cluster: Spark, the GCS, the node keeper and
YARN's ResourceManager are fakes, the scaler's thread is stopped at once and its looks
are run by hand, on a clock the test moves."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest
from ray.core.generated import autoscaler_pb2 as pb
from tests.spark_stub import StubSparkContext

from zoo_ray import scaler as scaler_module
from zoo_ray.healing import EventLog
from zoo_ray.options import ScaleRange
from zoo_ray.protocol import NodeInfo
from zoo_ray.scaler import Scaler, ScaleStatus

NODE = {"CPU": 4.0, "memory": 8e9}
IDLE_TIMEOUT_S = 60.0
DRAIN_IDLE = pb.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION")
GATEWAY = b"\xff" * 28  # the driver's own node: in the GCS, no executor's
YARN_CONF = {"spark.executor.memory": "2g", "spark.executor.memoryOverhead": "1024",
             "spark.executor.cores": "2"}  # a 3072 MB, 2-vcore container


def raw_id(executor: str) -> bytes:
    """The Ray node id (binary) of ``executor``'s node."""
    return bytes([int(executor)]) * 28


def hex_id(executor: str) -> str:
    return raw_id(executor).hex()


def temp_dir(executor: str) -> str:
    return f"/tmp/zoo-ray-{executor:0>12}"  # fixed length, as node_temp_link's digests


def node_info(executor: str) -> NodeInfo:
    return NodeInfo(role="head" if executor == "1" else "worker", address="198.18.0.1:6379",
                    pid=1, node_ip="198.18.0.1", log_dir="/logs", temp_dir=temp_dir(executor),
                    container=f"container_{executor}", executor_id=executor,
                    executor_host=f"host{executor}")


class FakeSpark:
    """What spark_internals reads and sets: the live executors and Spark's target. Each
    call that changes something is recorded in ``calls``, with ``on_release``'s."""

    def __init__(self, executors: Iterable[str]) -> None:
        self.live = {e: f"host{e}" for e in executors}
        self.target = len(self.live)
        self.in_use: set[str] = set()
        self.kills_work = True
        self.ends_at_once = True  # else a killed executor stays listed for a while
        self.calls: list[tuple[str, Any]] = []

    def live_executors(self, sc: Any) -> dict[str, str]:
        return dict(self.live)

    def executors_in_use(self, sc: Any) -> set[str]:
        return set(self.in_use)

    def request_total_executors(self, sc: Any, total: int) -> bool:
        self.calls.append(("total", total))
        self.target = total
        return True

    def kill_executors(self, sc: Any, executor_ids: list[str]) -> bool:
        self.calls.append(("kill", tuple(executor_ids)))
        if self.kills_work:  # Spark lowers its target by as many
            killed = [e for e in executor_ids if e in self.live]
            self.target -= len(killed)
            for executor in killed if self.ends_at_once else ():
                del self.live[executor]
        return self.kills_work

    def release(self, executor_id: str) -> None:
        self.calls.append(("release", executor_id))


@dataclass
class RayNode:
    """One node as the GCS sees it."""

    temp_dir: str
    status: str = "RUNNING"
    idle_s: float = 0.0
    free_cpus: float = 4.0
    alive: bool = True


@dataclass
class FakeGcs:
    """The GcsClient calls the scaler makes."""

    nodes: dict[bytes, RayNode] = field(default_factory=dict)
    pending: list[tuple[dict[str, float], int]] = field(default_factory=list)
    refuse: str = ""  # the raylet's reason to refuse a drain ("" accepts)
    lags: bool = False  # the resource state shows an accepted drain a look late
    drains: list[tuple[str, int, str]] = field(default_factory=list)

    def get_cluster_resource_state(self, timeout_s: float) -> bytes:
        reply = pb.GetClusterResourceStateReply()
        state = reply.cluster_resource_state
        for raw, node in self.nodes.items():
            entry = state.node_states.add(node_id=raw, status=pb.NodeStatus.Value(node.status),
                                          idle_duration_ms=int(node.idle_s * 1000))
            entry.total_resources.update(NODE)
            entry.available_resources.update({**NODE, "CPU": node.free_cpus})
        for shape, count in self.pending:
            state.pending_resource_requests.add(count=count).request.resources_bundle.update(
                shape)
        return reply.SerializeToString()

    def get_all_node_info(self, timeout: float) -> dict[bytes, Any]:
        return {raw: SimpleNamespace(state=0 if node.alive else 1,
                                     object_store_socket_name=f"{node.temp_dir}/session_1/"
                                                              "sockets/plasma_store")
                for raw, node in self.nodes.items()}

    def drain_node(self, node_id: str, reason: int, message: str, deadline: int,
                   timeout: float) -> tuple[bool, str]:
        self.drains.append((node_id, reason, message))
        if self.refuse:
            return False, self.refuse
        if not self.lags:
            self.nodes[bytes.fromhex(node_id)].status = "DRAINING"
        return True, ""


@dataclass
class FakeKeeper:
    """What the scaler reads and sets of the NodeKeeper."""

    wanted: int = 0
    starting: bool = False
    given_up: frozenset[str] = frozenset()


class Harness:
    """A cluster of ``with_nodes`` nodes (the first the head's) in Spark's ``executors``."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, executors: Sequence[str] = ("1", "2"),
                 with_nodes: Sequence[str] | None = None, *, min_nodes: int = 1,
                 max_nodes: int = 4, conf: dict[str, str] | None = None) -> None:
        self.now = 1000.0
        self.spark = FakeSpark(executors)
        self.gcs = FakeGcs()
        self.gcs.nodes[GATEWAY] = RayNode("/tmp/zoo-ray-gateway00", "IDLE", 9999.0)
        self.keeper = FakeKeeper()
        self.events = EventLog()
        self.nodes = [node_info(e) for e in (executors if with_nodes is None else with_nodes)]
        for node in self.nodes:
            self.gcs.nodes[raw_id(node.executor_id)] = RayNode(node.temp_dir)
        self.sc = StubSparkContext(**(conf or {}))
        self.scale = ScaleRange(min_nodes, max_nodes, IDLE_TIMEOUT_S)
        monkeypatch.setattr(scaler_module, "spark_internals", self.spark)
        monkeypatch.setattr(scaler_module, "time", SimpleNamespace(monotonic=lambda: self.now))
        monkeypatch.setattr(scaler_module, "_POLL_S", 3600.0)
        monkeypatch.setattr(Scaler, "_gcs", lambda _self: self.gcs)

    def ray(self, executor: str, status: str = "RUNNING", idle_s: float = 0.0,
            free_cpus: float = 4.0) -> None:
        """Set what the GCS says of ``executor``'s node."""
        self.gcs.nodes[raw_id(executor)] = RayNode(temp_dir(executor), status, idle_s,
                                                   free_cpus)

    def start(self, clear: bool = True) -> Scaler:
        """A Scaler whose thread has stopped; Spark's calls so far forgotten (``clear``)."""
        scaler = Scaler(self.sc, self.scale, self.keeper,  # type: ignore[arg-type]
                        lambda: list(self.nodes), "198.18.0.1:6379", self.spark.release,
                        self.events)
        scaler.close()
        if clear:
            self.spark.calls.clear()
        return scaler

    def busy_and_asked(self, count: int = 8) -> Scaler:
        """The head's node busy and ``count`` one-CPU tasks pending; started."""
        self.ray("1", free_cpus=0.0)
        self.gcs.pending = [({"CPU": 1.0}, count)]
        return self.start()


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Harness]:
    return functools.partial(Harness, monkeypatch)


# --- settling at the start -------------------------------------------------------------

def test_executors_without_a_node_are_given_back_at_the_start(cluster):
    h = cluster(("1", "2", "3", "4"), ("1", "2"))
    h.start(clear=False)
    assert h.spark.calls == [("total", 4), ("release", "3"), ("release", "4"),
                             ("kill", ("3", "4")), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2


def test_with_a_node_in_every_executor_only_the_total_is_set(cluster):
    h = cluster(("1", "2", "3"))
    h.spark.target = 0  # static allocation's target starts empty
    h.start(clear=False)
    assert h.spark.calls == [("total", 3)]
    assert h.keeper.wanted == 3 and h.spark.target == 3


# --- growing ---------------------------------------------------------------------------

def test_demand_no_node_places_asks_for_more_executors_once(cluster):
    h = cluster(("1",))
    scaler = h.busy_and_asked(8)
    scaler.step()
    assert h.spark.calls == [("total", 3)]
    assert h.keeper.wanted == 3
    assert [(e.kind, e.message) for e in h.events.events] == [
        ("scaled", "asked YARN for 2 more executors (3 in all): 8 pending requests need "
                   "2 more nodes")]
    assert scaler.status == ScaleStatus(1, 4, 1, 3, 0, "")
    assert scaler.status.line() == "elastic, 1 to 4 nodes: 1 running, 2 more asked of YARN"
    scaler.step()  # the same demand: the executors asked for will hold it
    assert h.spark.calls == [("total", 3)] and len(h.events.events) == 1


def test_growth_stops_at_max_nodes_and_the_card_says_so(cluster):
    h = cluster(("1",), max_nodes=2)
    scaler = h.busy_and_asked(8)
    for _ in range(3):
        scaler.step()
    assert h.spark.calls == [("total", 2)] and h.keeper.wanted == 2
    assert scaler.status.unmet == 4
    assert scaler.status.line() == ("elastic, 1 to 2 nodes: 1 running, 1 more asked of YARN; "
                                    "max_ray_nodes=2 reached: 4 pending requests wait")


# --- withdrawing a request -------------------------------------------------------------

def test_a_request_is_withdrawn_only_an_idle_timeout_after_the_growth(cluster):
    h = cluster(("1",))
    scaler = h.busy_and_asked(8)
    scaler.step()
    assert h.spark.calls == [("total", 3)]
    h.gcs.pending = []  # the demand went before the executors came
    for h.now in (1030.0, 1059.5):
        scaler.step()
        assert h.spark.calls == [("total", 3)] and h.keeper.wanted == 3
    h.now = 1060.5  # an idle timeout after the growth, 30 s after the demand went
    scaler.step()
    assert h.spark.calls == [("total", 3), ("total", 1)]
    assert h.keeper.wanted == 1 and scaler.status.target == 1


# --- giving back idle nodes ------------------------------------------------------------

def _idle_three(cluster: Callable[..., Harness], **kwargs: Any) -> Harness:
    """Three nodes: the head idle longest, 2 idle for less than the timeout, 3 past it."""
    h = cluster(("1", "2", "3"), **kwargs)
    h.ray("1", "IDLE", 500.0)
    h.ray("2", "IDLE", 30.0)
    h.ray("3", "IDLE", 120.0)
    return h


def test_an_idle_node_is_drained_then_its_executor_given_back(cluster):
    h = _idle_three(cluster)
    scaler = h.start()
    scaler.step()
    assert h.gcs.drains == [(hex_id("3"), DRAIN_IDLE, "zoo_ray: idle for 60 s")]
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2 and scaler.status.target == 2
    scaler.step()  # its executor is gone: nothing more to do
    assert len(h.gcs.drains) == 1 and len(h.spark.calls) == 3


def test_a_drained_executor_spark_does_not_kill_still_leaves_the_target(cluster):
    h = _idle_three(cluster)
    h.spark.kills_work = False
    scaler = h.start()
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2
    scaler.step()  # its node drains: not drained, nor counted, again
    assert len(h.gcs.drains) == 1 and len(h.spark.calls) == 3


def test_a_given_back_node_is_not_counted_while_its_executor_ends(cluster):
    h = _idle_three(cluster)
    h.spark.ends_at_once, h.gcs.lags = False, True
    scaler = h.start()
    scaler.step()
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert len(h.gcs.drains) == 1 and h.events.events == []


def test_a_drain_the_raylet_refuses_kills_nothing(cluster):
    h = _idle_three(cluster)
    h.gcs.refuse = "the node runs a task"
    scaler = h.start()
    scaler.step()
    assert [d[0] for d in h.gcs.drains] == [hex_id("3")]
    assert h.spark.calls == [] and h.keeper.wanted == 3 and "3" in h.spark.live


def test_an_executor_spark_uses_is_not_drained(cluster):
    h = _idle_three(cluster)
    h.spark.in_use = {"3"}  # a cached DataFrame's blocks, say
    scaler = h.start()
    scaler.step()
    assert h.gcs.drains == [] and h.spark.calls == [] and h.keeper.wanted == 3


def test_the_head_node_is_never_drained(cluster):
    h = cluster(("1", "2"))
    h.ray("1", "IDLE", 5000.0)
    scaler = h.start()
    scaler.step()
    assert h.gcs.drains == [] and h.spark.calls == [] and h.keeper.wanted == 2


def test_draining_stops_at_min_nodes(cluster):
    h = _idle_three(cluster, min_nodes=2)
    h.ray("2", "IDLE", 300.0)
    scaler = h.start()
    for h.now in (1000.0, 1002.0, 1004.0):
        scaler.step()
    assert [d[0] for d in h.gcs.drains] == [hex_id("2")]  # the most idle, once
    assert h.spark.calls == [("release", "2"), ("kill", ("2",)), ("total", 2)]
    assert h.keeper.wanted == 2 and scaler.status.nodes == 2


# --- executors Spark lost --------------------------------------------------------------

def test_a_node_whose_executor_spark_lost_is_not_live(cluster):
    h = cluster(("1", "2", "3"))
    h.ray("3", "IDLE", 500.0)  # the GCS has not noticed yet
    scaler = h.start()
    del h.spark.live["3"]
    scaler.step()
    assert h.gcs.drains == []
    assert scaler.status.nodes == 2
    # Nothing waits: the lost executor's replacement is asked for no more.
    assert h.spark.calls == [("total", 2)] and h.keeper.wanted == 2


# --- spare executors -------------------------------------------------------------------

def test_a_spare_executor_is_given_back_on_the_second_look(cluster):
    h = cluster(("1", "2"))
    scaler = h.start()
    h.spark.live["3"] = "host3"  # YARN started it after its request was withdrawn
    scaler.step()
    assert h.spark.calls == []
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2


def test_no_executor_is_spare_while_the_keeper_starts_a_node(cluster):
    h = cluster(("1", "2"))
    scaler = h.start()
    h.spark.live["3"] = "host3"
    h.keeper.starting = True
    scaler.step()
    scaler.step()
    assert h.spark.calls == []
    h.keeper.starting = False
    scaler.step()  # the first look since: not yet
    assert h.spark.calls == []
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]


def test_an_executor_the_keeper_gave_up_on_is_given_back_and_the_target_lowered(cluster):
    h = cluster(("1", "2"))
    h.ray("1", free_cpus=0.0)
    h.ray("2", free_cpus=0.0)
    h.gcs.pending = [({"CPU": 4.0}, 1)]
    scaler = h.start()
    scaler.step()
    assert h.spark.calls == [("total", 3)]
    h.spark.live["3"] = "host3"  # YARN's executor, where no node could start
    h.keeper.given_up = frozenset({"3"})
    scaler.step()
    assert h.spark.calls == [("total", 3)]
    scaler.step()
    assert h.spark.calls == [("total", 3), ("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2
    scaler.step()  # the demand still waits: it asks again
    assert h.spark.calls[-1] == ("total", 3) and h.keeper.wanted == 3


def test_a_spare_executor_spark_uses_stays(cluster):
    h = cluster(("1", "2"))
    scaler = h.start()
    h.spark.live["3"] = "host3"
    h.spark.in_use = {"3"}  # Spark put a task or a block there already
    scaler.step()
    scaler.step()
    assert h.spark.calls == []
    h.spark.in_use = set()
    scaler.step()
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]


def test_a_failed_executor_the_target_left_out_already_lowers_it_no_further(cluster):
    h = cluster(("1", "2"))
    scaler = h.start()
    h.spark.live["3"] = "host3"  # asked for, then withdrawn: the target counts 2 nodes
    h.keeper.given_up = frozenset({"3"})
    scaler.step()
    scaler.step()
    assert h.spark.calls == [("release", "3"), ("kill", ("3",)), ("total", 2)]
    assert h.keeper.wanted == 2 and h.spark.target == 2


# --- why demand waits for YARN ---------------------------------------------------------

class FakeResourceManager:
    """The ResourceManager's REST answers: the app's queue and the RUNNING NodeManagers."""

    def __init__(self, used_mb: int, nodes: list[tuple[int, int]] | None) -> None:
        self.used_mb, self._nodes = used_mb, nodes
        self.asked = 0

    def of_driver(self, timeout: float, credentials: Any) -> FakeResourceManager:
        self.asked += 1
        return self

    def app(self, app_id: str) -> dict[str, Any]:
        if self._nodes is None:
            raise OSError("connection refused")
        assert app_id == "application_0_0001"
        return {"queue": "root.default"}

    def leaf_queues(self) -> dict[str, dict[str, Any]]:
        return {"default": {"maxEffectiveCapacity": {"memory": 8192, "vCores": 8},
                            "resourcesUsed": {"memory": self.used_mb, "vCores": 4}}}

    def nodes(self, states: str | None = None) -> list[dict[str, Any]]:
        assert states == "RUNNING"
        return [{"availMemoryMB": mb, "availableVirtualCores": cores}
                for mb, cores in self._nodes or []]


@pytest.mark.parametrize("used_mb, nodes, why", [
    (6144, [(8192, 8)], "queue default at its maximum: 6144 of 8192 MB and 4 of 8 vcores "
                        "used, an executor needs 3072 MB and 2 vcores"),
    (0, [(2048, 8), (8192, 1)], "no NodeManager has room for an executor (3072 MB, 2 "
                                "vcores); queue default uses 0 of 8192 MB and 4 of 8 vcores"),
    (0, [(3072, 2)], "queue default uses 0 of 8192 MB and 4 of 8 vcores; YARN has not "
                     "granted them yet"),
    (0, None, "the ResourceManager did not say why"),
])
def test_demand_waiting_for_yarn_says_why(cluster, monkeypatch, used_mb, nodes, why):
    rm = FakeResourceManager(used_mb, nodes)
    monkeypatch.setattr(scaler_module, "ResourceManager", rm)
    h = cluster(("1",), conf=YARN_CONF)
    scaler = h.busy_and_asked(8)
    scaler.step()  # asks for 2 more at 1000
    h.now = 1059.0
    scaler.step()
    assert scaler.status.waiting == "" and rm.asked == 0
    h.now = 1061.0
    scaler.step()
    waiting = f"waiting for YARN: 2 executors asked for 61 s ago; {why}"
    assert scaler.status.waiting == waiting
    assert scaler.status.line() == ("elastic, 1 to 4 nodes: 1 running, 2 more asked of YARN; "
                                    f"{waiting}")
    assert rm.asked == 1


def test_the_resource_manager_is_asked_at_most_once_per_ttl(cluster, monkeypatch):
    rm = FakeResourceManager(6144, [(8192, 8)])
    monkeypatch.setattr(scaler_module, "ResourceManager", rm)
    h = cluster(("1",), conf=YARN_CONF)
    scaler = h.busy_and_asked(8)
    asked = []
    for h.now in (1000.0, 1061.0, 1063.0, 1080.0, 1091.0, 1092.0, 1100.0):
        scaler.step()
        asked.append(rm.asked)
    assert asked == [0, 1, 1, 1, 1, 2, 2]
    assert scaler_module._YARN_STATE_TTL_S == 30.0 and scaler_module._GRANT_WAIT_S == 60.0


def test_the_wait_ends_when_the_executors_come(cluster, monkeypatch):
    rm = FakeResourceManager(0, [(8192, 8)])
    monkeypatch.setattr(scaler_module, "ResourceManager", rm)
    h = cluster(("1",), conf=YARN_CONF)
    scaler = h.busy_and_asked(8)
    scaler.step()
    h.now = 1070.0
    scaler.step()
    assert scaler.status.waiting.startswith("waiting for YARN: 2 executors")
    for executor in ("2", "3"):  # granted, and a node started in each
        h.spark.live[executor] = f"host{executor}"
        h.nodes.append(node_info(executor))
        h.ray(executor, free_cpus=0.0)
    h.gcs.pending = []  # they run the tasks
    h.now = 1072.0
    scaler.step()
    assert scaler.status == ScaleStatus(1, 4, 3, 3, 0, "")
    assert scaler.status.line() == "elastic, 1 to 4 nodes: 3 running"


def test_node_status_counts_pending_executors_against_the_nodes_up_now(monkeypatch):
    # The scaler's status is its last look: one node up, three asked for. Two nodes
    # joined since; node_status() must not list them again as asked for and not up.
    from zoo_ray import status as status_module

    nodes = {f"container_{i}": (SimpleNamespace(executor_id=str(i)),
                                {"NodeID": f"node{i}", "Alive": True, "Resources": {}})
             for i in range(3)}
    monkeypatch.setattr(status_module, "registrations", lambda cluster: nodes)
    stale = ScaleStatus(1, 3, nodes=1, target=3, unmet=0, waiting="")
    rows = status_module.node_status(None, set(), stale)
    assert [r["node_id"] for r in rows] == ["node0", "node1", "node2"]
    # Two up of three asked: one row waits, whatever the scaler last saw.
    del nodes["container_2"]
    rows = status_module.node_status(None, set(), stale)
    assert [r["pending"] for r in rows] == ["", "", "asked of YARN, starting"]


def test_the_card_counts_the_nodes_up_in_the_same_view_not_the_scaler_s_last_look(
        monkeypatch):
    from zoo_ray import status as status_module
    from zoo_ray.nodes import RunningCluster
    from zoo_ray.protocol import NodeInfo

    def info(role: str, container: str, executor: str) -> NodeInfo:
        return NodeInfo(role=role, address=None, pid=1, node_ip="127.0.0.1", log_dir="",
                        temp_dir=f"/tmp/{container}", container=container, executor_id=executor)

    started = [info("head", "container_0", "0"), info("worker", "container_1", "1"),
               info("worker", "container_2", "2")]
    cluster = SimpleNamespace(nodes=started, gateway=info("worker", "gateway", ""),
                              address="127.0.0.1:1", dashboard_url=None)
    live = {f"/tmp/container_{i}": {"Alive": True, "Resources": {"CPU": 1.0}}
            for i in range(3)}
    live["/tmp/gateway"] = {"Alive": True, "Resources": {"CPU": 1.0}}
    monkeypatch.setattr(status_module, "live_nodes", lambda nodes, timeout: live)
    monkeypatch.setattr(status_module, "_application", lambda sc, app, local: ("RUNNING",
                                                                               None, None))
    stale = ScaleStatus(1, 3, nodes=1, target=3, unmet=0, waiting="")
    assert "1 running, 2 more asked of YARN" in stale.line()
    view = status_module.cluster_view(None, "application_1_0001", False, "running",
                                      cast(RunningCluster, cluster), stale)
    assert view.scaling == "elastic, 1 to 3 nodes: 3 running"
    # A node lost since: two running, one asked for.
    live["/tmp/container_2"]["Alive"] = False
    view = status_module.cluster_view(None, "application_1_0001", False, "running",
                                      cast(RunningCluster, cluster), stale)
    assert view.scaling == "elastic, 1 to 3 nodes: 2 running, 1 more asked of YARN"
    # Nothing known of the nodes (not running): the scaler's look is all there is.
    view = status_module.cluster_view(None, "application_1_0001", False, "starting",
                                      cast(RunningCluster, cluster), stale)
    assert view.scaling == stale.line()
