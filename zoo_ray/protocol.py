"""What the driver, the Spark tasks and the RayManagers tell each other: typed, round-tripping.

Runs on both sides: the driver and the Spark tasks on executors start managers
and read their answers with :func:`spawn_manager` and :func:`await_manager`; a
manager (:mod:`zoo_ray.manager`) reads its :class:`NodeSpec` and writes one
:class:`NodeInfo` or :class:`NodeFailure`. Every message is a dataclass that
round-trips through JSON (``to_json``/``from_json``) or through pickle (Spark
task results), never a loose dict or a re-parsed string.

A manager gets its spec as one JSON line on stdin (the auth token travels there,
never on a command line or in the environment) and answers one line on stdout,
``READY {NodeInfo}`` or ``ERROR {NodeFailure}``. A manager that dies before it
answers is reported at once, with what it wrote to stderr.
"""
from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import IO, Any, TypeVar

__all__ = [
    "BlockFile", "ContainerMemory", "HeadPlacement", "ManagerState", "NodeDirsRecord",
    "NodeFailure", "NodeInfo", "NodeOutcome", "NodeSpec",
    "STATE_DIR", "SpooledBlock", "WORK_DIR_ENV", "container_work_dir", "await_manager",
    "spawn_manager",
]

#: Directory (under the container's working directory) holding a manager's state.
STATE_DIR = ".zoo_ray"
#: Set by a RayManager for its Ray processes: the container's working directory.
WORK_DIR_ENV = "ZOO_RAY_WORK_DIR"

_M = TypeVar("_M", bound="_Message")


class _Message:
    """JSON round-trip for the dataclasses below; unknown keys are an error, not ignored."""

    def to_json(self) -> str:
        return json.dumps(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[_M], text: str) -> _M:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{cls.__name__} has no fields {sorted(unknown)}")
        return cls(**data)

    @classmethod
    def load(cls: type[_M], path: Path) -> _M | None:
        """The message stored in the file ``path``; None if there is none, or not one."""
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, TypeError):
            return None


def container_work_dir() -> Path:
    """This executor's working directory, from a Spark task or a Ray process.

    A Ray process is told by its RayManager (:data:`WORK_DIR_ENV`); a Spark task
    on YARN runs in its container's directory; in local mode, where every task
    shares the driver's directory, the SparkContext's own scratch directory (Spark
    removes it when it stops) takes the container's place.
    """
    if os.environ.get(WORK_DIR_ENV):
        return Path(os.environ[WORK_DIR_ENV])
    if os.environ.get("CONTAINER_ID"):
        return Path.cwd()
    from pyspark import SparkFiles

    return Path(SparkFiles.getRootDirectory())


@dataclass
class NodeSpec(_Message):
    """Everything a manager needs to run one Ray node."""

    role: str  # "head" or "worker"
    app_id: str
    token: str = field(repr=False)
    num_cpus: int
    work_dir: str
    log_dir: str
    object_store_memory: int | None = None
    #: The GPUs YARN gave the node's container (0: none, whatever the host has).
    num_gpus: int = 0
    #: The node's ``memory`` resource (bytes): what its tasks and actors may use.
    memory: int | None = None
    head_address: str | None = None
    node_ip: str | None = None
    include_dashboard: bool = False
    system_config: dict[str, Any] | None = None
    extra_params: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    #: The user's roots for the node's Ray temp dir and its spill dir (see
    #: :mod:`zoo_ray.node_dirs`); None: the container's directory.
    temp_root: str | None = None
    spill_root: str | None = None
    watch_pid: int | None = None
    max_restarts: int = 5
    ready_timeout: float = 90.0


@dataclass
class NodeInfo(_Message):
    """A manager's READY answer: its node is up."""

    role: str
    address: str | None
    pid: int
    node_ip: str
    log_dir: str
    temp_dir: str
    container: str
    dashboard_url: str | None = None
    work_dir: str = ""
    #: The Spark executor hosting the node, as Spark names it (filled by the start task).
    executor_id: str = ""
    executor_host: str = ""

    @property
    def spark_location(self) -> str | None:
        """This executor as a Spark preferred location (tasks then run in it)."""
        if not self.executor_id:
            return None
        return f"executor_{self.executor_host}_{self.executor_id}"


@dataclass(frozen=True)
class SpooledBlock:
    """A file a Spark task wrote to its container's spool (:mod:`zoo_ray.spool`).

    ``schema`` is the serialized Arrow schema of an Arrow block (empty for a
    pickled RDD partition): the driver builds the Dataset's metadata from these
    rows alone, with no task per block.
    """

    container: str
    path: str
    partition: int
    num_rows: int
    size_bytes: int
    schema: bytes = b""
    #: Why the partition could not be spooled (no file then): an error for the user.
    error: str = ""


@dataclass(frozen=True)
class BlockFile:
    """One spooled file as the Ray task loading it sees it: where it is, and which piece
    of which Spark partition it holds (a partition larger than ``block_size`` is cut
    into pieces, numbered from 0), so that a lost one can be computed again."""

    path: str
    container: str
    partition: int
    piece: int
    num_rows: int


