"""Stops a local Hadoop when the process that started it dies.

A test session or notebook that starts the local Hadoop through the context
manager may be killed before its ``__exit__`` runs; without this, the daemons
would outlive it. :meth:`MiniCluster.up` runs it as
``python -m zoo_ray.minicluster.watchdog <pid> <dir>`` in its own session; it
exits by itself once the cluster is down. A long-lived process beside the daemons.
"""
from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import psutil

__all__ = ["main"]

_POLL_S = 1.0


def _owner_alive(owner: psutil.Process) -> bool:
    try:
        return owner.is_running() and owner.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def main(argv: list) -> int:
    from .cluster import MiniCluster

    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog: %(message)s")
    owner_pid, cluster_dir = int(argv[0]), Path(argv[1])
    try:
        owner = psutil.Process(owner_pid)
    except psutil.NoSuchProcess:
        owner = None
    cluster = MiniCluster(cluster_dir)
    while owner is not None and _owner_alive(owner):
        if not cluster.started:
            return 0
        time.sleep(_POLL_S)
    if cluster.started:
        logging.info("process %d that started the local Hadoop is gone; stopping it", owner_pid)
        cluster.down()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
