"""MiniCluster: a real single-machine Hadoop (HDFS + YARN) from Maven Central jars.

Each daemon is its own JVM in its own process group: one NameNode, one DataNode,
one ResourceManager and N NodeManagers, each NodeManager with its own ports and
local/log directories. Everything lives under one directory, whose
``state.json`` records what runs, so ``zoo-ray minicluster down`` from another
shell stops exactly what ``up`` started, and nothing else. Runs on the machine that
hosts the local Hadoop (the gateway of tests and the demo).
"""
from __future__ import annotations

import fcntl
import getpass
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

from ..cache import cache_root
from ..errors import DaemonStartError, MiniClusterStateError, PortInUseError, ZooRayError
from ..host import find_java_home, port_free, tail, terminate, wait_until
from ..leftovers import sweep
from ..yarn import FINAL_STATES, ResourceManager
from .artifacts import hadoop_jars
from .config import HOST, plan_ports, render
from .daemons import MAIN_CLASSES, Daemon, java_argv
from .netns import GATEWAY_NAME, Network, check_capability, launcher
from .spec import MiniClusterSpec

__all__ = ["MiniCluster", "default_dir"]

logger = logging.getLogger(__name__)

_STATE = "state.json"
_CLIENT_HEAP_MB = 256


def default_dir() -> Path:
    """Where the local Hadoop lives unless told otherwise: ``<zoo_ray cache>/minicluster``."""
    return cache_root() / "minicluster"


