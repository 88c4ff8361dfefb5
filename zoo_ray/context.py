"""RayContext: a supervised Ray cluster inside the Spark executors (driver side).

``init()`` fixes the head's executor and address in a one-task Spark job, then
starts a RayManager (:mod:`zoo_ray.manager`) in each executor through one barrier
job over every task slot (so every executor runs tasks and exactly one task per
executor is elected), and the gateway's node for the driver alongside: all nodes
start at once. The tasks return as soon as their node is up: Ray holds no Spark
task slot. The
driver is then a full Ray driver; plain ``ray.init()`` and Ray's auto-connect
join the cluster through ``RAY_ADDRESS``.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import selectors
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil

from .auth import clear_driver_token, write_driver_token
from .errors import RayContextError, RayNodeStartError, ZooRayError
from .local import terminate
from .manager import STATE_DIR, NodeSpec, free_ports, node_ip
from .resources import RAY_MEMORY_CONF, parse_memory

__all__ = ["RayContext"]

logger = logging.getLogger(__name__)

#: Memory Ray's own processes (GCS, raylet, agents, a few workers) need besides the object store.
RAY_PROCESS_MEMORY = 512 * 2**20


def _spawn_manager(spec_json: str) -> subprocess.Popen:
    """Start ``python -m zoo_ray.manager`` with its spec on stdin (never on its command line)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo_ray.manager"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    proc.stdin.write(spec_json + "\n")
    proc.stdin.close()
    return proc


def _await_manager(proc: subprocess.Popen, timeout: float) -> Dict[str, Any]:
    """The manager's READY answer; raises with its ERROR answer or on timeout."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = proc.stdout.readline() if ready else ""
    proc.stdout.close()
    kind, _, payload = line.partition(" ")
    if kind == "READY":
        return json.loads(payload)
    if not ready:
        proc.kill()
    info = json.loads(payload) if kind == "ERROR" else {"message": f"no answer in {timeout}s"}
    raise RuntimeError(json.dumps(info))


def _container_spec(base: Dict[str, Any]) -> str:
    """Fill in what only the executor knows: its working and log directories."""
    log_dir = os.environ.get("LOG_DIRS", os.getcwd()).split(",")[0]
    return json.dumps({**base, "work_dir": os.getcwd(), "log_dir": log_dir,
                       "watch_pid": _executor_jvm_pid()})


def _executor_jvm_pid() -> Optional[int]:
    for parent in psutil.Process().parents():
        if parent.name() == "java":
            return parent.pid
    return None


def _manager_pid(app_id: str) -> Optional[int]:
    """The live manager of ``app_id`` in this container, if any."""
    try:
        info = json.loads((Path(STATE_DIR) / "manager.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("app_id") == app_id and psutil.pid_exists(info["pid"]):
        return info["pid"]
    return None


def _place_head(app_id: str):
    """A one-task job: the executor it runs in hosts the head, at an address fixed now.

    Knowing the head's address before any node starts lets the workers and the
    gateway's node start alongside the head; they wait for its GCS themselves.
    """
    def task(_):
        yield {"container": os.environ.get("CONTAINER_ID", ""),
               "has_node": _manager_pid(app_id) is not None,
               "address": f"{node_ip()}:{free_ports(1)[0]}"}
    return task


def _outcome(container: str, proc: subprocess.Popen, timeout: float) -> tuple:
    try:
        return ("ok", _await_manager(proc, timeout))
    except Exception as exc:  # sent back to the driver, which raises a typed error
        return ("error", {"container": container, "error": str(exc)})


def _start_nodes(base: Dict[str, Any], head: Dict[str, Any], wanted: int, timeout: float):
    """A barrier task over every slot: one task per chosen executor starts its node.

    A first ``allGather`` elects the first task of each executor; the head's executor
    and then executors without a node of this application are chosen, ``wanted`` in
    all, and every chosen node starts at once. A second one shares whether the head
    came up: if not, the workers (still waiting for its GCS) are stopped at once
    rather than at their timeout.
    """
    def task(_):
        from pyspark import BarrierTaskContext

        ctx = BarrierTaskContext.get()
        container = os.environ.get("CONTAINER_ID", "")
        has_node = _manager_pid(base["app_id"]) is not None
        mine = json.dumps({"container": container, "partition": ctx.partitionId(),
                           "has_node": has_node})
        first_task: Dict[str, Dict[str, Any]] = {}
        for info in sorted((json.loads(m) for m in ctx.allGather(mine)),
                           key=lambda i: i["partition"]):
            first_task.setdefault(info["container"], info)
        others = sorted(c for c, i in first_task.items()
                        if not i["has_node"] and c != head["container"])
        chosen = ([head["container"]] if head["container"] in first_task else []) + others
        elected = (container in chosen[:wanted]
                   and first_task[container]["partition"] == ctx.partitionId())
        is_head = elected and container == head["container"]
        proc = outcome = None
        if elected:
            spec = {**base, "role": "head" if is_head else "worker",
                    "head_address": head["address"]}
            if is_head:
                spec["node_ip"] = head["address"].rsplit(":", 1)[0]
            proc = _spawn_manager(_container_spec(spec))
        if is_head:
            outcome = _outcome(container, proc, timeout)
        head_up = "ok" in ctx.allGather(outcome[0] if is_head else "")
        if elected and not is_head:
            if head_up:
                outcome = _outcome(container, proc, timeout)
            else:
                proc.terminate()
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                outcome = ("skipped", {"container": container})
        if outcome:
            yield outcome
        elif first_task[container]["partition"] == ctx.partitionId():
            yield ("idle", {"container": container, "has_node": has_node})
    return task


def _stop_managers(app_id: str, timeout: float):
    """SIGTERM this executor's manager; SIGKILL it and its whole tree if it hangs."""
    def task(_):
        pid = _manager_pid(app_id)
        container = os.environ.get("CONTAINER_ID", "")
        if pid is None:
            return
        try:
            manager = psutil.Process(pid)
            tree = manager.children(recursive=True)
        except psutil.NoSuchProcess:
            return
        if terminate([manager], grace=timeout):
            terminate(tree)
            yield (container, "killed")
        else:
            yield (container, "stopped")
    return task


