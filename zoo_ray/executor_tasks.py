"""Functions Spark runs inside tasks on the executors, to start and stop their Ray nodes.

Runs in PySpark's Python workers on the executors. The driver
(:mod:`zoo_ray.context`) sends these functions with their arguments bound by
:func:`functools.partial`; they are pickled by reference, since every executor
imports this very zoo_ray from the zip that init_spark_on_yarn ships.

- :func:`place_head`: one task; its executor will host the head, at an address
  fixed now, so every node can start at once.
- :func:`start_nodes`: a barrier task in every slot; :func:`elect` picks one
  task per executor and those start a RayManager each.
- :func:`join_cluster`: one plain task in an executor Spark added in place of a
  lost one (:mod:`zoo_ray.healing`); starts a worker node there that joins the head.
- :func:`stop_manager`: a barrier task per slot; stops this executor's manager, the
  workers' before the head's.

A RayManager these tasks start outlives them: the task returns once its node is
up, so Ray holds no task slot.
"""
from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import psutil

from .gpu_claims import container_gpus
from .host import free_ports, node_ip, terminate
from .protocol import (
    STATE_DIR,
    HeadPlacement,
    ManagerState,
    NodeInfo,
    NodeOutcome,
    NodeSpec,
    await_manager,
    container_work_dir,
    spawn_manager,
)

__all__ = [
    "Election", "Slot", "StartPlan", "container_id", "elect", "executor_identity", "join_cluster",
    "place_head", "start_nodes", "stop_manager",
]


@dataclass(frozen=True)
class StartPlan:
    """What the start job needs: the spec every node shares, the head, how many nodes."""

    base: NodeSpec
    head: HeadPlacement
    wanted: int
    timeout: float


@dataclass(frozen=True)
class Slot:
    """One barrier task as its peers see it."""

    container: str
    partition: int
    has_node: bool

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Slot:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Election:
    """Which task starts which node, and which task speaks for each executor."""

    #: container -> partition of the task that starts its node (the head's first).
    starters: dict[str, int]
    head: str
    #: container -> its first partition, which reports an executor that starts nothing.
    first: dict[str, int]

    def role(self, slot: Slot) -> str | None:
        """"head", "worker", or None for a task that starts nothing."""
        if self.starters.get(slot.container) != slot.partition:
            return None
        return "head" if slot.container == self.head else "worker"

    def speaks_for_executor(self, slot: Slot) -> bool:
        return self.first.get(slot.container) == slot.partition


def elect(slots: Iterable[Slot], head: str, wanted: int) -> Election:
    """Choose ``wanted`` executors and one task in each to start a node.

    The head's executor comes first (if one of its tasks is among ``slots``), then
    executors that run no node of this application yet, in container order. In
    each executor the task of the lowest partition is the one.
    """
    first: dict[str, int] = {}
    for slot in sorted(slots, key=lambda s: s.partition):
        first.setdefault(slot.container, slot.partition)
    busy = {s.container for s in slots if s.has_node}
    others = sorted(c for c in first if c not in busy and c != head)
    chosen = ([head] if head in first else []) + others
    return Election({c: first[c] for c in chosen[:wanted]}, head, first)


def container_id() -> str:
    """The YARN container this executor runs in ('' outside YARN)."""
    return os.environ.get("CONTAINER_ID", "")


def running_manager(app_id: str) -> ManagerState | None:
    """The live manager of ``app_id`` in this container, if any."""
    state = ManagerState.read(container_work_dir())
    if state is not None and state.app_id == app_id and psutil.pid_exists(state.pid):
        return state
    return None


def _executor_jvm() -> psutil.Process | None:
    for parent in psutil.Process().parents():
        if parent.name() == "java":
            return parent
    return None


def _executor_jvm_pid() -> int | None:
    jvm = _executor_jvm()
    return jvm.pid if jvm else None


def executor_identity(argv: list[str]) -> tuple[str, str]:
    """The executor id and host Spark knows this executor by, from its JVM's arguments."""
    found = {"--executor-id": "", "--hostname": ""}
    for flag, value in zip(argv, argv[1:]):
        if flag in found:
            found[flag] = value
    return found["--executor-id"], found["--hostname"]


def _container_spec(plan: StartPlan, role: str) -> NodeSpec:
    """The shared spec, plus what only this executor knows: its directories and JVM."""
    work_dir = container_work_dir()
    log_dirs = os.environ.get("LOG_DIRS")  # YARN's container log directories
    gpus = container_gpus(work_dir)
    # nvidia-smi's indices, which CUDA follows only in PCI bus order (its default puts the
    # fastest device first).
    env = {**plan.base.env, "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
           "CUDA_VISIBLE_DEVICES": ",".join(gpus.indices)} if gpus else plan.base.env
    return dataclasses.replace(
        plan.base, role=role, head_address=plan.head.address,
        node_ip=plan.head.ip if role == "head" else None,
        work_dir=str(work_dir), log_dir=log_dirs.split(",")[0] if log_dirs else str(work_dir),
        watch_pid=_executor_jvm_pid(), num_gpus=len(gpus.indices) if gpus else 0, env=env,
    )