@dataclass
class NodeFailure(_Message):
    """Why a node did not come up. ``kind``: "shm", "dirs" (a user's root for its
    directories is missing or not writable), "start", "died" or "timeout"."""

    kind: str
    message: str
    log_tail: str = ""
    container: str = ""


@dataclass
class NodeOutcome:
    """What one barrier task of the start job reports to the driver.

    ``status`` is "ok" (``node`` is set), "error" (``failure`` is set), "skipped"
    (a worker stopped because the head failed), "idle" (an executor that was not
    chosen; ``has_node`` says whether it already runs a node of this application) or
    "misplaced" (a task Spark ran in another executor than the one it was meant for).
    """

    status: str
    container: str
    node: NodeInfo | None = None
    failure: NodeFailure | None = None
    has_node: bool = False


@dataclass
class HeadPlacement:
    """Where the head goes: its executor, and the GCS address fixed before it starts."""

    container: str
    address: str
    has_node: bool

    @property
    def ip(self) -> str:
        return self.address.rsplit(":", 1)[0]


@dataclass
class ManagerState(_Message):
    """The running manager of a container, recorded in its working directory."""

    pid: int
    app_id: str
    role: str
    #: The node's Ray temp dir, which tells it apart from other raylets on the machine.
    temp_dir: str

    @staticmethod
    def path(work_dir: str | os.PathLike[str]) -> Path:
        return Path(work_dir) / STATE_DIR / "manager.json"

    def write(self, work_dir: str | os.PathLike[str]) -> None:
        self.path(work_dir).write_text(self.to_json())

    @classmethod
    def read(cls, work_dir: str | os.PathLike[str]) -> ManagerState | None:
        return cls.load(cls.path(work_dir))

    @classmethod
    def remove(cls, work_dir: str | os.PathLike[str]) -> None:
        cls.path(work_dir).unlink(missing_ok=True)


@dataclass
class NodeDirsRecord(_Message):
    """What a node's directory under a user's root says about itself, for the sweep
    (:mod:`zoo_ray.node_dirs`).

    Parameters
    ----------
    pid : int
        The manager that made it.
    host : str
        That manager's host (a root may be shared between hosts).
    dirs : list of str
        Every directory of that node under a root, to remove once the manager is dead.
    """

    pid: int
    host: str
    dirs: list[str] = field(default_factory=list)

    @staticmethod
    def path(directory: str | os.PathLike[str]) -> Path:
        return Path(directory) / STATE_DIR / "node_dirs.json"

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> NodeDirsRecord | None:
        """The record in ``directory``, or None (none there, or not one of ours)."""
        return cls.load(cls.path(directory))


@dataclass
class ContainerMemory(_Message):
    """A manager's last sample of its container's memory, kept in the container's log
    directory: YARN serves that directory while the application runs, dead containers'
    included, so the driver can still read it after YARN killed the container."""

    #: Resident memory of the executor JVM and every process below it (Ray's included),
    #: summed per process as YARN's default memory check does.
    rss_bytes: int
    processes: int
    #: When it was taken (seconds since the epoch).
    sampled_at: float

    FILE = "zoo_ray_memory.json"

    def write(self, log_dir: str | os.PathLike[str]) -> None:
        """Replace the sample in ``log_dir`` at once (a reader never sees half of it)."""
        path = Path(log_dir) / self.FILE
        partial = path.with_name(f".{self.FILE}.tmp")
        partial.write_text(self.to_json())
        os.replace(partial, path)


def spawn_manager(spec: NodeSpec) -> subprocess.Popen[str]:
    """Start ``python -m zoo_ray.manager`` with ``spec`` on its stdin."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "zoo_ray.manager"], stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stdin = _pipe(proc.stdin)
    stdin.write(spec.to_json() + "\n")
    stdin.close()
    return proc


def _pipe(stream: IO[str] | None) -> IO[str]:
    assert stream is not None, "spawn_manager opens every pipe"
    return stream


def await_manager(proc: subprocess.Popen[str], timeout: float) -> NodeInfo | NodeFailure:
    """The manager's answer, or a :class:`NodeFailure` if it died or stayed silent.

    A manager that exits before answering (an import error, a bad spec) ends its
    stdout at once: that is reported with its stderr, not after ``timeout``.
    """
    stdout, stderr = _pipe(proc.stdout), _pipe(proc.stderr)
    with selectors.DefaultSelector() as selector:
        selector.register(stdout, selectors.EVENT_READ)
        ready = selector.select(timeout)
    line = stdout.readline() if ready else ""
    stdout.close()
    kind, _, payload = line.partition(" ")
    if kind == "READY":
        stderr.close()
        return NodeInfo.from_json(payload)
    if kind == "ERROR":
        stderr.close()
        return NodeFailure.from_json(payload)
    if not ready:
        proc.kill()
        proc.wait()
        stderr.close()
        return NodeFailure("timeout", f"the RayManager gave no answer in {timeout:.0f}s")
    # EOF without an answer: the manager exited; its stderr says why.
    code = proc.wait()
    said = stderr.read()[-4000:]
    stderr.close()
    return NodeFailure("died", f"the RayManager exited with {code} before it answered",
                       log_tail=said.strip())
