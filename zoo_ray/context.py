"""RayContext: a supervised Ray cluster inside the Spark executors (runs on the driver).

RayContext is a facade over collaborators with one concern each:
:class:`~zoo_ray.options.RayOptions` checks the arguments,
:class:`~zoo_ray.nodes.ClusterNodes` starts, waits for and stops the nodes (its
:class:`~zoo_ray.nodes.RunningCluster` record is what :attr:`RayContext.address_info`
is derived from), :class:`~zoo_ray.recovery.Recovery` keeps the cluster whole while it
runs, and :mod:`zoo_ray.status` reads what the head sees. The driver is a full Ray
driver once ``init()`` returns; plain ``ray.init()`` and Ray's auto-connect join the
cluster through ``RAY_ADDRESS``.
"""
from __future__ import annotations

import atexit
import html
import logging
import secrets
import time
from typing import Any, ClassVar

from .applications import AppRecord
from .auth import clear_driver_token, write_driver_token
from .compat import INIT_NAMES, RAY_CONTEXT_NAMES, translate
from .display import ClusterView, render_html, render_text
from .errors import ClusterLostError, RayContextError, ZooRayError
from .healing import ClusterEvent
from .leftovers import sweep
from .losses import ExecutorLoss
from .nodes import ClusterNodes, RunningCluster
from .options import RayOptions
from .protocol import NodeInfo
from .recompute_server import close_server
from .recovery import Recovery
from .spark_internals import registered_executors
from .status import cluster_view, node_status, registrations, store_usage
from .zoo_attributes import ZooAttributes

__all__ = ["RayContext"]

logger = logging.getLogger(__name__)


