"""Bringing a local Hadoop down: daemons, leftover containers, isolated hosts, ports.

Runs on the machine that hosts the local Hadoop, in whichever process stops it:
:meth:`~zoo_ray.minicluster.MiniCluster.down` (``zoo-ray minicluster down`` from
any shell), a failed ``up``, or the watchdog after its owner died.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import psutil

from ..host import port_free, terminate, wait_until
from ..leftovers import sweep
from .config import HOST
from .daemons import Daemon
from .netns import Network
from .state import StateFile

__all__ = ["stop_all", "stop_watchdog", "stray_processes"]

logger = logging.getLogger(__name__)


def stop_all(state_file: StateFile) -> None:
    """Stop every daemon ``state_file`` records, the processes left in its directory, and
    the isolated hosts; wait for the ports; sweep what killed Ray nodes left in /tmp."""
    state = state_file.read()
    if not state:
        return
    daemons = [Daemon.from_dict(d) for d in state["daemons"]]
    # NodeManagers first: stopping gracefully, they kill their containers. Then the
    # ResourceManager, then HDFS.
    for daemon in reversed(daemons):
        daemon.stop()
    _kill_strays(state_file.dir)
    network = Network.from_dict(state["network"]) if state.get("network") else None
    if network:
        # The ports lived on the bridge's address, which goes with the bridge.
        network.destroy()
    elif daemons:  # without daemons (a port taken by another process) none is ours
        _wait_ports_free(state["ports"], HOST, timeout=30.0)
    state["daemons"] = []
    watchdog = state.pop("watchdog", None)
    state_file.write(state)
    stop_watchdog(watchdog)
    # Links of Ray nodes in containers that were killed point into deleted directories.
    sweep()
    logger.info("Local Hadoop in %s is down", state_file.dir)


def stop_watchdog(record: dict | None) -> None:
    """Stop the watchdog ``record`` names (a :class:`Daemon` dict), unless it is this
    process (the watchdog stopping the cluster itself) or gone."""
    if record and record["pid"] != os.getpid():
        Daemon.from_dict(record).stop(grace=5.0)


def stray_processes(cluster_dir: Path) -> list[psutil.Process]:
    """Processes still working inside ``cluster_dir``: containers of a NodeManager that died."""
    prefix = str(cluster_dir) + os.sep
    strays = []
    for proc in psutil.process_iter(["pid", "cwd"]):
        cwd = proc.info.get("cwd") or ""
        if proc.pid != os.getpid() and (cwd + os.sep).startswith(prefix):
            strays.append(proc)
    return strays


def _kill_strays(cluster_dir: Path) -> None:
    strays = stray_processes(cluster_dir)
    if not strays:
        return
    logger.warning("Killing %d leftover container processes under %s", len(strays), cluster_dir)
    terminate(strays)


def _wait_ports_free(ports: dict[str, int], host: str, timeout: float) -> None:
    busy = list(ports.values())

    def all_free() -> bool:
        busy[:] = [p for p in busy if not port_free(host, p)]
        return not busy

    if not wait_until(all_free, timeout, interval=0.2):
        logger.warning("Ports %s are still in use after stopping the local Hadoop", busy)
