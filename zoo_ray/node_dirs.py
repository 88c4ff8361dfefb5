"""Where a Ray node keeps its files: its Ray temp dir (sessions, logs, sockets) and its spill dir.

Runs in the RayManager, on an executor or on the gateway. By default both live in the
YARN container's directory (the manager's work dir), on the NodeManager's local disks, and
YARN removes them with the container. A user's root (``RayContext(temp_dir=ROOT)``, or
Analytics Zoo's ``extra_params={"temp-dir": ROOT}``; ``"object-spilling-directory"`` for
the spill dir alone) puts them on a disk of the site's choice instead, in a directory of
their own per application and container, ``zoo-ray-<application>-<container>`` (the
gateway's node: ``zoo-ray-<application>-driver-<pid>@<host>``), so that nodes and
applications sharing a host and a root never meet. Ray's sockets keep their short path
(:func:`~zoo_ray.leftovers.node_temp_link`).

YARN does not remove what is under a root, so zoo_ray does: the manager when it stops, and
:func:`~zoo_ray.leftovers.sweep` what a manager killed with SIGKILL left (each directory
holds its manager's :class:`~zoo_ray.protocol.ManagerState`, with its PID and host).
"""
from __future__ import annotations

import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from .leftovers import driver_tag
from .protocol import STATE_DIR, ManagerState, NodeFailure, NodeSpec

__all__ = ["NodeDirs", "ROOT_FLAGS", "node_dir_name"]

#: The ``ray start`` flags a root stands for, and the NodeSpec field that carries each.
ROOT_FLAGS = {"temp-dir": "temp_root", "object-spilling-directory": "spill_root"}


def node_dir_name(app_id: str) -> str:
    """This node's directory under a root: named for its application and its container
    (the driver, for the gateway's node)."""
    container = os.environ.get("CONTAINER_ID") or f"driver-{driver_tag()}"
    return f"zoo-ray-{app_id}-{container}"


@dataclass(frozen=True)
class NodeDirs:
    """A node's temp and spill dirs, and which of them are under a user's root.

    Parameters
    ----------
    ray_dir : Path
        Ray's temp dir (``ray start --temp-dir`` links to it through a short path).
    spill_dir : Path
        Where Ray spills objects.
    roots : dict
        The user's roots, by the ``ray start`` flag they were given for.
    rooted : tuple of Path
        The directories under a root: zoo_ray removes them, YARN does not.
    """

    ray_dir: Path
    spill_dir: Path
    roots: dict[str, str]
    rooted: tuple[Path, ...]

    @classmethod
    def for_spec(cls, spec: NodeSpec, state_dir: Path) -> NodeDirs:
        """The directories of the node ``spec`` describes; ``state_dir`` is the manager's
        private directory in its container."""
        name = node_dir_name(spec.app_id)
        ray_dir = Path(spec.temp_root) / name if spec.temp_root else state_dir / "ray"
        if spec.spill_root:
            spill_dir = Path(spec.spill_root) / name
        else:
            spill_dir = (ray_dir if spec.temp_root else state_dir) / "spill"
        roots = {flag: getattr(spec, field) for flag, field in ROOT_FLAGS.items()
                 if getattr(spec, field)}
        rooted = tuple(path for path, root in ((ray_dir, spec.temp_root),
                                               (spill_dir, spec.spill_root)) if root)
        return cls(ray_dir=ray_dir, spill_dir=spill_dir, roots=roots, rooted=rooted)

    def prepare(self) -> NodeFailure | None:
        """Check every root (a writable directory on this host), then create the node's
        directories (0700). Returns the failure to report instead of starting, if any."""
        for flag, root in self.roots.items():
            problem = _root_problem(Path(root))
            if problem:
                return NodeFailure("dirs", f"{flag} {root!r} {problem} on host "
                                           f"{socket.gethostname()} (user {_user()})")
        for path in (self.ray_dir, self.spill_dir):
            path.mkdir(mode=0o700, parents=path not in self.rooted, exist_ok=True)
        return None

    def record(self, state: ManagerState) -> None:
        """Leave the manager's state in each directory under a root, for the sweep."""
        for path in self.rooted:
            (path / STATE_DIR).mkdir(mode=0o700, exist_ok=True)
            state.write(path)

    def remove(self) -> None:
        """Remove the directories under a root (idempotent); YARN removes the others."""
        for path in self.rooted:
            shutil.rmtree(path, ignore_errors=True)


def _root_problem(root: Path) -> str:
    if not root.is_dir():
        return "does not exist (or is not a directory)"
    if not os.access(root, os.W_OK | os.X_OK):
        return "is not writable"
    return ""


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (ImportError, KeyError):
        return str(os.getuid())
