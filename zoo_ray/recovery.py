"""Keeping a RayContext's cluster whole while it runs (runs on the driver, in threads).

:class:`Recovery` wires the loss watch (:mod:`zoo_ray.losses`: why YARN took an
executor) and the node keeper (:mod:`zoo_ray.healing`: a Ray node in each executor
Spark adds) to the cluster's nodes (:mod:`zoo_ray.nodes`), and handles what they
cannot: the loss of the head's executor (a new cluster in the executors there are)
and the end of the Spark application (the cluster is gone for good). Every step is
recorded as a :class:`~zoo_ray.healing.ClusterEvent`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import Any

from . import spark_internals
from .driver_guard import disconnect, refuse_drivers, watch_driver_calls
from .errors import RayNodeStartError, ZooRayError
from .healing import EventLog, NodeKeeper
from .host import wait_until
from .kerberos import driver_credentials
from .losses import ExecutorLoss, LossWatch
from .memory import RAY_MEMORY_CONF, container_mib, format_mib
from .nodes import ClusterNodes, RunningCluster
from .options import RayOptions
from .scaler import Scaler, ScaleStatus
from .yarn import ResourceManager

__all__ = ["Recovery"]

logger = logging.getLogger(__name__)

_REBUILDING = ("zoo_ray is starting a new Ray cluster; retry in a few seconds "
               "(RayContext.events() says when it runs). ObjectRefs and actor handles "
               "from before are void.")


#: How long YARN's report may take to say how an application ended once its SparkContext
#: stopped under the driver.
_FINAL_REPORT_WAIT_S = 15.0


def _ended(report: dict[str, Any]) -> dict[str, Any] | None:
    """``report`` if YARN says how the application ended, else None."""
    return report if report.get("finalStatus", "UNDEFINED") != "UNDEFINED" else None


class Recovery:
    """Watch a running cluster's executors and heal it; say why when it cannot.

    Parameters
    ----------
    sc : pyspark.SparkContext
    options : RayOptions
    nodes : ClusterNodes
        The cluster's nodes, started: a rebuild stops and starts them again.
    driver_cores : int
        CPUs of the gateway's node, which a rebuild starts again too.
    keeper : type
        What keeps a node in each executor (:class:`~zoo_ray.healing.NodeKeeper`).
    watch : type
        What says why an executor was lost (:class:`~zoo_ray.losses.LossWatch`).
    """

    def __init__(self, sc: Any, options: RayOptions, nodes: ClusterNodes, driver_cores: int,
                 keeper: type[NodeKeeper] = NodeKeeper,
                 watch: type[LossWatch] = LossWatch) -> None:
        self.sc = sc
        self._keeper_class = keeper
        self._watch_class = watch
        self.options = options
        self.nodes = nodes
        self.driver_cores = driver_cores
        self.events = EventLog()
        #: Why the cluster is gone for good, once it is.
        self.lost: str | None = None
        self._refused_address: str | None = None
        self._loss_watch: LossWatch | None = None
        self._keeper: NodeKeeper | None = None
        self._scaler: Scaler | None = None
        #: Executors an elastic cluster gave back to YARN (their nodes ended on purpose).
        self.released: set[str] = set()
        # Read while the SparkContext runs: it is asked for when Spark has ended.
        self._credentials = driver_credentials(sc.getConf())

    def start(self, cluster: RunningCluster) -> None:
        """Watch the executors and keep a node in each (not in local mode, whose one
        executor is the driver's JVM).

        Parameters
        ----------
        cluster : RunningCluster
            The cluster :meth:`ClusterNodes.start <zoo_ray.nodes.ClusterNodes.start>`
            brought up.
        """
        if self.options.is_local:
            return
        sizes = executor_sizes(self.sc.getConf(), self.options.object_store_memory)
        self._loss_watch = self._watch_class(self.sc, cluster.containers(), sizes)
        watch_driver_calls()
        self._keep(cluster)

    def losses(self) -> list[ExecutorLoss]:
        """The executors lost since :meth:`start`, and why (oldest first)."""
        return self._loss_watch.losses if self._loss_watch is not None else []

    def close(self) -> None:
        """Stop watching and keeping (idempotent); a rebuild under way ends first."""
        # A rebuild under way ends first, and may have started the keeper (and the scaler)
        # of its cluster.
        while self._keeper is not None or self._scaler is not None:
            scaler, keeper = self._scaler, self._keeper
            if scaler is not None:
                scaler.close()
                if self._scaler is scaler:
                    self._scaler = None
            if keeper is not None:
                keeper.close()
                if self._keeper is keeper:
                    self._keeper = None
        if self._loss_watch is not None:
            self._loss_watch.close()

    def release(self) -> None:
        """The cluster is stopped: a ``ray.init()`` to its address is refused no more."""
        if self._refused_address:
            refuse_drivers(self._refused_address, None)
            self._refused_address = None

    def _keep(self, cluster: RunningCluster) -> None:
        wanted = self.options.num_ray_nodes
        keeper = self._keeper = self._keeper_class(
            self.sc, self.nodes.plan(cluster.head, wanted), wanted, list(cluster.nodes),
            self._joined, self._rebuild, self._spark_stopped, self.events)
        if self.options.scale is not None:
            self._scaler = Scaler(self.sc, self.options.scale, keeper, self._executor_nodes,
                                  cluster.address, self._released, self.events)

    def _executor_nodes(self) -> list[Any]:
        current = self.nodes.current
        return list(current.nodes) if current is not None else []

    def scale_status(self) -> ScaleStatus | None:
        """An elastic cluster's nodes, what it asked of YARN and what waits (None: fixed)."""
        return self._scaler.status if self._scaler is not None else None

    def _released(self, executor_id: str) -> None:
        """An elastic cluster gives ``executor_id`` back: its end is no loss."""
        self.released.add(executor_id)
        if self._keeper is not None:
            self._keeper.release(executor_id)
        if self._loss_watch is not None:
            self._loss_watch.released.add(executor_id)

    def _joined(self, node: Any) -> None:
        """A node the keeper started in a new executor: part of the cluster from now on."""
        self.nodes.join(node)
        if self._loss_watch is not None:
            self._loss_watch.containers[node.executor_id] = node.container

    def _rebuild(self) -> None:
        """The head's executor is gone: start a new cluster in the executors there are.

        Runs in the keeper's thread, as the keeper's Spark jobs (close() cancels them).
        Ray aborts a driver that cannot reach its GCS for long, so this driver
        disconnects first; its next Ray call connects to the new head. Meanwhile a Ray
        call raises ClusterLostError saying the cluster is being rebuilt.
        """
        keeper = self._keeper
        assert keeper is not None, "called by the running keeper"
        seen = time.monotonic()
        scaler, self._scaler = self._scaler, None
        if scaler is not None:  # it would look at the lost head's GCS until the new one runs
            scaler.close()
        old = os.environ.get("RAY_ADDRESS", "")
        refuse_drivers(old, f"the head's executor was lost and {_REBUILDING}")
        try:
            disconnect(f"the head's executor was lost and {_REBUILDING}",
                       f"the head's executor was lost while this ray.get waited, and "
                       f"the result with it; {_REBUILDING}")
            cluster = self._start_again(keeper)
        except Exception as exc:
            if keeper.closing:
                return  # stop() cancelled the rebuild and stops what it left
            if spark_internals.is_stopped(self.sc):  # the head went with the application
                self._spark_stopped()
                return
            with contextlib.suppress(Exception):
                self.nodes.stop(forget_address=False)
            self._lose(f"no new Ray cluster could start after the loss of the head: {exc}. "
                       "Call stop() and init() on the RayContext again.")
            return
        finally:
            # Refused for good by _lose, or void now: a new address, or stop() takes over.
            if keeper.closing or os.environ.get("RAY_ADDRESS") != old:
                refuse_drivers(old, None)
        if keeper.closing:
            return
        if self._loss_watch is not None:
            self._loss_watch.containers.update(cluster.containers())
        self._keep(cluster)
        head, wanted = cluster.nodes[0], len(cluster.nodes)
        more = (f"; a node starts in each executor Spark adds, up to {self.options.num_ray_nodes}"
                if wanted < self.options.num_ray_nodes else "")
        self.events.add("rebuilt", head.executor_id, head.container,
                        f"a new Ray cluster of {wanted} executor nodes runs, its head here, "
                        f"{time.monotonic() - seen:.1f}s after the loss was seen; the driver "
                        f"connects to it at its next Ray call{more}")

    def _start_again(self, keeper: NodeKeeper) -> RunningCluster:
        """Stop what is left of the cluster and start a new one in the executors Spark has
        (waiting for one if none is left)."""
        timeout = self.options.init_timeout
        with keeper.jobs("zoo_ray: a new Ray cluster after the loss of the head"):
            self.nodes.stop(forget_address=False)
            # With one executor, none is left until Spark's replacement registers.
            wait_until(lambda: keeper.closing or
                       spark_internals.registered_executors(self.sc) > 0, timeout)
            executors = spark_internals.registered_executors(self.sc)
            wanted = min(self.options.num_ray_nodes, executors)
            if wanted < 1:
                raise RayNodeStartError(f"no executor registered within {timeout:.0f}s"
                                        " to start a Ray cluster in")
            return self.nodes.start(wanted, executors * self.options.executor_cores,
                                    self.driver_cores, progress=False,
                                    closing=lambda: keeper.closing)

    def _spark_stopped(self) -> None:
        """The SparkContext stopped from the JVM's side, and every executor with it."""
        app_id = self.nodes.app_id
        diagnostics = "the SparkContext stopped"
        try:
            rm = ResourceManager.of_driver(5.0, self._credentials)
            # Stopped from the JVM's side by the watch of an AM in the driver
            # (zoo_ray.app_master_watch), the application ends a moment later, when the
            # AM unregisters with Spark's reason: wait for YARN's final word.
            ended = wait_until(lambda: _ended(rm.app(app_id)), _FINAL_REPORT_WAIT_S)
            report = ended or rm.app(app_id)
            diagnostics = (f"YARN: {report.get('finalStatus', '?')}, "
                           f"{report.get('diagnostics') or 'no diagnostics'}")
        except (ZooRayError, OSError, KeyError) as exc:
            logger.debug("no diagnostics for %s: %s", app_id, exc)
        why = (f"Spark ended application {app_id} ({diagnostics.strip()}), and with "
               "it every executor and Ray node. Call sc.stop() (it stops this RayContext "
               "too), then start again with init_spark_on_yarn and a new RayContext.")
        disconnect(why, why)
        with contextlib.suppress(Exception):
            self.nodes.stop(forget_address=False)  # the gateway's node; the rest is gone
        self._lose(why)

    def _lose(self, why: str) -> None:
        """The cluster is gone for good: ``node_status()`` and the driver's next Ray call
        raise ClusterLostError saying ``why``."""
        self.lost = why
        self._refused_address = os.environ.get("RAY_ADDRESS")
        if self._refused_address:
            refuse_drivers(self._refused_address, why)
        self.events.add("cluster lost", "", "", why)


def executor_sizes(conf: Any, object_store_memory: int | None) -> dict[str, str]:
    """An executor's sizes as the user set them, which a lost executor's message quotes."""
    ray_memory = conf.get(RAY_MEMORY_CONF)
    sizes = {"executor_memory": conf.get("spark.executor.memory", "1g"),
             "extra_executor_memory_for_ray": (format_mib(int(ray_memory)) if ray_memory
                                               else "not set"),
             "object_store_memory": (format_mib(object_store_memory) if object_store_memory
                                     else "Ray's default")}
    container = container_mib(conf)
    if container is not None:
        sizes["container"] = f"{container} MB"
    return sizes
