"""The Ray nodes of one RayContext: started, waited for, stopped (runs on the driver).

A one-task Spark job places the head and fixes its address; a barrier job over every
task slot then starts a RayManager (:mod:`zoo_ray.manager`) in each elected executor,
while the gateway's node, which the driver attaches to, starts as a child of this
process: all nodes start at once. What runs inside those Spark tasks lives in
:mod:`zoo_ray.executor_tasks`; this module only submits the jobs and reads their typed
results (:mod:`zoo_ray.protocol`). The tasks return as soon as their node is up: Ray
holds no Spark task slot. A start ends when every node has registered with the head;
its :class:`RunningCluster` record is what ``RayContext.address_info`` is derived from.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import ray

from . import spark_internals
from .applications import AppRecord
from .auth import DRIVER_GCS_WAIT_S, GCS_WAIT_ENV
from .driver_guard import attach_drivers_to, node_table
from .errors import RayContextError, RayNodeStartError
from .executor_tasks import StartPlan, place_head, start_nodes, stop_manager
from .host import node_ip, wait_until
from .leftovers import driver_work_dir
from .options import RayOptions
from .progress import JobProgress
from .protocol import (
    HeadPlacement,
    NodeFailure,
    NodeInfo,
    NodeOutcome,
    await_manager,
    spawn_manager,
)

__all__ = ["GATEWAY", "ClusterNodes", "GatewayNode", "RunningCluster", "raise_failures",
           "started_nodes", "wait_registered"]

logger = logging.getLogger(__name__)

#: Where the gateway's node runs, as named in errors and on the card.
GATEWAY = "this host (the driver's node)"
_STOP_GRACE_S = 30.0


def raise_failures(failures: list[NodeFailure]) -> None:
    """Raise one typed error naming every node that failed, with its log tail.

    Raises
    ------
    RayContextError
        A node's object store did not fit in its ``/dev/shm`` (names the setting to lower),
        or a user's root for its directories is missing or not writable on its host.
    RayNodeStartError
        Any other failure, every node named with its log's tail.
    """
    if not failures:
        return
    dirs = [f for f in failures if f.kind == "dirs"]
    if dirs:
        named = "\n".join(f"{f.container}: {f.message}" for f in dirs)
        raise RayContextError(
            f"{len(dirs)} Ray node(s) cannot keep their files where asked; everything "
            "started was stopped. Create the directory, writable by that user, on every host "
            "the executors run on and on the gateway, or pass another temp_dir or "
            f"object-spilling-directory (or none: the containers' directories).\n{named}")
    for failure in failures:
        if failure.kind == "shm":
            setting, where = (("driver_object_store_memory", "the gateway")
                              if failure.container == GATEWAY
                              else ("object_store_memory", "the nodes"))
            raise RayContextError(
                f"Executor {failure.container}: {failure.message}. Lower {setting} below the "
                f"free /dev/shm of {where}, or ask your administrators for a larger /dev/shm."
            )
    lines = [f"{f.container}: {f.message}\n{f.log_tail}" for f in failures]
    raise RayNodeStartError(
        f"{len(failures)} Ray node(s) failed to start; everything started was stopped."
        " Executor logs (`zoo-ray logs <application id>`) hold ray_manager.log and "
        "ray_start.log.\n" + "\n".join(lines)
    )


def started_nodes(outcomes: list[NodeOutcome], wanted: int) -> list[NodeInfo]:
    """The nodes the start job brought up, head first.

    Raises
    ------
    RayContextError, RayNodeStartError
        A node failed (:func:`raise_failures`), fewer than ``wanted`` came up, or none
        is the head.
    """
    raise_failures([o.failure for o in outcomes if o.failure is not None])
    nodes = sorted((o.node for o in outcomes if o.node is not None),
                   key=lambda node: node.role != "head")
    if len(nodes) < wanted or nodes[0].role != "head":
        raise RayNodeStartError(
            f"Only {len(nodes)} of {wanted} executors could take a Ray node (lost "
            "executors?); everything started was stopped. Retry, or lower num_ray_nodes."
        )
    return nodes


@dataclass(frozen=True)
class RunningCluster:
    """A Ray cluster as started: its head, the executors' nodes, the gateway's node.

    ``ray_info`` is Ray's own address info for the driver's node (what ``ray.init()``
    returns); ``node_ids`` are the nodes registered when the start ended.
    """

    head: HeadPlacement
    nodes: tuple[NodeInfo, ...]
    gateway: NodeInfo
    ray_info: dict[str, Any] = field(default_factory=dict)
    node_ids: tuple[str, ...] = ()

    @property
    def address(self) -> str:
        """The head's GCS address, ``ip:port``."""
        return self.head.address

    @property
    def dashboard_url(self) -> str | None:
        """The head's dashboard; None without ``include_webui`` (Ray reports the dashboard
        process the head runs anyway, which serves no UI then)."""
        return self.nodes[0].dashboard_url

    def containers(self) -> dict[str, str]:
        """Each executor node's container, by Spark executor id."""
        return {node.executor_id: node.container for node in self.nodes}

    def joined(self, node: NodeInfo) -> RunningCluster:
        """A copy of this cluster with ``node`` (started in an executor Spark added) in it."""
        return dataclasses.replace(self, nodes=(*self.nodes, node))

    def address_info(self) -> dict[str, Any]:
        """Ray's address info plus zoo_ray's keys, which Ray does not use: ``nodes``,
        ``gateway_node`` and ``node_ids``."""
        return {**self.ray_info, "address": self.address,
                "nodes": [dataclasses.asdict(node) for node in self.nodes],
                "gateway_node": dataclasses.asdict(self.gateway),
                "node_ids": list(self.node_ids), "webui_url": self.dashboard_url}


