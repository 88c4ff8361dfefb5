"""zoo_ray's entries in a host's temp directory, and sweeping what killed processes left there.

Runs on every host zoo_ray runs on. A process killed with SIGKILL (by YARN, the OOM killer
or a user's ``kill -9``) cleans up nothing; the next zoo_ray process on the host does:
the RayManager when it starts (executors and gateway), :meth:`RayContext.init` on the
gateway, and the local Hadoop's ``down``. The entries:

- ``/tmp/zoo-ray-<digest>``: a RayManager's short path to its node's Ray temp dir (a
  Unix socket's path must fit in 108 bytes; container directories are far longer).
  Removed once its target is gone (YARN deleted the container's directory).
- ``<tmp>/zoo-ray-<uid>/driver-<pid>.token``: a driver's token file. Removed once that
  driver is dead.
- ``<tmp>/zoo-ray-driver-<pid>-*``: a driver's work dir (its gateway node's state and
  logs). Removed once that driver is dead and its gateway's manager has exited.

Only this user's entries are touched, and never one of a live process.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import psutil

from .cache import digest
from .protocol import ManagerState

__all__ = ["driver_token_dir", "driver_work_dir", "node_temp_link", "sweep"]

logger = logging.getLogger("zoo_ray.leftovers")

#: Where the managers' short links live: fixed, because TMPDIR may be a long path.
_LINK_ROOT = Path("/tmp")
_LINK = re.compile(r"zoo-ray-[0-9a-f]{12}")
_TOKEN = re.compile(r"driver-(\d+)\.token")
_WORK_DIR_PREFIX = "zoo-ray-driver-"
_WORK_DIR = re.compile(_WORK_DIR_PREFIX + r"(\d+)-.+")


def node_temp_link(ray_dir: Path) -> Path:
    """The short path a RayManager links to its node's Ray temp dir ``ray_dir``."""
    return _LINK_ROOT / f"zoo-ray-{digest(str(ray_dir.resolve()), length=12)}"


def driver_token_dir() -> Path:
    """This user's directory (0700) of drivers' token files."""
    directory = Path(tempfile.gettempdir()) / f"zoo-ray-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def driver_work_dir() -> tempfile.TemporaryDirectory[str]:
    """A new work dir for this driver's gateway node, named for its PID (for :func:`sweep`)."""
    return tempfile.TemporaryDirectory(prefix=f"{_WORK_DIR_PREFIX}{os.getpid()}-")


def sweep() -> list[Path]:
    """Remove this user's entries that killed zoo_ray processes left on this host.

    Returns
    -------
    list of Path
        What was removed. An entry that cannot be removed (another user's, or one that
        vanished meanwhile) is skipped.
    """
    removed = _sweep_work_dirs() + _sweep_tokens()
    # After the work dirs: a gateway node's link pointed into one.
    removed += _sweep_links()
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
        match = _WORK_DIR.fullmatch(path.name)
        if not match or not _ours(path) or psutil.pid_exists(int(match[1])):
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
        match = _TOKEN.fullmatch(path.name)
        if match and not psutil.pid_exists(int(match[1])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _sweep_links() -> list[Path]:
    removed = []
    for path in _LINK_ROOT.glob("zoo-ray-*"):
        if _LINK.fullmatch(path.name) and path.is_symlink() and not path.exists() \
                and _ours(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
