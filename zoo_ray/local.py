"""This machine: zoo_ray's per-user cache directory, the JDK to run Java with, log tails,
stopping processes."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import List

import psutil

from .errors import JavaNotFoundError

__all__ = ["cache_root", "find_java_home", "tail", "terminate"]


def cache_root() -> Path:
    """zoo_ray's per-user cache: ``$ZOO_RAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo_ray``."""
    explicit = os.environ.get("ZOO_RAY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "zoo_ray"


def find_java_home() -> Path:
    """The ``JAVA_HOME`` to run the daemons with.

    ``$JAVA_HOME`` wins; otherwise the ``java`` on ``PATH`` is followed through its
    symlinks (Debian's alternatives) to the JDK it belongs to.

    Raises
    ------
    JavaNotFoundError
        When no working ``java`` is found.
    """
    candidates: List[Path] = []
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


def terminate(procs: List[psutil.Process], grace: float = 5.0) -> List[psutil.Process]:
    """SIGTERM ``procs``, SIGKILL those still alive after ``grace`` seconds.

    Returns the processes that had to be killed.
    """
    for proc in procs:
        try:
            proc.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)
    return alive
