"""RayContext's arguments, checked once against the SparkContext (runs on the driver).

:class:`RayOptions` is to :class:`~zoo_ray.context.RayContext` what
:class:`~zoo_ray.yarn_request.YarnRequest` is to ``init_spark_on_yarn``: a frozen record
of every argument, each checked before anything starts, with what the Spark
configuration implies (executors, cores, Ray's share of each container). The other
collaborators of RayContext read it and never check an argument again.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError, RayContextError
from .gpu_claims import GPU_AMOUNT_CONF
from .memory import (
    MIN_OBJECT_STORE,
    RAY_MEMORY_CONF,
    check_object_store_fits,
    parse_memory,
    worker_memory,
)
from .node_dirs import ROOT_FLAGS, root_problem
from .protocol import NodeSpec
from .scaling_plan import parse_idle_timeout

__all__ = ["RayOptions", "ScaleRange", "scale_range"]

#: `ray start` flags zoo_ray sets itself, and what to use instead.
_OWN_FLAGS = {
    "num-cpus": "pass ray_node_cpu_cores",
    "object-store-memory": "pass object_store_memory",
    "include-dashboard": "pass include_webui",
    "system-config": "pass system_config",
}
_PLACED = ("zoo_ray places the head and picks every node's address and ports, so several "
           "applications share hosts")


def _flag(key: Any) -> str:
    return str(key).lstrip("-").replace("_", "-")


def _check_extra_params(extra_params: dict[str, Any]) -> dict[str, Any]:
    """Refuse ``ray start`` flags zoo_ray sets itself; each error names what to use instead.
    The roots of the nodes' directories are taken out (see :func:`_roots`)."""
    for key in extra_params:
        flag = _flag(key)
        if flag in _OWN_FLAGS or flag in ("head", "block", "address", "node-ip-address") or (
                flag.endswith("port") or flag.endswith("ports")):
            why = _OWN_FLAGS.get(flag, _PLACED)
            raise InvalidArgumentError(
                f"extra_params={{{key!r}: ...}}: {why}. Drop it from extra_params.")
    return {key: value for key, value in extra_params.items() if _flag(key) not in ROOT_FLAGS}


def _roots(extra_params: dict[str, Any], temp_dir: str | None) -> dict[str, str]:
    """The user's roots for the nodes' directories, by NodeSpec field: ``temp_dir``, or
    ``extra_params``' ``temp-dir`` and ``object-spilling-directory`` (Ray's and Analytics
    Zoo's spelling); each an absolute path, the two temp dirs the same if both given."""
    given = {ROOT_FLAGS[_flag(key)]: value for key, value in extra_params.items()
             if _flag(key) in ROOT_FLAGS}
    if temp_dir is not None:
        if os.path.normpath(given.get("temp_root", temp_dir)) != os.path.normpath(temp_dir):
            raise InvalidArgumentError(
                f"temp_dir={temp_dir!r} and extra_params' temp-dir={given['temp_root']!r} "
                "differ; pass one of them.")
        given["temp_root"] = temp_dir
    for field, value in given.items():
        if not isinstance(value, (str, os.PathLike)) or not os.path.isabs(value):
            name = "temp_dir" if field == "temp_root" else "object-spilling-directory"
            raise InvalidArgumentError(
                f"{name}={value!r} must be an absolute path (no ~: it is not expanded on the "
                "executors), one that exists on every host the executors run on, like "
                "\"/data/ray\".")
    return {field: os.path.normpath(value) for field, value in given.items()}


def _local_cores(master: str) -> int:
    """The task slots of a local master: ``local``, ``local[4]``, ``local[*]``, ``local[4,2]``."""
    inside = master.partition("[")[2].rstrip("]").split(",")[0]
    if inside == "*":
        return os.cpu_count() or 1
    return int(inside) if inside.isdigit() else 1


@dataclass(frozen=True)
class ScaleRange:
    """An elastic RayContext's range: ``min_ray_nodes`` to ``max_ray_nodes`` executors'
    nodes, a node idle for ``idle_timeout_s`` given back (see :mod:`zoo_ray.scaler`)."""

    min_nodes: int
    max_nodes: int
    idle_timeout_s: float


