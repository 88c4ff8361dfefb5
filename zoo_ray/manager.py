"""RayManager: the supervisor of one Ray node, one per executor (and one on the gateway).

A long-lived process beside Ray, on an executor (started by a Spark task, see
:mod:`zoo_ray.executor_tasks`) or on the gateway (started by the driver). Run as
``python -m zoo_ray.manager`` with a :class:`~zoo_ray.protocol.NodeSpec` as one
JSON line on stdin (the auth token travels there, never on a command line or in
the environment). It

- starts ``ray start --block`` as its own child, in the container's process group,
  and marks itself a child subreaper, so every Ray process stays in its process
  tree even when ``ray start`` dies; each start in a start slot of its host
  (:mod:`zoo_ray.start_slots`);
- answers one line on stdout: ``READY`` with a :class:`~zoo_ray.protocol.NodeInfo`,
  or ``ERROR`` with a :class:`~zoo_ray.protocol.NodeFailure`;
- restarts the node when it dies (bounded retries, exponential backoff);
- stops every Ray process it owns (SIGTERM, then SIGKILL) on SIGTERM, when the
  process it watches (the executor JVM, or the driver) is gone, or after the last
  failed restart; then copies Ray's logs into the container's log directory so
  YARN log aggregation collects them.

It never runs a host-wide ``ray stop`` and never touches processes it did not start.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Any

from .host import (
    become_subreaper,
    free_ports,
    node_ip,
    pid_alive,
    stop_ray_node,
    tail,
    tree_rss,
    wait_until,
    write_private,
)
from .leftovers import node_temp_link, sweep
from .node_dirs import NodeDirs
from .protocol import (
    STATE_DIR,
    WORK_DIR_ENV,
    ContainerMemory,
    ManagerState,
    NodeFailure,
    NodeInfo,
    NodeSpec,
)
from .start_slots import start_slot

__all__ = ["RayManager", "main"]

logger = logging.getLogger("zoo_ray.manager")

#: The ports each start of a node takes (the last two only on the head).
_PORTS = ("dashboard", "agent_http", "agent_grpc", "metrics", "runtime_env", "client",
          "autoscaler_metrics", "dashboard_metrics")
_ADDRESS = re.compile(r"--address='([^']+)'")
_STARTED = "Ray runtime started"
_START_ATTEMPTS = 3


class NodeStartError(Exception):
    """The node did not come up; the message says why (for the driver's error)."""


def _shm_free() -> int | None:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


class RayManager:
    """Owns one Ray node's processes for as long as it lives.

    Parameters
    ----------
    spec : NodeSpec
        The node to run.
    """

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.state = Path(spec.work_dir) / STATE_DIR
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.token_path = self.state / "auth_token"
        #: Its Ray temp and spill dirs: in the container, or under the user's roots.
        self.dirs = NodeDirs.for_spec(spec, self.state)
        self.ray_dir = self.dirs.ray_dir
        #: The head's GCS tables, on disk: a head restarted in place recovers the cluster.
        self.gcs_store = self.state / "gcs"
        self.temp_dir = node_temp_link(self.ray_dir)
        self.proc: subprocess.Popen[bytes] | None = None
        self.address: str | None = spec.head_address
        # A head given its address up front (so workers can start alongside it) keeps its port.
        self.gcs_port: int | None = (
            int(spec.head_address.rsplit(":", 1)[1])
            if spec.role == "head" and spec.head_address else None
        )
        self.dashboard_url: str | None = None
        self.ports: dict[str, int] = {}
        self.fresh_ports()
        self.restarts = 0
        self._stopping = threading.Event()
        self._ready = threading.Event()

    # ---------------------------------------------------------------- set-up
    def fresh_ports(self) -> None:
        """Every port one start of the node takes, from one call: none handed out twice."""
        self.ports = dict(zip(_PORTS, free_ports(len(_PORTS))))

    def check_shm(self) -> NodeFailure | None:
        """Refuse an object store larger than the free ``/dev/shm``, before anything starts."""
        shm = _shm_free()
        wanted = self.spec.object_store_memory
        if wanted and shm is not None and wanted > shm:
            return NodeFailure("shm", f"object_store_memory={wanted} bytes exceeds the {shm} "
                                      "bytes free in /dev/shm")
        return None

    def _link_temp_dir(self) -> None:
        if self.temp_dir.is_symlink() or self.temp_dir.exists():
            self.temp_dir.unlink()
        self.temp_dir.symlink_to(self.ray_dir.resolve())

    def node_ip(self) -> str:
        return self.spec.node_ip or node_ip()

    def ray_env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            env.pop(key, None)
        env.update(self.spec.env)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        # Ray tasks of the data path find this container's spool through it.
        env[WORK_DIR_ENV] = self.spec.work_dir
        if self.spec.role == "head":
            # The head's autoscaler and dashboard serve metrics on fixed ports (44217, 44227)
            # by default: a second application's head on the same host could not bind them.
            env.setdefault("AUTOSCALER_METRIC_PORT", str(self.ports["autoscaler_metrics"]))
            env.setdefault("DASHBOARD_METRIC_PORT", str(self.ports["dashboard_metrics"]))
            # GCS fault tolerance without Redis: the GCS keeps its tables in RocksDB in the
            # container, so a head restarted on the same port carries the same cluster on,
            # and raylets and drivers reconnect instead of giving up after Ray's 60 s.
            env.setdefault("RAY_gcs_storage", "rocksdb")
            env.setdefault("RAY_gcs_storage_path", str(self.gcs_store))
        return env

    def ray_argv(self, ip: str) -> list[str]:
        spec = self.spec
        ports = self.ports
        argv = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
            f"--node-ip-address={ip}", f"--num-cpus={spec.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            f"--object-spilling-directory={self.dirs.spill_dir}",
            f"--dashboard-agent-listen-port={ports['agent_http']}",
            f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
            f"--metrics-export-port={ports['metrics']}",
            f"--runtime-env-agent-port={ports['runtime_env']}",
            "--disable-usage-stats", "--log-style=record", "--log-color=false",
        ]
        if spec.object_store_memory:
            argv.append(f"--object-store-memory={spec.object_store_memory}")
        if spec.memory is not None and "memory" not in spec.extra_params:
            argv.append(f"--memory={spec.memory}")
        if not any(key.lstrip("-").replace("_", "-") == "num-gpus" for key in spec.extra_params):
            # Only what YARN gave: a host's other GPUs belong to other containers.
            argv.append(f"--num-gpus={spec.num_gpus}")
        if spec.role == "head":
            argv += [
                "--head", f"--port={self.gcs_port or 0}",
                f"--ray-client-server-port={ports['client']}",
                f"--include-dashboard={'true' if spec.include_dashboard else 'false'}",
                # The dashboard process runs even when "off"; give it a port of its own.
                f"--dashboard-port={ports['dashboard']}", f"--dashboard-host={ip}",
            ]
            if spec.include_dashboard:
                self.dashboard_url = f"http://{ip}:{ports['dashboard']}"
            if spec.system_config:
                argv.append(f"--system-config={json.dumps(spec.system_config)}")
        else:
            argv.append(f"--address={self.address}")
        for key, value in spec.extra_params.items():
            flag = "--" + key.replace("_", "-")
            argv.append(flag if value is True else f"{flag}={value}")
        return argv

    # ------------------------------------------------------------------ run
    def start(self) -> None:
        """Bring the node up: token, state file, the head's GCS, ``ray start``, its address.

        Raises
        ------
        NodeStartError
            The node did not come up (after retries).
        """
        write_private(self.token_path, self.spec.token)
        ManagerState(pid=os.getpid(), app_id=self.spec.app_id, role=self.spec.role,
                     temp_dir=str(self.temp_dir)).write(self.spec.work_dir)
        # The link first: it is how the sweep finds a directory under a root if we are
        # killed, also while a worker waits for its head.
        self._link_temp_dir()
        if self.spec.role == "worker":
            self.wait_for_head()
        # Another process may grab a port between our choice and Ray's bind: try again
        # with fresh ports, as the restart loop would.
        for attempt in range(1, _START_ATTEMPTS + 1):
            # A fresh cluster: nothing of an earlier init() in this container, or of a
            # failed attempt, is recovered.
            shutil.rmtree(self.gcs_store, ignore_errors=True)
            try:
                self.launch()
                break
            except NodeStartError as exc:
                if attempt == _START_ATTEMPTS or not self._watched_alive():
                    raise
                logger.warning("node start attempt %d failed (%s); retrying", attempt, exc)
        if self.spec.role == "head":
            # Printed by `ray start` right after "started": wait for it briefly.
            wait_until(lambda: self.address, 10, interval=0.1)
        logger.info("node is up")

    def info(self) -> NodeInfo:
        """The READY answer: where this node is and where its logs go."""
        return NodeInfo(role=self.spec.role, address=self.address, pid=os.getpid(),
                        node_ip=self.node_ip(), log_dir=self.spec.log_dir,
                        temp_dir=str(self.temp_dir), container=os.environ.get("CONTAINER_ID", ""),
                        dashboard_url=self.dashboard_url, work_dir=self.spec.work_dir)

    def wait_for_head(self) -> None:
        """Block until the head's GCS accepts connections.

        A worker started before that would back off for seconds in Ray's own
        retries (gRPC reconnects, a 2 s sleep for the session name); starting it
        right when the port opens lets it join as soon as the head can take it.
        """
        if self.address is None:
            raise NodeStartError("a worker node was given no head address")
        host, port = self.address.rsplit(":", 1)

        def head_accepts() -> bool:
            self._check_watched()
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return True
            except OSError:
                return False

        if wait_until(head_accepts, self.spec.ready_timeout, interval=0.1, stop=self._stopping):
            return
        if self._stopping.is_set():
            raise NodeStartError("stopped while waiting for the head")
        raise NodeStartError(f"the head at {self.address} did not accept connections within "
                             f"{self.spec.ready_timeout:.0f}s")

    def launch(self) -> None:
        """One start of the node, in one of this host's start slots (see
        :mod:`zoo_ray.start_slots`): ``ray start`` until it says the node runs.

        Raises
        ------
        NodeStartError
            See :meth:`wait_ready`; or stopping, or the watched process is gone.
        """
        with start_slot(self.spec.ready_timeout / 3,
                        give_up=lambda: self._stopping.is_set() or not self._watched_alive()):
            if self._stopping.is_set():
                raise NodeStartError("stopped while waiting for a start slot")
            self._check_watched()
            before = self.dirs.latest_session()
            self.start_node()
            try:
                self.wait_ready(before)
            except NodeStartError:
                # Its processes go before the slot does: the next start gets the CPU.
                self.kill_node()
                raise

    def start_node(self) -> None:
        ip = self.node_ip()
        self.fresh_ports()
        self._link_temp_dir()
        # `ray start --head` refuses a port it finds in its temp dir's address file while
        # any raylet on this host still names that address (the workers waiting for
        # this head to come back).
        (self.ray_dir / "ray_current_cluster").unlink(missing_ok=True)
        self._ready.clear()
        out = open(Path(self.spec.log_dir) / "ray_start.log", "ab")
        self.proc = subprocess.Popen(
            self.ray_argv(ip), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=self.ray_env(), cwd=self.spec.work_dir,
        )
        threading.Thread(target=self._follow, args=(self.proc, out), daemon=True).start()
        logger.info("started ray node (%s) as pid %d on %s", self.spec.role, self.proc.pid, ip)

    def _follow(self, proc: subprocess.Popen[bytes], out: IO[bytes]) -> None:
        """Copy ``ray start``'s output to its log; notice the address and readiness."""
        assert proc.stdout is not None
        with out:
            for raw in proc.stdout:
                out.write(raw)
                out.flush()
                line = raw.decode(errors="replace")
                match = _ADDRESS.search(line)
                if match and self.spec.role == "head":
                    self.address = match.group(1)
                    self.gcs_port = int(self.address.rsplit(":", 1)[1])
                if _STARTED in line:
                    self._ready.set()

    def _running(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "start_node() runs first"
        return self.proc

    def wait_ready(self, before: Path | None = None) -> None:
        """Block until ``ray start`` says the node runs; ``before`` is the node's latest Ray
        session before this start (a raylet's abort is this start's only in a newer one).

        Raises
        ------
        NodeStartError
            ``ray start`` exited, the manager was stopped, or ``ready_timeout`` passed.
        """
        proc = self._running()
        log = f"{self.spec.log_dir}/ray_start.log"

        def up() -> bool:
            if self._ready.is_set():
                return True
            if self._stopping.is_set():
                raise NodeStartError("stopped while the node was starting")
            self._check_watched()
            if proc.poll() is not None:
                aborted = self.dirs.raylet_abort(before)
                raise NodeStartError(f"ray start exited with {proc.returncode} before the node "
                                     f"was up{f' ({aborted})' if aborted else ''}; see {log}")
            return False

        if not wait_until(up, self.spec.ready_timeout, interval=0.2):
            raise NodeStartError(f"the Ray node was not up after {self.spec.ready_timeout:.0f}s;"
                                 f" see {log}")

    def kill_node(self, grace: float = 5.0) -> None:
        """Stop every process below this manager (see :func:`~zoo_ray.host.stop_ray_node`),
        also a worker the raylet started as it died: one that outlived us would make its
        session's directories where our link to the temp dir was."""
        stop_ray_node(grace, last=[self.proc.pid] if self.proc is not None else [])

    def _check_watched(self) -> None:
        """Raise NodeStartError if the process this node serves is gone: nobody waits for
        the node any more (a killed driver, a lost executor), and a start would go on
        retrying for minutes against a cluster that is gone."""
        if not self._watched_alive():
            raise NodeStartError(f"the process it serves (pid {self.spec.watch_pid}) is gone")

    def _watched_alive(self) -> bool:
        return self.spec.watch_pid is None or pid_alive(self.spec.watch_pid)

    def record_memory(self) -> None:
        """Keep the container's memory, as last seen, where the driver can read it after a
        memory kill: YARN's own figure is cut from the diagnostics Spark gets, as YARN keeps
        their last 10000 characters and its dump of Ray's process tree fills them."""
        if not os.environ.get("CONTAINER_ID") or self.spec.watch_pid is None:
            return  # the gateway's node: no container limit to explain
        rss, processes = tree_rss(self.spec.watch_pid)
        if processes:
            try:
                ContainerMemory(rss, processes, time.time()).write(self.spec.log_dir)
            except OSError as exc:
                logger.debug("memory sample not kept: %s", exc)

    def supervise(self) -> None:
        """Restart the node when it dies, until stopped or out of restarts; sample the
        container's memory each second meanwhile."""
        while not self._stopping.wait(1.0):
            if not self._watched_alive():
                logger.info("watched process %s is gone; stopping the node",
                            self.spec.watch_pid)
                return
            self.record_memory()  # the executor lives: its container's figure is whole
            proc = self._running()
            if proc.poll() is None:
                continue
            logger.warning("ray node exited with %s", proc.returncode)
            self.kill_node()
            if self.restarts >= self.spec.max_restarts:
                logger.error("giving up after %d restarts", self.restarts)
                return
            self.restarts += 1
            backoff = min(2 ** (self.restarts - 1), 30)
            logger.info("restarting the node in %ds (%d/%d)", backoff, self.restarts,
                        self.spec.max_restarts)
            if self._stopping.wait(backoff):
                return
            try:
                if self.spec.role == "worker":
                    self.wait_for_head()  # not in a start slot: a restarting head may need it
                self.launch()
                logger.info("node is back")
            except NodeStartError as exc:
                logger.error("%s", exc)

    def stop(self, *_: Any) -> None:
        """Ask the manager to stop its node (a signal handler)."""
        self._stopping.set()

    def shutdown(self) -> None:
        """Stop every Ray process, keep the logs, remove the token, the GCS's tables and the
        state file."""
        self.kill_node()
        try:
            self.dirs.copy_logs(Path(self.spec.log_dir))
        except OSError as exc:  # a full log disk must not keep what follows from going
            logger.warning("could not copy Ray's logs: %s", exc)
        self.dirs.remove()
        shutil.rmtree(self.gcs_store, ignore_errors=True)
        if self.temp_dir.is_symlink():
            self.temp_dir.unlink()
        self.token_path.unlink(missing_ok=True)
        ManagerState.remove(self.spec.work_dir)
        logger.info("manager exits")


def _answer(stream: IO[str], kind: str, message: NodeInfo | NodeFailure) -> None:
    stream.write(f"{kind} {message.to_json()}\n")
    stream.flush()


def _take_over_stdio(log_dir: str) -> tuple[IO[str], IO[str]]:
    """Keep a private copy of stdout for the answer; send everything else to our log.

    From here on nothing of ours may reach the launching task's pipes but the answer.
    """
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(log_dir) / "ray_manager.log", "a")
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    return answer, log


