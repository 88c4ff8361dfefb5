"""Helpers about this host: processes, waiting, ports, addresses, files, Java, env vars.

Runs anywhere: on the gateway, inside Spark tasks on executors and in the
RayManager. It imports neither PySpark nor Ray, so the small processes on
executors start fast. Each helper here is the only one of its kind in zoo_ray.
"""
from __future__ import annotations

import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from threading import Event
from typing import TYPE_CHECKING, TypeVar

from .errors import JavaNotFoundError

if TYPE_CHECKING:
    # Imported where used: PySpark's worker daemon imports this module in interpreters
    # that may lack psutil (an executor environment is the user's).
    import psutil

__all__ = [
    "become_subreaper", "env_var", "find_java_home", "free_ports", "kill_descendants", "node_ip",
    "pid_alive", "port_free", "private_dir_problem", "reap_children", "stop_ray_node",
    "tail", "terminate", "tree_rss", "wait_until", "write_private",
]

T = TypeVar("T")

_PR_SET_CHILD_SUBREAPER = 36


def wait_until(
    probe: Callable[[], T], timeout: float, interval: float = 0.5, stop: Event | None = None
) -> T | None:
    """Call ``probe`` until it returns something truthy; return that, or None at ``timeout``.

    ``probe`` may raise to end the wait early (a daemon died, a process exited).
    A set ``stop`` event ends the wait too, returning None.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() >= deadline:
            return None
        pause = min(interval, max(0.0, deadline - time.monotonic()))
        if stop is not None:
            if stop.wait(pause):
                return None
        else:
            time.sleep(pause)


@contextmanager
def env_var(name: str, value: str) -> Iterator[None]:
    """Set an environment variable for the duration of a block, then restore it."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def terminate(
    procs: list[psutil.Process], grace: float = 5.0, group: bool = False
) -> list[psutil.Process]:
    """SIGTERM ``procs``, SIGKILL those still alive after ``grace`` seconds.

    With ``group``, each process is the leader of its own process group and the
    whole group is signalled. A process that exited counts as gone even while its
    parent (maybe another process) has not reaped it. Returns the processes that
    had to be killed.
    """
    import psutil

    def send(proc: psutil.Process, sig: signal.Signals) -> None:
        try:
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        except (psutil.Error, ProcessLookupError, PermissionError):
            pass

    for proc in procs:
        send(proc, signal.SIGTERM)
    wait_until(lambda: all(map(_gone, procs)), grace, interval=0.1)
    alive = [proc for proc in procs if not _gone(proc)]
    for proc in alive:
        send(proc, signal.SIGKILL)
    wait_until(lambda: all(map(_gone, alive)), grace, interval=0.1)
    return alive


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _gone(proc: psutil.Process) -> bool:
    """Exited (a zombie counts; our own is reaped)."""
    import psutil

    try:
        if proc.status() != psutil.STATUS_ZOMBIE:
            return False
    except psutil.Error:
        return True
    try:
        os.waitpid(proc.pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def tree_rss(pid: int) -> tuple[int, int]:
    """Resident bytes of process ``pid`` and every process below it, summed per process
    (as YARN's default memory check counts a container), and how many processes that is.
    Processes that exit meanwhile are left out; (0, 0) if ``pid`` itself is gone (or a
    zombie, which holds no memory)."""
    import psutil

    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return 0, 0
    total = counted = 0
    for proc in procs:
        try:
            total += proc.memory_info().rss
            counted += 1
        except psutil.Error:
            continue
    return (total, counted) if total else (0, 0)


def kill_descendants(grace: float = 5.0, rounds: int = 3) -> None:
    """Terminate every process below this one (see :func:`terminate`), and reap them.

    Again for what a dying process started meanwhile (a raylet starting a worker as it is
    told to stop): a subreaper inherits those after the first round. At most ``rounds``.
    """
    import psutil

    for _ in range(rounds):
        try:
            descendants = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        if not descendants:
            return
        terminate(descendants, grace)
        reap_children()


def stop_ray_node(grace: float = 5.0, last: Iterable[int] = ()) -> None:
    """Stop every process below this one as ``ray stop`` stops a Ray node: the raylet
    first, then the rest but the GCS and ``last``, then ``last``, then everything left
    (see :func:`kill_descendants`).

    Signalled all at once, the raylet waits 10 s for its agents, and the autoscaler's
    monitor for the GCS; in this order a node's processes stop in seconds (figures in the
    docs' benchmarks page).

    Parameters
    ----------
    grace : float
        Each round waits up to ``grace / 4`` for SIGTERM to work, then SIGKILLs: about
        ``grace`` in all when the processes obey SIGTERM, at most about ``3 * grace``.
    last : iterable of int
        Processes signalled after the others but before the GCS: ``ray start --block``,
        whose own SIGTERM handler first asks the GCS to drain its node (and waits for an
        answer that never comes once the GCS is gone).
    """
    import psutil

    keep = set(last)

    def name(proc: psutil.Process) -> str:
        try:
            return proc.name()
        except psutil.Error:
            return ""

    rounds = (lambda p: name(p) == "raylet",
              lambda p: p.pid not in keep and name(p) != "gcs_server",
              lambda p: p.pid in keep)
    for wanted in rounds:
        try:
            procs = psutil.Process().children(recursive=True)
        except psutil.Error:
            return
        terminate([p for p in procs if wanted(p)], grace / 4)
    kill_descendants(grace / 4)


def reap_children() -> None:
    """Reap every exited child (a subreaper inherits orphans it must wait for)."""
    while True:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                return
        except ChildProcessError:
            return


def become_subreaper() -> bool:
    """Mark this process a child subreaper (Linux); False where that is not possible.

    Orphaned descendants are then re-parented to this process instead of init, so
    they stay in its process tree.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def free_ports(count: int, host: str = "") -> list[int]:
    """``count`` distinct ports free on ``host`` (default: every address), chosen by the kernel.

    The sockets are held open together, so no port is handed out twice. Some Ray
    agents bind 0.0.0.0 whatever the node IP, hence the default.
    """
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
    return ports


def port_free(host: str, port: int) -> bool:
    """Whether ``host:port`` can be bound now (TIME_WAIT leftovers do not count)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def node_ip(toward: str = "8.8.8.8") -> str:
    """This host's address on the route toward ``toward``.

    With the default, the source address of the default route: the same probe as
    Ray's ``node_ip_address_from_perspective``, without importing Ray (a second or
    more on a busy executor) before the node starts. With a cluster host, the
    address of the interface that faces it, for gateways on several networks.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            # UDP connect sends nothing; it only selects the route.
            probe.connect((toward, 53))
            return str(probe.getsockname()[0])
        except OSError:
            return socket.gethostbyname(socket.gethostname())


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by this user only (0600 from the first byte)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def private_dir_problem(directory: Path) -> str:
    """Make ``directory`` (0700) if new; why it is not a directory of this user's alone
    ('' if it is): another user could then delete what is in it, or plant links where
    files are opened. Raises OSError if it cannot be made."""
    import stat

    directory.mkdir(mode=0o700, exist_ok=True)
    info = directory.lstat()
    if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
            or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return (f"is not a directory of this user's alone (uid {info.st_uid}, mode "
                f"{stat.filemode(info.st_mode)})")
    return ""


def tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def find_java_home() -> Path:
    """The ``JAVA_HOME`` to run Java with (the Hadoop daemons, Spark's launcher).

    ``$JAVA_HOME`` wins; otherwise the ``java`` on ``PATH`` is followed through its
    symlinks (Debian's alternatives) to the JDK it belongs to.

    Raises
    ------
    JavaNotFoundError
        When no working ``java`` is found.
    """
    candidates: list[Path] = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(Path(os.environ["JAVA_HOME"]))
    on_path = shutil.which("java")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent.parent)
    for home in candidates:
        java = home / "bin" / "java"
        if not java.is_file():
            continue
        try:
            subprocess.run(
                [str(java), "-version"], capture_output=True, check=True, timeout=60
            )
        except (OSError, subprocess.SubprocessError):
            continue
        return home
    raise JavaNotFoundError(
        "No working Java found (checked $JAVA_HOME and `java` on PATH). Install a JDK 17 "
        "(e.g. `apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME to one."
    )
