"""PySpark's Python worker daemon, as a child subreaper.

Spark runs this module (``spark.python.daemon.module``) once per executor instead
of ``pyspark.daemon``. The only difference: it marks itself a *child subreaper*,
so a process that a Spark task starts (a RayManager) and that outlives the task's
Python worker is re-parented to this daemon rather than to init. It therefore
stays inside the executor's process tree for the executor's whole life, where
YARN's memory monitor counts it and its container kill reaches it.
"""
from __future__ import annotations

import ctypes
import sys

__all__ = ["become_subreaper"]

_PR_SET_CHILD_SUBREAPER = 36


def become_subreaper() -> bool:
    """Mark this process a child subreaper (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


if __name__ == "__main__":
    become_subreaper()
    from pyspark import daemon

    daemon.manager()
