"""zoo_ray's per-user cache on the gateway: where it is, content addresses, build-once.

Runs on the gateway (the driver's machine). Everything cached is addressed by a
digest of what it was built from, and built at most once: under a lock, into a
private temp directory, then renamed into place, so a concurrent reader never
sees a half-built entry.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

__all__ = ["build_once", "cache_root", "digest"]

#: Hex digits kept of a sha256: 80 bits, plenty to tell cache entries apart.
DIGEST_CHARS = 20


def cache_root() -> Path:
    """zoo_ray's per-user cache: ``$ZOO_RAY_CACHE_DIR``, else ``$XDG_CACHE_HOME/zoo_ray``."""
    explicit = os.environ.get("ZOO_RAY_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "zoo_ray"


def digest(*parts: bytes | str, length: int = DIGEST_CHARS) -> str:
    """A content address: the sha256 of ``parts`` (in order), as ``length`` hex digits."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
    return hasher.hexdigest()[:length]


def build_once(target: Path, build: Callable[[Path], None]) -> bool:
    """Make sure ``target`` (a file or directory) exists, building it only if it does not.

    ``build(staging)`` writes the entry at ``staging``, a path in a temp directory
    next to ``target``; it is renamed to ``target`` when ``build`` returns. A lock
    file beside ``target`` makes concurrent callers wait for one build.

    Returns
    -------
    bool
        True if this call built ``target``, False if it was there already.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{target}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.exists():
            return False
        staging_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            staging = staging_dir / target.name
            build(staging)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging_dir, ignore_errors=True)
    return True
