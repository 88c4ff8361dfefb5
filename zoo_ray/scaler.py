"""Growing and shrinking an elastic RayContext's cluster with Ray's demand (runs on the
driver, a thread beside the node keeper).

Every two seconds a :class:`Scaler` reads the GCS's resource state: the demand no node can
place (tasks, actors, placement groups' bundles) and how long each node has been idle.
The GCS keeps that state for Ray's autoscaler whether one runs or not; zoo_ray runs none.
:func:`~zoo_ray.scaling_plan.plan` decides, and the scaler acts through Spark:

- more executors: Spark's target raised (``requestTotalExecutors``); the node keeper
  starts a node in each new executor, as it does for a replacement;
- an idle node given back: drained first (``drain_node`` with the idle-termination
  reason, which the raylet refuses unless the node runs nothing and holds no primary
  copy of an object, so nothing is lost), then its executor killed (``killExecutors``,
  which lowers Spark's target so YARN does not replace it).
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import spark_internals
from .errors import ZooRayError
from .healing import EventLog, NodeKeeper
from .kerberos import driver_credentials
from .memory import container_mib
from .options import ScaleRange
from .protocol import NodeInfo
from .scaling_plan import ScalePlan, plan, read_state
from .yarn import ResourceManager, why_not_granted

__all__ = ["ScaleStatus", "Scaler"]

logger = logging.getLogger(__name__)

_POLL_S = 2.0
_GCS_TIMEOUT_S = 5.0
#: Executors asked for longer than this (an executor's start and a node's, with room to
#: spare) are demand YARN does not meet, and the user is told why.
_GRANT_WAIT_S = 60.0
#: How long the ResourceManager's word on the queue and the NodeManagers is reused.
_YARN_STATE_TTL_S = 30.0
_RM_SILENT = "the ResourceManager did not say why"


@dataclass(frozen=True)
class ScaleStatus:
    """An elastic cluster now: its nodes, the executors asked of YARN, what waits and why.

    Parameters
    ----------
    min_nodes, max_nodes : int
        The range.
    nodes : int
        Executors' nodes running.
    target : int
        Executors asked of Spark (and so of YARN) in all.
    unmet : int
        Pending requests beyond ``max_nodes``.
    waiting : str
        Why demand waits, for the user ("" when nothing does).
    """

    min_nodes: int
    max_nodes: int
    nodes: int
    target: int
    unmet: int
    waiting: str

    def line(self) -> str:
        """One line for the card and the log."""
        asked = self.target - self.nodes
        more = f", {asked} more asked of YARN" if asked > 0 else ""
        why = f"; {self.waiting}" if self.waiting else ""
        return (f"elastic, {self.min_nodes} to {self.max_nodes} nodes: {self.nodes} "
                f"running{more}{why}")


class Scaler:
    """Keep an elastic cluster between its bounds, following Ray's demand (a thread).

    Parameters
    ----------
    sc : pyspark.SparkContext
    scale : ScaleRange
        The bounds and the idle timeout.
    keeper : NodeKeeper
        Starts a node in each executor Spark adds; told how many to keep.
    nodes : callable
        The executors' nodes now, head first.
    gcs_address : str
        The head's GCS, ``ip:port``.
    on_release : callable
        Called with an executor's id before it is given back (its end is no loss).
    events : EventLog
        Where scaling up and giving back are recorded.
    """

    def __init__(self, sc: Any, scale: ScaleRange, keeper: NodeKeeper,
                 nodes: Callable[[], Sequence[NodeInfo]], gcs_address: str,
                 on_release: Callable[[str], None], events: EventLog) -> None:
        self.sc = sc
        self.scale = scale
        self.keeper = keeper
        self.nodes = nodes
        self.gcs_address = gcs_address
        self.on_release = on_release
        self.events = events
        #: The last plan (None before the first look): what waits, and why.
        self.last: ScalePlan | None = None
        self.status = ScaleStatus(scale.min_nodes, scale.max_nodes, 0, 0, 0, "")
        self._client: Any = None
        self._short_since: float | None = None
        self._grown_at = float("-inf")
        self._yarn_state: tuple[float, str] | None = None
        self._nodeless: set[str] = set()
        self._told: tuple[int, int] | None = None
        self._given_back: set[str] = set()
        self._credentials = driver_credentials(sc.getConf())
        self._container_mib = container_mib(sc.getConf())
        self._cores = int(sc.getConf().get("spark.executor.cores", "1"))
        self._target = self._settle()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoo_ray-scaler", daemon=True)
        self._thread.start()

    def _settle(self) -> int:
        """Give back the executors that run no node (init() started ``min_ray_nodes``);
        Spark's target, which starts empty under static allocation, is then set."""
        live = spark_internals.live_executors(self.sc)
        with_node = {node.executor_id for node in self.nodes()}
        spare = sorted(set(live) - with_node - spark_internals.executors_in_use(self.sc))
        spark_internals.request_total_executors(self.sc, len(live))
        if spare:
            for executor in spare:
                self._given_back.add(executor)
                self.on_release(executor)
            spark_internals.kill_executors(self.sc, spare)
            logger.info("Elastic cluster: gave back %d executors that run no Ray node (%s)",
                        len(spare), ", ".join(spare))
            # killExecutors lowered Spark's target by its own count: the total once more.
            spark_internals.request_total_executors(self.sc, len(live) - len(spare))
        self.keeper.wanted = len(live) - len(spare)
        return self.keeper.wanted

    def _gcs(self) -> Any:
        if self._client is None:
            from ray._raylet import GcsClient  # type: ignore[attr-defined]  # Cython

            self._client = GcsClient(address=self.gcs_address)
        return self._client

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self.step()
            except Exception as exc:  # a failed look must not end the scaler
                if not self._stop.is_set():
                    logger.warning("Elastic cluster: could not look at Ray's demand: %s", exc)

    def _by_node_id(self, client: Any) -> dict[str, NodeInfo]:
        """The executors' live nodes by Ray node id (hex), matched on their temp dirs. A
        node whose executor Spark has lost, or that was given back, is not live, whatever
        the GCS says: its health checks take seconds to fail, Spark knows at once, and a
        killed executor ends a moment after it is asked to."""
        started = list(self.nodes())
        live = set(spark_internals.live_executors(self.sc)) - self._given_back
        found = {}
        for node_id, info in client.get_all_node_info(timeout=_GCS_TIMEOUT_S).items():
            node = next((n for n in started
                         if info.object_store_socket_name.startswith(n.temp_dir)), None)
            if node is not None and info.state == 0 and node.executor_id in live:  # ALIVE
                found[node_id.hex()] = node
        return found

    def step(self) -> ScalePlan:
        """Look once and act on what :func:`~zoo_ray.scaling_plan.plan` says."""
        client = self._gcs()
        loads, demand = read_state(client.get_cluster_resource_state(timeout_s=_GCS_TIMEOUT_S))
        ours = self._by_node_id(client)
        head = next(iter(self.nodes()), None)
        head_id = next((i for i, node in ours.items() if node is head), "")
        nodes = [load for load in loads if load.node_id in ours]
        shape = next((n.total for n in nodes if n.status in ("RUNNING", "IDLE")), None)
        if shape is None:
            raise RuntimeError("no executor node runs")
        starting = max(0, self._target - len(nodes))
        decided = plan(nodes, demand, shape, head_node=head_id,
                       min_nodes=self.scale.min_nodes, max_nodes=self.scale.max_nodes,
                       idle_timeout_s=self.scale.idle_timeout_s, starting=starting)
        if self.last is None or decided.reason != self.last.reason:
            logger.info("Elastic cluster: %s", decided.reason)
            for node in nodes:
                logger.debug("Node %s: %s, idle %.0f s, busy with %s", node.node_id,
                             node.status, node.idle_s, list(node.busy))
        self.last = decided
        # What the plan keeps before its drains (those lower Spark's target one by one).
        kept = decided.target_nodes + len(decided.drain)
        if kept > self._target:
            self._grow(decided, kept)
        elif kept < self._target:
            self._withdraw(kept)
        # Ray's idle is not Spark's: an executor running Spark tasks or holding its blocks
        # (a checkpointed to_spark DataFrame, a cache) stays.
        in_use = spark_internals.executors_in_use(self.sc) if decided.drain else set()
        for node_id in decided.drain:
            if ours[node_id].executor_id not in in_use:
                self._give_back(client, node_id, ours[node_id])
        self._give_back_spare()
        self._tell(decided, len(nodes))
        return decided

    def _give_back_spare(self) -> None:
        """Give back executors that run no node and will not get one: YARN started them
        after Spark's target was lowered (a request is withdrawn, not a container), or the
        node keeper gave up on starting a node in them. Only while the node keeper starts
        none, and seen on two looks first; an executor that ever had a node (restarting,
        the head's) is never spare."""
        with_node = {node.executor_id for node in self.nodes()}
        live = set(spark_internals.live_executors(self.sc)) - self._given_back
        failed = live & self.keeper.given_up
        settled = (not self.keeper.starting
                   and self.keeper.wanted <= len(with_node & live) + len(failed))
        nodeless = live - with_node if settled else set()
        if nodeless:  # Spark may have put tasks or blocks on one already: it stays
            nodeless -= spark_internals.executors_in_use(self.sc)
        spare, self._nodeless = sorted(nodeless & self._nodeless), nodeless
        if spare:
            for executor in spare:
                self._given_back.add(executor)
                self.on_release(executor)
            spark_internals.kill_executors(self.sc, spare)
            # A failed one counts in the target unless a withdrawal left it out already;
            # one started after a withdrawal does not. Demand that still wants a node asks
            # again.
            counted = max(0, self._target - len(with_node & live))
            self._target -= min(len(failed & set(spare)), counted)
            self.keeper.wanted = self._target
            spark_internals.request_total_executors(self.sc, self._target)
            logger.info("Elastic cluster: gave back executors %s, which run no node: started "
                        "after their request was withdrawn, or no node could start there",
                        ", ".join(spare))

    def _tell(self, decided: ScalePlan, running: int) -> None:
        """Say what waits and why, in :attr:`status` and (once per change) the log."""
        now, short = time.monotonic(), self._target - running
        self._short_since = (self._short_since or now) if short > 0 else None
        if self._short_since is None:
            self._yarn_state = None  # a new wait asks the ResourceManager afresh
        waiting = ""
        if decided.unmet:
            waiting = (f"max_ray_nodes={self.scale.max_nodes} reached: {decided.unmet} "
                       "pending requests wait")
        elif self._short_since is not None and now - self._short_since > _GRANT_WAIT_S:
            waiting = (f"waiting for YARN: {short} executor{'s' * (short > 1)} asked for "
                       f"{now - self._short_since:.0f} s ago; {self._yarn_says()}")
        told = (decided.unmet, short) if waiting else None
        if told is not None and told != self._told:  # once per change, not every look
            logger.warning("Elastic cluster: %s", waiting)
        self._told = told
        self.status = ScaleStatus(self.scale.min_nodes, self.scale.max_nodes, running,
                                  self._target, decided.unmet, waiting)

    def _yarn_says(self) -> str:
        """Why YARN grants no executor, from the ResourceManager: the application's queue at
        its maximum, or no NodeManager with room for one; reused for a while."""
        now = time.monotonic()
        if self._yarn_state is None or now - self._yarn_state[0] > _YARN_STATE_TTL_S:
            said = self._ask_yarn()
            # A failed ask is asked again at the next look, not reused.
            self._yarn_state = (now, said) if said != _RM_SILENT else None
            return said
        return self._yarn_state[1]

    def _ask_yarn(self) -> str:
        try:
            rm = ResourceManager.of_driver(_GCS_TIMEOUT_S, self._credentials)
            return why_not_granted(rm, self.sc.applicationId, self._container_mib, self._cores)
        except (ZooRayError, OSError, KeyError, TypeError, ValueError) as exc:
            logger.debug("No queue state: %s", exc)
            return _RM_SILENT

    def _grow(self, decided: ScalePlan, kept: int) -> None:
        spark_internals.request_total_executors(self.sc, kept)
        more = kept - self._target
        self._target = self.keeper.wanted = kept
        self._grown_at = time.monotonic()
        self.events.add("scaled", "", "", f"asked YARN for {more} more executor"
                        f"{'s' * (more > 1)} ({self._target} in all): {decided.reason}")

    def _withdraw(self, kept: int) -> None:
        """Executors asked for and not needed now (the demand went, or a lost executor's
        node is not wanted again) are asked for no more; within the idle timeout of the last
        growth not yet, so demand that comes and goes does not ask and withdraw over and
        over; nor while a node starts: it may be what took the demand."""
        if (self.keeper.starting
                or time.monotonic() - self._grown_at < self.scale.idle_timeout_s):
            return
        spark_internals.request_total_executors(self.sc, kept)
        self._target = self.keeper.wanted = kept

    def _give_back(self, client: Any, node_id: str, node: NodeInfo) -> None:
        from ray.core.generated import autoscaler_pb2

        reason: Any = autoscaler_pb2
        accepted, why = client.drain_node(
            node_id, reason.DrainNodeReason.Value("DRAIN_NODE_REASON_IDLE_TERMINATION"),
            f"zoo_ray: idle for {self.scale.idle_timeout_s:g} s", 0, _GCS_TIMEOUT_S)
        if not accepted:  # it got work since the look: keep it
            logger.info("Elastic cluster: node of executor %s not drained: %s",
                        node.executor_id, why)
            return
        self._given_back.add(node.executor_id)
        self.on_release(node.executor_id)
        if not spark_internals.kill_executors(self.sc, [node.executor_id]):
            logger.warning("Elastic cluster: Spark did not kill executor %s (drained); "
                           "it is given back when it ends", node.executor_id)
        self._target = self.keeper.wanted = self._target - 1
        # killExecutors lowered Spark's target by its own count: set the total again so
        # the two never drift apart.
        spark_internals.request_total_executors(self.sc, self._target)

    def close(self) -> None:
        """Stop scaling (idempotent); the executors stay as they are."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
