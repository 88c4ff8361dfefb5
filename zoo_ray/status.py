"""What a running RayContext's cluster looks like now (runs on the driver).

Ray's head keeps the node table; zoo_ray knows each node as started
(:class:`~zoo_ray.nodes.RunningCluster`). The functions here join the two: each
executor's node with its registration, its object store usage, and the snapshot the
RayContext card shows (:mod:`zoo_ray.display`). They read the node table through
:func:`~zoo_ray.driver_guard.node_table`, in slices, so none waits for ever on a lost GCS.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

import ray

from . import spark_internals
from .display import ClusterView, NodeRow
from .driver_guard import node_table, object_store_used
from .errors import ZooRayError
from .kerberos import driver_credentials
from .nodes import GATEWAY, RunningCluster
from .protocol import NodeInfo
from .yarn import ResourceManager

if TYPE_CHECKING:
    from .scaler import ScaleStatus

__all__ = ["Registration", "cluster_view", "live_nodes", "node_status", "registrations",
           "store_usage"]

logger = logging.getLogger(__name__)

#: An executor's node as started, and its registration at the head (``ray.nodes()``' keys).
Registration = tuple[NodeInfo, dict[str, Any]]


def live_nodes(started: list[NodeInfo], timeout: float | None = None) -> dict[str, dict[str, Any]]:
    """Ray's registration of each started node, by its temp dir.

    A restarted node registers anew and its live registration wins.

    Parameters
    ----------
    started : list of NodeInfo
        The nodes as their managers answered.
    timeout : float, optional
        Seconds to wait for the GCS to answer (in slices of a second); None waits as
        long as Ray lets the driver live without it.
    """
    found: dict[str, dict[str, Any]] = {}
    for node in node_table(timeout):
        for info in started:
            if node["ObjectStoreSocketName"].startswith(info.temp_dir) and (
                    node["Alive"] or info.temp_dir not in found):
                found[info.temp_dir] = node
    return found


def registrations(cluster: RunningCluster | None) -> dict[str, Registration]:
    """Each executor's node as started, with its registration at the head, by container;
    empty without a cluster (before ``init()``, after ``stop()``), asking Ray nothing."""
    if cluster is None:
        return {}
    started = list(cluster.nodes)
    live = live_nodes(started)
    return {info.container: (info, live[info.temp_dir]) for info in started
            if info.temp_dir in live}


def node_status(cluster: RunningCluster | None, released: Collection[str],
                scaling: ScaleStatus | None) -> list[dict[str, Any]]:
    """What ``RayContext.node_status()`` returns: each executor's node (not those an
    elastic cluster gave back), then a row per executor asked of YARN whose node is not
    up yet, ``pending`` saying why (see :class:`~zoo_ray.scaler.ScaleStatus`)."""
    status = [{"container": container, "node_id": node["NodeID"], "alive": node["Alive"],
               "gpus": node["Resources"].get("GPU", 0.0), "pending": ""}
              for container, (info, node) in registrations(cluster).items()
              if info.executor_id not in released]
    for lost in (s for s in status if not s["alive"]):
        logger.warning("Ray node of executor %s is lost", lost["container"])
    if scaling is not None:
        # Asked for and not up, against the nodes up now: the scaler's count of them is
        # its last look's (up to a poll old, before the nodes that just joined).
        up = sum(s["alive"] for s in status)
        why = scaling.waiting or "asked of YARN, starting"
        status += [{"container": "", "node_id": "", "alive": False, "gpus": 0.0,
                    "pending": why} for _ in range(max(0, scaling.target - up))]
    return status


def store_usage(cluster: RunningCluster | None) -> dict[str, int]:
    """Bytes in use in each live executor node's object store, by container."""
    return {container: object_store_used(
                f"{node['NodeManagerAddress']}:{node['NodeManagerPort']}")
            for container, (_, node) in registrations(cluster).items() if node["Alive"]}


def cluster_view(sc: Any, app_id: str, is_local: bool, state: str,
                 cluster: RunningCluster | None, scaling: ScaleStatus | None = None,
                 released: Collection[str] = ()) -> ClusterView:
    """A snapshot for display: the application, its pages and every node.

    Each question (the ResourceManager, the node table) waits seconds at most: a
    display must not hang a notebook.

    Parameters
    ----------
    sc : pyspark.SparkContext
    app_id : str
        The Spark application (YARN's id); empty before ``init()``.
    is_local : bool
        Spark runs in local mode (no YARN to ask).
    state : str
        The RayContext's state: "new", "starting", "running" or "stopped".
    cluster : RunningCluster, optional
        The cluster, while there is one.
    scaling : ScaleStatus, optional
        An elastic cluster's, whose line the view shows with the nodes up in the same
        view (the scaler's count of them is its last look's, up to a poll old).
    released : collection of str
        Executors an elastic cluster gave back: their nodes are not shown.
    """
    app_state, yarn_url, spark_url = _application(sc, app_id, is_local)
    rows = _node_rows(cluster, state == "running", released)
    line = ""
    if scaling is not None:
        seen = [row.alive for row in rows if row.role != "driver" and row.alive is not None]
        if seen:
            scaling = dataclasses.replace(scaling, nodes=sum(seen))
        line = scaling.line()
    return ClusterView(state=state, app_id=app_id, app_state=app_state,
                       head=cluster.address if cluster else None, yarn_url=yarn_url,
                       spark_url=spark_url,
                       dashboard_url=cluster.dashboard_url if cluster else None,
                       nodes=rows, scaling=line)


def _application(sc: Any, app_id: str, is_local: bool) -> tuple[str, str | None, str | None]:
    """The application's state and the pages of YARN and of the Spark UI."""
    if spark_internals.is_stopped(sc):
        return "stopped", None, None
    if is_local:
        return "local", None, sc.uiWebUrl
    try:
        rm = ResourceManager.of_driver(3.0, driver_credentials(sc.getConf()))
        state = rm.app(app_id)["state"]
    except (ZooRayError, OSError, KeyError) as exc:
        logger.debug("no application state for the display: %s", exc)
        return "unknown", None, sc.uiWebUrl
    base = f"http://{rm.webapp_address}"
    # The Spark UI of a YARN application is served through the ResourceManager's proxy.
    return state, f"{base}/cluster/app/{app_id}", f"{base}/proxy/{app_id}/"


def _node_rows(cluster: RunningCluster | None, running: bool,
               released: Collection[str]) -> tuple[NodeRow, ...]:
    if cluster is None:
        return ()
    started = [*(node for node in cluster.nodes if node.executor_id not in released),
               dataclasses.replace(cluster.gateway, role="driver", container=GATEWAY)]
    live: dict[str, dict[str, Any]] = {}
    if running:
        try:
            live = live_nodes(started, timeout=3.0)
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
            gpus=resources.get("GPU", 0.0) if node else None,
            object_store_bytes=(int(resources["object_store_memory"])
                                if "object_store_memory" in resources else None),
            alive=node["Alive"] if node else None))
    return tuple(rows)
