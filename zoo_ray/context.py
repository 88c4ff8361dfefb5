"""RayContext: a supervised Ray cluster inside the Spark executors (runs on the driver).

``init()`` fixes the head's executor and address in a one-task Spark job, then
starts a RayManager (:mod:`zoo_ray.manager`) in each executor through one barrier
job over every task slot, and the gateway's node for the driver alongside: all
nodes start at once. What runs inside those Spark tasks lives in
:mod:`zoo_ray.executor_tasks`; this module only submits the jobs and reads their
typed results (:mod:`zoo_ray.protocol`). The tasks return as soon as their node
is up: Ray holds no Spark task slot. The driver is then a full Ray driver; plain
``ray.init()`` and Ray's auto-connect join the cluster through ``RAY_ADDRESS``.
"""
from __future__ import annotations

import atexit
import contextlib
import dataclasses
import html
import logging
import os
import secrets
import subprocess
import tempfile
import time
from functools import partial
from typing import Any, ClassVar

from . import spark_internals
from .applications import AppRecord
from .auth import DRIVER_GCS_WAIT_S, GCS_WAIT_ENV, clear_driver_token, write_driver_token
from .compat import INIT_NAMES, RAY_CONTEXT_NAMES, translate, warn_renamed
from .display import ClusterView, NodeRow, render_html, render_text
from .errors import (
    ClusterLostError,
    InvalidArgumentError,
    RayContextError,
    RayNodeStartError,
    ZooRayError,
)
from .executor_tasks import StartPlan, place_head, start_nodes, stop_manager
from .healing import ClusterEvent, EventLog, NodeKeeper
from .host import node_ip, wait_until
from .leftovers import driver_work_dir, sweep
from .losses import ExecutorLoss, LossWatch
from .memory import (
    MIN_OBJECT_STORE,
    RAY_MEMORY_CONF,
    check_object_store_fits,
    format_mib,
    parse_memory,
    worker_memory,
)
from .progress import JobProgress
from .protocol import (
    HeadPlacement,
    NodeFailure,
    NodeInfo,
    NodeOutcome,
    NodeSpec,
    await_manager,
    spawn_manager,
)
from .yarn import ResourceManager

__all__ = ["RayContext"]

logger = logging.getLogger(__name__)

#: Where the gateway's node runs, as named in errors.
_GATEWAY = "this host (the driver's node)"
_STOP_GRACE_S = 30.0


