"""zoo_ray's entries in a host's temp directory, and sweeping what killed processes left there.

Runs on every host zoo_ray runs on. A process killed with SIGKILL (by YARN, the OOM killer
or a user's ``kill -9``) cleans up nothing; the next zoo_ray process on the host does:
the RayManager when it starts (executors and gateway),
:meth:`RayContext.init <zoo_ray.context.RayContext.init>` on the gateway, and the local
Hadoop's ``down``. The entries:

- ``/tmp/zoo-ray-<digest>``: a RayManager's short path to its node's Ray temp dir (a
  Unix socket's path must fit in 108 bytes; container directories are far longer).
  Removed once its target is gone (YARN deleted the container's directory).
- ``<tmp>/zoo-ray-<uid>/driver-<pid>@<host>.token``: a driver's token file. Removed once
  that driver is dead.
- ``<tmp>/zoo-ray-driver-<pid>@<host>-*``: a driver's work dir (its gateway node's state
  and logs). Removed once that driver is dead and its gateway's manager has exited.
- ``<root>/zoo-ray-<application>-<container>``: a node's directories under a user's root
  (:mod:`zoo_ray.node_dirs`), found through the node's link above. Removed, with the link,
  once the manager recorded in them (on this host) is dead.
- ``/tmp/zoo-ray-gpus-<uid>/<device>.json``: an executor's claim on a GPU
  (:mod:`zoo_ray.gpu_claims`). Removed once the executor's JVM is dead.
- ``/tmp/zoo-ray-starts-<uid>/slot-<n>``: the host's start slots (:mod:`zoo_ray.start_slots`),
  empty files whose locks the kernel frees with their holder. Kept: they hold nothing.

Only this user's entries are touched, a driver's only on its own host (a temp dir may be
shared between hosts), and never one of a live process. A sweep never fails its caller.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

import psutil

from .cache import digest
from .gpu_claims import sweep_claims
from .protocol import ManagerState, NodeDirsRecord

__all__ = ["driver_tag", "driver_token_dir", "driver_work_dir", "node_temp_link", "sweep"]

logger = logging.getLogger("zoo_ray.leftovers")

#: Where the managers' short links live: fixed, because TMPDIR may be a long path.
_LINK_ROOT = Path("/tmp")
_LINK = re.compile(r"zoo-ray-[0-9a-f]{12}")
_WORK_DIR_PREFIX = "zoo-ray-driver-"


def node_temp_link(ray_dir: Path) -> Path:
    """The short path a RayManager links to its node's Ray temp dir ``ray_dir``."""
    return _LINK_ROOT / f"zoo-ray-{digest(str(ray_dir.resolve()), length=12)}"


def driver_tag(pid: int | None = None) -> str:
    """``<pid>@<host>``: what names a driver's entries (this process's by default)."""
    return f"{os.getpid() if pid is None else pid}@{socket.gethostname()}"


def _driver_pid(name: str, prefix: str, suffix: str) -> int | None:
    """The PID in a driver's entry ``<prefix><pid>@<this host><suffix>``; None for entries
    of other hosts, or names that are not a driver's."""
    host = re.escape(socket.gethostname())
    match = re.fullmatch(re.escape(prefix) + r"(\d+)@" + host + suffix, name)
    return int(match[1]) if match else None


def driver_token_dir() -> Path:
    """This user's directory (0700) of drivers' token files."""
    directory = Path(tempfile.gettempdir()) / f"zoo-ray-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def driver_work_dir() -> tempfile.TemporaryDirectory[str]:
    """A new work dir for this driver's gateway node, named for its PID and host (for
    :func:`sweep`)."""
    return tempfile.TemporaryDirectory(prefix=f"{_WORK_DIR_PREFIX}{driver_tag()}-")


def sweep() -> list[Path]:
    """Remove this user's entries that killed zoo_ray processes left on this host.

    Returns
    -------
    list of Path
        What was removed. An entry that cannot be removed (another user's, or one that
        vanished meanwhile) is skipped; a sweep that fails is logged, never raised.
    """
    removed: list[Path] = []
    # Links after work dirs: a gateway node's link pointed into one.
    for step in (_sweep_work_dirs, _sweep_tokens, _sweep_links, sweep_claims):
        try:
            removed += step()
        except OSError as exc:
            logger.warning("could not sweep %s: %s", step.__name__.removeprefix("_sweep_"), exc)
    if removed:
        logger.info("removed %d entries left by killed zoo_ray processes: %s", len(removed),
                    ", ".join(map(str, removed)))
    return removed


def _ours(path: Path) -> bool:
    try:
        return path.lstat().st_uid == os.getuid()
    except OSError:
        return False


def _sweep_work_dirs() -> list[Path]:
    removed = []
    for path in Path(tempfile.gettempdir()).glob(_WORK_DIR_PREFIX + "*"):
        pid = _driver_pid(path.name, _WORK_DIR_PREFIX, "-.+")
        if pid is None or not _ours(path) or psutil.pid_exists(pid):
            continue
        # The gateway's manager stops on its own once the driver is gone; it may still be
        # copying its node's logs into this directory.
        manager = ManagerState.read(path)
        if manager is not None and psutil.pid_exists(manager.pid):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def _sweep_tokens() -> list[Path]:
    removed = []
    directory = Path(tempfile.gettempdir()) / f"zoo-ray-{os.getuid()}"
    for path in directory.glob("driver-*.token"):
        pid = _driver_pid(path.name, "driver-", r"\.token")
        if pid is not None and not psutil.pid_exists(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _dead_node_dirs(link: Path) -> list[Path]:
    """The directories under a root that ``link`` leads to, if their manager (on this host)
    is dead; [] otherwise (a container's directory has no record: YARN removes it)."""
    record = NodeDirsRecord.read(link)
    if record is None or record.host != socket.gethostname() or psutil.pid_exists(record.pid):
        return []
    return [Path(path) for path in record.dirs]


def _dangling(link: Path) -> bool:
    """A symlink whose target is gone (one we may not look into is not dangling)."""
    try:
        os.stat(link)
    except (FileNotFoundError, NotADirectoryError):
        return link.is_symlink()
    except OSError:
        return False
    return False


def _sweep_links() -> list[Path]:
    removed = []
    for path in _LINK_ROOT.glob("zoo-ray-*"):
        # Ours first: another user's link points into a directory we may not read.
        if not (_LINK.fullmatch(path.name) and _ours(path)):
            continue
        dead = _dead_node_dirs(path)
        for directory in dead:
            shutil.rmtree(directory, ignore_errors=True)
        if dead or _dangling(path):
            path.unlink(missing_ok=True)
            removed += [*dead, path]
    return removed
