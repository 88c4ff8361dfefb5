"""Bringing a local Hadoop up: ports, configuration, the daemons in order, the wait.

Runs on the machine that hosts the local Hadoop, in the process calling
:meth:`~zoo_ray.minicluster.MiniCluster.up`: it formats the NameNode once, starts
each daemon (a NodeManager inside its isolated host, if any), records each in the
state file as it goes, and waits until HDFS and every NodeManager are ready.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.request import OpenerDirector

import psutil

from ..errors import DaemonStartError, PortInUseError, ZooRayError
from ..host import port_free, tail, wait_until
from ..yarn import ResourceManager
from .config import HOST, plan_ports, render
from .daemons import MAIN_CLASSES, Daemon, daemon_env, java_argv
from .kdc import Kdc
from .native_io import native_library_dir
from .netns import Network, launcher
from .security import HOSTNAME, Security, prepare, secure_overrides
from .spec import MiniClusterSpec
from .state import StateFile

__all__ = ["spawn_watchdog", "start_daemons", "wait_ready"]


def start_daemons(state_file: StateFile, spec: MiniClusterSpec, state: dict[str, Any],
                  network: Network | None, java_home: Path, jars: Path) -> None:
    """Network (if isolated), ports, configuration, then every daemon, recorded as it goes."""
    if network:
        network.create()
    host = network.gateway_ip if network else (HOSTNAME if spec.kerberos else HOST)
    state["ports"] = ports = plan_ports(spec, host)
    state_file.write(state)
    _check_ports_free(ports, host)
    secure: dict[str, dict[str, str]] | None = None
    options: list[str] = []
    if spec.kerberos:
        security, tls = _start_realm(state_file, state, java_home)
        secure = {**secure_overrides(security), **tls}
        options = security.java_options
    confs = render(spec, state_file.dir, ports, host,
                   [h.ip for h in network.hosts] if network else None, secure)
    _format_namenode(state_file.dir, spec, java_home, jars, confs["server"], options)
    # Only the NodeManagers: they set the mode of every file they localize.
    native = native_library_dir(java_home) if spec.native_io else None
    for name, kind, conf in _daemon_plan(spec, confs):
        tmp_dir = state_file.dir / "tmp" / "jvm" / name
        tmp_dir.mkdir(parents=True, exist_ok=True)
        argv = java_argv(
            java_home, conf, jars, MAIN_CLASSES[kind], spec.heap_mb[kind],
            log_dir=state_file.dir / "logs", log_name=name, tmp_dir=tmp_dir,
            library_dir=native if kind == "nodemanager" else None, options=options,
        )
        if network and kind == "nodemanager":
            argv = launcher(network.hosts[int(name.removeprefix(kind))]) + argv
        daemon = Daemon.start(name, argv, state_file.dir / "logs", daemon_env(java_home, conf),
                              state_file.dir)
        state["daemons"].append(daemon.to_dict())
        state_file.write(state)


def _start_realm(state_file: StateFile, state: dict[str, Any], java_home: Path,
                 ) -> tuple[Security, dict[str, dict[str, str]]]:
    """A new realm for this start, its KDC recorded first among the daemons (so it stops
    last), its principals, keytabs and TLS material; the ``ssl-*.xml`` properties."""
    for stale in ("kdc", "security"):
        shutil.rmtree(state_file.dir / stale, ignore_errors=True)
    kdc = Kdc(state_file.dir / "kdc")
    realm = kdc.create()
    state["daemons"].append(kdc.start(realm).to_dict())
    state_file.write(state)
    security, tls = prepare(state_file.dir, java_home, realm)
    state["security"] = security.to_dict()
    state_file.write(state)
    return security, tls


def _daemon_plan(spec: MiniClusterSpec, confs: dict[str, Path]) -> list[tuple]:
    plan = [
        ("namenode", "namenode", confs["server"]),
        ("datanode", "datanode", confs["server"]),
        ("resourcemanager", "resourcemanager", confs["client"]),
    ]
    plan += [
        (f"nodemanager{i}", "nodemanager", confs[f"nm{i}"])
        for i in range(spec.nodemanagers)
    ]
    return plan


def _format_namenode(cluster_dir: Path, spec: MiniClusterSpec, java_home: Path, jars: Path,
                     conf: Path, options: list[str]) -> None:
    if (cluster_dir / "hdfs" / "name" / "current" / "VERSION").exists():
        return
    argv = java_argv(
        java_home, conf, jars, MAIN_CLASSES["namenode"], spec.heap_mb["namenode"],
        log_dir=cluster_dir / "logs", log_name="namenode-format",
        args=["-format", "-nonInteractive", "-force", "-clusterId", "zoo-ray-local"],
        options=options,
    )
    result = subprocess.run(
        argv, capture_output=True, text=True, env=daemon_env(java_home, conf),
        cwd=cluster_dir, stdin=subprocess.DEVNULL, timeout=180,
    )
    if result.returncode != 0:
        raise DaemonStartError(
            f"Formatting the NameNode in {cluster_dir / 'hdfs'} failed (exit "
            f"{result.returncode}). Delete {cluster_dir} to start from scratch. Log tail:\n"
            f"{tail(cluster_dir / 'logs' / 'namenode-format.log')}\n{result.stderr[-2000:]}"
        )


def wait_ready(state_file: StateFile, namenode_web: str, rm: ResourceManager, nodemanagers: int,
               timeout: float, opener: OpenerDirector) -> None:
    """Return once HDFS and YARN are ready (see :func:`_not_ready`).

    Raises
    ------
    DaemonStartError
        A daemon exited, or the cluster was not ready within ``timeout`` seconds.
    """
    waiting_for: str | None = "the daemons"

    def ready() -> bool:
        nonlocal waiting_for
        for daemon in state_file.daemons():
            if not daemon.alive:
                raise DaemonStartError(
                    f"{daemon.name} exited while the local Hadoop was starting. Its logs are "
                    f"{daemon.log} and {daemon.out}; last lines:\n{daemon.log_tail()}"
                )
        waiting_for = _not_ready(namenode_web, rm, nodemanagers, opener)
        return waiting_for is None

    if wait_until(ready, timeout):
        return
    raise DaemonStartError(
        f"The local Hadoop in {state_file.dir} was not ready after {timeout:.0f}s (still waiting "
        f"for {waiting_for}). Daemon logs are in {state_file.dir / 'logs'}; a slow machine may "
        "need a longer timeout."
    )


def _not_ready(namenode_web: str, rm: ResourceManager, nodemanagers: int,
               opener: OpenerDirector) -> str | None:
    """What is not ready yet, or None when HDFS and YARN both are."""
    try:
        fs = _jmx(opener, namenode_web, "Hadoop:service=NameNode,name=FSNamesystemState")
        info = _jmx(opener, namenode_web, "Hadoop:service=NameNode,name=NameNodeInfo")
    except OSError:
        return "the NameNode's web server"
    if not fs or fs.get("NumLiveDataNodes", 0) < 1:
        return "the DataNode to register"
    if info.get("Safemode"):
        return "HDFS to leave safe mode"
    try:
        running = len(rm.nodes(states="RUNNING"))
    except ZooRayError:
        return "the ResourceManager's web server"
    if running < nodemanagers:
        return f"NodeManagers to register ({running}/{nodemanagers} running)"
    return None


def spawn_watchdog(owner_pid: int, cluster_dir: Path) -> Daemon:
    """Start ``zoo_ray.minicluster.watchdog``: it stops the cluster if ``owner_pid`` dies.

    The returned record goes into the state file, so whoever stops the cluster stops
    the watchdog too rather than leave it to notice within its poll interval.
    """
    argv = [sys.executable, "-m", "zoo_ray.minicluster.watchdog", str(owner_pid),
            str(cluster_dir)]
    # Not in cluster_dir: whatever works there when the cluster stops is swept as a container.
    return Daemon.start("watchdog", argv, cluster_dir / "logs", dict(os.environ), Path("/"))


def _jmx(opener: OpenerDirector, web: str, query: str) -> dict[str, Any]:
    with opener.open(f"{web}/jmx?qry={query}", timeout=5) as response:
        beans = json.loads(response.read()).get("beans") or [{}]
    return beans[0]


def _port_owner(port: int) -> str:
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
                if conn.pid:
                    return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError):
        pass
    return ""


def _check_ports_free(ports: dict[str, int], host: str) -> None:
    for name, port in ports.items():
        if not port_free(host, port):
            raise PortInUseError(
                f"Port {port} (for {name}) on {host} is already in use{_port_owner(port)}. Stop "
                "that process, or start the local Hadoop with another --base-port (or none, to "
                "let the kernel choose free ports)."
            )
