"""The driver's side of block recovery: Spark computes lost partitions again (runs on the
driver, in a thread of its own).

A recoverable conversion (:func:`zoo_ray.data.from_spark`, :func:`~zoo_ray.data.from_rdd`)
registers here how to compute its partitions again (a :class:`Recomputable`). When Ray
re-runs one of its load tasks because their node was lost, the task asks through the
:class:`~zoo_ray.block_recovery.RecomputeBroker`; the :class:`RecomputeServer`'s thread
takes the request, runs a Spark job for just those partitions (spooled on whichever
executors Spark picks, under a conversion of their own), loads them into those
executors' Ray nodes and replies with the new objects, which the re-run task returns as
its results. A conversion's entry goes when all of its blocks are out of scope (no one
can read them, so nothing can need them again) or the RayContext stops.

One server per cluster and connection: a new cluster (after the head's loss) has none
of the old blocks, and the old server's thread ends with the old cluster; a driver that
disconnected and connected again lost its actors (the broker among them) and every
object it owned.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .block_recovery import RecomputeBroker, RecomputeHandle, RecomputeReply, RecomputeRequest
from .errors import ClusterLostError
from .protocol import SpooledBlock
from .ray_blocks import when_out_of_scope
from .spark_internals import job_group

__all__ = ["Recomputable", "RecomputeServer", "close_server", "pieces", "server_for"]

logger = logging.getLogger(__name__)

#: How long the thread waits for a request at a time: also how long close() may wait.
_POLL_S = 1.0
#: Longest close() waits for a cancelled recomputation to end.
_CLOSE_S = 60.0
#: Longest reason a failed recomputation gives (Spark's can run to pages).
_REASON_CHARS = 600


@dataclass(frozen=True)
class Recomputable:
    """How to compute a conversion's partitions again, given by the conversion.

    Attributes
    ----------
    respool : callable
        ``respool(partitions, conversion)`` runs a Spark job spooling just those
        partitions under the new ``conversion``; returns the files, in partition order.
    load : callable
        ``load(blocks)`` loads spooled files into their executors' Ray nodes; one ref
        per file.
    cleanup : callable
        ``cleanup(conversion)`` removes what is left of a conversion's spools.
    """

    respool: Callable[[list[int], str], list[SpooledBlock]]
    load: Callable[[list[SpooledBlock]], list[Any]]
    cleanup: Callable[[str], None]


def pieces(blocks: Sequence[SpooledBlock]) -> list[int]:
    """Each file's piece of its partition: 0, 1, ... in order, per partition."""
    numbers: list[int] = []
    for i, block in enumerate(blocks):
        same = i > 0 and blocks[i - 1].partition == block.partition
        numbers.append(numbers[-1] + 1 if same else 0)
    return numbers


