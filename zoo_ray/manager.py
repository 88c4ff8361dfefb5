"""RayManager: the supervisor of one Ray node, one per executor (and one on the gateway).

Run as ``python -m zoo_ray.manager`` with a :class:`NodeSpec` as one JSON line on
stdin (the auth token travels there, never on a command line or in the
environment). It

- starts ``ray start --block`` as its own child, in the container's process group,
  and marks itself a child subreaper, so every Ray process stays in its process
  tree even when ``ray start`` dies;
- answers one line on stdout: ``READY {...}`` with the node's address, or
  ``ERROR {...}``;
- restarts the node when it dies (bounded retries, exponential backoff);
- stops every Ray process it owns (SIGTERM, then SIGKILL) on SIGTERM, when the
  process it watches (the executor JVM, or the driver) is gone, or after the last
  failed restart; then copies Ray's logs into the container's log directory so
  YARN log aggregation collects them.

It never runs a host-wide ``ray stop`` and never touches processes it did not start.
"""
from __future__ import annotations

import hashlib
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
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import psutil

from .executor_daemon import become_subreaper
from .local import tail, terminate

__all__ = ["NodeSpec", "RayManager", "STATE_DIR", "free_ports", "node_ip", "main"]

logger = logging.getLogger("zoo_ray.manager")

#: Directory (under the container's working directory) holding the manager's state.
STATE_DIR = ".zoo_ray"
_ADDRESS = re.compile(r"--address='([^']+)'")
_STARTED = "Ray runtime started"
_START_ATTEMPTS = 3
# A Unix socket path must fit in 108 bytes; container directories are far longer.
_SOCKET_ROOT = Path("/tmp")


@dataclass
class NodeSpec:
    """Everything a manager needs to run one Ray node. Round-trips through JSON."""

    role: str
    app_id: str
    token: str = field(repr=False)
    num_cpus: int
    work_dir: str
    log_dir: str
    object_store_memory: Optional[int] = None
    head_address: Optional[str] = None
    node_ip: Optional[str] = None
    include_dashboard: bool = False
    system_config: Optional[Dict[str, Any]] = None
    extra_params: Dict[str, Any] = field(default_factory=dict)
    env: Dict[str, str] = field(default_factory=dict)
    watch_pid: Optional[int] = None
    max_restarts: int = 5
    ready_timeout: float = 90.0

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "NodeSpec":
        return cls(**json.loads(text))


def free_ports(count: int) -> List[int]:
    """Ports free on every address: some Ray agents bind 0.0.0.0 whatever the node IP."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("", 0))
            ports.append(sock.getsockname()[1])
    return ports


def node_ip() -> str:
    """This host's address as Ray picks it: the source address of the default route.

    The same probe as Ray's ``node_ip_address_from_perspective``, without importing
    Ray (a second or more on a busy executor) before the node starts.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # UDP connect sends nothing; it only selects the route.
            probe.connect(("8.8.8.8", 53))
            return probe.getsockname()[0]
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def _shm_free() -> Optional[int]:
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


