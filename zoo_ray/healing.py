"""Keeping the Ray cluster at its size: a Ray node in each executor Spark adds in place of a
lost one.

Runs in the driver's process: a :class:`NodeKeeper` thread beside a running RayContext.
Every two seconds it reads which executors are registered with the driver (Spark's status
store, in the driver's own memory). When fewer of them run a Ray node than the RayContext
asked for, and Spark has added executors that run none (its replacements for lost ones), it
runs one short Spark task preferring each such executor
(:func:`~zoo_ray.executor_tasks.join_cluster`): the task starts a worker node there, which
joins the head, and returns, so healing holds no task slot once the node is up. A task that
lands in an executor already running a node starts nothing; the next look asks again.

Not healed: the loss of the head's executor, which takes the cluster's GCS with it. That
is recorded as an event and logged; the next Ray call fails.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from . import spark_internals
from .executor_tasks import StartPlan, join_cluster
from .protocol import NodeInfo, NodeOutcome

__all__ = ["ClusterEvent", "NodeKeeper", "choose_targets"]

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
        new executor joined the head), "failed" (a node could not be started there) or
        "head lost".
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
    """

    def __init__(self, sc: Any, plan: StartPlan, wanted: int, nodes: list[NodeInfo],
                 on_join: Callable[[NodeInfo], None]) -> None:
        self.sc = sc
        self.plan = plan
        self.wanted = wanted
        self.on_join = on_join
        self._nodes = list(nodes)
        self._head = nodes[0]
        self._head_lost = False
        self._tries: dict[str, int] = {}
        self._misplaced: dict[str, int] = {}
        self._given_up: set[str] = set()
        self._events: list[ClusterEvent] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._starting = threading.Event()  # a start job runs: close() cancels it
        self._group = f"zoo_ray-heal-{plan.base.app_id}"
        self._thread = threading.Thread(target=self._run, name="zoo_ray-node-keeper",
                                        daemon=True)
        self._thread.start()

    @property
    def events(self) -> list[ClusterEvent]:
        """What happened to the cluster since it started, oldest first."""
        with self._lock:
            return list(self._events)

    def _event(self, kind: str, executor_id: str, container: str, message: str) -> None:
        with self._lock:
            self._events.append(ClusterEvent(time.time(), kind, executor_id, container, message))
        log = logger.info if kind == "joined" else logger.warning
        log("Executor %s (%s): %s", executor_id, container or "no Ray node", message)

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self.heal_once()
            except Exception as exc:  # the SparkContext is stopping: nothing more to keep
                if spark_internals.is_stopped(self.sc) or self._stop.is_set():
                    return
                logger.warning("Could not check the Ray nodes' executors: %s", exc)

    def heal_once(self) -> None:
        """Look once; start nodes in new executors if the cluster is short of nodes."""
        live = spark_internals.live_executors(self.sc)
        self._note_losses(live)
        if self._head_lost:
            return
        targets = choose_targets(live, self._nodes, self.wanted, self._given_up)
        if targets:
            self._start_in(targets)

    def _note_losses(self, live: dict[str, str]) -> None:
        for node in [n for n in self._nodes if n.executor_id not in live]:
            self._nodes.remove(node)
            if node is self._head:
                self._head_lost = True
                self._event("head lost", node.executor_id, node.container,
                            "the head's executor is gone, and with it the cluster's GCS: every "
                            "Ray node, actor and object is lost and the next Ray call fails. "
                            "Stop and init() the RayContext again.")
            else:
                self._event("lost", node.executor_id, node.container,
                            "its Ray node, with the actors and objects it held, is gone; a node "
                            "starts in the executor Spark adds in its place")

    def _start_in(self, targets: list[tuple[str, str]]) -> None:
        rdd = spark_internals.rdd_with_locations(
            self.sc, [(executor, [f"executor_{host}_{executor}"]) for executor, host in targets])
        self._starting.set()
        try:
            if self._stop.is_set():  # close() ran before it could see a job to cancel
                return
            with spark_internals.job_group(self.sc, self._group,
                                           "zoo_ray: a Ray node for each new executor"):
                outcomes: list[NodeOutcome] = rdd.mapPartitions(
                    partial(join_cluster, self.plan)).collect()
        finally:
            self._starting.clear()
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