def _raise_failures(failures: list[NodeFailure]) -> None:
    """Raise one typed error naming every node that failed, with its log tail."""
    if not failures:
        return
    for failure in failures:
        if failure.kind == "shm":
            setting, where = (("driver_object_store_memory", "the gateway")
                              if failure.container == _GATEWAY
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


def _started_nodes(outcomes: list[NodeOutcome], wanted: int) -> list[NodeInfo]:
    """The nodes the start job brought up, head first; raises if any failed or is missing."""
    _raise_failures([o.failure for o in outcomes if o.failure is not None])
    nodes = sorted((o.node for o in outcomes if o.node is not None),
                   key=lambda node: node.role != "head")
    if len(nodes) < wanted or nodes[0].role != "head":
        raise RayNodeStartError(
            f"Only {len(nodes)} of {wanted} executors could take a Ray node (lost "
            "executors?); everything started was stopped. Retry, or lower num_ray_nodes."
        )
    return nodes


#: `ray start` flags zoo_ray sets itself, and what to use instead.
_OWN_FLAGS = {
    "temp-dir": "zoo_ray keeps each node's temp dir in its YARN container directory, on the "
                "NodeManager's local disks, and YARN removes it with the container",
    "object-spilling-directory": "spilled objects go to the container directory, like the "
                                 "temp dir",
    "num-cpus": "pass ray_node_cpu_cores",
    "object-store-memory": "pass object_store_memory",
    "include-dashboard": "pass include_webui",
    "system-config": "pass system_config",
}
_PLACED = ("zoo_ray places the head and picks every node's address and ports, so several "
           "applications share hosts")


def _check_extra_params(extra_params: dict[str, Any]) -> dict[str, Any]:
    """Refuse ``ray start`` flags zoo_ray sets itself; each error names what to use instead."""
    for key in extra_params:
        flag = str(key).lstrip("-").replace("_", "-")
        if flag in _OWN_FLAGS or flag in ("head", "block", "address", "node-ip-address") or (
                flag.endswith("port") or flag.endswith("ports")):
            why = _OWN_FLAGS.get(flag, _PLACED)
            raise InvalidArgumentError(
                f"extra_params={{{key!r}: ...}}: {why}. Drop it from extra_params.")
    return dict(extra_params)


def _local_cores(master: str) -> int:
    """The task slots of a local master: ``local``, ``local[4]``, ``local[*]``, ``local[4,2]``."""
    inside = master.partition("[")[2].rstrip("]").split(",")[0]
    if inside == "*":
        return os.cpu_count() or 1
    return int(inside) if inside.isdigit() else 1


class RayContext:
    """A Ray cluster inside the executors of a SparkContext.

    Parameters
    ----------
    sc : pyspark.SparkContext
        A running SparkContext, normally from :func:`zoo_ray.init_spark_on_yarn`.
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
        Extra ``ray start`` flags, e.g. ``{"resources": '{"ssd": 1}'}``.
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
    **zoo_names
        Analytics Zoo's arguments with no meaning here (``redis_port``, ``password``,
        ...) raise an InvalidArgumentError saying what replaces them (README: migration).

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
        **zoo_names: Any,
    ) -> None:
        translate("RayContext", zoo_names, RAY_CONTEXT_NAMES, {})
        self.sc = sc
        conf = sc.getConf()
        #: Whether Spark runs in local mode (Analytics Zoo's attribute).
        self.is_local = str(conf.get("spark.master", "")).startswith("local")
        self.object_store_memory = (
            parse_memory(object_store_memory, "object_store_memory")
            if object_store_memory is not None else None
        )
        self.driver_object_store_memory = parse_memory(driver_object_store_memory,
                                                       "driver_object_store_memory")
        if self.driver_object_store_memory < MIN_OBJECT_STORE:
            raise InvalidArgumentError(
                f"driver_object_store_memory={driver_object_store_memory!r} is below Ray's "
                "minimum object store of 75 MiB; pass at least \"75m\".")
        # Local mode has one executor, the driver's JVM, whatever the conf says.
        self.executors = 1 if self.is_local else int(conf.get("spark.executor.instances", "1"))
        self.executor_cores = (_local_cores(conf.get("spark.master", "local")) if self.is_local
                               else int(conf.get("spark.executor.cores", "1")))
        self.num_ray_nodes = self._check_num_ray_nodes(num_ray_nodes)
        self.ray_node_cpu_cores = ray_node_cpu_cores or self.executor_cores
        self.env = dict(env or {})
        self.extra_params = _check_extra_params(extra_params or {})
        self.include_webui = include_webui
        self.system_config = system_config
        self.verbose = verbose
        self.init_timeout = init_timeout
        self.max_restarts = max_restarts
        ray_memory = conf.get(RAY_MEMORY_CONF)
        self._worker_memory: int | None = None
        if self.object_store_memory is not None and ray_memory is not None:
            check_object_store_fits(self.object_store_memory, int(ray_memory))
            self._worker_memory = worker_memory(self.object_store_memory, int(ray_memory))
        # "new" -> "starting" -> "running" -> "stopped" (-> "starting" again on init()).
        self._state = "new"
        self.address_info: dict[str, Any] = {}
        self._gateway_manager: subprocess.Popen[str] | None = None
        self._work_dir: tempfile.TemporaryDirectory[str] | None = None
        self._app_id = ""
        self._token = ""
        self._loss_watch: LossWatch | None = None
        self._keeper: NodeKeeper | None = None
        self._events = EventLog()
        self._head: HeadPlacement | None = None
        self._driver_cores = 0
        #: Why the cluster is gone for good, once it is.
        self._lost: str | None = None
        self._refused_address: str | None = None
        if RayContext._active is None or not RayContext._active.initialized:
            RayContext._active = self

    def _check_num_ray_nodes(self, num_ray_nodes: int | None) -> int:
        wanted = self.executors if num_ray_nodes is None else num_ray_nodes
        if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
            raise InvalidArgumentError(
                f"num_ray_nodes={num_ray_nodes!r} must be a whole number >= 1.")
        if wanted > self.executors:
            raise InvalidArgumentError(
                f"num_ray_nodes={wanted} is more than the {self.executors} executors: zoo_ray "
                f"runs one Ray node per executor. Ask init_spark_on_yarn for "
                f"num_executors={wanted}, or lower num_ray_nodes."
            )
        return wanted

    @property
    def initialized(self) -> bool:
        """Whether the Ray cluster is up (True only once ``init()`` has returned)."""
        return self._state == "running"

    @classmethod
    def get(cls, initialize: bool = True) -> RayContext:
        """The current RayContext, initialising it if asked and needed.

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

    # ----------------------------------------------------------------- init
    def _base_spec(self) -> NodeSpec:
        """What every node shares; each executor fills in its own directories and JVM."""
        return NodeSpec(
            role="worker", app_id=self._app_id, token=self._token,
            num_cpus=self.ray_node_cpu_cores, work_dir="", log_dir="",
            object_store_memory=self.object_store_memory, memory=self._worker_memory,
            include_dashboard=self.include_webui, system_config=self.system_config,
            extra_params=self.extra_params, env=self.env, max_restarts=self.max_restarts,
            ready_timeout=self.init_timeout,
        )

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
        sweep()
        self._token = secrets.token_urlsafe(32)
        write_driver_token(self._token)
        self._state = "starting"
        self._driver_cores = driver_cores
        self._events = EventLog()
        self._lost = None
        try:
            self._start_cluster(self.num_ray_nodes, self._slots(), progress=True)
        except BaseException:
            self.stop()
            raise
        self._state = "running"
        atexit.register(self.stop)
        # Both only report on the cluster; neither may fail a running one.
        self._record()
        self._watch_losses()
        self._keep_nodes()
        self._stop_with_spark()
        logger.info("Ray cluster up in %.1fs: %d nodes, head %s", time.monotonic() - started,
                    len(self.address_info["nodes"]), self.address_info["address"])
        return self.address_info

    def _start_cluster(self, wanted: int, slots: int, progress: bool) -> None:
        """Start ``wanted`` executor nodes over ``slots`` task slots and the gateway's node,
        then wait until all have registered. Without ``progress`` the jobs run in the
        calling thread's job group (a rebuild's are the keeper's)."""
        head = self._head = self._place_head()
        self.address_info = {"address": head.address, "nodes": []}
        logger.info("Starting %d Ray nodes in the executors (the head in %s) and the "
                    "gateway's node", wanted, head.container)
        gateway = self._spawn_gateway_node(head, self._driver_cores)
        plan = StartPlan(self._base_spec(), head, wanted, self.init_timeout)
        if progress:
            group = f"zoo_ray-start-{self._app_id}-{secrets.token_hex(4)}"  # one per init()
            with spark_internals.job_group(self.sc, group, "zoo_ray: starting Ray nodes"), \
                    JobProgress(self.sc, group, slots, "starting Ray nodes", "task"):
                nodes = self._start_executor_nodes(plan, slots)
        else:
            nodes = self._start_executor_nodes(plan, slots)
        self.address_info["nodes"] = [dataclasses.asdict(n) for n in nodes]
        answer = await_manager(gateway, self.init_timeout)
        if isinstance(answer, NodeFailure):
            # Its log directory goes with the cleanup: the error carries the log's tail.
            answer.container = _GATEWAY
            _raise_failures([answer])
            return
        self.address_info["gateway_node"] = dataclasses.asdict(answer)
        from .driver_guard import attach_drivers_to

        attach_drivers_to(answer.temp_dir)
        self._connect_and_verify(wanted + 1)

    def _place_head(self) -> HeadPlacement:
        job = self.sc.parallelize([0], 1).mapPartitions(partial(place_head, self._app_id))
        head: HeadPlacement = job.collect()[0]
        if head.has_node:
            raise RayContextError(
                f"Executor {head.container} still runs a Ray node of this application (an "
                "earlier stop() is still finishing). Retry init() in a minute, or restart the "
                "SparkContext."
            )
        return head

    def _slots(self) -> int:
        return self.executors * self.executor_cores

    def _start_executor_nodes(self, plan: StartPlan, slots: int) -> list[NodeInfo]:
        outcomes = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
            partial(start_nodes, plan)).collect()
        return _started_nodes(outcomes, plan.wanted)

    def _spawn_gateway_node(self, head: HeadPlacement, driver_cores: int) -> subprocess.Popen[str]:
        """Start the node the driver attaches to; it joins the head once that is up."""
        self._work_dir = driver_work_dir()
        # The gateway's address on the network that faces the head, which need not be
        # the one on its default route.
        # The driver dies with the raylet it is attached to: both wait as long for the GCS.
        env = {GCS_WAIT_ENV: os.environ.get(GCS_WAIT_ENV, str(DRIVER_GCS_WAIT_S)), **self.env}
        spec = dataclasses.replace(
            self._base_spec(), num_cpus=driver_cores, head_address=head.address, env=env,
            node_ip=node_ip(toward=head.address.rsplit(":", 1)[0]), memory=None,
            object_store_memory=self.driver_object_store_memory,
            work_dir=self._work_dir.name, log_dir=os.path.join(self._work_dir.name, "logs"),
            watch_pid=os.getpid())
        self._gateway_manager = spawn_manager(spec)
        return self._gateway_manager

    def _connect_and_verify(self, wanted: int) -> None:
        """Wait until ``wanted`` nodes have registered; keep Ray's address info.

        Raises RayNodeStartError when they do not within ``init_timeout``, or when
        ``stop()`` closes the keeper meanwhile (a rebuild).
        """
        import ray

        from .driver_guard import node_table

        address = self.address_info["address"]
        connected = ray.init(address=address, logging_level=logging.WARNING,
                             log_to_driver=self.verbose)
        # A RayContext (not Ray Client's context): it has the address info.
        ray_info = dict(connected.address_info)  # type: ignore[attr-defined]
        alive: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.init_timeout

        def all_registered() -> bool:
            if self._keeper is not None and self._keeper.closing:  # stop() during a rebuild
                raise RayNodeStartError("stop() was called before every node registered")
            # One slice at a time: a stop() or the deadline is seen between them, also
            # when the new head does not answer (ray.nodes() would wait for it).
            try:
                nodes = node_table(timeout=min(1.0, deadline - time.monotonic()))
            except ray.exceptions.RpcError:
                return False
            alive[:] = [n for n in nodes if n["Alive"]]
            return len(alive) >= wanted

        registered = wait_until(all_registered, self.init_timeout)
        ray.shutdown()
        # Only now: a Ray call of the user's made meanwhile (in another thread, during a
        # rebuild) must not connect while this one is connected.
        os.environ["RAY_ADDRESS"] = address
        if not registered:
            raise RayNodeStartError(
                f"Only {len(alive)} of {wanted} Ray nodes registered with the head within "
                f"{self.init_timeout:.0f}s; everything started was stopped."
            )
        # Ray's own address info (what ray.init() and Analytics Zoo return), plus zoo_ray's
        # keys, which Ray does not use: nodes, gateway_node, node_ids.
        # webui_url is the head's dashboard, None without include_webui (Ray reports the
        # dashboard process the head runs anyway, which serves no UI then).
        self.address_info = {**ray_info, **self.address_info,
                             "node_ids": sorted(n["NodeID"] for n in alive),
                             "webui_url": self.address_info["nodes"][0]["dashboard_url"]}

    def _record(self) -> None:
        """Tell ``zoo-ray status`` and ``zoo-ray stop`` on this gateway about the cluster."""
        if self.is_local or not self._app_id:
            return
        try:
            AppRecord(app_id=self._app_id, driver_pid=os.getpid(),
                      gateway_manager_pid=getattr(self._gateway_manager, "pid", None),
                      address=self.address_info["address"],
                      dashboard_url=self.address_info.get("webui_url"),
                      nodes=self.address_info["nodes"]).write()
        except OSError as exc:
            logger.warning("zoo-ray status and stop will not see this cluster: %s", exc)

    def _watch_losses(self) -> None:
        """Say at once when YARN takes an executor (and its Ray node) away, and why."""
        if self.is_local:
            return
        conf = self.sc.getConf()
        ray_memory = conf.get(RAY_MEMORY_CONF)
        sizes = {"executor_memory": conf.get("spark.executor.memory", "1g"),
                 "extra_executor_memory_for_ray": (format_mib(int(ray_memory)) if ray_memory
                                                   else "not set"),
                 "object_store_memory": (format_mib(self.object_store_memory)
                                         if self.object_store_memory else "Ray's default")}
        heap = parse_memory(conf.get("spark.executor.memory", "1g"), "spark.executor.memory")
        overhead = conf.get("spark.executor.memoryOverhead")
        if overhead:
            container = heap + parse_memory(overhead, "spark.executor.memoryOverhead")
            sizes["container"] = f"{-(-container // 2**20)} MB"
        containers = {n["executor_id"]: n["container"] for n in self.address_info["nodes"]}
        self._loss_watch = LossWatch(self.sc, containers, sizes)

    def _keep_nodes(self) -> None:
        """Start a Ray node in each executor Spark adds in place of a lost one."""
        if self.is_local or self._head is None:
            return
        from .driver_guard import watch_driver_calls

        watch_driver_calls()
        plan = StartPlan(self._base_spec(), self._head, self.num_ray_nodes, self.init_timeout)
        nodes = [NodeInfo(**node) for node in self.address_info["nodes"]]
        self._keeper = NodeKeeper(self.sc, plan, self.num_ray_nodes, nodes, self._joined,
                                  self._rebuild, self._spark_stopped, self._events)

    def _rebuild(self) -> None:
        """The head's executor is gone: start a new cluster in the executors there are.

        Runs in the keeper's thread, as the keeper's Spark jobs (stop() cancels them).
        Ray aborts a driver that cannot reach its GCS for long, so this driver
        disconnects first; its next Ray call connects to the new head. Meanwhile a Ray
        call raises ClusterLostError saying the cluster is being rebuilt.
        """
        keeper = self._keeper
        assert keeper is not None, "called by the running keeper"
        seen = time.monotonic()
        from .driver_guard import refuse_drivers

        old = os.environ.get("RAY_ADDRESS", "")
        rebuilding = ("zoo_ray is starting a new Ray cluster; retry in a few seconds "
                      "(RayContext.events() says when it runs). ObjectRefs and actor handles "
                      "from before are void.")
        refuse_drivers(old, f"the head's executor was lost and {rebuilding}")
        try:
            self._disconnect(f"the head's executor was lost and {rebuilding}",
                             f"the head's executor was lost while this ray.get waited, and "
                             f"the result with it; {rebuilding}")
            wanted = self._start_again(keeper)
        except Exception as exc:
            if keeper.closing:
                return  # stop() cancelled the rebuild and stops what it left
            if spark_internals.is_stopped(self.sc):  # the head went with the application
                self._spark_stopped()
                return
            with contextlib.suppress(Exception):
                self._stop_nodes(forget_address=False)
            self._lose(f"no new Ray cluster could start after the loss of the head: {exc}. "
                       "Call stop() and init() on the RayContext again.")
            return
        finally:
            # Refused for good by _lose, or void now: a new address, or stop() takes over.
            if keeper.closing or os.environ.get("RAY_ADDRESS") != old:
                refuse_drivers(old, None)
        if keeper.closing:
            return
        self._record()
        if self._loss_watch is not None:
            self._loss_watch.containers.update(
                {n["executor_id"]: n["container"] for n in self.address_info["nodes"]})
        self._keep_nodes()
        head = self.address_info["nodes"][0]
        more = (f"; a node starts in each executor Spark adds, up to {self.num_ray_nodes}"
                if wanted < self.num_ray_nodes else "")
        self._events.add("rebuilt", head["executor_id"], head["container"],
                         f"a new Ray cluster of {wanted} executor nodes runs, its head here, "
                         f"{time.monotonic() - seen:.1f}s after the loss was seen; the driver "
                         f"connects to it at its next Ray call{more}")

    def _start_again(self, keeper: NodeKeeper) -> int:
        """Stop what is left of the cluster and start a new one in the executors Spark has
        (waiting for one if none is left); how many executor nodes it has."""
        with keeper.jobs("zoo_ray: a new Ray cluster after the loss of the head"):
            self._stop_nodes(forget_address=False)
            # With one executor, none is left until Spark's replacement registers.
            wait_until(lambda: keeper.closing or
                       spark_internals.registered_executors(self.sc) > 0, self.init_timeout)
            executors = spark_internals.registered_executors(self.sc)
            wanted = min(self.num_ray_nodes, executors)
            if wanted < 1:
                raise RayNodeStartError(f"no executor registered within {self.init_timeout:.0f}s"
                                        " to start a Ray cluster in")
            self._start_cluster(wanted, executors * self.executor_cores, progress=False)
        return wanted

    def _spark_stopped(self) -> None:
        """The SparkContext stopped from the JVM's side, and every executor with it."""
        diagnostics = "the SparkContext stopped"
        try:
            report = self._resource_manager(timeout=5.0).app(self._app_id)
            diagnostics = (f"YARN: {report.get('finalStatus', '?')}, "
                           f"{report.get('diagnostics') or 'no diagnostics'}")
        except (ZooRayError, OSError, KeyError) as exc:
            logger.debug("no diagnostics for %s: %s", self._app_id, exc)
        why = (f"Spark ended application {self._app_id} ({diagnostics.strip()}), and with "
               "it every executor and Ray node. Call sc.stop() (it stops this RayContext "
               "too), then start again with init_spark_on_yarn and a new RayContext.")
        self._disconnect(why, why)
        with contextlib.suppress(Exception):
            self._stop_nodes(forget_address=False)  # the gateway's node; the rest is gone
        self._lose(why)

    @staticmethod
    def _disconnect(why: str, waited: str) -> None:
        """Disconnect the driver from a cluster that is gone, refusing the program's Ray
        calls meanwhile (ClusterLostError(why)) and ending the ``ray.get`` calls waiting
        in its threads (ClusterLostError(waited)): disconnecting under a waiting call
        would leave it blocked for good, and a call that reaches the lost GCS blocks too."""
        import ray

        from .driver_guard import cluster_lost

        with cluster_lost(why, waited, timeout=10.0) as waiting:
            if waiting:
                logger.info("%d Ray calls waiting on the lost cluster raise "
                            "ClusterLostError", waiting)
            if ray.is_initialized():
                ray.shutdown()

    def _lose(self, why: str) -> None:
        """The cluster is gone for good: ``node_status()`` and the driver's next Ray call
        raise ClusterLostError saying ``why``."""
        from .driver_guard import refuse_drivers

        self._lost = why
        self._refused_address = os.environ.get("RAY_ADDRESS")
        if self._refused_address:
            refuse_drivers(self._refused_address, why)
        self._events.add("cluster lost", "", "", why)

    def _joined(self, node: NodeInfo) -> None:
        """A node the keeper started in a new executor: part of the cluster from now on."""
        self.address_info["nodes"] = [*self.address_info["nodes"], dataclasses.asdict(node)]
        if self._loss_watch is not None:
            self._loss_watch.containers[node.executor_id] = node.container
        self._record()

    def events(self) -> list[ClusterEvent]:
        """What happened to the cluster since ``init()``, oldest first: executors lost with
        their Ray nodes, nodes started in the executors Spark added in their place, and
        the loss of the head's executor (which takes the cluster with it) and the new
        cluster zoo_ray starts then."""
        return self._events.events

    def lost_executors(self) -> list[ExecutorLoss]:
        """The executors (and their Ray nodes) lost since ``init()``, and why.

        Each loss is also logged as a warning when it happens; one YARN killed for
        memory says the limit, the usage and which parameter to raise.
        """
        return self._loss_watch.losses if self._loss_watch is not None else []

    # ----------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every Ray process of this application on every node.

        The SparkContext stays usable; ``init()`` afterwards starts a fresh cluster.
        Idempotent: stopping a RayContext that is not running does nothing.
        """
        if self._state not in ("starting", "running"):
            return
        # A rebuild under way ends first, and may have started the keeper of its cluster.
        while self._keeper is not None:
            keeper = self._keeper
            keeper.close()
            if self._keeper is keeper:
                self._keeper = None
        if self._loss_watch is not None:
            self._loss_watch.close()
        try:
            self._stop_nodes(forget_address=True)
        finally:
            if self._refused_address:
                from .driver_guard import refuse_drivers

                refuse_drivers(self._refused_address, None)
                self._refused_address = None
            # Whatever the executors' side did (another executor lost mid-stop), the
            # token and the record go, and the state says stopped.
            clear_driver_token()
            if self._app_id and not self.is_local:  # as _record wrote it
                AppRecord.remove(self._app_id)
            self._state = "stopped"
            self.address_info = {}
            atexit.unregister(self.stop)
            if RayContext._active is self:
                RayContext._active = None
        logger.info("Ray cluster of %s stopped", self._app_id)

    def _stop_nodes(self, forget_address: bool) -> None:
        """Disconnect this driver from Ray and stop every node, the gateway's included.

        ``forget_address=False`` (a rebuild) keeps ``RAY_ADDRESS``: without it, a Ray call
        made meanwhile would start a Ray instance on the gateway instead of failing.
        """
        import ray

        from .driver_guard import attach_drivers_to

        if ray.is_initialized():
            ray.shutdown()
        if forget_address:
            os.environ.pop("RAY_ADDRESS", None)
        attach_drivers_to(None)
        if self._gateway_manager is not None:
            self._gateway_manager.terminate()
        try:
            if not spark_internals.is_stopped(self.sc):
                self._stop_executor_nodes()
        finally:
            self._stop_gateway_node()

    def _stop_executor_nodes(self) -> None:
        # The executors there are now: a barrier job over the configured slots would wait
        # (minutes) for replacements of executors YARN took away, whose nodes are gone anyway.
        # In local mode the driver's JVM is the one executor, and never registers as one.
        executors = 1 if self.is_local else spark_internals.registered_executors(self.sc)
        slots = executors * self.executor_cores
        if slots < 1:
            return
        stopped = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
            partial(stop_manager, self._app_id, _STOP_GRACE_S)).collect()
        stuck = [o.container for o in stopped if o.status != "stopped"]
        if stuck:
            logger.warning("Ray nodes in %s did not stop in time and were killed", stuck)

    def _stop_gateway_node(self) -> None:
        if self._gateway_manager is not None:
            for pipe in (self._gateway_manager.stdout, self._gateway_manager.stderr):
                if pipe is not None:
                    pipe.close()
            try:
                self._gateway_manager.wait(_STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                logger.warning("The gateway's Ray node (pid %d) did not stop in time; killing it",
                               self._gateway_manager.pid)
                self._gateway_manager.kill()
                self._gateway_manager.wait()
            self._gateway_manager = None
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None

    def _stop_with_spark(self) -> None:
        """Make ``sc.stop()`` stop the running RayContext first (wrapped once per SparkContext)."""
        sc = self.sc
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

    def __enter__(self) -> RayContext:
        if not self.initialized:
            self.init()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --------------------------------------------------------------- status
    def _registrations(self) -> dict[str, tuple[NodeInfo, dict[str, Any]]]:
        """Each executor's node as started, with its registration at the head, by container.

        A restarted node registers anew; its live registration wins.
        """
        if self._lost:
            raise ClusterLostError(self._lost)
        started = [NodeInfo(**info) for info in self.address_info.get("nodes", [])]
        live = self._live_nodes(started)
        return {info.container: (info, live[info.temp_dir]) for info in started
                if info.temp_dir in live}

    @staticmethod
    def _live_nodes(started: list[NodeInfo],
                    timeout: float | None = None) -> dict[str, dict[str, Any]]:
        """Ray's registration of each started node, by its temp dir; a restarted node
        registers anew and its live registration wins."""
        from .driver_guard import node_table

        found: dict[str, dict[str, Any]] = {}
        for node in node_table(timeout):
            for info in started:
                if node["ObjectStoreSocketName"].startswith(info.temp_dir) and (
                        node["Alive"] or info.temp_dir not in found):
                    found[info.temp_dir] = node
        return found

    def node_status(self) -> list[dict[str, Any]]:
        """Each executor's Ray node as Ray's head sees it now: container, node id, alive.

        A node whose executor was lost (killed by YARN, preempted) shows
        ``alive=False``; losses are also logged.

        Raises
        ------
        ClusterLostError
            The cluster is gone for good (Spark ended the application, or no new
            cluster could start after the head's loss); the message says why.
        """
        status = [{"container": container, "node_id": node["NodeID"], "alive": node["Alive"]}
                  for container, (_, node) in self._registrations().items()]
        for lost in (s for s in status if not s["alive"]):
            logger.warning("Ray node of executor %s is lost", lost["container"])
        return status

    def executor_nodes(self) -> dict[str, NodeInfo]:
        """The executors' live Ray nodes, by Ray node id (the data path places work by it).

        Raises
        ------
        ClusterLostError
            The cluster is gone for good; the message says why.
        """
        return {node["NodeID"]: info for info, node in self._registrations().values()
                if node["Alive"]}

    def object_store_usage(self) -> dict[str, int]:
        """Bytes in use in each executor node's object store, by container (Ray's accounting).

        Raises
        ------
        ClusterLostError
            The cluster is gone for good; the message says why.
        """
        from .driver_guard import object_store_used

        return {container: object_store_used(
                    f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
                for container, (_, node) in self._registrations().items() if node["Alive"]}

    @property
    def address(self) -> str | None:
        """The head's GCS address, ``ip:port``."""
        return self.address_info.get("address")

    @property
    def nodes(self) -> list[dict[str, Any]]:
        """The executors' Ray nodes as started (head first): container, manager pid, log dir."""
        return list(self.address_info.get("nodes", []))

    @property
    def total_cores(self) -> int:
        """CPUs of the executors' Ray nodes together (Analytics Zoo's attribute)."""
        return self.num_ray_nodes * self.ray_node_cpu_cores

    @property
    def redis_address(self) -> str | None:
        """Analytics Zoo's name of :attr:`address` (Ray 2.60 has no Redis)."""
        warn_renamed("RayContext.redis_address", "RayContext.address")
        return self.address

    @property
    def stopped(self) -> bool:
        """Analytics Zoo 0.6-0.8's name of ``not initialized``."""
        warn_renamed("RayContext.stopped", "not RayContext.initialized")
        return not self.initialized

    def purge(self) -> None:
        """Analytics Zoo's harder stop: :meth:`stop` already removes every Ray process."""
        warn_renamed("RayContext.purge()", "RayContext.stop()")
        self.stop()

    @property
    def dashboard_url(self) -> str | None:
        """The head's Ray dashboard, when started with ``include_webui=True``."""
        return self.address_info.get("webui_url")

    # -------------------------------------------------------------- display
    def view(self) -> ClusterView:
        """A snapshot of the cluster for display: the application, its links, every node.

        Connects this driver to the cluster if it is not yet (as its first Ray call would).
        """
        app_state, yarn_url, spark_url = self._application()
        return ClusterView(state=self._state, app_id=self._app_id, app_state=app_state,
                           head=self.address, yarn_url=yarn_url, spark_url=spark_url,
                           dashboard_url=self.dashboard_url, nodes=self._node_rows())

    @staticmethod
    def _resource_manager(timeout: float) -> ResourceManager:
        """The ResourceManager of the driver's Hadoop configuration, asked with ``timeout``."""
        rm = ResourceManager.from_conf(os.environ.get("HADOOP_CONF_DIR", ""))
        rm.timeout = timeout
        return rm

    def _application(self) -> tuple[str, str | None, str | None]:
        """The application's state and the pages of YARN and of the Spark UI."""
        if spark_internals.is_stopped(self.sc):
            return "stopped", None, None
        if self.is_local:
            return "local", None, self.sc.uiWebUrl
        try:
            rm = self._resource_manager(timeout=3.0)  # a display waits seconds at most
            state = rm.app(self._app_id)["state"]
        except (ZooRayError, OSError, KeyError) as exc:
            logger.debug("no application state for the display: %s", exc)
            return "unknown", None, self.sc.uiWebUrl
        base = f"http://{rm.webapp_address}"
        # The Spark UI of a YARN application is served through the ResourceManager's proxy.
        return state, f"{base}/cluster/app/{self._app_id}", f"{base}/proxy/{self._app_id}/"

    def _node_rows(self) -> tuple[NodeRow, ...]:
        started = [NodeInfo(**n) for n in self.address_info.get("nodes", [])]
        gateway = self.address_info.get("gateway_node")
        if gateway:
            started.append(dataclasses.replace(NodeInfo(**gateway), role="driver",
                                               container=_GATEWAY))
        live: dict[str, dict[str, Any]] = {}
        if self._state == "running":
            import ray

            try:
                live = self._live_nodes(started, timeout=3.0)  # a display waits seconds at most
            except ray.exceptions.RpcError as exc:
                logger.debug("no node table for the display: %s", exc)
        rows = []
        for info in started:
            node = live.get(info.temp_dir)
            resources = node["Resources"] if node else {}
            rows.append(NodeRow(
                role=info.role, host=info.node_ip,
                executor=(f"{info.executor_id} ({info.container})" if info.executor_id
                          else info.container),
                cpus=resources.get("CPU", 0.0) if node else None,
                object_store_bytes=(int(resources["object_store_memory"])
                                    if "object_store_memory" in resources else None),
                alive=node["Alive"] if node else None))
        return tuple(rows)

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
