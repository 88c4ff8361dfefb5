"""The line every benchmark's figures start with: the commit, the machine and the day.

Imported by the scripts in this directory (run as ``python benchmarks/<script>.py``, so
this directory is on ``sys.path``).
"""
from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path


def print_provenance() -> None:
    """Print ``# commit <sha>, <host>, <cores> cores, <date>``."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, cwd=Path(__file__).parent).stdout.strip()
    print(f"# commit {commit}, {platform.node()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}")
