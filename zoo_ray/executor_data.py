"""Functions Spark runs inside tasks on the executors, for the data path.

Runs in PySpark's Python workers on the executors; the driver
(:mod:`zoo_ray.spark_to_ray`, :mod:`zoo_ray.ray_to_spark`) binds their arguments with
:func:`functools.partial`.

- :func:`spool_arrow_partition` (in ``mapInArrow``): writes the Arrow batches
  Spark's JVM made from one partition into this container's spool, in files of a
  bounded size, and reports each file as a :class:`~zoo_ray.protocol.SpooledBlock`
  row. The data never leaves the executor; only these rows go to the driver.
- :func:`spool_rdd_partition`: the same for any RDD partition, pickled.
- :func:`spool_batch_partition`: an RDD partition of batches (pandas frames, numpy
  arrays, dicts of arrays, Arrow tables) as Arrow files, as Ray's ``map_batches``
  would make blocks of them.
- :func:`read_spooled_blocks` (in ``mapInArrow``), :func:`read_spooled_pickles`: the
  way back; read the blocks (or objects) a Ray task spooled on this node.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from . import spool
from .auth import use_token_file
from .errors import BlocksLostError, InvalidArgumentError
from .executor_tasks import container_id
from .protocol import STATE_DIR, BlockFile, ManagerState, SpooledBlock

__all__ = ["SPOOLED_BLOCK_SCHEMA", "SPOOL_PROPERTY", "ReadPlan", "read_spooled_blocks",
           "read_spooled_pickles", "spool_arrow_partition", "spool_batch_partition",
           "spool_rdd_partition"]

logger = logging.getLogger(__name__)

#: The Spark local property naming the conversion a job spools into.
SPOOL_PROPERTY = "zoo_ray.spool"

#: The Arrow form of :class:`SpooledBlock` rows (Spark's schema is built from it).
SPOOLED_BLOCK_SCHEMA = pa.schema([
    ("container", pa.string()), ("path", pa.string()), ("partition", pa.int64()),
    ("num_rows", pa.int64()), ("size_bytes", pa.int64()), ("schema", pa.binary()),
    ("error", pa.string()),
])


def _target() -> tuple[int, str, Path]:
    """This task's partition, a file stem no other attempt of it uses, and the spool
    directory of the conversion the driver named in the job's local property
    :data:`SPOOL_PROPERTY` (so one RDD serves a conversion's first job and the jobs that
    compute its lost partitions again, each into a spool of its own)."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    assert ctx is not None, "runs inside a Spark task"
    conversion = ctx.getLocalProperty(SPOOL_PROPERTY)
    assert conversion, f"the driver sets {SPOOL_PROPERTY} for the job"
    return (ctx.partitionId(), f"p{ctx.partitionId()}-a{ctx.attemptNumber()}",
            spool.conversion_dir(conversion))


def _spooled(file: spool.SpooledFile, partition: int) -> SpooledBlock:
    """An Arrow file just written, as the driver hears of it (with its schema)."""
    with pa.memory_map(file.path) as source:
        schema = pa.ipc.open_file(source).schema
    return SpooledBlock(container_id(), file.path, partition, file.num_rows, file.size_bytes,
                        schema.serialize().to_pybytes())


def spool_arrow_partition(max_bytes: int, names: list[str], batches: Iterator[pa.RecordBatch]
                          ) -> Iterator[pa.RecordBatch]:
    """Spool one partition's Arrow batches, its columns named ``names``; yield one
    :class:`SpooledBlock` row per file."""
    partition, stem, directory = _target()
    named = (batch.rename_columns(names) for batch in batches)
    blocks = [_spooled(written, partition)
              for written in spool.write_batches(named, directory, stem, max_bytes)]
    if blocks:
        yield pa.RecordBatch.from_pylist([dataclasses.asdict(b) for b in blocks],
                                         schema=SPOOLED_BLOCK_SCHEMA)


def spool_rdd_partition(partition: int, items: Iterable[Any]) -> Iterator[SpooledBlock]:
    """Pickle one RDD partition into the spool; yield where it went."""
    _, stem, directory = _target()
    written = spool.write_pickle(list(items), directory / f"{stem}.pickle")
    yield SpooledBlock(container_id(), written.path, partition, written.num_rows,
                       written.size_bytes)


def _as_table(item: Any) -> pa.Table:
    """A batch as an Arrow table, as Ray's ``map_batches`` makes a block of it (a bare
    numpy array becomes the column ``data``, as in ``ray.data.from_numpy``)."""
    if isinstance(item, pa.Table):
        return item
    if isinstance(item, pa.RecordBatch):
        return pa.Table.from_batches([item])
    import numpy as np
    import pandas as pd  # type: ignore[import-untyped]

    if isinstance(item, np.ndarray):
        item = {"data": item}
    if not isinstance(item, (pd.DataFrame, dict)):
        raise InvalidArgumentError(
            f"an item is a {type(item).__name__}; give pandas frames, numpy arrays, dicts of "
            "arrays or Arrow tables (from_rdd takes any object)")
    from ray.data.block import BlockAccessor, BlockType

    table: pa.Table = BlockAccessor.batch_to_block(item, block_type=BlockType.ARROW)
    return table