class RayManager:
    """Owns one Ray node's processes for as long as it lives."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.state = Path(spec.work_dir) / STATE_DIR
        self.state.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.token_path = self.state / "auth_token"
        self.ray_dir = self.state / "ray"
        self.ray_dir.mkdir(exist_ok=True)
        digest = hashlib.sha1(str(self.ray_dir.resolve()).encode()).hexdigest()[:12]
        self.temp_dir = _SOCKET_ROOT / f"zoo-ray-{digest}"
        self.proc: Optional[subprocess.Popen] = None
        self.address: Optional[str] = spec.head_address
        # A head given its address up front (so workers can start alongside it) keeps its port.
        self.gcs_port: Optional[int] = (
            int(spec.head_address.rsplit(":", 1)[1])
            if spec.role == "head" and spec.head_address else None
        )
        self.dashboard_url: Optional[str] = None
        self.restarts = 0
        self._stopping = threading.Event()
        self._ready = threading.Event()

    # ---------------------------------------------------------------- set-up
    def _write_token(self) -> None:
        fd = os.open(self.token_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.spec.token)

    def _link_temp_dir(self) -> None:
        if self.temp_dir.is_symlink() or self.temp_dir.exists():
            self.temp_dir.unlink()
        self.temp_dir.symlink_to(self.ray_dir.resolve())

    def node_ip(self) -> str:
        return self.spec.node_ip or node_ip()

    def ray_env(self) -> Dict[str, str]:
        env = dict(os.environ)
        for key in ("RAY_AUTH_TOKEN", "RAY_ADDRESS"):
            env.pop(key, None)
        env.update(self.spec.env)
        env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(self.token_path))
        return env

    def ray_argv(self, ip: str) -> List[str]:
        spec = self.spec
        dashboard, agent_http, agent_grpc, metrics, runtime_env, client = free_ports(6)
        argv = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
            f"--node-ip-address={ip}", f"--num-cpus={spec.num_cpus}",
            f"--temp-dir={self.temp_dir}",
            f"--object-spilling-directory={self.state / 'spill'}",
            f"--dashboard-agent-listen-port={agent_http}",
            f"--dashboard-agent-grpc-port={agent_grpc}",
            f"--metrics-export-port={metrics}",
            f"--runtime-env-agent-port={runtime_env}",
            "--disable-usage-stats", "--log-style=record", "--log-color=false",
        ]
        if spec.object_store_memory:
            argv.append(f"--object-store-memory={spec.object_store_memory}")
        if spec.role == "head":
            argv += [
                "--head", f"--port={self.gcs_port or 0}",
                f"--ray-client-server-port={client}",
                f"--include-dashboard={'true' if spec.include_dashboard else 'false'}",
                # The dashboard process runs even when "off"; give it a port of its own.
                f"--dashboard-port={dashboard}", f"--dashboard-host={ip}",
            ]
            if spec.include_dashboard:
                self.dashboard_url = f"http://{ip}:{dashboard}"
            if spec.system_config:
                argv.append(f"--system-config={json.dumps(spec.system_config)}")
        else:
            argv.append(f"--address={self.address}")
        for key, value in spec.extra_params.items():
            flag = "--" + key.replace("_", "-")
            argv.append(flag if value is True else f"{flag}={value}")
        return argv

    # ------------------------------------------------------------------ run
    def wait_for_head(self) -> None:
        """Block until the head's GCS accepts connections.

        A worker started before that would back off for seconds in Ray's own
        retries (gRPC reconnects, a 2 s sleep for the session name); starting it
        right when the port opens lets it join as soon as the head can take it.
        """
        host, port = self.address.rsplit(":", 1)
        deadline = time.monotonic() + self.spec.ready_timeout
        while not self._stopping.is_set():
            try:
                socket.create_connection((host, int(port)), timeout=1.0).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the head at {self.address} did not accept "
                                       f"connections within {self.spec.ready_timeout:.0f}s")
                time.sleep(0.1)
        raise RuntimeError("stopped while waiting for the head")

    def start_node(self) -> None:
        ip = self.node_ip()
        self._link_temp_dir()
        self._ready.clear()
        out = open(Path(self.spec.log_dir) / "ray_start.log", "ab")
        self.proc = subprocess.Popen(
            self.ray_argv(ip), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, env=self.ray_env(), cwd=self.spec.work_dir,
        )
        threading.Thread(target=self._follow, args=(self.proc, out), daemon=True).start()
        logger.info("started ray node (%s) as pid %d on %s", self.spec.role, self.proc.pid, ip)

    def _follow(self, proc: subprocess.Popen, out: Any) -> None:
        """Copy ``ray start``'s output to its log; notice the address and readiness."""
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

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.spec.ready_timeout
        while not self._ready.wait(0.2):
            if self._stopping.is_set():
                raise RuntimeError("stopped while the node was starting")
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited with {self.proc.returncode} before the "
                                   f"node was up; see {self.spec.log_dir}/ray_start.log")
            if time.monotonic() > deadline:
                raise RuntimeError(f"the Ray node was not up after {self.spec.ready_timeout:.0f}s;"
                                   f" see {self.spec.log_dir}/ray_start.log")

    def _descendants(self) -> List[psutil.Process]:
        try:
            return psutil.Process().children(recursive=True)
        except psutil.Error:
            return []

    def kill_node(self, grace: float = 5.0) -> None:
        """SIGTERM every process below this manager, SIGKILL what is left after ``grace``."""
        terminate(self._descendants(), grace)
        # Orphans re-parented to us (we are a subreaper) were reaped by wait_procs or now.
        while True:
            try:
                if os.waitpid(-1, os.WNOHANG) == (0, 0):
                    break
            except ChildProcessError:
                break

    def _watched_alive(self) -> bool:
        pid = self.spec.watch_pid
        if pid is None:
            return True
        try:
            return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def supervise(self) -> None:
        """Restart the node when it dies, until stopped or out of restarts."""
        while not self._stopping.wait(1.0):
            if not self._watched_alive():
                logger.info("watched process %s is gone; stopping the node",
                            self.spec.watch_pid)
                return
            if self.proc.poll() is None:
                continue
            logger.warning("ray node exited with %s", self.proc.returncode)
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
            self.start_node()
            try:
                self.wait_ready()
                logger.info("node is back")
            except RuntimeError as exc:
                logger.error("%s", exc)

    def stop(self, *_: Any) -> None:
        self._stopping.set()

    def copy_ray_logs(self) -> None:
        """Copy Ray's logs flat into the container log dir, as ``ray-<name>``.

        YARN log aggregation uploads only the files at the top of that directory. A
        head restarted into a new Ray session gets its files as ``ray<n>-<name>``.
        """
        sessions = sorted(p for p in self.ray_dir.glob("session_2*") if p.is_dir())
        for number, session in enumerate(sessions):
            prefix = "ray-" if number == len(sessions) - 1 else f"ray{number}-"
            logs = session / "logs"
            for path in logs.rglob("*"):
                if path.is_file() and not path.is_symlink():
                    name = prefix + "_".join(path.relative_to(logs).parts)
                    shutil.copyfile(path, Path(self.spec.log_dir) / name)

    def shutdown(self) -> None:
        self.kill_node()
        self.copy_ray_logs()
        if self.temp_dir.is_symlink():
            self.temp_dir.unlink()
        for path in (self.token_path, self.state / "manager.json"):
            path.unlink(missing_ok=True)
        logger.info("manager exits")


