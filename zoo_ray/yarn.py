"""A small client of the YARN ResourceManager's REST API.

zoo_ray asks the ResourceManager which NodeManagers run, what state an
application is in and why it failed, and kills applications it started. The REST
API needs no Hadoop jars on the gateway, which is why it is used here rather than
the Java client. Runs on the gateway.
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from .errors import ResourceManagerError
from .hadoop_conf import HadoopConf
from .spnego import Credentials, hadoop_opener

__all__ = ["ResourceManager", "FINAL_STATES", "why_not_granted"]

#: Application states after which nothing changes any more.
FINAL_STATES = frozenset({"FINISHED", "FAILED", "KILLED"})


class ResourceManager:
    """The REST API of one YARN ResourceManager.

    Parameters
    ----------
    webapp_address : str
        ``host:port`` of the ResourceManager's web application
        (``yarn.resourcemanager.webapp.address``).
    timeout : float
        Seconds to wait for each HTTP request.
    credentials : Credentials, optional
        The Kerberos identity presented to a secure ResourceManager; by default the
        process's (the ticket cache ``kinit`` wrote).
    """

    def __init__(self, webapp_address: str, timeout: float = 10.0,
                 credentials: Credentials | None = None) -> None:
        self.webapp_address = webapp_address
        self.base_url = f"http://{webapp_address}/ws/v1/cluster"
        self.timeout = timeout
        self.credentials = credentials

    @property
    def host(self) -> str:
        """The ResourceManager's host name or address."""
        return self.webapp_address.rsplit(":", 1)[0]

    @classmethod
    def from_conf(cls, hadoop_conf: str | os.PathLike[str] | HadoopConf) -> ResourceManager:
        """The ResourceManager named by a Hadoop configuration directory."""
        conf = hadoop_conf if isinstance(hadoop_conf, HadoopConf) else HadoopConf(hadoop_conf)
        address = conf.get("yarn.resourcemanager.webapp.address")
        if not address:
            host = conf.require("yarn.resourcemanager.hostname")
            address = f"{host}:8088"
        return cls(address)

    @classmethod
    def of_driver(cls, timeout: float, credentials: Credentials | None = None,
                  ) -> ResourceManager:
        """The ResourceManager of the driver's Hadoop configuration (``HADOOP_CONF_DIR``),
        asked with ``timeout`` seconds per request, as ``credentials`` (by default the
        process's Kerberos ticket, if the cluster wants one)."""
        rm = cls.from_conf(os.environ.get("HADOOP_CONF_DIR", ""))
        rm.timeout = timeout
        rm.credentials = credentials
        return rm

    def __repr__(self) -> str:
        return f"ResourceManager({self.webapp_address!r})"

    def _request(self, path: str, method: str = "GET", body: dict | None = None) -> Any:
        url = f"{self.base_url}{path}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            url,
            data=data,
            method=method,
            headers={"Accept": "application/json", "Content-Type": "application/json"},
        )
        try:
            opener = hadoop_opener(self.credentials)
            with opener.open(request, timeout=self.timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            hint = ""
            if exc.code in (401, 403):
                hint = (" The ResourceManager refused your Kerberos identity: check `klist` "
                        "(the principal, its realm) and that the cluster's ACLs admit it.")
            raise ResourceManagerError(
                f"ResourceManager at {self.webapp_address} answered {exc.code} to {method} {path}: "
                f"{detail}{hint}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ResourceManagerError(
                f"Cannot reach the YARN ResourceManager at {self.webapp_address} ({reason}). Check "
                "that it runs and that yarn.resourcemanager.webapp.address in HADOOP_CONF_DIR "
                "names it (for the local Hadoop: `zoo-ray minicluster status`)."
            ) from None
        try:
            return json.loads(payload) if payload else {}
        except ValueError:  # a few endpoints (container signals) answer in plain text
            return {"text": payload.decode(errors="replace")}

    def cluster_info(self) -> dict[str, Any]:
        """The ``/info`` document: state, Hadoop version, start time."""
        return self._request("/info")["clusterInfo"]

    def metrics(self) -> dict[str, Any]:
        """Cluster-wide totals: memory, vcores, active nodes, running applications."""
        return self._request("/metrics")["clusterMetrics"]

    def nodes(self, states: str | None = None) -> list[dict[str, Any]]:
        """The NodeManagers, optionally only those in ``states`` (e.g. ``"RUNNING"``)."""
        query = f"?states={states}" if states else ""
        nodes = (self._request(f"/nodes{query}").get("nodes") or {}).get("node")
        return nodes or []

    def leaf_queues(self) -> dict[str, dict[str, Any]]:
        """The queues applications can be submitted to, by name (sorted), each as the
        scheduler reports it (its capacities, ``maxEffectiveCapacity`` among them)."""
        info = self._request("/scheduler")["scheduler"]["schedulerInfo"]
        leaves: dict[str, dict[str, Any]] = {}
        pending = [info]
        while pending:
            queue = pending.pop()
            children = (queue.get("queues") or {}).get("queue") or []
            if children:
                pending.extend(children)
            elif queue is not info:
                leaves[queue["queueName"]] = queue
        return dict(sorted(leaves.items()))

    def app(self, app_id: str) -> dict[str, Any]:
        """The report of one application: state, finalStatus, diagnostics, queue, ..."""
        return self._request(f"/apps/{app_id}")["app"]

    def apps(self, states: str | None = None, tag: str | None = None) -> list[dict[str, Any]]:
        """Applications, optionally only those in ``states`` (comma separated) and with
        the YARN tag ``tag`` (filtered by the ResourceManager: a busy one keeps
        thousands of applications)."""
        params = {k: v for k, v in (("states", states), ("applicationTags", tag)) if v}
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        apps = (self._request(f"/apps{query}").get("apps") or {}).get("app")
        return apps or []

    def app_attempts(self, app_id: str) -> list[dict[str, Any]]:
        """The attempts of an application (each with its AM container and node)."""
        attempts = self._request(f"/apps/{app_id}/appattempts").get("appAttempts") or {}
        return attempts.get("appAttempt") or []

    def containers(self, app_id: str, attempt_id: str) -> list[dict[str, Any]]:
        """The running containers of one application attempt, with their NodeManager ids."""
        path = f"/apps/{app_id}/appattempts/{attempt_id}/containers"
        containers = self._request(path).get("container")
        return containers or []

    def signal_container(self, container_id: str, command: str = "GRACEFUL_SHUTDOWN") -> None:
        """Signal a running container.

        ``command`` is OUTPUT_THREAD_DUMP, GRACEFUL_SHUTDOWN or FORCEFUL_SHUTDOWN.
        """
        self._request(f"/containers/{container_id}/signal/{command}", method="POST")

    def kill(self, app_id: str, diagnostics: str = "") -> None:
        """Kill an application (no-op once it has ended); ``diagnostics`` says why."""
        if self.app(app_id)["state"] in FINAL_STATES:
            return
        body = {"state": "KILLED", "diagnostics": diagnostics} if diagnostics else {
            "state": "KILLED"}
        self._request(f"/apps/{app_id}/state", method="PUT", body=body)


def why_not_granted(rm: ResourceManager, app_id: str, container_mib: int | None,
                    cores: int) -> str:
    """Why YARN grants application ``app_id`` no (further) executor: its queue at its
    maximum, or no NodeManager with room for one, as the ResourceManager sees it now.

    Parameters
    ----------
    rm : ResourceManager
    app_id : str
        The application asking for executors.
    container_mib, cores : int
        One executor's container (memory with overhead, vcores); with ``container_mib``
        None only the queue's use is told.

    Returns
    -------
    str
        One clause, e.g. ``queue batch at its maximum: 2816 of 3840 MB and 2 of 8
        vcores used, an executor needs 1920 MB and 1 vcores``.

    Raises
    ------
    ResourceManagerError
        The ResourceManager did not answer.
    KeyError, TypeError, ValueError
        Its answer lacked the queue's figures (a scheduler without them).
    """
    # The report names the queue by its path (root.default), the scheduler by leaf.
    name = rm.app(app_id)["queue"].rsplit(".", 1)[-1]
    queue = rm.leaf_queues()[name]
    most, used = queue["maxEffectiveCapacity"], queue["resourcesUsed"]
    room = (int(most["memory"]) - int(used["memory"]),
            int(most["vCores"]) - int(used["vCores"]))
    usage = (f"queue {name} uses {used['memory']} of {most['memory']} MB and "
             f"{used['vCores']} of {most['vCores']} vcores")
    if container_mib is None:
        return usage
    if room[0] < container_mib or room[1] < cores:
        return (f"queue {name} at its maximum: {used['memory']} of {most['memory']} MB "
                f"and {used['vCores']} of {most['vCores']} vcores used, an executor needs "
                f"{container_mib} MB and {cores} vcores")
    nodes = [(int(node.get("availMemoryMB") or 0), int(node.get("availableVirtualCores") or 0))
             for node in rm.nodes(states="RUNNING")]
    if not any(mb >= container_mib and free >= cores for mb, free in nodes):
        return (f"no NodeManager has room for an executor ({container_mib} MB, {cores} "
                f"vcores); {usage}")
    return f"{usage}; YARN has not granted them yet"
