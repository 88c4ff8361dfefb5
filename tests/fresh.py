"""A fresh Python interpreter for a test (tests only, on the gateway): imports and Ray's
global state start clean, and nothing the test does stays in pytest's process."""
from __future__ import annotations

import os
import subprocess
import sys

#: Kept: where the tests' own local Ray clusters write (set for the run in conftest.py).
_KEPT = ("RAY_TMPDIR",)


def ray_keys() -> list[str]:
    """The ``RAY_*`` variables of this process that a fresh program must not inherit (a
    zoo_ray driver's address and token settings)."""
    return [k for k in os.environ if k.startswith("RAY_") and k not in _KEPT]


def env_without_ray() -> dict[str, str]:
    """This process's environment without :func:`ray_keys`."""
    dropped = set(ray_keys())
    return {k: v for k, v in os.environ.items() if k not in dropped}


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter without the caller's ``RAY_*`` environment."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env_without_ray(), timeout=timeout)
