"""Keeping the Ray cluster at its size: a Ray node in each executor Spark adds in place of a
lost one, and a new cluster when the head's executor is lost.

Runs in the driver's process: a :class:`NodeKeeper` thread beside a running RayContext.
Every two seconds it reads which executors are registered with the driver (Spark's status
store, in the driver's own memory). When fewer of them run a Ray node than the RayContext
asked for, and Spark has added executors that run none (its replacements for lost ones), it
runs one short Spark task preferring each such executor
(:func:`~zoo_ray.executor_tasks.join_cluster`): the task starts a worker node there, which
joins the head, and returns, so healing holds no task slot once the node is up. A task that
lands in an executor already running a node starts nothing; the next look asks again.

The loss of the head's executor takes the cluster's GCS and its tables with it; the keeper
hands that to the RayContext (``on_head_lost``), which starts a new cluster, and ends.
"""
from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import spark_internals
from .errors import RayContextError
from .executor_tasks import StartPlan, join_cluster
from .protocol import NodeInfo, NodeOutcome

__all__ = ["ClusterEvent", "EventLog", "NodeKeeper", "choose_targets"]

logger = logging.getLogger(__name__)

_POLL_S = 2.0
#: Failed starts in one executor before giving up on it.
_MAX_TRIES = 3
#: Starts Spark ran in another executor (its preferred one had no free slot in the
#: locality wait, a user's job holding it) before giving up on that executor.
_MAX_MISPLACED = 30


@dataclass(frozen=True)
class ClusterEvent:
    """Something that happened to the Ray cluster while it ran.

    Parameters
    ----------
    at : float
        When (seconds since the epoch).
    kind : str
        "lost" (an executor and its Ray node went away), "joined" (a node started in a
        new executor joined the head), "failed" (a node could not be started there),
        "head lost" (the head's executor went away, with every actor and object),
        "rebuilt" (a new cluster runs in the executors there are), "cluster lost"
        (gone for good: Spark ended the application, or no new cluster could start),
        "released" (an elastic cluster drained an idle node and gave its executor back
        to YARN) or "scaled" (an elastic cluster asked YARN for more executors).
    executor_id, container : str
        The executor and its YARN container.
    message : str
        What it means for the user.
    """

    at: float
    kind: str
    executor_id: str
    container: str
    message: str


class EventLog:
    """The events of one RayContext, kept across the clusters it rebuilds (thread-safe)."""

    def __init__(self) -> None:
        self._events: list[ClusterEvent] = []
        self._lock = threading.Lock()

    @property
    def events(self) -> list[ClusterEvent]:
        """What happened, oldest first."""
        with self._lock:
            return list(self._events)

    def add(self, kind: str, executor_id: str, container: str, message: str) -> None:
        """Record and log one event."""
        with self._lock:
            self._events.append(ClusterEvent(time.time(), kind, executor_id, container, message))
        # Scaling is the cluster doing its job, not a fault.
        log = (logger.info if kind in ("joined", "rebuilt", "scaled", "released")
               else logger.warning)
        where = f"Executor {executor_id} ({container or 'no Ray node'}): " if executor_id else ""
        log("%s%s", where, message)


def choose_targets(live: dict[str, str], nodes: list[NodeInfo], wanted: int,
                   given_up: set[str]) -> list[tuple[str, str]]:
    """The executors to start a node in: ``(executor id, host)`` of live executors that
    never had one (and were not given up on), as many as the cluster is short of
    ``wanted``, lowest executor id first."""
    with_node = [n for n in nodes if n.executor_id in live]
    known = {n.executor_id for n in nodes} | given_up
    fresh = sorted(((executor, host) for executor, host in live.items()
                    if executor not in known),
                   key=lambda pair: (len(pair[0]), pair[0]))
    return fresh[:max(0, wanted - len(with_node))]


