"""Executors the driver lost, and why, said in the user's terms.

Runs in the driver's process: a :class:`LossWatch` thread beside a running
RayContext reads Spark's status store, where the driver keeps the reason YARN gave
for each lost executor. A container YARN killed for memory takes its Ray node
with it, and Ray then reports only a dead node or worker; the watch says at once
which executor it was, the limit, the usage, and which parameter to raise.
"""
from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from typing import Any

from . import spark_internals

__all__ = ["ExecutorLoss", "LossWatch", "explain", "parse_loss"]

logger = logging.getLogger(__name__)

#: YARN's words for a memory kill, as Spark passes them on ("2.1 GB of 2 GB physical
#: memory used"); the NodeManager's own diagnostics say the same.
_PMEM = re.compile(r"([0-9.]+ ?[KMGTP]?B) of ([0-9.]+ ?[KMGTP]?B) physical memory used")
_POLL_S = 2.0


@dataclass(frozen=True)
class ExecutorLoss:
    """One executor the driver lost.

    Parameters
    ----------
    executor_id, host : str
        As Spark names them.
    container : str
        The YARN container whose Ray node went with it ("" if it held none).
    reason : str
        Spark's reason, with YARN's diagnostics.
    killed_for_memory : bool
        Whether YARN killed the container for exceeding its physical memory.
    memory_used, memory_limit : str or None
        For such a kill: what it used (when YARN's figure reached the driver) and
        what it was allowed.
    """

    executor_id: str
    host: str
    container: str
    reason: str
    killed_for_memory: bool = False
    memory_used: str | None = None
    memory_limit: str | None = None


def parse_loss(executor_id: str, host: str, reason: str, container: str = "",
               container_size: str | None = None) -> ExecutorLoss:
    """An :class:`ExecutorLoss` from Spark's removal reason.

    YARN's figures are taken from the reason when Spark passed them on; else the
    limit is ``container_size``, the size the application asked YARN for.
    """
    match = _PMEM.search(reason)
    if match:
        return ExecutorLoss(executor_id, host, container, reason, True, match.group(1),
                            match.group(2))
    killed = "physical memory" in reason
    return ExecutorLoss(executor_id, host, container, reason, killed, None,
                        container_size if killed else None)


def explain(loss: ExecutorLoss, sizes: dict[str, str]) -> str:
    """The message a user reads about ``loss``; ``sizes`` holds the application's
    ``executor_memory``, ``extra_executor_memory_for_ray`` and ``object_store_memory``."""
    where = f"Executor {loss.executor_id} ({loss.container or 'no Ray node'} on {loss.host})"
    if not loss.killed_for_memory:
        reason = loss.reason.rstrip(". ") or "no reason given"
        return f"{where} was lost: {reason}. Its Ray node is gone."
    usage = (f"{loss.memory_used} of its {loss.memory_limit} limit" if loss.memory_used
             else f"more than its {loss.memory_limit} limit")
    return (
        f"{where} was killed by YARN for using too much memory: {usage}. Its Ray node, "
        "and the Ray objects it held, are gone. The container holds the JVM heap "
        f"(executor_memory={sizes.get('executor_memory')}), "
        "Spark's overhead, and Ray's share (extra_executor_memory_for_ray="
        f"{sizes.get('extra_executor_memory_for_ray')}: the object store, "
        f"object_store_memory={sizes.get('object_store_memory')}, plus Ray's workers). Raise "
        "extra_executor_memory_for_ray when Ray tasks or actors need more (and declare it, "
        "@ray.remote(memory=...), so Ray schedules them within it), lower "
        "object_store_memory if the object store grew, or raise executor_memory if the JVM did."
    )


class LossWatch:
    """Report each executor ``sc`` loses, once, while it runs (a daemon thread).

    Parameters
    ----------
    sc : pyspark.SparkContext
    containers : dict
        Container of each executor's Ray node, by Spark executor id.
    sizes : dict
        What :func:`explain` quotes, and the ``container`` size asked of YARN.
    """

    def __init__(self, sc: Any, containers: dict[str, str], sizes: dict[str, str]) -> None:
        self.sc = sc
        self.containers = containers
        self.sizes = sizes
        try:
            self._seen = {executor for executor, _, _ in self._removed()}
        except Exception as exc:  # the SparkContext is stopping: nothing to watch
            logger.debug("Loss watch: %s", exc)
            self._seen = set()
        self._losses: list[ExecutorLoss] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoo_ray-loss-watch",
                                        daemon=True)
        self._thread.start()

    def _removed(self) -> list[tuple[str, str, str]]:
        if spark_internals.is_stopped(self.sc):
            return []
        return spark_internals.removed_executors(self.sc)

    @property
    def losses(self) -> list[ExecutorLoss]:
        """The executors lost since the watch started, oldest first."""
        self.poll()
        with self._lock:
            return list(self._losses)

    def poll(self) -> None:
        """Record and report executors lost since the last look."""
        try:
            removed = self._removed()
        except Exception as exc:  # the SparkContext is stopping: nothing more to watch
            logger.debug("Loss watch: %s", exc)
            return
        with self._lock:
            for executor, host, reason in removed:
                if executor in self._seen:
                    continue
                self._seen.add(executor)
                loss = parse_loss(executor, host, reason, self.containers.get(executor, ""),
                                  self.sizes.get("container"))
                self._losses.append(loss)
                logger.warning("%s", explain(loss, self.sizes))

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            self.poll()

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