def _answer(stream: Any, kind: str, payload: Dict[str, Any]) -> None:
    stream.write(f"{kind} {json.dumps(payload)}\n")
    stream.flush()


def main() -> int:
    answer = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    spec = NodeSpec.from_json(sys.stdin.readline())
    Path(spec.log_dir).mkdir(parents=True, exist_ok=True)
    log = open(Path(spec.log_dir) / "ray_manager.log", "a")
    # From here on nothing of ours may reach the launching task's pipe but the answer.
    os.dup2(log.fileno(), sys.stdout.fileno())
    os.dup2(log.fileno(), sys.stderr.fileno())
    logging.basicConfig(stream=log, level=logging.INFO,
                        format="%(asctime)s %(levelname)s ray_manager: %(message)s")
    become_subreaper()
    manager = RayManager(spec)
    signal.signal(signal.SIGTERM, manager.stop)
    signal.signal(signal.SIGINT, manager.stop)
    shm = _shm_free()
    if spec.object_store_memory and shm is not None and spec.object_store_memory > shm:
        _answer(answer, "ERROR", {"kind": "shm", "shm_free": shm,
                                  "message": f"object_store_memory={spec.object_store_memory} "
                                             f"bytes exceeds the {shm} bytes free in /dev/shm"})
        return 1
    manager._write_token()
    (manager.state / "manager.json").write_text(json.dumps(
        {"pid": os.getpid(), "app_id": spec.app_id, "role": spec.role}))
    try:
        # Another process may grab a port between our choice and Ray's bind: try again
        # with fresh ports, as the restart loop would.
        if spec.role == "worker":
            manager.wait_for_head()
        for attempt in range(1, _START_ATTEMPTS + 1):
            manager.start_node()
            try:
                manager.wait_ready()
                break
            except RuntimeError:
                if attempt == _START_ATTEMPTS:
                    raise
                logger.warning("node start attempt %d failed; retrying", attempt)
                manager.kill_node()
        if spec.role == "head":
            deadline = time.monotonic() + 10
            while manager.address is None and time.monotonic() < deadline:
                time.sleep(0.1)
    except Exception as exc:  # report any start failure to the driver, then clean up
        logger.exception("node failed to start")
        _answer(answer, "ERROR", {"kind": "start", "message": str(exc),
                                  "log_tail": tail(Path(spec.log_dir) / "ray_start.log", 20)})
        manager.shutdown()
        return 1
    _answer(answer, "READY", {"role": spec.role, "address": manager.address,
                              "pid": os.getpid(), "dashboard_url": manager.dashboard_url,
                              "node_ip": manager.node_ip(), "log_dir": spec.log_dir,
                              "temp_dir": str(manager.temp_dir),
                              "container": os.environ.get("CONTAINER_ID", "")})
    answer.close()
    try:
        manager.supervise()
    finally:
        manager.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