class GatewayNode:
    """The Ray node on the gateway that the driver attaches to: a RayManager child of
    this process, in a work dir of its own (removed at :meth:`stop`).

    Parameters
    ----------
    options : RayOptions
    app_id : str
        The Spark application the node belongs to.
    token : str
        The cluster's auth token.
    head : HeadPlacement
        The head the node joins once its GCS is up.
    driver_cores : int
        CPUs the node offers to Ray tasks.
    """

    def __init__(self, options: RayOptions, app_id: str, token: str, head: HeadPlacement,
                 driver_cores: int) -> None:
        self.work_dir = driver_work_dir()
        # The driver dies with the raylet it is attached to: both wait as long for the GCS.
        env = {GCS_WAIT_ENV: os.environ.get(GCS_WAIT_ENV, str(DRIVER_GCS_WAIT_S)),
               **options.env}
        try:
            spec = dataclasses.replace(
                options.base_spec(app_id, token), num_cpus=driver_cores,
                head_address=head.address, env=env,
                # The gateway's address on the network that faces the head, which need
                # not be the one on its default route.
                node_ip=node_ip(toward=head.ip), memory=None,
                object_store_memory=options.driver_object_store_memory,
                work_dir=self.work_dir.name, log_dir=os.path.join(self.work_dir.name, "logs"),
                watch_pid=os.getpid())
            self.process: subprocess.Popen[str] | None = spawn_manager(spec)
        except BaseException:
            # Nobody holds this node yet to stop it: leave no work dir behind.
            self.work_dir.cleanup()
            raise

    def wait(self, timeout: float) -> NodeInfo:
        """The node, once up.

        Raises
        ------
        RayContextError, RayNodeStartError
            It did not come up within ``timeout`` seconds; the message holds its log's tail.
        """
        assert self.process is not None, "waited for before stop()"
        answer = await_manager(self.process, timeout)
        if isinstance(answer, NodeFailure):
            answer.container = GATEWAY
            raise_failures([answer])
        assert isinstance(answer, NodeInfo)
        return answer

    def terminate(self) -> None:
        """Ask the manager to stop its node (it stops with the executors' nodes)."""
        if self.process is not None:
            self.process.terminate()

    def stop(self) -> None:
        """Wait for the manager to end (killing it after a grace period); remove the work
        dir. Idempotent."""
        process, self.process = self.process, None
        if process is not None:
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
            process.terminate()
            try:
                process.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("The gateway's Ray node (pid %d) did not stop in time; killing it",
                               process.pid)
                process.kill()
                process.wait()
        self.work_dir.cleanup()