def scale_range(min_ray_nodes: Any, max_ray_nodes: Any,
                idle_timeout: Any = "60s") -> ScaleRange | None:
    """RayContext's elastic arguments checked on their own (``zoo-ray submit`` checks them
    before it starts anything): the range, or None for a fixed size (neither bound given).

    Raises
    ------
    InvalidArgumentError
        A bound that is not a whole number >= 1, ``min_ray_nodes`` above
        ``max_ray_nodes`` or without it, an unparsable ``idle_timeout``.
    """
    idle_timeout_s = parse_idle_timeout(idle_timeout)  # checked with or without a range
    if min_ray_nodes is None and max_ray_nodes is None:
        return None
    if max_ray_nodes is None:
        raise InvalidArgumentError(
            f"min_ray_nodes={min_ray_nodes!r} without max_ray_nodes: pass max_ray_nodes too "
            "(the most executors the cluster may grow to), or neither for a fixed size.")
    low = 1 if min_ray_nodes is None else min_ray_nodes
    for name, value in (("min_ray_nodes", low), ("max_ray_nodes", max_ray_nodes)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number >= 1.")
    if low > max_ray_nodes:
        raise InvalidArgumentError(
            f"min_ray_nodes={low} is above max_ray_nodes={max_ray_nodes}; pass "
            "min_ray_nodes <= max_ray_nodes.")
    return ScaleRange(low, max_ray_nodes, idle_timeout_s)


def _check_range(min_ray_nodes: Any, max_ray_nodes: Any, idle_timeout: Any,
                 num_ray_nodes: Any, conf: Any, is_local: bool) -> ScaleRange | None:
    """The range checked against the rest of RayContext's arguments and Spark's conf."""
    scale = scale_range(min_ray_nodes, max_ray_nodes, idle_timeout)
    if scale is None:
        return None
    if num_ray_nodes is not None:
        raise InvalidArgumentError(
            f"num_ray_nodes={num_ray_nodes!r} with min_ray_nodes/max_ray_nodes: a fixed size "
            "or a range, not both. Drop num_ray_nodes (init() starts min_ray_nodes nodes).")
    if is_local:
        raise InvalidArgumentError(
            "min_ray_nodes/max_ray_nodes need executors YARN can add and take back; a local "
            "master has none. Use init_spark_on_yarn, or drop the range.")
    if str(conf.get("spark.dynamicAllocation.enabled", "false")).lower() == "true":
        raise InvalidArgumentError(
            "min_ray_nodes/max_ray_nodes with spark.dynamicAllocation.enabled=true: Spark's "
            "dynamic allocation would add and remove executors by Spark's own demand, and "
            "zoo_ray by Ray's; start Spark without dynamic allocation (init_spark_on_yarn's "
            "default), or drop the range.")
    return scale


def _check_num_ray_nodes(num_ray_nodes: Any, executors: int) -> int:
    wanted = executors if num_ray_nodes is None else num_ray_nodes
    if isinstance(wanted, bool) or not isinstance(wanted, int) or wanted < 1:
        raise InvalidArgumentError(
            f"num_ray_nodes={num_ray_nodes!r} must be a whole number >= 1.")
    if wanted > executors:
        raise InvalidArgumentError(
            f"num_ray_nodes={wanted} is more than the {executors} executors: zoo_ray "
            f"runs one Ray node per executor. Ask init_spark_on_yarn for "
            f"num_executors={wanted}, or lower num_ray_nodes."
        )
    return wanted


@dataclass(frozen=True)
class RayOptions:
    """RayContext's checked arguments and what the Spark configuration implies.

    Build it with :meth:`from_spark_conf`; the fields are in bytes, counts and seconds.
    ``worker_memory`` is the ``memory`` resource of each executor's node: what is left
    of Ray's share of the container once the object store is taken (None when either
    is not given, and Ray sizes the node itself).
    """

    is_local: bool
    executors: int
    executor_cores: int
    num_ray_nodes: int
    ray_node_cpu_cores: int
    object_store_memory: int | None
    driver_object_store_memory: int
    worker_memory: int | None
    env: dict[str, str]
    extra_params: dict[str, Any]
    #: The user's roots for the nodes' Ray temp dirs and spill dirs (None: the containers').
    temp_root: str | None
    spill_root: str | None
    include_webui: bool
    system_config: dict[str, Any] | None
    verbose: bool
    init_timeout: float
    max_restarts: int
    #: An elastic RayContext's range (None: a fixed size, ``num_ray_nodes``).
    scale: ScaleRange | None = None

    @classmethod
    def from_spark_conf(
        cls,
        conf: Any,
        *,
        object_store_memory: str | None,
        num_ray_nodes: int | None,
        ray_node_cpu_cores: int | None,
        env: dict[str, str] | None,
        extra_params: dict[str, Any] | None,
        include_webui: bool,
        system_config: dict[str, Any] | None,
        verbose: bool,
        init_timeout: float,
        max_restarts: int,
        driver_object_store_memory: str,
        temp_dir: str | None = None,
        min_ray_nodes: int | None = None,
        max_ray_nodes: int | None = None,
        idle_timeout: str | float = "60s",
    ) -> RayOptions:
        """Check RayContext's arguments against a SparkContext's configuration.

        Parameters
        ----------
        conf : pyspark.SparkConf
            The running SparkContext's configuration (``sc.getConf()``).
        object_store_memory, num_ray_nodes, ray_node_cpu_cores, env, extra_params, \
include_webui, system_config, verbose, init_timeout, max_restarts, \
driver_object_store_memory, temp_dir, min_ray_nodes, max_ray_nodes, idle_timeout
            As :class:`~zoo_ray.context.RayContext` takes them.

        Raises
        ------
        InvalidArgumentError
            A bad argument, or an object store that does not fit in Ray's share of an
            executor; the message names the fix.
        """
        master = str(conf.get("spark.master", ""))
        is_local = master.startswith("local")
        store = (parse_memory(object_store_memory, "object_store_memory")
                 if object_store_memory is not None else None)
        driver_store = parse_memory(driver_object_store_memory, "driver_object_store_memory")
        if driver_store < MIN_OBJECT_STORE:
            raise InvalidArgumentError(
                f"driver_object_store_memory={driver_object_store_memory!r} is below Ray's "
                "minimum object store of 75 MiB; pass at least \"75m\".")
        # Local mode has one executor, the driver's JVM, whatever the conf says.
        executors = 1 if is_local else int(conf.get("spark.executor.instances", "1"))
        cores = _local_cores(master) if is_local else int(conf.get("spark.executor.cores", "1"))
        ray_memory = conf.get(RAY_MEMORY_CONF)
        node_memory = None
        if store is not None and ray_memory is not None:
            check_object_store_fits(store, int(ray_memory))
            node_memory = worker_memory(store, int(ray_memory))
        roots = _roots(extra_params or {}, temp_dir)
        if conf.get(GPU_AMOUNT_CONF) and any(_flag(k) == "num-gpus" for k in extra_params or {}):
            raise InvalidArgumentError(
                "extra_params={'num-gpus': ...} with executors that have GPUs "
                "(init_spark_on_yarn(executor_gpus=...)): each executor's node already offers "
                "its container's GPUs. Drop num-gpus from extra_params.")
        scale = _check_range(min_ray_nodes, max_ray_nodes, idle_timeout, num_ray_nodes, conf,
                             is_local)
        if scale is not None:  # init() starts min_ray_nodes nodes, in the executors there are
            num_ray_nodes = min(scale.min_nodes, executors)
        return cls(
            is_local=is_local, executors=executors, executor_cores=cores,
            num_ray_nodes=_check_num_ray_nodes(num_ray_nodes, executors),
            ray_node_cpu_cores=ray_node_cpu_cores or cores, object_store_memory=store,
            driver_object_store_memory=driver_store, worker_memory=node_memory,
            env=dict(env or {}), extra_params=_check_extra_params(extra_params or {}),
            temp_root=roots.get("temp_root"), spill_root=roots.get("spill_root"),
            include_webui=include_webui, system_config=system_config, verbose=verbose,
            init_timeout=init_timeout, max_restarts=max_restarts, scale=scale)

    def check_roots_here(self) -> None:
        """Check the roots on this host, the gateway, whose node uses them too: before
        anything starts, not after every executor's node has.

        Raises
        ------
        RayContextError
            A root does not exist or is not writable here; names it and the fix.
        """
        for name, root in (("temp_dir", self.temp_root),
                           ("object-spilling-directory", self.spill_root)):
            problem = root_problem(root) if root else ""
            if problem:
                raise RayContextError(
                    f"{name} {root!r} {problem} on this host ({socket.gethostname()}), the "
                    "gateway, whose Ray node "
                    "keeps its files there too. Create it (on every host the executors run "
                    f"on as well), or pass another {name}.")

    @property
    def slots(self) -> int:
        """The task slots of every configured executor together."""
        return self.executors * self.executor_cores

    def start_size(self, registered: int) -> tuple[int, int]:
        """The nodes ``init()`` starts and the task slots it starts them over: the
        configured ones, or for an elastic cluster those of the ``registered`` executors
        (an elastic RayContext before may have given some back)."""
        if self.scale is None:
            return self.num_ray_nodes, self.slots
        return min(self.num_ray_nodes, registered), registered * self.executor_cores

    def base_spec(self, app_id: str, token: str) -> NodeSpec:
        """What every node shares; each executor fills in its own directories and JVM.

        Parameters
        ----------
        app_id : str
            The Spark application the nodes belong to (YARN's id).
        token : str
            The cluster's auth token (written to a 0600 file on each host, never to a
            command line).

        Returns
        -------
        NodeSpec
            A worker's spec; the head's and the gateway's are changed copies of it.
        """
        return NodeSpec(
            role="worker", app_id=app_id, token=token, num_cpus=self.ray_node_cpu_cores,
            work_dir="", log_dir="", object_store_memory=self.object_store_memory,
            memory=self.worker_memory, include_dashboard=self.include_webui,
            system_config=self.system_config, extra_params=self.extra_params, env=self.env,
            temp_root=self.temp_root, spill_root=self.spill_root,
            max_restarts=self.max_restarts, ready_timeout=self.init_timeout,
        )

