"""Where Spark's ApplicationMaster runs: in the driver's process, or in a container.

Runs on the gateway, in the driver's process, before the application is submitted.
By default Spark's ApplicationMaster is a thread of the driver's JVM (an *unmanaged* AM,
``spark.yarn.unmanagedAM.enabled=true``): no NodeManager localizes the Python environment
and Spark's jars for an AM container before the executors' containers can start, and the
queue keeps that container (docs/design/am-localization.md). The AM then talks to the
ResourceManager's scheduler and starts executors through each NodeManager from the
gateway, so :func:`choose_app_master` first checks that the gateway reaches them (a few
TCP connections, bounded in count and time); otherwise, on a cluster with Kerberos (its
ResourceManager never hands a Kerberos client the AM's token), or when the user sets the
property to false, the AM runs in a container. Spark's in-driver AM does not end the application
when it gives up on its executors; :mod:`zoo_ray.app_master_watch` does.
"""
from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InvalidArgumentError
from .hadoop_conf import HadoopConf
from .yarn import ResourceManager

__all__ = ["UNMANAGED_AM_CONF", "AppMaster", "choose_app_master"]

logger = logging.getLogger(__name__)

UNMANAGED_AM_CONF = "spark.yarn.unmanagedAM.enabled"
#: The NodeManagers probed: enough to catch a firewall between gateway and cluster
#: without a connection to each host of a large cluster.
_NODES_PROBED = 3
_PROBE_TIMEOUT_S = 2.0
#: Hadoop's default scheduler port (yarn-default.xml).
_SCHEDULER_PORT = 8030


@dataclass(frozen=True)
class AppMaster:
    """Where the application's ApplicationMaster runs.

    Parameters
    ----------
    unmanaged : bool
        True: in the driver's process (no container); False: in a container of its own.
    reason : str
        Why, for the log.
    """

    unmanaged: bool
    reason: str


def _address(host_port: str, default_port: int) -> tuple[str, int]:
    host, _, port = host_port.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else (host_port, default_port)


def _reaches(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            return True
    except OSError:
        return False


def _unreached(conf: HadoopConf, rm: ResourceManager) -> str | None:
    """The first address the AM must reach that the gateway does not, or None."""
    scheduler = conf.get("yarn.resourcemanager.scheduler.address") or (
        f"{conf.require('yarn.resourcemanager.hostname')}:{_SCHEDULER_PORT}")
    addresses = [("the ResourceManager's scheduler", _address(scheduler, _SCHEDULER_PORT))]
    nodes = sorted(n["id"] for n in rm.nodes(states="RUNNING") if ":" in n.get("id", ""))
    addresses += [(f"NodeManager {node}", _address(node, 0)) for node in nodes[:_NODES_PROBED]]
    for what, (host, port) in addresses:
        if not _reaches(host, port):
            return f"{what} at {host}:{port}"
    return None


def choose_app_master(user_conf: Mapping[str, str], conf: HadoopConf, rm: ResourceManager,
                      secure: bool) -> AppMaster:
    """Run the ApplicationMaster in the driver's process where it can work; else in a
    container (Spark's own default).

    Parameters
    ----------
    user_conf : mapping of str to str
        The user's Spark properties (``conf=``): ``spark.yarn.unmanagedAM.enabled=false``
        keeps the ApplicationMaster in a container.
    conf : HadoopConf
        The gateway's Hadoop configuration (the scheduler's address).
    rm : ResourceManager
        The cluster's ResourceManager (the NodeManagers' addresses).
    secure : bool
        Whether the cluster runs Kerberos.

    Returns
    -------
    AppMaster
        Where the ApplicationMaster runs, and why.

    Raises
    ------
    InvalidArgumentError
        The property is set to neither true nor false.
    """
    asked = user_conf.get(UNMANAGED_AM_CONF, "").strip().lower()
    if asked not in ("", "true", "false"):
        raise InvalidArgumentError(
            f"{UNMANAGED_AM_CONF}={user_conf[UNMANAGED_AM_CONF]!r}: give true (the "
            "ApplicationMaster in the driver's process, zoo_ray's default) or false (in a "
            "container of its own).")
    if asked == "false":
        return AppMaster(False, f"{UNMANAGED_AM_CONF}=false: in a container")
    if secure:
        # The ResourceManager gives a Kerberos caller no AMRMToken for an unmanaged AM (it
        # compares the full principal with the short user), so Spark's would never start
        # and the application stays ACCEPTED (docs/design/am-localization.md).
        log = logger.warning if asked == "true" else logger.info
        log("On a cluster with Kerberos Spark's ApplicationMaster runs in a container (in the "
            "driver's process it does not register there)%s.",
            f"; {UNMANAGED_AM_CONF}=true is not used" if asked else "")
        return AppMaster(False, "Kerberos")
    unreached = _unreached(conf, rm)
    if unreached is None:
        return AppMaster(True, "the gateway reaches the scheduler and the NodeManagers")
    logger.warning(
        "The gateway cannot reach %s, which an ApplicationMaster in the driver's process "
        "must talk to: Spark's ApplicationMaster runs in a container instead, and its "
        "NodeManager localizes the environment before the executors' do. Open the port "
        "from the gateway to run it in the driver.", unreached)
    return AppMaster(False, f"the gateway cannot reach {unreached}")
