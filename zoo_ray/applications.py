"""zoo_ray's applications on YARN: which run, what Ray nodes they hold, and stopping one.

Runs on the gateway (``zoo-ray status`` and ``zoo-ray stop``, and a RayContext
recording its cluster). YARN knows each application and its containers; every
application :func:`~zoo_ray.spark.init_spark_on_yarn` starts carries the YARN tag
:data:`APP_TAG`. What YARN cannot know, the Ray nodes in those containers, a
running RayContext records on its gateway in an :class:`AppRecord` (no secrets),
removed again when it stops.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .cache import cache_root
from .errors import InvalidArgumentError, ZooRayError
from .host import terminate, wait_until
from .yarn import FINAL_STATES, ResourceManager

__all__ = ["APP_TAG", "AppRecord", "application_report", "check_app_id", "list_applications",
           "stop_application"]

logger = logging.getLogger(__name__)

#: The YARN application tag of every application init_spark_on_yarn starts.
APP_TAG = "zoo_ray"
#: How long ``stop_application`` waits for YARN to report the application ended.
_STOP_WAIT_S = 60.0
#: What the gateway's Ray node manager runs (checked before it is stopped by pid).
_MANAGER_MODULE = "zoo_ray.manager"
_MANAGER_GRACE_S = 30.0
_APP_ID = re.compile(r"application_\d+_\d+")


@dataclass
class AppRecord:
    """A running RayContext's cluster, as recorded on its gateway.

    Parameters
    ----------
    app_id : str
        The YARN application.
    driver_pid : int
        The driver process on this gateway.
    gateway_manager_pid : int or None
        The manager of the gateway's Ray node (the one the driver attaches to).
    address : str
        The head's GCS address.
    dashboard_url : str or None
        The Ray dashboard, if enabled.
    nodes : list of dict
        The executors' Ray nodes as started (:class:`zoo_ray.protocol.NodeInfo` fields).
    """

    app_id: str
    driver_pid: int
    gateway_manager_pid: int | None
    address: str
    dashboard_url: str | None = None
    nodes: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> AppRecord:
        return cls(**json.loads(text))

    @staticmethod
    def path(app_id: str) -> Path:
        """Where the record of ``app_id`` lives on this gateway."""
        return cache_root() / "apps" / f"{check_app_id(app_id)}.json"

    def write(self) -> None:
        """Store the record (replacing any earlier one of the application)."""
        target = self.path(self.app_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_suffix(f".{os.getpid()}.tmp")
        staging.write_text(self.to_json())
        os.replace(staging, target)

    @classmethod
    def read(cls, app_id: str) -> AppRecord | None:
        """The record of ``app_id`` on this gateway, or None (another gateway's, or none)."""
        try:
            return cls.from_json(cls.path(app_id).read_text())
        except (FileNotFoundError, ValueError, TypeError):
            return None

    @classmethod
    def remove(cls, app_id: str) -> None:
        """Forget the record of ``app_id`` (idempotent)."""
        cls.path(app_id).unlink(missing_ok=True)


def check_app_id(app_id: str) -> str:
    """``app_id`` if it is a YARN application id, else an :class:`InvalidArgumentError`."""
    if not _APP_ID.fullmatch(app_id):
        raise InvalidArgumentError(f"{app_id!r} is not a YARN application id; they look like "
                                   "application_1700000000000_0042 (see `zoo-ray status`).")
    return app_id


def _is_zoo_ray(app: dict[str, Any]) -> bool:
    return APP_TAG in (app.get("applicationTags") or "").split(",")


def list_applications(rm: ResourceManager, all_states: bool = False) -> list[dict[str, Any]]:
    """zoo_ray's applications the ResourceManager knows, newest first.

    Parameters
    ----------
    rm : ResourceManager
    all_states : bool
        Include ended applications (default: only those not ended yet).
    """
    states = None if all_states else "NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING"
    apps = [a for a in rm.apps(states=states, tag=APP_TAG) if _is_zoo_ray(a)]
    return sorted(apps, key=lambda a: a.get("startedTime", 0), reverse=True)


def _containers(rm: ResourceManager, app: dict[str, Any]) -> list[dict[str, Any]]:
    if app["state"] != "RUNNING":
        return []
    attempts = rm.app_attempts(app["id"])
    if not attempts:
        return []
    attempt = attempts[-1]
    am = attempt.get("containerId")
    return [{"container": c["containerId"], "host": c.get("nodeId", "").split(":")[0],
             "memory_mb": c.get("allocatedMB"), "vcores": c.get("allocatedVCores"),
             "role": "application master" if c["containerId"] == am else "executor"}
            for c in rm.containers(app["id"], attempt["appAttemptId"])]


def application_report(rm: ResourceManager, app: dict[str, Any]) -> dict[str, Any]:
    """One application as ``zoo-ray status`` shows it: YARN's view, then Ray's nodes.

    ``ray`` holds the head's address and each executor's Ray node when a RayContext
    of this gateway runs in the application; it is None otherwise.
    """
    record = AppRecord.read(app["id"])
    if record is not None and app["state"] in FINAL_STATES:
        AppRecord.remove(app["id"])  # left by a driver that was killed
        record = None
    ray = None
    if record is not None:
        ray = {"address": record.address, "dashboard_url": record.dashboard_url,
               "nodes": [{"role": n["role"], "container": n["container"],
                          "node_ip": n["node_ip"], "executor": n.get("executor_id", "")}
                         for n in record.nodes]}
    return {"id": app["id"], "name": app.get("name"), "user": app.get("user"),
            "queue": app.get("queue"), "state": app["state"],
            "final_status": app.get("finalStatus"), "tracking_url": app.get("trackingUrl"),
            # Spark's ApplicationMaster: in the driver's process (no container), or in one.
            "app_master": "driver" if app.get("unmanagedApplication") else "container",
            "containers": _containers(rm, app), "ray": ray}


def stop_application(rm: ResourceManager, app_id: str) -> str:
    """Kill a zoo_ray application and the gateway's Ray node of its RayContext.

    Killing the application ends every container, and with them the Ray nodes in
    the executors. The driver on the gateway keeps running (its Ray and Spark calls
    fail from then on), so the Ray node the driver attached to is stopped here.

    Returns
    -------
    str
        The application's final state.

    Raises
    ------
    InvalidArgumentError
        The application is not one zoo_ray started (it is left alone).
    ZooRayError
        YARN did not report the application ended within a minute.
    """
    app = rm.app(check_app_id(app_id))
    if not _is_zoo_ray(app):
        raise InvalidArgumentError(
            f"{app_id} was not started by zoo_ray (it lacks the YARN tag {APP_TAG!r}), so "
            f"zoo-ray stop leaves it alone. Stop it with `yarn application -kill {app_id}`."
        )
    rm.kill(app_id, diagnostics="zoo_ray: stopped by `zoo-ray stop`")
    if not wait_until(lambda: rm.app(app_id)["state"] in FINAL_STATES, _STOP_WAIT_S):
        raise ZooRayError(f"YARN has not ended {app_id} within {_STOP_WAIT_S:.0f}s; check it "
                          "with `zoo-ray status` or the ResourceManager's UI.")
    record = AppRecord.read(app_id)
    if record is not None and record.gateway_manager_pid:
        _stop_gateway_manager(record.gateway_manager_pid, record.driver_pid)
    AppRecord.remove(app_id)
    return str(rm.app(app_id)["state"])


def _stop_gateway_manager(pid: int, driver_pid: int) -> None:
    """Stop the gateway's Ray node manager, if ``pid`` still is the one that driver started
    (a pid reused by another process, or another driver's manager, is left alone)."""
    try:
        process = psutil.Process(pid)
        if _MANAGER_MODULE not in process.cmdline() or process.ppid() != driver_pid:
            return
    except psutil.Error:
        return
    logger.info("Stopping the gateway's Ray node (manager pid %d)", pid)
    # The manager stops its node and copies its logs first: give it the time it takes.
    terminate([process], grace=_MANAGER_GRACE_S)