class NodeKeeper:
    """Start a Ray node in every executor Spark adds, up to ``wanted`` nodes (a thread).

    Parameters
    ----------
    sc : pyspark.SparkContext
    plan : StartPlan
        The spec every node shares and the head to join.
    wanted : int
        How many executors should run a node.
    nodes : list of NodeInfo
        The executors' nodes as started by ``RayContext.init``, head first.
    on_join : callable
        Called with each node started here, from this thread.
    on_head_lost : callable
        Called once, from this thread, when the head's executor is gone; the keeper
        ends after it.
    on_spark_stopped : callable
        Called once, from this thread, when the SparkContext was stopped from the JVM's
        side (YARN ended the application, or Spark gave up after
        ``spark.executor.maxNumFailures``); the keeper ends after it.
    events : EventLog
        Where the keeper records what happens.
    """

    def __init__(self, sc: Any, plan: StartPlan, wanted: int, nodes: list[NodeInfo],
                 on_join: Callable[[NodeInfo], None], on_head_lost: Callable[[], None],
                 on_spark_stopped: Callable[[], None], events: EventLog) -> None:
        self.sc = sc
        self.plan = plan
        self.wanted = wanted
        self.on_join = on_join
        self.on_head_lost = on_head_lost
        self.on_spark_stopped = on_spark_stopped
        self.events = events
        self._nodes = list(nodes)
        self._head = nodes[0]
        self._tries: dict[str, int] = {}
        self._misplaced: dict[str, int] = {}
        self._given_up: set[str] = set()
        self._released: set[str] = set()
        self._stop = threading.Event()  # this keeper looks no more
        self._closed = threading.Event()  # close() was called
        self._starting = threading.Event()  # a start job runs: close() cancels it
        self._group = f"zoo_ray-heal-{plan.base.app_id}"
        self._thread = threading.Thread(target=self._run, name="zoo_ray-node-keeper",
                                        daemon=True)
        self._thread.start()

    def release(self, executor_id: str) -> None:
        """``executor_id`` is being given back to YARN: its end is no loss, and it gets no
        node again."""
        self._released.add(executor_id)

    @property
    def given_up(self) -> frozenset[str]:
        """Executors the keeper tried and failed to start a node in (it tries no more)."""
        return frozenset(self._given_up)

    @property
    def starting(self) -> bool:
        """Whether a job of the keeper's runs now (a node starting in a new executor)."""
        return self._starting.is_set()

    @property
    def closing(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    @contextlib.contextmanager
    def jobs(self, description: str) -> Iterator[None]:
        """Run the calling thread's Spark jobs as the keeper's, which :meth:`close` cancels.

        Raises
        ------
        RayContextError
            close() was called before the jobs could start.
        """
        self._starting.set()
        try:
            if self.closing:  # close() ran before it could see a job to cancel
                raise RayContextError("the RayContext is stopping")
            with spark_internals.job_group(self.sc, self._group, description):
                yield
        finally:
            self._starting.clear()

    def _event(self, kind: str, executor_id: str, container: str, message: str) -> None:
        self.events.add(kind, executor_id, container, message)

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self.heal_once()
            except Exception as exc:
                if self._stop.is_set():
                    if not self.closing:  # raised by on_head_lost or on_spark_stopped
                        logger.exception("Handling the loss of the Ray cluster")
                    return
                logger.warning("Could not check the Ray nodes' executors: %s", exc)

    def heal_once(self) -> None:
        """Look once; start nodes in new executors if the cluster is short of nodes."""
        if self._stop.is_set():  # handed on, or closed: this keeper's cluster is not ours
            return
        if spark_internals.is_stopped(self.sc):
            self._stop.set()
            if not self.closing:  # not the user's own sc.stop(), which stops Ray first
                self.on_spark_stopped()
            return
        live = spark_internals.live_executors(self.sc)
        if self._note_losses(live):
            self._stop.set()  # this keeper's cluster is gone; on_head_lost starts another
            self.on_head_lost()
            return
        targets = choose_targets(live, self._nodes, self.wanted,
                                 self._given_up | self._released)
        if targets:
            self._start_in(targets)

    def _note_losses(self, live: dict[str, str]) -> bool:
        """Record the nodes whose executors are gone; whether the head's is one of them."""
        head_lost = False
        for node in [n for n in self._nodes if n.executor_id not in live]:
            self._nodes.remove(node)
            if node is self._head:
                head_lost = True
                self._event("head lost", node.executor_id, node.container,
                            "the head's executor is gone, and with it the cluster's GCS: every "
                            "actor, object and task of the cluster is lost. zoo_ray starts a "
                            "new cluster in the executors there are and reconnects this driver; "
                            "ObjectRefs and actor handles from before are void.")
            elif node.executor_id in self._released:
                self._event("released", node.executor_id, node.container,
                            "its idle Ray node was drained and the executor given back to "
                            f"YARN; the cluster has {len(self._nodes)} executor nodes")
            else:
                self._event("lost", node.executor_id, node.container,
                            "its Ray node, with the actors and objects it held, is gone; a node "
                            "starts in the executor Spark adds in its place")
        return head_lost

    def _start_in(self, targets: list[tuple[str, str]]) -> None:
        rdd = spark_internals.rdd_with_locations(
            self.sc, [(executor, [f"executor_{host}_{executor}"]) for executor, host in targets])
        with self.jobs("zoo_ray: a Ray node for each new executor"):
            outcomes: list[NodeOutcome] = rdd.mapPartitions(
                partial(join_cluster, self.plan)).collect()
        # One outcome per partition, in the order of the targets.
        for (executor, _), outcome in zip(targets, outcomes):
            self._take(executor, outcome)

    def _take(self, executor: str, outcome: NodeOutcome) -> None:
        """Record what one start did in ``executor``; give up on it after too many tries."""
        if outcome.node is not None:
            self._nodes.append(outcome.node)
            try:
                self.on_join(outcome.node)
            except Exception:  # the node is part of the cluster whatever the bookkeeping did
                logger.exception("Recording the node of executor %s", executor)
            self._event("joined", executor, outcome.container, "a Ray node started here "
                        f"and joined the head; the cluster has {len(self._nodes)} executor nodes")
            return
        counts, limit = ((self._misplaced, _MAX_MISPLACED) if outcome.status == "misplaced"
                         else (self._tries, _MAX_TRIES))
        counts[executor] = counts.get(executor, 0) + 1
        if outcome.failure is not None:
            self._event("failed", executor, outcome.container,
                        f"no Ray node could start here: {outcome.failure.message}")
        if counts[executor] >= limit:
            self._given_up.add(executor)
            self._event("failed", executor, outcome.container,
                        f"gave up starting a Ray node here after {limit} tries "
                        f"(last: {outcome.status}); the cluster stays a node short")

    def close(self) -> None:
        """Stop keeping (idempotent): cancel a start under way and wait for the thread."""
        self._closed.set()
        self._stop.set()
        if self._thread is threading.current_thread():
            return
        # Cancel until the thread ends: a job submitted just after one cancel is not
        # cancelled by it.
        while self._thread.is_alive():
            if self._starting.is_set():
                try:
                    self.sc.cancelJobGroup(self._group)
                except Exception as exc:  # the SparkContext is already stopped
                    logger.debug("Cancelling the node keeper's job: %s", exc)
            self._thread.join(1.0)
