"""PySpark's Python worker daemon, as a child subreaper.

Runs on each executor, a long-lived process: Spark starts this module
(``spark.python.daemon.module``) once per executor instead of ``pyspark.daemon``.
The only difference: it marks itself a *child subreaper*, so a process that a
Spark task starts (a RayManager) and that outlives the task's Python worker is
re-parented to this daemon rather than to init. It therefore stays inside the
executor's process tree for the executor's whole life, where YARN's memory
monitor counts it and its container kill reaches it.
"""
from __future__ import annotations

from .host import become_subreaper

if __name__ == "__main__":
    become_subreaper()
    from pyspark import daemon

    daemon.manager()