class RayContext(ZooAttributes):
    """A Ray cluster inside the executors of a SparkContext.

    Parameters
    ----------
    sc : pyspark.SparkContext
        A running SparkContext, normally from :func:`~zoo_ray.spark.init_spark_on_yarn`.
    object_store_memory : str, optional
        Object store per node, like "2g". Must fit, with Ray's own processes, in the
        ``extra_executor_memory_for_ray`` given to init_spark_on_yarn, and in the
        free ``/dev/shm`` of every node. What is left of that share is each node's
        ``memory`` resource, so Ray does not admit tasks and actors YARN would kill.
    num_ray_nodes : int, optional
        Number of Ray nodes in executors (one per executor); defaults to the number
        of executors.
    ray_node_cpu_cores : int, optional
        CPUs each node offers to Ray; defaults to the executor cores.
    env : dict, optional
        Extra environment variables for the Ray processes.
    extra_params : dict, optional
        Extra ``ray start`` flags, e.g. ``{"resources": '{"ssd": 1}'}``. ``temp-dir`` and
        ``object-spilling-directory`` (Analytics Zoo's way) are roots as for ``temp_dir``.
    include_webui : bool
        Serve Ray's dashboard from the head (bound to the head's address). The name
        is Analytics Zoo's; zoo_ray calls the thing the dashboard everywhere else
        (:attr:`dashboard_url`), except in ``address_info["webui_url"]``, Ray's key.
    system_config : dict, optional
        Ray ``_system_config`` for the head.
    verbose : bool
        Log every node's start.
    init_timeout : float
        Seconds ``init()`` waits for every node before failing.
    max_restarts : int
        How often a RayManager restarts its crashed node.
    driver_object_store_memory : str
        Object store of the Ray node on the gateway, which the driver attaches to.
        The gateway is a shared machine: this bounds what Ray takes there (without
        it Ray would take 30 % of the gateway's RAM). Must fit in its free ``/dev/shm``.
    temp_dir : str, optional
        A directory (absolute path) on every host, the gateway's too, for the nodes' Ray
        session files and spilled objects, instead of the YARN container directories:
        each node gets ``zoo-ray-<application>-<container>`` in it, which ``stop()``
        removes. A node whose host lacks it, or cannot write to it, fails ``init()``.
    min_ray_nodes, max_ray_nodes : int, optional
        An elastic cluster (both None: a fixed size). ``init()`` starts nodes in
        ``min_ray_nodes`` executors (default 1) and gives the others back; then the
        cluster asks YARN for executors while Ray has tasks, actors or placement groups
        no node can place, up to ``max_ray_nodes``, and gives back the executor of a node
        idle for ``idle_timeout`` (drained first: a node running anything or holding an
        object someone references is not idle), never the head's, never below
        ``min_ray_nodes``. Not with ``num_ray_nodes``, a local master or Spark's dynamic
        allocation.
    idle_timeout : str or float
        How long an elastic cluster's node stays idle before its executor goes back to
        YARN: seconds, or like "60s", "5m".
    **zoo_names
        Analytics Zoo's arguments with no meaning here (``redis_port``, ``password``,
        ...) raise an InvalidArgumentError saying what replaces them (docs: migration).

    Raises
    ------
    InvalidArgumentError
        A bad argument, or an object store that does not fit in Ray's share of an
        executor; the message names the fix.
    """


    #: The RayContext :meth:`get` returns: the newest one, unless another one runs.
    _active: ClassVar[RayContext | None] = None

    def __init__(
        self,
        sc: Any,
        object_store_memory: str | None = None,
        num_ray_nodes: int | None = None,
        ray_node_cpu_cores: int | None = None,
        env: dict[str, str] | None = None,
        extra_params: dict[str, Any] | None = None,
        include_webui: bool = False,
        system_config: dict[str, Any] | None = None,
        verbose: bool = False,
        init_timeout: float = 180.0,
        max_restarts: int = 5,
        driver_object_store_memory: str = "256m",
        temp_dir: str | None = None,
        min_ray_nodes: int | None = None,
        max_ray_nodes: int | None = None,
        idle_timeout: str | float = "60s",
        **zoo_names: Any,
    ) -> None:
        translate("RayContext", zoo_names, RAY_CONTEXT_NAMES, {})
        self.sc = sc
        #: The checked arguments.
        self.options = RayOptions.from_spark_conf(
            sc.getConf(), object_store_memory=object_store_memory,
            num_ray_nodes=num_ray_nodes, ray_node_cpu_cores=ray_node_cpu_cores, env=env,
            extra_params=extra_params, include_webui=include_webui,
            system_config=system_config, verbose=verbose, init_timeout=init_timeout,
            max_restarts=max_restarts, driver_object_store_memory=driver_object_store_memory,
            temp_dir=temp_dir, min_ray_nodes=min_ray_nodes, max_ray_nodes=max_ray_nodes,
            idle_timeout=idle_timeout)
        # "new" -> "starting" -> "running" -> "stopped" (-> "starting" again on init()).
        self._state = "new"
        self._app_id = ""
        self._nodes: ClusterNodes | None = None
        self._recovery: Recovery | None = None
        if RayContext._active is None or not RayContext._active.initialized:
            RayContext._active = self

    @property
    def initialized(self) -> bool:
        """Whether the Ray cluster is up (True only once ``init()`` has returned)."""
        return self._state == "running"

    @classmethod
    def get(cls, initialize: bool = True) -> RayContext:
        """The current RayContext, initialising it if asked and needed.

        Parameters
        ----------
        initialize : bool
            Call :meth:`init` on it unless it runs.

        Raises
        ------
        RayContextError
            No RayContext was created (or the last one was stopped).
        """
        if cls._active is None:
            raise RayContextError("No RayContext exists; create one with RayContext(sc).")
        if initialize and not cls._active.initialized:
            cls._active.init()
        return cls._active

    def init(self, driver_cores: int = 0, **zoo_names: Any) -> dict[str, Any]:
        """Start every Ray node, wait until all have registered, return the address info.

        The address info is Ray's own, as ``ray.init()`` returns it for the driver's
        node (``address``, ``gcs_address``, ``node_ip_address``, ``node_id``,
        ``object_store_address``, ``raylet_socket_name``, ``session_dir``,
        ``webui_url``, ...), plus zoo_ray's ``nodes`` (the executors' nodes as
        started), ``gateway_node`` and ``node_ids``.

        Parameters
        ----------
        driver_cores : int
            CPUs the gateway's Ray node (which the driver attaches to) offers to tasks.
        **zoo_names
            Analytics Zoo's arguments of ``init`` raise an InvalidArgumentError naming
            where they go now.

        Raises
        ------
        RayContextError
            Already initialised, or another RayContext runs.
        RayNodeStartError
            A node did not come up in time; names the executors and the tail of their
            logs. Everything started is stopped again.
        """
        translate("RayContext.init", zoo_names, INIT_NAMES, {})
        if self.initialized:
            raise RayContextError("This RayContext is already initialised; call stop() first.")
        active = RayContext._active
        if active is not None and active is not self and active.initialized:
            raise RayContextError("Another RayContext is running; stop it first.")
        started = time.monotonic()
        RayContext._active = self
        self._app_id = self.sc.applicationId
        self.options.check_roots_here()
        sweep()
        token = secrets.token_urlsafe(32)
        write_driver_token(token)
        self._state = "starting"
        nodes = self._nodes = ClusterNodes(self.sc, self.options, self._app_id, token)
        recovery = self._recovery = Recovery(self.sc, self.options, nodes, driver_cores)
        try:
            wanted, slots = self.options.start_size(registered_executors(self.sc))
            cluster = nodes.start(wanted, slots, driver_cores, progress=True)
            self._state = "running"
            atexit.register(self.stop)
            recovery.start(cluster)  # an elastic cluster gives spare executors back here
        except BaseException:
            self.stop()
            raise
        _stop_with_spark(self.sc)
        logger.info("Ray cluster up in %.1fs: %d nodes, head %s", time.monotonic() - started,
                    len(cluster.nodes), cluster.address)
        return cluster.address_info()

    def stop(self) -> None:
        """Stop every Ray process of this application on every node.

        The SparkContext stays usable; ``init()`` afterwards starts a fresh cluster.
        Idempotent: stopping a RayContext that is not running does nothing.
        """
        if self._state not in ("starting", "running"):
            return
        nodes, recovery = self._nodes, self._recovery
        # Before Ray disconnects: its thread must not be waiting in Ray then.
        close_server()
        if recovery is not None:
            recovery.close()
        try:
            if nodes is not None:
                nodes.stop(forget_address=True)
        finally:
            if recovery is not None:
                recovery.release()
            # Whatever the executors' side did (another executor lost mid-stop), the
            # token and the record of `zoo-ray status` go, and the state says stopped.
            clear_driver_token()
            if self._app_id and not self.options.is_local:  # as ClusterNodes recorded it
                AppRecord.remove(self._app_id)
            self._state = "stopped"
            self._nodes = None
            atexit.unregister(self.stop)
            if RayContext._active is self:
                RayContext._active = None
        logger.info("Ray cluster of %s stopped", self._app_id)

    def __enter__(self) -> RayContext:
        if not self.initialized:
            self.init()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- status
    def _cluster(self) -> RunningCluster | None:
        """The cluster as started and healed, while this RayContext has one (None while
        it starts or a rebuild runs)."""
        nodes = self._nodes  # once: stop() in another thread may drop it meanwhile
        return nodes.current if nodes is not None else None

    def _running_cluster(self) -> RunningCluster | None:
        """:meth:`_cluster`, after checking that it is not gone for good."""
        if self._recovery is not None and self._recovery.lost:
            raise ClusterLostError(self._recovery.lost)
        return self._cluster()

    @property
    def address_info(self) -> dict[str, Any]:
        """What :meth:`init` returned, with the nodes that joined since (a new dict at
        each read); empty while the cluster starts, while a rebuild runs and when stopped."""
        cluster = self._cluster()
        return cluster.address_info() if cluster is not None else {}

    def events(self) -> list[ClusterEvent]:
        """What happened to the cluster since ``init()``, oldest first: executors lost with
        their Ray nodes, nodes started in the executors Spark added in their place, and
        the loss of the head's executor (which takes the cluster with it) and the new
        cluster zoo_ray starts then."""
        return self._recovery.events.events if self._recovery is not None else []

    def lost_executors(self) -> list[ExecutorLoss]:
        """The executors (and their Ray nodes) lost since ``init()``, and why.

        Each loss is also logged as a warning when it happens; one YARN killed for
        memory says the limit, the usage and which parameter to raise.
        """
        return self._recovery.losses() if self._recovery is not None else []

    def node_status(self) -> list[dict[str, Any]]:
        """Each executor's Ray node as Ray's head sees it now: container, node id, alive,
        and the GPUs it offers Ray (those YARN gave its container).

        A node whose executor was lost (killed by YARN, preempted) shows
        ``alive=False``; losses are also logged. An elastic cluster leaves out the nodes
        it gave back, and lists each executor it asked YARN for whose node is not up yet
        with ``pending`` saying why it waits (every row has the key, "" for a node).

        Raises
        ------
        ClusterLostError
            The cluster is gone for good (Spark ended the application, or no new
            cluster could start after the head's loss); the message says why.
        """
        recovery = self._recovery
        return node_status(self._running_cluster(),
                           recovery.released if recovery is not None else set(),
                           recovery.scale_status() if recovery is not None else None)

    def executor_nodes(self) -> dict[str, NodeInfo]:
        """The executors' live Ray nodes, by Ray node id (the data path places work by it);
        an elastic cluster's nodes being given back are left out.

        Raises
        ------
        ClusterLostError
            The cluster is gone for good; the message says why.
        """
        released = self._recovery.released if self._recovery is not None else set()
        return {node["NodeID"]: info
                for info, node in registrations(self._running_cluster()).values()
                if node["Alive"] and info.executor_id not in released}

    def object_store_usage(self) -> dict[str, int]:
        """Bytes in use in each executor node's object store, by container (Ray's accounting).

        Raises
        ------
        ClusterLostError
            The cluster is gone for good; the message says why.
        """
        return store_usage(self._running_cluster())

    @property
    def address(self) -> str | None:
        """The head's GCS address, ``ip:port``."""
        cluster = self._cluster()
        return cluster.address if cluster is not None else None

    @property
    def dashboard_url(self) -> str | None:
        """The head's Ray dashboard, when started with ``include_webui=True``."""
        cluster = self._cluster()
        return cluster.dashboard_url if cluster is not None else None

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The executors' Ray nodes as started (head first): container, manager pid, log dir."""
        return list(self.address_info.get("nodes", []))

    # -------------------------------------------------------------- display
    def view(self) -> ClusterView:
        """A snapshot of the cluster for display: the application, its links, every node."""
        scaling = self._recovery.scale_status() if self._recovery is not None else None
        return cluster_view(self.sc, self._app_id, self.options.is_local, self._state,
                            self._cluster(), scaling,
                            self._recovery.released if self._recovery is not None else ())

    def __repr__(self) -> str:
        try:
            return render_text(self.view())
        except Exception as exc:  # a repr must not raise; say what is known
            return f"RayContext {self._state}: application {self._app_id or '-'} ({exc})"

    def _repr_html_(self) -> str:
        try:
            return render_html(self.view())
        except Exception as exc:  # a display must not raise; say what is known
            return html.escape(f"RayContext {self._state}: application {self._app_id or '-'} "
                               f"({exc})")


def _stop_with_spark(sc: Any) -> None:
    """Make ``sc.stop()`` stop its running RayContext first (wrapped once per SparkContext)."""
    if getattr(sc.stop, "_zoo_ray_original", None) is not None:
        return
    original = sc.stop

    def stop_ray_then_spark() -> None:
        ctx = RayContext._active
        if ctx is not None and ctx.sc is sc and ctx.initialized:
            try:
                ctx.stop()
            except ZooRayError as exc:
                logger.warning("stopping Ray: %s", exc)
        sc.stop = original
        original()

    stop_ray_then_spark._zoo_ray_original = original  # type: ignore[attr-defined]
    sc.stop = stop_ray_then_spark
