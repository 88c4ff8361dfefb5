"""A fresh Python interpreter for a test (tests only, on the gateway): imports and Ray's
global state start clean, and nothing the test does stays in pytest's process."""
from __future__ import annotations

import os
import subprocess
import sys


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter without the caller's ``RAY_*`` environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, env=env, timeout=timeout)
