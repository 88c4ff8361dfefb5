"""Executors the driver lost, and why, said in the user's terms.

Runs in the driver's process: a :class:`LossWatch` thread beside a running
RayContext reads Spark's status store, where the driver keeps the reason YARN gave
for each lost executor. A container YARN killed for memory takes its Ray node
with it, and Ray then reports only a dead node or worker; the watch says at once
which executor it was, the limit, the usage, and which parameter to raise.

YARN's usage figure seldom reaches the driver: a NodeManager keeps only the last
10000 characters of a container's diagnostics, and its dump of Ray's process tree
fills them, so the figure at their head is cut. The usage then comes from the
container's RayManager, which samples it each second into the container's log
directory (:class:`~zoo_ray.protocol.ContainerMemory`); the NodeManager serves that
file until the application ends, and the watch reads it once.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from . import spark_internals
from .kerberos import driver_credentials
from .protocol import ContainerMemory
from .spnego import Credentials, hadoop_opener

__all__ = ["ExecutorLoss", "LossWatch", "explain", "parse_loss", "read_memory_sample",
           "served_sample"]

logger = logging.getLogger(__name__)

#: YARN's words for a memory kill, as Spark passes them on ("2.1 GB of 2 GB physical
#: memory used"); the NodeManager's own diagnostics say the same.
_PMEM = re.compile(r"([0-9.]+ ?[KMGTP]?B) of ([0-9.]+ ?[KMGTP]?B) physical memory used")
_POLL_S = 2.0
_FETCH_TIMEOUT_S = 5.0
_CONTAINER = re.compile(r"/(container_[0-9e_]+)/")


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
        For such a kill: what it used and what it was allowed.
    sampled_at : float or None
        When ``memory_used`` is the RayManager's last sample (taken each second) rather
        than YARN's own figure: when it was taken (seconds since the epoch).
    lost_at : float
        When the driver learned of the loss (seconds since the epoch).
    """

    executor_id: str
    host: str
    container: str
    reason: str
    killed_for_memory: bool = False
    memory_used: str | None = None
    memory_limit: str | None = None
    sampled_at: float | None = None
    lost_at: float = field(default_factory=time.time)


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
    if not loss.memory_used:
        usage = f"more than its {loss.memory_limit} limit"
    elif loss.sampled_at is not None:
        before = max(0.0, loss.lost_at - loss.sampled_at)
        usage = (f"{loss.memory_used} in its processes at zoo_ray's last sample, taken "
                 f"{before:.0f}s before the driver learned of the loss, against its "
                 f"{loss.memory_limit} limit")
    else:
        usage = f"{loss.memory_used} of its {loss.memory_limit} limit"
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


def read_memory_sample(log_urls: dict[str, str],
                       credentials: Credentials | None = None) -> ContainerMemory | None:
    """The RayManager's last memory sample of a lost executor's container, through the
    NodeManager that served its logs (``log_urls`` as Spark keeps them), as
    ``credentials`` on a secure cluster (default: the process's ticket); None when the
    file or the NodeManager cannot be reached (one request, bounded in time)."""
    url = next(iter(log_urls.values()), "")
    parts, container = urlsplit(url), _CONTAINER.search(url)
    if not (parts.netloc and container):
        return None
    # The NodeManager's REST API serves one file of a container's log directory as text.
    api = (f"{parts.scheme}://{parts.netloc}/ws/v1/node/containerlogs/{container.group(1)}/"
           f"{ContainerMemory.FILE}")
    try:
        with hadoop_opener(credentials).open(api, timeout=_FETCH_TIMEOUT_S) as response:
            return served_sample(response.read(64 * 1024).decode("utf-8", "replace"))
    except Exception as exc:  # best effort: any failure (HTTP, TLS, 401, a bad file) is no figure
        logger.info("No memory sample of the lost container at %s: %s", api, exc)
        return None


def served_sample(text: str) -> ContainerMemory:
    """The sample in a NodeManager's answer, which wraps the file in header and footer
    lines (``LogType:``, ``LogContents:``, ``End of LogType:``)."""
    start = text.index("{")
    _, end = json.JSONDecoder().raw_decode(text, start)
    return ContainerMemory.from_json(text[start:end])


def _with_sample(loss: ExecutorLoss, log_urls: dict[str, str],
                 credentials: Credentials | None) -> ExecutorLoss:
    """``loss`` with the RayManager's figure, when YARN's did not reach the driver."""
    if not loss.killed_for_memory or loss.memory_used or not loss.container:
        return loss
    sample = read_memory_sample(log_urls, credentials)
    if sample is None:
        return loss
    return replace(loss, memory_used=f"{sample.rss_bytes / 2**20:.0f} MB",
                   sampled_at=sample.sampled_at)


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
        #: Executors given back to YARN on purpose (an elastic cluster's idle ones): no loss.
        self.released: set[str] = set()
        # A keytab login's identity for the NodeManagers' REST API (None: the ticket cache).
        self._credentials = driver_credentials(sc.getConf())
        try:
            self._seen = {removed.executor_id for removed in self._removed()}
        except Exception as exc:  # the SparkContext is stopping: nothing to watch
            logger.debug("Loss watch: %s", exc)
            self._seen = set()
        self._losses: list[ExecutorLoss] = []
        self._lock = threading.Lock()  # guards _losses
        self._polling = threading.Lock()  # one poll at a time: losses stay oldest first
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="zoo_ray-loss-watch",
                                        daemon=True)
        self._thread.start()

    def _removed(self) -> list[spark_internals.RemovedExecutor]:
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
        with self._polling:
            try:
                removed = self._removed()
            except Exception as exc:  # the SparkContext is stopping: nothing more to watch
                logger.debug("Loss watch: %s", exc)
                return
            for lost in [r for r in removed if r.executor_id not in self._seen]:
                self._seen.add(lost.executor_id)
                if lost.executor_id in self.released:
                    continue
                loss = parse_loss(lost.executor_id, lost.host, lost.reason,
                                  self.containers.get(lost.executor_id, ""),
                                  self.sizes.get("container"))
                # Outside _lock: this may ask a NodeManager (a few seconds at most).
                loss = _with_sample(loss, lost.log_urls, self._credentials)
                with self._lock:
                    self._losses.append(loss)
                logger.warning("%s", explain(loss, self.sizes))

    def _run(self) -> None:
        while not self._stop.wait(_POLL_S):
            try:
                self.poll()
            except Exception:  # a report that failed must not end the watch
                logger.exception("Loss watch")

    def close(self) -> None:
        """Stop watching (idempotent)."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()