def main() -> int:
    """Run one node: answer READY or ERROR, then supervise it until told to stop."""
    spec = NodeSpec.from_json(sys.stdin.readline())
    answer, log = _take_over_stdio(spec.log_dir)
    logging.basicConfig(stream=log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s ray_manager: %(message)s")
    become_subreaper()
    sweep()
    manager = RayManager(spec)
    signal.signal(signal.SIGTERM, manager.stop)
    signal.signal(signal.SIGINT, manager.stop)
    refused = manager.check_shm() or manager.dirs.prepare()
    if refused is not None:
        _answer(answer, "ERROR", refused)
        return 1
    try:
        manager.start()
    except Exception as exc:  # report any start failure to the driver, then clean up
        logger.exception("node failed to start")
        try:
            _answer(answer, "ERROR", NodeFailure(
                "start", str(exc), log_tail=tail(Path(spec.log_dir) / "ray_start.log", 20)))
        except OSError:  # whoever started us is gone: `ray start` must go all the same
            logger.warning("no one took the ERROR answer")
        manager.shutdown()
        return 1
    try:
        _answer(answer, "READY", manager.info())
        answer.close()
    except OSError:  # the task that started us was cancelled: no one will know this node
        logger.warning("no one took the READY answer; stopping the node")
        manager.shutdown()
        return 1
    try:
        manager.supervise()
    finally:
        manager.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
