"""Checks on the gateway and the cluster before init_spark_on_yarn submits anything.

Runs on the gateway, in the driver's process: it reads the Hadoop configuration,
finds Java and asks the ResourceManager (over REST) whether it answers, whether the
queue exists and whether any NodeManager could ever hold one executor, so that a
request YARN cannot run fails in seconds, naming the fix, instead of waiting. On a
secure cluster it checks the user's Kerberos login first (:mod:`zoo_ray.kerberos`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .app_master import AppMaster, choose_app_master
from .errors import ExecutorsNotStartedError, GpuRequestError, QueueNotFoundError
from .gpu_claims import GPU_RESOURCE
from .hadoop_conf import HadoopConf, hadoop_conf_dir
from .host import find_java_home
from .kerberos import Login, check_login, secure
from .yarn import ResourceManager
from .yarn_request import YarnRequest

__all__ = ["Gateway", "preflight"]


@dataclass(frozen=True)
class Gateway:
    """What :func:`preflight` found on the gateway.

    Parameters
    ----------
    conf : HadoopConf
        The gateway's Hadoop configuration.
    java_home : Path
        The JDK Spark's JVM runs on.
    rm : ResourceManager
        The cluster's ResourceManager, asked as the user.
    login : Login, optional
        The user's Kerberos login; None on a cluster without Kerberos.
    app_master : AppMaster
        Where Spark's ApplicationMaster runs (:func:`~zoo_ray.app_master.choose_app_master`).
    """

    conf: HadoopConf
    java_home: Path
    rm: ResourceManager
    login: Login | None
    app_master: AppMaster


def _check_fits(rm: ResourceManager, container_mb: int, cores: int) -> None:
    """Fail fast when no NodeManager could ever hold one executor."""
    nodes = rm.nodes(states="RUNNING")
    if not nodes:
        raise ExecutorsNotStartedError(
            f"The ResourceManager at {rm.webapp_address} has no RUNNING NodeManagers, so no "
            "executor can start. Check the NodeManagers (YARN UI, Nodes page)."
        )
    best_mb = max(n["totalResource"]["memory"] for n in nodes)
    best_cores = max(n["totalResource"]["vCores"] for n in nodes)
    if container_mb > best_mb or cores > best_cores:
        raise ExecutorsNotStartedError(
            f"Each executor needs {container_mb} MB and {cores} vcores (memory plus overhead "
            f"plus extra_executor_memory_for_ray), but the largest NodeManager offers "
            f"{best_mb} MB and {best_cores} vcores. Lower executor_memory, "
            "extra_executor_memory_for_ray or executor_cores."
        )


def gpus_of(resource: dict[str, Any]) -> int:
    """The ``yarn.io/gpu`` in a resource as the ResourceManager's REST API writes it.

    Parameters
    ----------
    resource : dict
        A NodeManager's ``totalResource`` or ``usedResource``, a queue's
        ``maxEffectiveCapacity``, ...

    Returns
    -------
    int
        Its GPUs, 0 where YARN has no GPU resource.
    """
    infos = (resource.get("resourceInformations") or {}).get("resourceInformation") or []
    return sum(int(info.get("value") or 0) for info in infos if info.get("name") == GPU_RESOURCE)


def _check_gpus(rm: ResourceManager, gpus: int, queue: str,
                queues: dict[str, dict[str, Any]]) -> None:
    """Fail fast when no NodeManager, or not the queue, could ever give one executor its
    ``gpus``."""
    offered = {node["id"]: gpus_of(node["totalResource"]) for node in rm.nodes(states="RUNNING")}
    best = max(offered.values(), default=0)
    if not best:
        raise GpuRequestError(
            f"executor_gpus={gpus}, but no NodeManager of the ResourceManager at "
            f"{rm.webapp_address} offers {GPU_RESOURCE}: its administrators enable YARN's GPU "
            "plugin (yarn.nodemanager.resource-plugins=yarn.io/gpu, and yarn.resource-types), "
            "or run without executor_gpus.")
    if gpus > best:
        raise GpuRequestError(
            f"executor_gpus={gpus}, but the NodeManager with the most GPUs has {best} "
            f"({', '.join(f'{node}: {n}' for node, n in sorted(offered.items()))}); "
            f"ask for at most {best} per executor, and more executors.")
    limit = (queues.get(queue) or {}).get("maxEffectiveCapacity")
    if limit is not None and gpus > gpus_of(limit):
        raise GpuRequestError(
            f"executor_gpus={gpus}, but YARN queue {queue!r} may use at most "
            f"{gpus_of(limit)} GPUs; pass a queue= with GPUs, or ask its admins.")


def preflight(request: YarnRequest) -> Gateway:
    """Check the gateway and the cluster before submitting: conf, Java, the Kerberos
    login (on a secure cluster), RM, queue, capacity; and where the ApplicationMaster
    can run.

    Raises
    ------
    HadoopConfError, JavaNotFoundError, KerberosError, ResourceManagerError,
    QueueNotFoundError, ExecutorsNotStartedError, GpuRequestError
        The gateway or the cluster cannot run the request; each names the fix.
    """
    hconf = HadoopConf(hadoop_conf_dir(request.hadoop_conf))
    java_home = find_java_home()
    login = check_login(request.principal, request.keytab) if secure(hconf) else None
    rm = ResourceManager.from_conf(hconf)
    rm.credentials = login.credentials if login else None
    rm.cluster_info()
    queues = rm.leaf_queues() if request.queue is not None or request.executor_gpus else {}
    if request.queue is not None and request.queue not in queues:
        raise QueueNotFoundError(
            f"YARN queue {request.queue!r} does not exist; the queues are: "
            f"{', '.join(queues)}. Pass one of them as queue=."
        )
    _check_fits(rm, request.container_mb, request.executor_cores)
    if request.executor_gpus:
        # YARN's own default queue when none is named (placement rules aside).
        _check_gpus(rm, request.executor_gpus, request.queue or "default", queues)
    app_master = choose_app_master(request.user_conf, hconf, rm, login is not None)
    return Gateway(hconf, java_home, rm, login, app_master)