class MiniCluster:
    """A local Hadoop: HDFS and YARN daemons on this machine, bound to 127.0.0.1, or with
    each NodeManager on an isolated host of its own (``spec.isolated_hosts``).

    Parameters
    ----------
    dir : str or Path, optional
        Directory for configuration, HDFS data, YARN local and log dirs and the state
        file. Defaults to :func:`default_dir`.
    spec : MiniClusterSpec, optional
        What to start. Defaults to the spec of the cluster running in ``dir``, else
        ``MiniClusterSpec()`` (two NodeManagers).

    Examples
    --------
    >>> with MiniCluster("/tmp/hadoop") as cluster:          # doctest: +SKIP
    ...     os.environ["HADOOP_CONF_DIR"] = str(cluster.hadoop_conf_dir)
    ...     ...  # run Spark on YARN

    Used as a context manager, it starts the cluster on enter and, if it started it,
    stops it on exit; a cluster that was already running is reused and left running.
    """

    def __init__(
        self, dir: str | os.PathLike[str] | None = None, spec: MiniClusterSpec | None = None
    ) -> None:
        self.dir = Path(dir).expanduser() if dir else default_dir()
        self.dir = self.dir.resolve()
        state = self._read_state()
        self._requested_spec = spec
        if spec is None:
            spec = MiniClusterSpec.from_dict(state["spec"]) if state else MiniClusterSpec()
        self.spec = spec
        self._started_here = False

    # ------------------------------------------------------------------ state
    @property
    def _state_path(self) -> Path:
        return self.dir / _STATE

    def _read_state(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._state_path.read_text())
        except FileNotFoundError:
            return None
        except PermissionError:
            raise MiniClusterStateError(
                f"{self._state_path} cannot be read by this user (uid {os.getuid()}); run as the "
                "user who started the local Hadoop, or use another --dir.") from None
        except ValueError as exc:
            raise MiniClusterStateError(
                f"{self._state_path} is corrupt ({exc}). Stop any Hadoop daemons started from "
                f"{self.dir} and delete that file."
            ) from None

    def _write_state(self, state: dict[str, Any]) -> None:
        tmp = self._state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self._state_path)

    def _daemons(self) -> list[Daemon]:
        state = self._read_state()
        return [Daemon.from_dict(d) for d in state["daemons"]] if state else []

    @property
    def ports(self) -> dict[str, int]:
        """The ports of the running (or last started) cluster, by daemon endpoint."""
        state = self._read_state()
        if not state:
            raise MiniClusterStateError(
                f"No local Hadoop has been started in {self.dir}; run `zoo-ray minicluster up`."
            )
        return state["ports"]

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    # -------------------------------------------------------------- endpoints
    @property
    def network(self) -> Network | None:
        """The isolated hosts of the running (or last started) cluster, or None."""
        state = self._read_state() or {}
        return Network.from_dict(state["network"]) if state.get("network") else None

    @property
    def host(self) -> str:
        """The address of HDFS and the ResourceManager: 127.0.0.1, or the gateway's bridge
        address with isolated hosts."""
        network = self.network
        return network.gateway_ip if network else HOST

    @property
    def hadoop_conf_dir(self) -> Path:
        """The client configuration directory: use it as ``HADOOP_CONF_DIR``."""
        return self.dir / "conf"

    @property
    def default_fs(self) -> str:
        """``hdfs://<host>:<port>``, the cluster's default file system."""
        return f"hdfs://{self.host}:{self.ports['nn_rpc']}"

    @property
    def resource_manager(self) -> ResourceManager:
        """A REST client of the cluster's ResourceManager."""
        return ResourceManager(f"{self.host}:{self.ports['rm_web']}")

    @property
    def namenode_web(self) -> str:
        return f"http://{self.host}:{self.ports['nn_http']}"

    @property
    def started(self) -> bool:
        """Whether daemons were started and not stopped by :meth:`down` (some may have died)."""
        return bool(self._daemons())

    @property
    def running(self) -> bool:
        """Whether every daemon recorded in the state file is alive."""
        daemons = self._daemons()
        return bool(daemons) and all(d.alive for d in daemons)

    # ---------------------------------------------------------------- up/down
    def up(self, timeout: float = 180.0, owner_pid: int | None = None) -> MiniCluster:
        """Start the daemons and wait until HDFS and every NodeManager are ready.

        Reuses a cluster already running in ``dir`` (with the same spec).

        Parameters
        ----------
        timeout : float
            Seconds to wait for readiness before stopping everything and raising.
        owner_pid : int, optional
            Stop the cluster when this process dies, even if it never calls
            :meth:`down` (``kill -9``, a crashed notebook kernel). The context
            manager passes its own PID.

        Raises
        ------
        MiniClusterStateError
            A cluster with another spec runs in ``dir``, or only part of one runs.
        JavaNotFoundError, MavenNotFoundError, ArtifactFetchError
            Java is missing, or the jars cannot be fetched.
        PortInUseError
            A port the daemons need is taken.
        IsolatedHostsUnavailableError
            ``spec.isolated_hosts`` is set but this process cannot make network
            namespaces (not root, no iproute2).
        DaemonStartError
            A daemon died or the cluster did not become ready within ``timeout``.
        """
        if self.spec.isolated_hosts:
            check_capability()
        with self._lock():
            if self._reuse_running():
                return self
            started = time.monotonic()
            java_home = find_java_home()
            jars = hadoop_jars(self.spec.hadoop_version)
            network = self._planned_network()
            state: dict[str, Any] = {
                "spec": self.spec.to_dict(), "ports": {}, "daemons": [],
                "java_home": str(java_home), "jars": str(jars),
                "network": network.to_dict() if network else None,
            }
            self._write_state(state)
            try:
                self._start_daemons(state, network, java_home, jars)
                if owner_pid is not None:
                    _spawn_watchdog(owner_pid, self.dir)
                self._wait_ready(timeout)
            except BaseException:
                self._stop_all()
                raise
            self._started_here = True
            logger.info(
                "Local Hadoop is up in %.1fs: HADOOP_CONF_DIR=%s", time.monotonic() - started,
                self.hadoop_conf_dir,
            )
            return self

    def _start_daemons(self, state: dict[str, Any], network: Network | None, java_home: Path,
                       jars: Path) -> None:
        """Network (if isolated), ports, configuration, then every daemon, recorded as it goes."""
        if network:
            network.create()
        host = network.gateway_ip if network else HOST
        state["ports"] = ports = plan_ports(self.spec, host)
        self._write_state(state)
        _check_ports_free(ports, host)
        confs = render(self.spec, self.dir, ports, host,
                       [h.ip for h in network.hosts] if network else None)
        self._format_namenode(java_home, jars, confs["client"])
        for name, kind, conf in self._daemon_plan(confs):
            tmp_dir = self.dir / "tmp" / "jvm" / name
            tmp_dir.mkdir(parents=True, exist_ok=True)
            argv = java_argv(
                java_home, conf, jars, MAIN_CLASSES[kind], self.spec.heap_mb[kind],
                log_dir=self.dir / "logs", log_name=name, tmp_dir=tmp_dir,
            )
            if network and kind == "nodemanager":
                argv = launcher(network.hosts[int(name.removeprefix(kind))]) + argv
            daemon = Daemon.start(name, argv, self.dir / "logs", _daemon_env(java_home, conf),
                                  self.dir)
            state["daemons"].append(daemon.to_dict())
            self._write_state(state)

    def _planned_network(self) -> Network | None:
        if not self.spec.isolated_hosts:
            return None
        return Network.plan(self.dir, self.spec.nodemanagers)

    def _daemon_plan(self, confs: dict[str, Path]) -> list[tuple]:
        plan = [
            ("namenode", "namenode", confs["client"]),
            ("datanode", "datanode", confs["client"]),
            ("resourcemanager", "resourcemanager", confs["client"]),
        ]
        plan += [
            (f"nodemanager{i}", "nodemanager", confs[f"nm{i}"])
            for i in range(self.spec.nodemanagers)
        ]
        return plan

    def _reuse_running(self) -> bool:
        daemons = self._daemons()
        if not daemons:
            return False
        alive = [d for d in daemons if d.alive]
        if not alive:
            return False
        state = self._read_state() or {}
        running_spec = MiniClusterSpec.from_dict(state["spec"])
        if len(alive) < len(daemons):
            dead = [d for d in daemons if not d.alive]
            raise MiniClusterStateError(
                f"The local Hadoop in {self.dir} is only partly running: "
                f"{', '.join(d.name for d in dead)} exited. Run `zoo-ray minicluster down"
                f" --dir {self.dir}` and `up` again. Last log of {dead[0].name}:\n"
                f"{dead[0].log_tail()}"
            )
        if self._requested_spec is not None and self._requested_spec != running_spec:
            raise MiniClusterStateError(
                f"A local Hadoop with another spec ({running_spec}) already runs in {self.dir}. "
                f"Run `zoo-ray minicluster down --dir {self.dir}` first, or use another --dir."
            )
        self.spec = running_spec
        logger.info("Reusing the local Hadoop already running in %s", self.dir)
        self._wait_ready(60.0)
        return True

    def _format_namenode(self, java_home: Path, jars: Path, conf: Path) -> None:
        if (self.dir / "hdfs" / "name" / "current" / "VERSION").exists():
            return
        argv = java_argv(
            java_home, conf, jars, MAIN_CLASSES["namenode"], self.spec.heap_mb["namenode"],
            log_dir=self.dir / "logs", log_name="namenode-format",
            args=["-format", "-nonInteractive", "-force", "-clusterId", "zoo-ray-local"],
        )
        result = subprocess.run(
            argv, capture_output=True, text=True, env=_daemon_env(java_home, conf),
            cwd=self.dir, stdin=subprocess.DEVNULL, timeout=180,
        )
        if result.returncode != 0:
            raise DaemonStartError(
                f"Formatting the NameNode in {self.dir / 'hdfs'} failed (exit "
                f"{result.returncode}). Delete {self.dir} to start from scratch. Log tail:\n"
                f"{tail(self.dir / 'logs' / 'namenode-format.log')}\n{result.stderr[-2000:]}"
            )

    def _wait_ready(self, timeout: float) -> None:
        waiting_for: str | None = "the daemons"

        def ready() -> bool:
            nonlocal waiting_for
            for daemon in self._daemons():
                if not daemon.alive:
                    raise DaemonStartError(
                        f"{daemon.name} exited while the local Hadoop was starting. Its logs are "
                        f"{daemon.log} and {daemon.out}; last lines:\n{daemon.log_tail()}"
                    )
            waiting_for = self._not_ready()
            return waiting_for is None

        if wait_until(ready, timeout):
            return
        raise DaemonStartError(
            f"The local Hadoop in {self.dir} was not ready after {timeout:.0f}s (still waiting "
            f"for {waiting_for}). Daemon logs are in {self.dir / 'logs'}; a slow machine may "
            "need a longer timeout."
        )

    def _not_ready(self) -> str | None:
        """What is not ready yet, or None when HDFS and YARN both are."""
        try:
            fs = _jmx(self.namenode_web, "Hadoop:service=NameNode,name=FSNamesystemState")
            info = _jmx(self.namenode_web, "Hadoop:service=NameNode,name=NameNodeInfo")
        except OSError:
            return "the NameNode's web server"
        if not fs or fs.get("NumLiveDataNodes", 0) < 1:
            return "the DataNode to register"
        if info.get("Safemode"):
            return "HDFS to leave safe mode"
        try:
            running = len(self.resource_manager.nodes(states="RUNNING"))
        except ZooRayError:
            return "the ResourceManager's web server"
        if running < self.spec.nodemanagers:
            return f"NodeManagers to register ({running}/{self.spec.nodemanagers} running)"
        return None

    def down(self) -> None:
        """Stop every daemon this directory's state records, and their containers.

        Safe to call when nothing runs. Afterwards no process started from ``dir``
        remains and every port is free.
        """
        with self._lock():
            self._stop_all()

    def _stop_all(self) -> None:
        state = self._read_state()
        if not state:
            return
        daemons = [Daemon.from_dict(d) for d in state["daemons"]]
        # NodeManagers first: stopping gracefully, they kill their containers. Then the
        # ResourceManager, then HDFS.
        for daemon in reversed(daemons):
            daemon.stop()
        self._kill_strays()
        network = Network.from_dict(state["network"]) if state.get("network") else None
        if network:
            # The ports lived on the bridge's address, which goes with the bridge.
            network.destroy()
        else:
            _wait_ports_free(state["ports"], HOST, timeout=30.0)
        state["daemons"] = []
        self._write_state(state)
        self._started_here = False
        # Links of Ray nodes in containers that were killed point into deleted directories.
        sweep()
        logger.info("Local Hadoop in %s is down", self.dir)

    def _strays(self) -> list[psutil.Process]:
        """Processes still working inside ``dir``: containers of a NodeManager that died."""
        prefix = str(self.dir) + os.sep
        strays = []
        for proc in psutil.process_iter(["pid", "cwd"]):
            cwd = proc.info.get("cwd") or ""
            if proc.pid != os.getpid() and (cwd + os.sep).startswith(prefix):
                strays.append(proc)
        return strays

    def _kill_strays(self) -> None:
        strays = self._strays()
        if not strays:
            return
        logger.warning("Killing %d leftover container processes under %s", len(strays), self.dir)
        terminate(strays)

    def __enter__(self) -> MiniCluster:
        was_running = self.running
        self.up(owner_pid=os.getpid())
        self._started_here = not was_running
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._started_here:
            self.down()

    # ----------------------------------------------------------------- status
    def status(self) -> dict[str, Any]:
        """A JSON-serialisable report: daemons and their PIDs, endpoints, NodeManagers."""
        state = self._read_state()
        report: dict[str, Any] = {"dir": str(self.dir), "running": self.running}
        if not state or not state["daemons"]:
            report["running"] = False
            return report
        report["daemons"] = {
            d.name: {"pid": d.pid, "alive": d.alive, "log": d.log} for d in self._daemons()
        }
        report["hadoop_conf_dir"] = str(self.hadoop_conf_dir)
        report["default_fs"] = self.default_fs
        report["resourcemanager"] = f"http://{self.resource_manager.webapp_address}"
        report["namenode"] = self.namenode_web
        network = self.network
        if network:
            report["gateway"] = {"hostname": GATEWAY_NAME, "ip": network.gateway_ip,
                                 "bridge": network.bridge}
            report["hosts"] = [{"hostname": h.hostname, "ip": h.ip, "netns": h.netns}
                               for h in network.hosts]
        if report["running"]:
            try:
                report["nodemanagers"] = [
                    {"id": n["id"], "state": n["state"]} for n in self.resource_manager.nodes()
                ]
            except ZooRayError as exc:
                report["nodemanagers"] = str(exc)
        return report

    # ------------------------------------------------------------ client tools
    def _client_argv(self, main_class: str, args: list[str]) -> list[str]:
        state = self._read_state() or {}
        if not state.get("daemons"):
            raise MiniClusterStateError(
                f"The local Hadoop in {self.dir} is not running; run `zoo-ray minicluster up`."
            )
        return java_argv(
            Path(state["java_home"]), self.hadoop_conf_dir, Path(state["jars"]), main_class,
            _CLIENT_HEAP_MB, args=args,
        )

    def _run_client(self, main_class: str, args: list[str], timeout: float) -> str:
        argv = self._client_argv(main_class, args)
        java_home = Path(argv[0]).parent.parent
        result = subprocess.run(
            argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
            env=_daemon_env(java_home, self.hadoop_conf_dir),
        )
        if result.returncode != 0:
            raise ZooRayError(
                f"{main_class.rsplit('.', 1)[-1]} {' '.join(args)} failed (exit "
                f"{result.returncode}):\n{result.stderr[-3000:]}"
            )
        return result.stdout

    def fs(self, *args: str, timeout: float = 120.0) -> str:
        """Run ``hadoop fs <args>`` against the cluster's HDFS and return its output.

        Examples
        --------
        >>> cluster.fs("-ls", "/")   # doctest: +SKIP
        """
        return self._run_client("org.apache.hadoop.fs.FsShell", list(args), timeout)

    def app_logs(self, app_id: str, wait: float = 120.0) -> str:
        """The aggregated container logs of a YARN application, like ``yarn logs``.

        Waits up to ``wait`` seconds for an ended application's logs to be
        aggregated to HDFS first.

        Raises
        ------
        ZooRayError
            The logs could not be read (with the client's error output).
        """
        def aggregated_or_running() -> bool:
            app = self.resource_manager.app(app_id)
            return app["state"] not in FINAL_STATES or app.get("logAggregationStatus") in (
                "SUCCEEDED", "FAILED", "TIME_OUT", "DISABLED")

        wait_until(aggregated_or_running, wait, interval=1.0)
        return self._run_client(
            "org.apache.hadoop.yarn.client.cli.LogsCLI",
            ["-applicationId", app_id, "-appOwner", getpass.getuser()], timeout=wait,
        )


def _spawn_watchdog(owner_pid: int, cluster_dir: Path) -> None:
    """Start ``zoo_ray.minicluster.watchdog``: it stops the cluster if ``owner_pid`` dies."""
    with open(cluster_dir / "logs" / "watchdog.log", "ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "zoo_ray.minicluster.watchdog", str(owner_pid),
             str(cluster_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _daemon_env(java_home: Path, conf_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLASSPATH", "HADOOP_HOME")}
    env["JAVA_HOME"] = str(java_home)
    env["HADOOP_CONF_DIR"] = str(conf_dir)
    return env


def _jmx(web: str, query: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{web}/jmx?qry={query}", timeout=5) as response:
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


def _wait_ports_free(ports: dict[str, int], host: str, timeout: float) -> None:
    busy = list(ports.values())

    def all_free() -> bool:
        busy[:] = [p for p in busy if not port_free(host, p)]
        return not busy

    if not wait_until(all_free, timeout, interval=0.2):
        logger.warning("Ports %s are still in use after stopping the local Hadoop", busy)
