"""The state file of a local Hadoop: what ``up`` started, in ``<dir>/state.json``.

Runs wherever a local Hadoop is started or looked at: ``zoo-ray minicluster down``
or ``status`` in another shell (or the watchdog) reads what ``up`` wrote. Plain
JSON, replaced atomically; a file lock in the directory serialises ``up`` and ``down``.
"""
from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import MiniClusterStateError
from .daemons import Daemon

__all__ = ["StateFile"]

_STATE = "state.json"


class StateFile:
    """The state of the local Hadoop in ``dir``: its spec, ports, daemons, Java, jars, network.

    Parameters
    ----------
    dir : Path
        The local Hadoop's directory.
    """

    def __init__(self, dir: Path) -> None:
        self.dir = dir
        self.path = dir / _STATE

    def read(self) -> dict[str, Any] | None:
        """The recorded state, or None if no local Hadoop was ever started in ``dir``.

        Raises
        ------
        MiniClusterStateError
            The file is another user's, or corrupt; names the fix.
        """
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except PermissionError:
            raise MiniClusterStateError(
                f"{self.path} cannot be read by this user (uid {os.getuid()}); run as the "
                "user who started the local Hadoop, or use another --dir.") from None
        except ValueError as exc:
            raise MiniClusterStateError(
                f"{self.path} is corrupt ({exc}). Stop any Hadoop daemons started from "
                f"{self.dir} and delete that file."
            ) from None

    def write(self, state: dict[str, Any]) -> None:
        """Replace the recorded state with ``state`` (atomically: a reader sees old or new)."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.path)

    def daemons(self) -> list[Daemon]:
        """The daemons recorded as started (and not stopped since)."""
        state = self.read()
        return [Daemon.from_dict(d) for d in state["daemons"]] if state else []

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock: one ``up`` or ``down`` at a time."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.dir / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
