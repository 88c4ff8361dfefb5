"""Where a Ray node keeps its files: its Ray temp dir (sessions, logs, sockets) and its spill dir.

Used by the RayManager (on an executor or on the gateway) for its node (and to copy Ray's
logs where YARN collects them as it stops), and by the driver to check its arguments and
the gateway's roots before anything starts. By default both
live in the YARN container's directory (the manager's work dir), on the NodeManager's
local disks, and YARN removes them with the container. A user's root
(``RayContext(temp_dir=ROOT)``, or Analytics Zoo's ``extra_params={"temp-dir": ROOT}``;
``"object-spilling-directory"`` for the spill dir alone) puts them on a disk of the site's
choice instead, in a directory of their own per application and container,
``zoo-ray-<application>-<container>`` (the gateway's node:
``zoo-ray-<application>-driver-<pid>@<host>``, for the driver's PID), so that nodes and
applications sharing a host and a root never meet. Ray's sockets keep their short path
(:func:`~zoo_ray.leftovers.node_temp_link`).

YARN does not remove what is under a root, so zoo_ray does: the manager when it stops, and
:func:`~zoo_ray.leftovers.sweep` what a manager killed with SIGKILL left. Each such
directory holds a :class:`~zoo_ray.protocol.NodeDirsRecord` (its manager's PID and host,
and every directory to remove), and the node's short link in ``/tmp`` leads to it, so any
zoo_ray process on the host finds it, whatever root it was given.
"""
from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

from .host import tail
from .leftovers import driver_tag
from .protocol import STATE_DIR, NodeDirsRecord, NodeFailure, NodeSpec

__all__ = ["NodeDirs", "ROOT_FLAGS", "node_dir_name", "root_problem"]

#: A check the raylet failed as it aborted (its fatal line in ``raylet.err``).
_FAILED_CHECK = re.compile(r"Check failed: (?:\S+\.has_value\(\) )?(.+)")

#: The port file of Ray's dashboard agent, which the raylet waits for at its start.
_AGENT_PORT_FILE = "dashboard_agent_listen_port_"

#: The ``ray start`` flags a root stands for, and the NodeSpec field that carries each.
ROOT_FLAGS = {"temp-dir": "temp_root", "object-spilling-directory": "spill_root"}


def node_dir_name(app_id: str, driver_pid: int | None = None) -> str:
    """A node's directory under a root: named for its application and its container, or
    for its driver (``driver_pid``) on the gateway."""
    container = os.environ.get("CONTAINER_ID") or f"driver-{driver_tag(driver_pid)}"
    return f"zoo-ray-{app_id}-{container}"


def root_problem(root: str | os.PathLike[str]) -> str:
    """What keeps ``root`` from holding nodes' directories on this host ('' if nothing)."""
    if not os.path.isdir(root):
        return "does not exist (or is not a directory)"
    if not os.access(root, os.W_OK | os.X_OK):
        return "is not writable"
    return ""


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
        """The directories of the node ``spec`` describes.

        Parameters
        ----------
        spec : NodeSpec
            The node (its application, roots and, on the gateway, its driver's PID).
        state_dir : Path
            The manager's private directory in its container.

        Returns
        -------
        NodeDirs
        """
        name = node_dir_name(spec.app_id, spec.watch_pid)
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
        """Check every root, create the node's directories (0700, ours alone), and leave
        the record for the sweep in each directory under a root.

        Returns
        -------
        NodeFailure or None
            The failure to answer instead of starting (kind "dirs", naming the root, the
            problem, the host and the user), if any.
        """
        for flag, root in self.roots.items():
            problem = root_problem(root)
            if problem:
                return self._failure(f"{flag} {root!r} {problem}")
        record = NodeDirsRecord(pid=os.getpid(), host=socket.gethostname(),
                                dirs=[str(path) for path in self.rooted])
        try:
            for path in (self.ray_dir, self.spill_dir):
                path.mkdir(mode=0o700, parents=path not in self.rooted, exist_ok=True)
            for path in self.rooted:
                problem = _not_ours(path)
                if problem:
                    return self._failure(f"{path} {problem}")
                (path / STATE_DIR).mkdir(mode=0o700, exist_ok=True)
                record.path(path).write_text(record.to_json())
        except OSError as exc:
            return self._failure(f"cannot create the node's directories: {exc}")
        return None

    def copy_logs(self, log_dir: Path) -> None:
        """Copy Ray's logs flat into ``log_dir`` (the container's), as ``ray-<name>``.

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
                    shutil.copyfile(path, log_dir / name)

    def latest_session(self) -> Path | None:
        """The node's latest Ray session directory (None before its first)."""
        try:
            return (self.ray_dir / "session_latest").resolve(strict=True)
        except OSError:
            return None

    def raylet_abort(self, before: Path | None = None) -> str:
        """Why the raylet of the node's latest session aborted (the check it failed, with a
        hint where the cause is known), or '' if it did not, or if that session is still
        ``before`` (an earlier start's: this one made none)."""
        session = self.latest_session()
        if session is None or session == before:
            return ""
        logs = session / "logs"
        for line in reversed(tail(logs / "raylet.err", 50).splitlines()):
            failed = _FAILED_CHECK.search(line)
            if failed is None:
                continue
            reason = f"the raylet aborted: {failed[1].strip()}"
            if _AGENT_PORT_FILE in reason:
                # Ray 2.60's raylet waits 15 s for the agent, whatever port it was given.
                reason += (" (Ray's dashboard agent took longer than the raylet's 15 s to "
                           "start: the host was likely short of CPU)")
            return reason
        return ""

    def remove(self) -> None:
        """Remove the directories under a root (idempotent); YARN removes the others."""
        for path in self.rooted:
            shutil.rmtree(path, ignore_errors=True)

    @staticmethod
    def _failure(problem: str) -> NodeFailure:
        return NodeFailure("dirs", f"{problem} on host {socket.gethostname()} (user "
                                   f"{pwd.getpwuid(os.getuid()).pw_name})")


def _not_ours(path: Path) -> str:
    """Why ``path`` may not hold this node's files: another user could have made it (a
    shared root, and names anyone can guess) or pointed it elsewhere."""
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode):
        return "is not a directory (a link?)"
    if info.st_uid != os.getuid():
        return "belongs to another user"
    os.chmod(path, 0o700)
    return ""