def spool_batch_partition(max_bytes: int, partition: int, items: Iterable[Any]
                          ) -> Iterator[SpooledBlock]:
    """Spool one partition of batches as Arrow files of about ``max_bytes``; yield where
    each went, or one :class:`SpooledBlock` saying why the batches cannot be blocks."""
    _, stem, directory = _target()
    batches = (batch for item in items for batch in _as_table(item).to_batches())
    try:
        written = list(spool.write_batches(batches, directory, stem, max_bytes))
    except (InvalidArgumentError, pa.ArrowException, ValueError, TypeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if isinstance(exc, pa.ArrowInvalid):
            first += ". Give every batch the same columns and types"
        yield SpooledBlock(container_id(), "", partition, 0, 0,
                           error=f"partition {partition}: {first}")
        return
    for file in written:
        yield _spooled(file, partition)


@dataclass(frozen=True)
class ReadPlan:
    """What the read tasks of ``to_spark`` and ``to_rdd`` need: the target schema (none
    for ``to_rdd``'s objects), and where blocks are."""

    schema: pa.Schema | None
    address: str
    #: container -> the Ray node id of its node.
    nodes: dict[str, str]


def read_spooled_blocks(plan: ReadPlan, rows: Iterator[pa.RecordBatch]
                        ) -> Iterator[pa.RecordBatch]:
    """Read the spooled blocks named by ``rows`` (columns ``container`` and ``path``).

    A block is read from its file when the file is on this host (Spark ran the task
    in the executor that holds it, as preferred, or in another one on the same
    host); otherwise through Ray, from the node holding it. Each block is cast to
    the schema Spark was told, so a block Ray typed more loosely (say, all nulls)
    still fits.
    """
    remote = _RemoteReader(plan)
    try:
        for batch in rows:
            for container, path in zip(batch.column("container").to_pylist(),
                                       batch.column("path").to_pylist()):
                table = (spool.read_table(path) if os.path.exists(path)
                         else remote.read(container, path, pickled=False))
                yield from table.cast(plan.schema).to_batches()
    finally:
        remote.close()


def read_spooled_pickles(plan: ReadPlan, lines: Iterator[str]) -> Iterator[Any]:
    """The items of the objects spooled where ``lines`` say (JSON ``[container, path]``),
    read from the file when it is on this host, otherwise through Ray."""
    remote = _RemoteReader(plan)
    try:
        for line in lines:
            container, path = json.loads(line)
            yield from (spool.read_pickle(path) if os.path.exists(path)
                        else remote.read(container, path, pickled=True))
    finally:
        remote.close()


class _RemoteReader:
    """Reads blocks spooled on other hosts, through a Ray connection made on first use."""

    def __init__(self, plan: ReadPlan) -> None:
        self.plan = plan
        self.connected = False

    def read(self, container: str, path: str, pickled: bool) -> Any:
        import ray

        from .ray_tasks import load_pickles, load_tables, pinned

        node = self.plan.nodes.get(container)
        if node is None:
            raise BlocksLostError(
                f"A block spooled by executor {container} is gone with its Ray node; run "
                f"{'to_rdd' if pickled else 'to_spark'} again.")
        if not self.connected:
            _connect_from_executor(self.plan.address)
            self.connected = True
        # Partition and piece name a block for recovery, which to_spark's files lack.
        loaded, _ = pinned(load_pickles if pickled else load_tables, node, soft=False,
                           num_returns=2).remote(
            [BlockFile(path, container, partition=0, piece=0, num_rows=0)])
        return ray.get(loaded)

    def close(self) -> None:
        if self.connected:
            import ray

            ray.shutdown()


def _connect_from_executor(address: str) -> None:
    """Join the cluster as a short-lived driver, with this container's token file."""
    token = spool.work_dir() / STATE_DIR / "auth_token"
    if not token.exists():
        raise BlocksLostError(
            f"Spark read a block on executor {container_id()}, which runs no Ray node and "
            "so cannot fetch it. Give every executor a Ray node (num_ray_nodes) for to_spark.")
    use_token_file(token)
    state = ManagerState.read(spool.work_dir())
    if state is None:
        logger.warning("No RayManager state in %s: Ray picks the raylet to attach to",
                       spool.work_dir())
    import ray

    # Attach to this executor's own raylet: Ray would pick any raylet it sees on the
    # machine, preferring the head's, which on a shared host may be another executor's.
    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
             _temp_dir=state.temp_dir if state else None)