def _raise_failures(results: List[tuple]) -> None:
    """Raise one typed error for every ("error", ...) among the start tasks' results."""
    failures = [info for kind, info in results if kind == "error"]
    if failures:
        lines = []
        for failure in failures:
            try:
                detail = json.loads(failure["error"])
            except ValueError:
                detail = {"message": failure["error"]}
            if detail.get("kind") == "shm":
                raise RayContextError(
                    f"Executor {failure['container']}: {detail['message']}. Lower "
                    "object_store_memory below the free /dev/shm of the nodes, or ask your "
                    "administrators for a larger /dev/shm."
                )
            lines.append(f"{failure['container']}: {detail.get('message')}\n"
                         f"{detail.get('log_tail', '')}")
        raise RayNodeStartError(
            f"{len(failures)} Ray node(s) failed to start; everything started was stopped."
            " Executor logs (`zoo-ray logs <application id>`) hold ray_manager.log and "
            "ray_start.log.\n" + "\n".join(lines)
        )


class RayContext:
    """A Ray cluster inside the executors of a SparkContext.

    Parameters
    ----------
    sc : pyspark.SparkContext
        A running SparkContext, normally from :func:`zoo_ray.init_spark_on_yarn`.
    object_store_memory : str, optional
        Object store per node, like "2g". Must fit, with Ray's own processes, in the
        ``extra_executor_memory_for_ray`` given to init_spark_on_yarn, and in the
        free ``/dev/shm`` of every node.
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
        Serve Ray's dashboard from the head (bound to the head's address).
    system_config : dict, optional
        Ray ``_system_config`` for the head.
    verbose : bool
        Log every node's start.
    init_timeout : float
        Seconds ``init()`` waits for every node before failing.
    max_restarts : int
        How often a RayManager restarts its crashed node.
    """

    _active: Optional["RayContext"] = None

    def __init__(
        self,
        sc: Any,
        object_store_memory: Optional[str] = None,
        num_ray_nodes: Optional[int] = None,
        ray_node_cpu_cores: Optional[int] = None,
        env: Optional[Dict[str, str]] = None,
        extra_params: Optional[Dict[str, Any]] = None,
        include_webui: bool = False,
        system_config: Optional[Dict[str, Any]] = None,
        verbose: bool = False,
        init_timeout: float = 180.0,
        max_restarts: int = 5,
    ) -> None:
        self.sc = sc
        conf = sc.getConf()
        self.object_store_memory = (
            parse_memory(object_store_memory, "object_store_memory")
            if object_store_memory is not None else None
        )
        self.executors = int(conf.get("spark.executor.instances", "1"))
        self.executor_cores = int(conf.get("spark.executor.cores", "1"))
        self.num_ray_nodes = self.executors if num_ray_nodes is None else num_ray_nodes
        if not isinstance(self.num_ray_nodes, int) or self.num_ray_nodes < 1:
            raise RayContextError(f"num_ray_nodes={num_ray_nodes!r} must be a whole number >= 1.")
        if self.num_ray_nodes > self.executors:
            raise RayContextError(
                f"num_ray_nodes={self.num_ray_nodes} is more than the {self.executors} executors:"
                " zoo_ray runs one Ray node per executor. Ask init_spark_on_yarn for "
                f"num_executors={self.num_ray_nodes}, or lower num_ray_nodes."
            )
        self.ray_node_cpu_cores = ray_node_cpu_cores or self.executor_cores
        self.env = dict(env or {})
        self.extra_params = dict(extra_params or {})
        self.include_webui = include_webui
        self.system_config = system_config
        self.verbose = verbose
        self.init_timeout = init_timeout
        self.max_restarts = max_restarts
        self._check_memory(conf)
        self.initialized = False
        self.address_info: Dict[str, Any] = {}
        self._gateway_pid: Optional[int] = None
        self._work_dir: Optional[tempfile.TemporaryDirectory] = None
        self._app_id = ""

    def _check_memory(self, conf: Any) -> None:
        if self.object_store_memory is None:
            return
        ray_memory = conf.get(RAY_MEMORY_CONF)
        if ray_memory is None:
            return
        needed = self.object_store_memory + RAY_PROCESS_MEMORY
        if needed > int(ray_memory):
            raise RayContextError(
                f"object_store_memory ({self.object_store_memory // 2**20} MiB) plus "
                f"{RAY_PROCESS_MEMORY // 2**20} MiB for Ray's own processes does not fit in "
                f"extra_executor_memory_for_ray ({int(ray_memory) // 2**20} MiB): YARN would "
                "kill the executors. Raise extra_executor_memory_for_ray to at least "
                f"{-(-needed // 2**20)}m or lower object_store_memory."
            )

    @classmethod
    def get(cls, initialize: bool = True) -> "RayContext":
        """The current RayContext (initialising it if asked and needed)."""
        if cls._active is None:
            raise RayContextError("No RayContext exists; create one with RayContext(sc).")
        if initialize and not cls._active.initialized:
            cls._active.init()
        return cls._active

    # ----------------------------------------------------------------- init
    def _base_spec(self) -> Dict[str, Any]:
        return {
            "role": "worker", "app_id": self._app_id, "token": self._token,
            "num_cpus": self.ray_node_cpu_cores,
            "object_store_memory": self.object_store_memory,
            "include_dashboard": self.include_webui, "system_config": self.system_config,
            "extra_params": self.extra_params, "env": self.env,
            "max_restarts": self.max_restarts, "ready_timeout": self.init_timeout,
        }

    def init(self, driver_cores: int = 0) -> Dict[str, Any]:
        """Start every Ray node, wait until all have registered, return the address info.

        Parameters
        ----------
        driver_cores : int
            CPUs the gateway's Ray node (which the driver attaches to) offers to tasks.

        Raises
        ------
        RayContextError
            Already initialised.
        RayNodeStartError
            A node did not come up in time; names the executors and the tail of their
            logs. Everything started is stopped again.
        """
        if self.initialized:
            raise RayContextError("This RayContext is already initialised; call stop() first.")
        if RayContext._active is not None and RayContext._active.initialized:
            raise RayContextError("Another RayContext is running; stop it first.")
        started = time.monotonic()
        self._app_id = self.sc.applicationId
        self._token = secrets.token_urlsafe(32)
        write_driver_token(self._token)
        RayContext._active = self
        self.initialized = True
        try:
            self._start_cluster(driver_cores)
        except BaseException:
            self.stop()
            raise
        atexit.register(self.stop)
        self._wrap_spark_stop()
        logger.info("Ray cluster up in %.1fs: %d nodes, head %s", time.monotonic() - started,
                    len(self.address_info["nodes"]), self.address_info["address"])
        return self.address_info

    def _start_cluster(self, driver_cores: int) -> None:
        head = self.sc.parallelize([0], 1).mapPartitions(_place_head(self._app_id)).collect()[0]
        if head["has_node"]:
            raise RayContextError(
                f"Executor {head['container']} still runs a Ray node of this application (an "
                "earlier stop() is still finishing). Retry init() in a minute, or restart the "
                "SparkContext."
            )
        self.address_info = {"address": head["address"], "nodes": []}
        gateway = self._spawn_gateway_node(driver_cores)
        slots = self.executors * self.executor_cores
        results = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
            _start_nodes(self._base_spec(), head, self.num_ray_nodes, self.init_timeout)
        ).collect()
        _raise_failures(results)
        nodes = sorted((info for kind, info in results if kind == "ok"),
                       key=lambda info: info["role"] != "head")
        if len(nodes) < self.num_ray_nodes or nodes[0]["role"] != "head":
            raise RayNodeStartError(
                f"Only {len(nodes)} of {self.num_ray_nodes} executors could take a Ray node "
                "(lost executors?); everything started was stopped. Retry, or lower "
                "num_ray_nodes."
            )
        self.address_info["nodes"] = nodes
        try:
            self.address_info["gateway_node"] = _await_manager(gateway, self.init_timeout)
        except RuntimeError as exc:
            # Its log directory goes with the cleanup: the error carries the log's tail.
            _raise_failures([("error", {"container": "this host (the driver's node)",
                                             "error": str(exc)})])
        self._connect_and_verify()

    def _spawn_gateway_node(self, driver_cores: int) -> subprocess.Popen:
        """Start the node the driver attaches to; it joins the head once that is up."""
        self._work_dir = tempfile.TemporaryDirectory(prefix="zoo-ray-driver-")
        spec = NodeSpec(**{**self._base_spec(), "num_cpus": driver_cores,
                           "head_address": self.address_info["address"],
                           "object_store_memory": None, "work_dir": self._work_dir.name,
                           "log_dir": os.path.join(self._work_dir.name, "logs"),
                           "watch_pid": os.getpid()})
        proc = _spawn_manager(spec.to_json())
        self._gateway_pid = proc.pid
        return proc

    def _connect_and_verify(self) -> None:
        import ray

        os.environ["RAY_ADDRESS"] = self.address_info["address"]
        ray.init(address=self.address_info["address"], logging_level=logging.WARNING,
                 log_to_driver=self.verbose)
        wanted = self.num_ray_nodes + 1
        deadline = time.monotonic() + self.init_timeout
        alive: List[Dict[str, Any]] = []
        while time.monotonic() < deadline:
            alive = [n for n in ray.nodes() if n["Alive"]]
            if len(alive) >= wanted:
                break
            time.sleep(0.5)
        ray.shutdown()
        if len(alive) < wanted:
            raise RayNodeStartError(
                f"Only {len(alive)} of {wanted} Ray nodes registered with the head within "
                f"{self.init_timeout:.0f}s; everything started was stopped."
            )
        self.address_info["node_ids"] = sorted(n["NodeID"] for n in alive)
        self.address_info["webui_url"] = self.address_info["nodes"][0]["dashboard_url"]

    # ----------------------------------------------------------------- stop
    def stop(self) -> None:
        """Stop every Ray process of this application on every node.

        The SparkContext stays usable; ``init()`` afterwards starts a fresh cluster.

        Raises
        ------
        RayContextError
            When called before ``init()``.
        """
        if not self.initialized:
            raise RayContextError("This RayContext was never initialised; nothing to stop.")
        import ray

        if ray.is_initialized():
            ray.shutdown()
        os.environ.pop("RAY_ADDRESS", None)
        gateway = None
        if self._gateway_pid is not None:
            try:
                gateway = psutil.Process(self._gateway_pid)
                gateway.terminate()
            except psutil.Error:
                gateway = None
            self._gateway_pid = None
        if self.sc._jsc is not None:
            slots = self.executors * self.executor_cores
            stopped = self.sc.parallelize(range(slots), slots).barrier().mapPartitions(
                _stop_managers(self._app_id, 30.0)).collect()
            stuck = [c for c, how in stopped if how != "stopped"]
            if stuck:
                logger.warning("Ray nodes in %s did not stop in time and were killed", stuck)
        if gateway is not None:
            try:
                gateway.wait(30)
            except psutil.Error:
                logger.warning("The gateway's Ray node (pid %d) did not stop in time", gateway.pid)
        if self._work_dir is not None:
            self._work_dir.cleanup()
            self._work_dir = None
        clear_driver_token()
        self.initialized = False
        self.address_info = {}
        atexit.unregister(self.stop)
        logger.info("Ray cluster of %s stopped", self._app_id)

    def _wrap_spark_stop(self) -> None:
        sc_stop = self.sc.stop

        def stop_ray_then_spark() -> None:
            if self.initialized:
                try:
                    self.stop()
                except ZooRayError as exc:
                    logger.warning("stopping Ray: %s", exc)
            self.sc.stop = sc_stop
            sc_stop()

        self.sc.stop = stop_ray_then_spark

    def __enter__(self) -> "RayContext":
        if not self.initialized:
            self.init()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.initialized:
            self.stop()

    def node_status(self) -> List[Dict[str, Any]]:
        """Each executor's Ray node as Ray's head sees it now: container, node id, alive.

        A node whose executor was lost (killed by YARN, preempted) shows
        ``alive=False``; losses are also logged.
        """
        import ray

        by_temp_dir = {}
        for node in ray.nodes():
            for info in self.address_info.get("nodes", []):
                if node["ObjectStoreSocketName"].startswith(info["temp_dir"]):
                    # A restarted node registers anew; the live registration wins.
                    if node["Alive"] or info["container"] not in by_temp_dir:
                        by_temp_dir[info["container"]] = {
                            "container": info["container"], "node_id": node["NodeID"],
                            "alive": node["Alive"]}
        status = list(by_temp_dir.values())
        for lost in (s for s in status if not s["alive"]):
            logger.warning("Ray node of executor %s is lost", lost["container"])
        return status

    @property
    def address(self) -> Optional[str]:
        """The head's GCS address, ``ip:port``."""
        return self.address_info.get("address")

    @property
    def nodes(self) -> List[Dict[str, Any]]:
        """The executors' Ray nodes as started (head first): container, manager pid, log dir."""
        return list(self.address_info.get("nodes", []))

    @property
    def dashboard_url(self) -> Optional[str]:
        """The head's Ray dashboard, when started with ``include_webui=True``."""
        return self.address_info.get("webui_url")