def wait_registered(address: str, wanted: int, timeout: float, verbose: bool,
                    closing: Callable[[], bool]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Connect to the head at ``address`` until ``wanted`` nodes have registered.

    The driver is disconnected again on return and ``RAY_ADDRESS`` names the head, so its
    next Ray call (or the program's ``ray.init()``) joins the cluster.

    Parameters
    ----------
    address : str
        The head's GCS address, ``ip:port``.
    wanted : int
        Nodes to wait for, the gateway's included.
    timeout : float
        Seconds to wait.
    verbose : bool
        Show the Ray workers' output on the driver meanwhile.
    closing : callable
        Asked between slices of a second; true ends the wait (stop() during a rebuild).

    Returns
    -------
    tuple of (dict, tuple of str)
        Ray's address info for the driver's node, and the registered node ids.

    Raises
    ------
    RayNodeStartError
        They did not within ``timeout``, or ``closing()`` turned true meanwhile.
    """
    connected = ray.init(address=address, logging_level=logging.WARNING,
                         log_to_driver=verbose)
    # A RayContext (not Ray Client's context): it has the address info.
    ray_info = dict(connected.address_info)  # type: ignore[attr-defined]
    alive: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout

    def all_registered() -> bool:
        if closing():
            raise RayNodeStartError("stop() was called before every node registered")
        # One slice at a time: a stop() or the deadline is seen between them, also
        # when the new head does not answer (ray.nodes() would wait for it).
        try:
            nodes = node_table(timeout=min(1.0, deadline - time.monotonic()))
        except ray.exceptions.RpcError:
            return False
        alive[:] = [n for n in nodes if n["Alive"]]
        return len(alive) >= wanted

    registered = wait_until(all_registered, timeout)
    ray.shutdown()
    # Only now: a Ray call of the user's made meanwhile (in another thread, during a
    # rebuild) must not connect while this one is connected.
    os.environ["RAY_ADDRESS"] = address
    if not registered:
        raise RayNodeStartError(
            f"Only {len(alive)} of {wanted} Ray nodes registered with the head within "
            f"{timeout:.0f}s; everything started was stopped."
        )
    return ray_info, tuple(sorted(n["NodeID"] for n in alive))


class ClusterNodes:
    """Start and stop the Ray nodes of one application's RayContext.

    Parameters
    ----------
    sc : pyspark.SparkContext
    options : RayOptions
    app_id : str
        The Spark application (YARN's id): every node's manager is tagged with it.
    token : str
        The cluster's auth token, which every node's spec carries.
    """

    def __init__(self, sc: Any, options: RayOptions, app_id: str, token: str) -> None:
        self.sc = sc
        self.options = options
        self.app_id = app_id
        self.token = token
        #: The cluster as started, and as nodes joined it since; None until started.
        self.current: RunningCluster | None = None
        self._gateway: GatewayNode | None = None

    def plan(self, head: HeadPlacement, wanted: int) -> StartPlan:
        """What a start job in the executors needs to start up to ``wanted`` nodes that
        join ``head`` (the node keeper's jobs take it too)."""
        return StartPlan(self.options.base_spec(self.app_id, self.token), head, wanted,
                         self.options.init_timeout)

    def start(self, wanted: int, slots: int, driver_cores: int, progress: bool,
              closing: Callable[[], bool] = lambda: False) -> RunningCluster:
        """Start ``wanted`` executor nodes over ``slots`` task slots and the gateway's node
        with ``driver_cores`` CPUs, then wait until all have registered.

        Without ``progress`` the jobs run in the calling thread's job group (a rebuild's
        are the keeper's). What started stays running if this raises: :meth:`stop` stops it.

        Parameters
        ----------
        wanted : int
            Executor nodes to start, one per executor, the head among them.
        slots : int
            Task slots of the executors there are (the barrier job takes every one).
        driver_cores : int
            CPUs of the gateway's node.
        progress : bool
            Show a progress bar and run the jobs in a job group of their own.
        closing : callable
            Asked during the registration wait; true ends it with RayNodeStartError.

        Returns
        -------
        RunningCluster
            The cluster, every node registered; also :attr:`current` from now on.

        Raises
        ------
        RayContextError, RayNodeStartError
            A node did not come up; the message names its executor and its log's tail.
        """
        head = self._place_head()
        logger.info("Starting %d Ray nodes in the executors (the head in %s) and the "
                    "gateway's node", wanted, head.container)
        gateway = self._gateway = GatewayNode(self.options, self.app_id, self.token, head,
                                              driver_cores)
        plan = self.plan(head, wanted)
        if progress:
            group = f"zoo_ray-start-{self.app_id}-{secrets.token_hex(4)}"  # one per init()
            with spark_internals.job_group(self.sc, group, "zoo_ray: starting Ray nodes"), \
                    JobProgress(self.sc, group, slots, "starting Ray nodes", "task"):
                nodes = self._start_executor_nodes(plan, slots)
        else:
            nodes = self._start_executor_nodes(plan, slots)
        gateway_node = gateway.wait(self.options.init_timeout)
        attach_drivers_to(gateway_node.temp_dir)
        ray_info, node_ids = wait_registered(head.address, wanted + 1, self.options.init_timeout,
                                             self.options.verbose, closing)
        cluster = self.current = RunningCluster(head, tuple(nodes), gateway_node, ray_info,
                                                node_ids)
        self._record(cluster)
        return cluster

    def join(self, node: NodeInfo) -> RunningCluster:
        """Count ``node``, started in an executor Spark added, as part of the cluster.

        Returns
        -------
        RunningCluster
            The cluster with the node; also :attr:`current` from now on.
        """
        assert self.current is not None, "joined a started cluster"
        cluster = self.current = self.current.joined(node)
        self._record(cluster)
        return cluster

    def stop(self, forget_address: bool) -> None:
        """Disconnect this driver from Ray and stop every node, the gateway's included.

        :attr:`current` is None from then on, until the next :meth:`start`.

        Parameters
        ----------
        forget_address : bool
            Drop ``RAY_ADDRESS``. A rebuild keeps it: without it, a Ray call made
            meanwhile would start a Ray instance on the gateway instead of failing.
        """
        self.current = None
        if ray.is_initialized():
            ray.shutdown()
        if forget_address:
            os.environ.pop("RAY_ADDRESS", None)
        attach_drivers_to(None)
        gateway, self._gateway = self._gateway, None
        if gateway is not None:
            gateway.terminate()
        try:
            if not spark_internals.is_stopped(self.sc):
                self._stop_executor_nodes()
        finally:
            if gateway is not None:
                gateway.stop()

    def _place_head(self) -> HeadPlacement:
        job = self.sc.parallelize([0], 1).mapPartitions(partial(place_head, self.app_id))
        head: HeadPlacement = job.collect()[0]
        if head.has_node:
            raise RayContextError(
                f"Executor {head.container} still runs a Ray node of this application (an "
                "earlier stop() is still finishing). Retry init() in a minute, or restart the "
                "SparkContext."
            )
        return head

    def _start_executor_nodes(self, plan: StartPlan, slots: int) -> list[NodeInfo]:
        outcomes = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
            partial(start_nodes, plan)).collect()
        return started_nodes(outcomes, plan.wanted)

    def _stop_executor_nodes(self) -> None:
        # The slots there are now: a barrier job over more would wait (minutes) for
        # replacements of executors YARN took away or an elastic cluster gave back, whose
        # nodes are gone anyway. In local mode the driver's JVM is the one executor, and
        # never registers as one.
        slots = (self.options.executor_cores if self.options.is_local
                 else spark_internals.task_slots(self.sc))
        if slots < 1:
            return
        stopped = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
            partial(stop_manager, self.app_id, _STOP_GRACE_S)).collect()
        # Every slot of an executor reports on its one manager.
        stuck = sorted({o.container for o in stopped if o.status != "stopped"})
        if stuck:
            logger.warning("Ray nodes in %s did not stop in time and were killed", stuck)

    def _record(self, cluster: RunningCluster) -> None:
        """Tell ``zoo-ray status`` and ``zoo-ray stop`` on this gateway about ``cluster``
        (the RayContext removes the record at its stop())."""
        if self.options.is_local:
            return
        try:
            AppRecord(app_id=self.app_id, driver_pid=os.getpid(),
                      gateway_manager_pid=cluster.gateway.pid, address=cluster.address,
                      dashboard_url=cluster.dashboard_url,
                      nodes=[dataclasses.asdict(n) for n in cluster.nodes]).write()
        except OSError as exc:
            logger.warning("zoo-ray status and stop will not see this cluster: %s", exc)