class RecomputeServer:
    """Serves a cluster's recompute requests in a thread, until :meth:`close`.

    Parameters
    ----------
    address : str
        The cluster's GCS address: a server serves one cluster.
    sc : pyspark.SparkContext
        Runs the recomputations, in a job group of the server's own (which
        :meth:`close` cancels).
    """

    def __init__(self, address: str, sc: Any) -> None:
        self.address = address
        self.connection = _connection()
        self._sc = sc
        self._group = f"zoo-ray-recompute-{uuid.uuid4().hex[:8]}"
        # On the gateway's node, which the driver is attached to: the broker (an actor of
        # this driver) lives as long as the driver does anyway, and an actor on an
        # executor's node would keep that node busy, so an elastic cluster could never
        # give it back. Ray starts the broker again if its worker dies.
        placed = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(),
                                                soft=False)
        self._broker = RecomputeBroker.options(  # type: ignore[attr-defined]
            scheduling_strategy=placed, max_restarts=-1, max_task_retries=-1).remote()
        self._sources: dict[str, Recomputable] = {}
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.serve()

    def serve(self) -> None:
        """Start the thread (again, if it ended: the conversions and the broker stay)."""
        if (self._thread is None or not self._thread.is_alive()) and not self._closing.is_set():
            self._thread = threading.Thread(target=self._serve, name="zoo-ray-recompute",
                                            daemon=True)
            self._thread.start()

    def register(self, conversion: str, source: Recomputable) -> RecomputeHandle:
        """Serve ``conversion`` (until :meth:`forget`).

        Returns
        -------
        RecomputeHandle
            What the conversion's load tasks carry, to ask for it.
        """
        with self._lock:
            self._sources[conversion] = source
        return RecomputeHandle(self._broker, conversion)

    def forget_when_out_of_scope(self, conversion: str, refs: Sequence[Any]) -> None:
        """Serve ``conversion`` until its blocks ``refs`` are all out of scope: then no
        one can read them, so no load task of it can run again."""
        when_out_of_scope(refs, lambda: self.forget(conversion))

    def forget(self, conversion: str) -> None:
        """Serve ``conversion`` no more (its blocks are gone or released). Idempotent."""
        with self._lock:
            self._sources.pop(conversion, None)

    def close(self) -> None:
        """End the thread (cancelling a recomputation under way) and the broker; waiting
        requests then fail. Idempotent."""
        self._closing.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            if thread.is_alive():
                self._sc.cancelJobGroup(self._group)
            thread.join(timeout=_CLOSE_S)
            if thread.is_alive():
                logger.warning("The recompute server's thread did not end within %.0fs",
                               _CLOSE_S)
        with self._lock:
            self._sources.clear()
        if ray.is_initialized():
            try:
                ray.kill(self._broker)
            except Exception as exc:  # the cluster may be gone already
                logger.debug("recompute broker: %s", exc)

    def _serve(self) -> None:
        failures = 0
        while not self._closing.is_set():
            taking = self._broker.take.remote(_POLL_S)
            try:
                taken = ray.get(taking, timeout=_POLL_S + 30)
                failures = 0
            except Exception as exc:
                if self._closing.is_set() or not ray.is_initialized() or isinstance(
                        exc, ClusterLostError):
                    return
                if isinstance(exc, ray.exceptions.GetTimeoutError):
                    ray.cancel(taking)  # else it may take a request no one reads
                failures += 1
                logger.warning("recompute server of %s: %s (%d failed in a row)",
                               self.address, exc, failures)
                # Back off, up to half a minute: a restarting broker answers again.
                self._closing.wait(min(30.0, _POLL_S * failures))
                continue
            if taken is not None:
                self._answer(taken)

    def _answer(self, request: RecomputeRequest) -> None:
        """Reply to ``request``, whatever happens: its task waits for the reply."""
        try:
            reply = self._reply(request)
        except Exception as exc:
            logger.exception("recomputing partitions %s of %s", request.partitions,
                             request.conversion)
            reply = RecomputeReply(error=_reason(exc))
        try:
            self._broker.answer.remote(request.id, reply)
        except Exception as exc:  # the broker is gone: the task hears it from Ray
            logger.warning("recompute server of %s: %s", self.address, exc)

    def _reply(self, request: RecomputeRequest) -> RecomputeReply:
        with self._lock:
            source = self._sources.get(request.conversion)
        if source is None:
            return RecomputeReply(error=(
                "zoo_ray no longer keeps how to compute them: every block of the conversion "
                "was released (a Dataset derived from it may still need them), or its "
                "RayContext restarted. Run the conversion again"))
        again = f"{request.conversion}-again-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        try:
            with job_group(self._sc, self._group, "zoo_ray: computing lost blocks again"):
                blocks = source.respool(request.partitions, again)
            if self._closing.is_set():
                return RecomputeReply(error="the RayContext stopped")
            refs = source.load(blocks)
        except Exception as exc:
            reason = _reason(exc)
            logger.warning("Spark could not compute partitions %s (lost with executor %s) "
                           "again: %s", request.partitions, request.container, reason)
            return RecomputeReply(error=reason)
        finally:
            try:
                source.cleanup(again)
            except Exception as exc:  # the cluster stopped meanwhile: YARN removes them
                logger.debug("removing the spools of %s: %s", again, exc)
        logger.warning("Partitions %s, lost with executor %s, computed again by Spark in "
                       "%.1fs (%d rows)", request.partitions, request.container,
                       time.monotonic() - started, sum(b.num_rows for b in blocks))
        return RecomputeReply([(b.partition, piece, b.num_rows)
                               for b, piece in zip(blocks, pieces(blocks))], refs)


def _reason(exc: Exception) -> str:
    """The first line of why, Spark's own for a failed Spark job (Py4J's first line only
    names the JVM call)."""
    java = getattr(exc, "java_exception", None)
    text = str(java.toString()) if java is not None else str(exc)
    first = (text.strip().splitlines() or [type(exc).__name__])[0]
    return first[:_REASON_CHARS]


_server: RecomputeServer | None = None
_server_lock = threading.Lock()


def _connection() -> str:
    """This driver's connection to Ray (its job): the broker, an actor of it, dies with it."""
    return str(ray.get_runtime_context().get_job_id())


def server_for(address: str, sc: Any) -> RecomputeServer:
    """The server of this driver's connection to the cluster at ``address``, started (or
    its thread again) if need be."""
    global _server
    with _server_lock:
        if _server is not None and (_server.address, _server.connection) != (address,
                                                                              _connection()):
            _server.close()
            _server = None
        if _server is None:
            _server = RecomputeServer(address, sc)
        _server.serve()
        return _server


def close_server() -> None:
    """Close the running server, if any (the RayContext stops). Idempotent."""
    global _server
    with _server_lock:
        server, _server = _server, None
    if server is not None:
        server.close()
