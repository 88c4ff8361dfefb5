"""Blocks lost with their executor, computed again by Spark (runs inside Ray's workers).

Two parts run here; the driver's part is :mod:`zoo_ray.recompute_server`.

- :func:`recover`, in a load task (:mod:`zoo_ray.ray_tasks`) that Ray re-runs to
  reconstruct blocks whose node was lost (Ray's lineage reconstruction: the driver
  owns the blocks, so Ray re-runs the task that made them, on another node). The
  task's files went with the lost executor, so it asks the driver, through the
  broker, to have Spark compute those partitions again, and returns what Spark
  made: each piece checked against the rows it had first.
- :class:`RecomputeBroker`, an actor on the gateway's Ray node (it lives as long as the
  driver, and keeps no executor's node busy): the mailbox between re-run tasks, which
  cannot call the driver, and the driver's thread that serves them. It holds the
  waiting requests and hands each its reply.

Why Spark and not a copy: the blocks live in one object store each (a copy would
double the memory of every conversion), and Spark can compute any partition of a
DataFrame or RDD again from its lineage or its cache, as it does for its own jobs.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

import ray

from .errors import BlocksLostError
from .protocol import BlockFile

__all__ = ["RECOMPUTE_TIMEOUT_S", "RecomputeBroker", "RecomputeHandle", "RecomputeReply",
           "RecomputeRequest", "recover"]

#: Longest a re-run load task waits for Spark to compute its partitions again.
RECOMPUTE_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class RecomputeRequest:
    """A re-run load task's request: these partitions of a conversion, lost with
    ``container``, computed again. ``id`` is the task's own (the same when Ray sends the
    call again to a restarted broker)."""

    id: str
    conversion: str
    partitions: list[int]
    container: str


@dataclass(frozen=True)
class RecomputeReply:
    """The driver's answer: each piece of the partitions as a Ray object (``refs``, in
    the order of ``pieces``: ``(partition, piece, rows)``), or why Spark could not
    compute them (``error``)."""

    pieces: list[tuple[int, int, int]] = field(default_factory=list)
    refs: list[Any] = field(default_factory=list)
    error: str = ""


@dataclass(frozen=True)
class RecomputeHandle:
    """What a load task needs to have its lost files computed again: the broker, and the
    conversion the driver knows the Spark source of."""

    broker: Any
    conversion: str


@ray.remote(num_cpus=0)
class RecomputeBroker:
    """Requests of re-run load tasks, waiting for the driver's thread (an async actor:
    each waiting request costs no thread)."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[RecomputeRequest] = asyncio.Queue()
        self._waiting: dict[str, asyncio.Future[RecomputeReply]] = {}

    async def recompute(self, request: RecomputeRequest) -> RecomputeReply:
        """Called by a re-run load task: wait for the driver's reply."""
        reply: asyncio.Future[RecomputeReply] = asyncio.get_running_loop().create_future()
        self._waiting[request.id] = reply
        await self._queue.put(request)
        try:
            return await reply
        finally:
            self._waiting.pop(request.id, None)

    async def take(self, timeout_s: float) -> RecomputeRequest | None:
        """Called by the driver's thread: the next request, or None after ``timeout_s``."""
        try:
            return await asyncio.wait_for(self._queue.get(), timeout_s)
        except asyncio.TimeoutError:
            return None

    async def answer(self, request_id: str, reply: RecomputeReply) -> None:
        """Called by the driver's thread: hand request ``request_id`` its reply."""
        waiting = self._waiting.get(request_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(reply)


def recover(recovery: RecomputeHandle, files: list[BlockFile]
            ) -> dict[tuple[int, int], Any]:
    """The lost ``files`` computed again by Spark, by ``(partition, piece)``.

    Raises
    ------
    BlocksLostError
        Spark could not compute them again (its own lineage lost, the SparkContext or
        the RayContext stopped, the Dataset released), or computed other rows than at
        first (a DataFrame that is not deterministic); names the lost executor.
    """
    container = files[0].container
    partitions = sorted({f.partition for f in files})
    lost = (f"The blocks of partitions {partitions} from executor {container} are gone with "
            "its executor or Ray node, and")
    try:
        reply: RecomputeReply = ray.get(
            recovery.broker.recompute.remote(RecomputeRequest(
                uuid.uuid4().hex, recovery.conversion, partitions, container)),
            timeout=RECOMPUTE_TIMEOUT_S)
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError) as exc:
        why = (str(exc).strip().splitlines() or [""])[0][:300]
        raise BlocksLostError(
            f"{lost} the driver did not compute them again: the RayContext stopped, or Spark "
            f"took longer than {RECOMPUTE_TIMEOUT_S:.0f}s ({type(exc).__name__}: {why}). Run "
            "the conversion again.") from None
    if reply.error:
        raise BlocksLostError(f"{lost} Spark could not compute them again: {reply.error}")
    made = {(p, piece): (rows, ref) for (p, piece, rows), ref in zip(reply.pieces, reply.refs)}
    for file in files:
        rows = made.get((file.partition, file.piece), (0, None))[0]
        if rows != file.num_rows:
            raise BlocksLostError(
                f"{lost} Spark computed partition {file.partition} again with other rows "
                f"(piece {file.piece}: {rows} rows, first {file.num_rows}): the source is not "
                "deterministic. Checkpoint it (sc.setCheckpointDir, then df.checkpoint()) or "
                "persist it with a replicated level (MEMORY_AND_DISK_2) before the "
                "conversion.")
    # Only this task's pieces: a partition's other pieces may be another task's.
    keys = [(f.partition, f.piece) for f in files]
    return dict(zip(keys, ray.get([made[key][1] for key in keys])))
