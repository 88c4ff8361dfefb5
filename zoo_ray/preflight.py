"""Checks on the gateway and the cluster before init_spark_on_yarn submits anything.

Runs on the gateway, in the driver's process: it reads the Hadoop configuration,
finds Java and asks the ResourceManager (over REST) whether it answers, whether the
queue exists and whether any NodeManager could ever hold one executor, so that a
request YARN cannot run fails in seconds, naming the fix, instead of waiting.
"""
from __future__ import annotations

from pathlib import Path

from .errors import ExecutorsNotStartedError, QueueNotFoundError
from .hadoop_conf import HadoopConf, hadoop_conf_dir
from .host import find_java_home
from .yarn import ResourceManager
from .yarn_request import YarnRequest

__all__ = ["preflight"]


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


def preflight(request: YarnRequest) -> tuple[HadoopConf, Path, ResourceManager]:
    """Check the gateway and the cluster before submitting: conf, Java, RM, queue, capacity.

    Returns
    -------
    tuple of (HadoopConf, Path, ResourceManager)
        The gateway's Hadoop configuration, ``JAVA_HOME`` and the ResourceManager.

    Raises
    ------
    HadoopConfError, JavaNotFoundError, ResourceManagerError, QueueNotFoundError,
    ExecutorsNotStartedError
        The gateway or the cluster cannot run the request; each names the fix.
    """
    hconf = HadoopConf(hadoop_conf_dir(request.hadoop_conf))
    java_home = find_java_home()
    rm = ResourceManager.from_conf(hconf)
    rm.cluster_info()
    if request.queue is not None:
        queues = rm.leaf_queues()
        if request.queue not in queues:
            raise QueueNotFoundError(
                f"YARN queue {request.queue!r} does not exist; the queues are: "
                f"{', '.join(queues)}. Pass one of them as queue=."
            )
    _check_fits(rm, request.container_mb, request.executor_cores)
    return hconf, java_home, rm