def _await(container: str, proc: subprocess.Popen[str], timeout: float) -> NodeOutcome:
    answer = await_manager(proc, timeout)
    if isinstance(answer, NodeInfo):
        jvm = _executor_jvm()
        executor_id, host = executor_identity(jvm.cmdline() if jvm else [])
        node = dataclasses.replace(answer, executor_id=executor_id, executor_host=host)
        return NodeOutcome("ok", container, node=node)
    answer.container = container
    return NodeOutcome("error", container, failure=answer)


def place_head(app_id: str, _partition: Iterable[object]) -> Iterator[HeadPlacement]:
    """The executor running this task hosts the head, at this IP and a free port."""
    yield HeadPlacement(container=container_id(), address=f"{node_ip()}:{free_ports(1)[0]}",
                        has_node=running_manager(app_id) is not None)


def start_nodes(plan: StartPlan, _partition: Iterable[object]) -> Iterator[NodeOutcome]:
    """A barrier task: elect, start this executor's node if elected, report.

    A first ``allGather`` shares every task's executor for the election. A second
    shares whether the head came up: if not, the workers (still waiting for its
    GCS) are stopped at once rather than at their timeout.
    """
    from pyspark import BarrierTaskContext

    ctx = BarrierTaskContext.get()
    me = Slot(container_id(), ctx.partitionId(), running_manager(plan.base.app_id) is not None)
    election = elect([Slot.from_json(m) for m in ctx.allGather(me.to_json())],
                     plan.head.container, plan.wanted)
    role = election.role(me)
    proc = spawn_manager(_container_spec(plan, role)) if role else None
    outcome = None
    if role == "head" and proc is not None:
        outcome = _await(me.container, proc, plan.timeout)
    head_up = "ok" in ctx.allGather(outcome.status if outcome else "")
    if role == "worker" and proc is not None:
        if head_up:
            outcome = _await(me.container, proc, plan.timeout)
        else:
            terminate([psutil.Process(proc.pid)], grace=60)
            outcome = NodeOutcome("skipped", me.container)
    if outcome:
        yield outcome
    elif election.speaks_for_executor(me):
        yield NodeOutcome("idle", me.container, has_node=me.has_node)


def join_cluster(plan: StartPlan, partition: Iterable[str]) -> Iterator[NodeOutcome]:
    """Start a worker node that joins the running head in this executor, if it is the
    one the partition names and runs no node yet; else "misplaced" (Spark ran the task
    elsewhere after its locality wait: the driver asks again) or "idle"."""
    container = container_id()
    jvm = _executor_jvm()
    if executor_identity(jvm.cmdline() if jvm else [])[0] not in list(partition):
        yield NodeOutcome("misplaced", container)
        return
    # One start at a time per executor: the manager writes its state only once it starts.
    lock_path = container_work_dir() / STATE_DIR / "start.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if running_manager(plan.base.app_id) is not None:
            yield NodeOutcome("idle", container, has_node=True)
            return
        yield _await(container, spawn_manager(_container_spec(plan, "worker")), plan.timeout)


def stop_manager(app_id: str, grace: float, _partition: Iterable[object]) -> Iterator[NodeOutcome]:
    """A barrier task: SIGTERM this executor's manager, the workers' before the head's;
    SIGKILL it and its whole tree if it hangs.

    The order is ``ray stop``'s on one node, across the cluster: a raylet stopped after
    its GCS waits for the GCS until it is killed (``grace``), one stopped before it
    exits in under a second.
    """
    from pyspark import BarrierTaskContext

    state = running_manager(app_id)
    head = state is not None and state.role == "head"
    outcome, failed = None, None
    if not head:
        try:
            outcome = _stop_manager(state, grace)
        except Exception as exc:  # the head still stops: a failed task would retry the stage
            failed = exc
    BarrierTaskContext.get().barrier()
    if head:
        outcome = _stop_manager(state, grace)
    if failed is not None:
        raise failed
    if outcome is not None:
        yield outcome


def _stop_manager(state: ManagerState | None, grace: float) -> NodeOutcome | None:
    if state is None:
        return None
    try:
        manager = psutil.Process(state.pid)
        tree = manager.children(recursive=True)
    except psutil.NoSuchProcess:
        return None
    if terminate([manager], grace=grace):
        terminate(tree)
        return NodeOutcome("killed", container_id())
    return NodeOutcome("stopped", container_id())
