"""Spark into Ray: DataFrames as Ray Datasets, RDDs as Ray objects, on their own nodes.

Runs on the driver: Spark tasks spool each partition on its executor
(:mod:`zoo_ray.executor_data`), then Ray tasks pinned to the same executors' Ray
nodes load the files into their object stores (:mod:`zoo_ray.ray_tasks`); only file
names, row counts and the schema reach the driver. See :mod:`zoo_ray.data`.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pyarrow as pa

from .block_recovery import RecomputeHandle
from .context import RayContext
from .conversion import containers, remove_spools, running_context, tasks_by_node
from .errors import InvalidArgumentError, RayContextError, UnsupportedColumnError
from .executor_data import (
    SPOOL_PROPERTY,
    SPOOLED_BLOCK_SCHEMA,
    spool_arrow_partition,
    spool_batch_partition,
    spool_rdd_partition,
)
from .kerberos import tokens_checked
from .memory import parse_memory
from .protocol import BlockFile, SpooledBlock
from .recompute_server import Recomputable, pieces, server_for
from .spark_dataset import SparkDataset, dataset_from_blocks

__all__ = ["RayPartitions", "block_executors", "from_rdd", "from_rdd_batches", "from_spark"]

logger = logging.getLogger(__name__)

_DEFAULT_BLOCK = "64m"
#: Most bytes one load task reads (a pickled partition is read into the worker's memory,
#: an Arrow file mapped; YARN counts both against the container).
_LOAD_BYTES = 128 << 20
#: Load tasks of one node running at once: with all of a large conversion's at once, their
#: mapped files took executors past their containers and YARN killed them.
_LOADS_PER_NODE = 2
#: Longest Spark's recomputed partitions wait for a Ray node in the executor holding them.
_NEW_NODE_WAIT_S = 120.0
#: Spark jobs that compute again the partitions spooled by executors with no Ray node.
_REHOME_TRIES = 3
#: How long such an executor's node is waited for first (a new node starts in 10-20 s).
_REHOME_WAIT_S = 20.0


def _load(loader: Any, blocks: Sequence[SpooledBlock], nodes: dict[str, str],
          recovery: RecomputeHandle | None = None) -> list[Any]:
    """Load spooled files into the object stores of their own nodes, a task per node and
    up to ``_LOAD_BYTES`` (see :mod:`zoo_ray.ray_tasks`); wait until all are in. One ref
    per file, in order. With ``recovery``, Spark computes the files of a task again
    when Ray re-runs it after its node was lost."""
    import ray

    from .ray_tasks import pinned

    homeless = sorted({b.container for b in blocks} - set(nodes))
    if homeless:
        raise RayContextError(
            f"Executors {homeless} computed partitions but run no Ray node to take them. "
            "Give every executor a Ray node (RayContext's num_ray_nodes defaults to all), or "
            "restart the RayContext after losing executors.")
    files = [BlockFile(b.path, b.container, b.partition, piece, b.num_rows)
             for b, piece in zip(blocks, pieces(blocks))]
    refs: list[Any] = [None] * len(blocks)
    counts = []
    # A node's task waits for the lengths of the one _LOADS_PER_NODE before it: a small
    # result the driver holds itself, so a task Ray re-runs never needs that one again.
    earlier: dict[str, list[Any]] = defaultdict(list)
    for node, indices in tasks_by_node([nodes[b.container] for b in blocks],
                                       [b.size_bytes for b in blocks], _LOAD_BYTES):
        ahead = earlier[node]
        after = ahead[-_LOADS_PER_NODE] if len(ahead) >= _LOADS_PER_NODE else None
        *loaded, count = pinned(loader, node, num_returns=len(indices) + 1).remote(
            [files[i] for i in indices], recovery, after)
        ahead.append(count)
        counts.append(count)
        for i, ref in zip(indices, loaded):
            refs[i] = ref
    ray.get(counts)
    return refs


def _homed(ctx: RayContext, spooled: list[SpooledBlock],
           respool: Callable[[list[int], str], list[SpooledBlock]],
           conversion: str) -> list[SpooledBlock]:
    """``spooled``, where an elastic cluster's Spark ran partitions in executors with no
    Ray node: one being given back, or one just added whose node is starting. Such an
    executor's node is waited for a while, then Spark computes its partitions again, on
    executors with a node as likely as not; a few times at most. In a fixed-size cluster an
    executor without a node is the user's choice (``num_ray_nodes``): :func:`_load` names
    it."""
    if ctx.options.scale is None:
        return spooled
    for _ in range(_REHOME_TRIES):
        deadline = time.monotonic() + _REHOME_WAIT_S
        while True:
            nodes = containers(ctx.executor_nodes())
            homeless = sorted({b.partition for b in spooled if b.container not in nodes})
            if not homeless or time.monotonic() > deadline:
                break
            time.sleep(1.0)
        if not homeless:
            break
        logger.info("%d partitions were spooled by executors with no Ray node (%s): Spark "
                    "computes them again", len(homeless),
                    ", ".join(sorted({b.container for b in spooled} - set(nodes))))
        by_partition: dict[int, list[SpooledBlock]] = defaultdict(list)
        for block in [b for b in spooled if b.partition not in homeless] + respool(
                homeless, conversion):
            by_partition[block.partition].append(block)
        spooled = [b for partition in sorted(by_partition) for b in by_partition[partition]]
    return spooled


def _nodes_of(ctx: RayContext, blocks: Sequence[SpooledBlock]) -> dict[str, str]:
    """container -> Ray node id, once the executors that spooled ``blocks`` have a node
    (an executor Spark just added in place of a lost one gets it within seconds), or
    after ``_NEW_NODE_WAIT_S``."""
    deadline = time.monotonic() + _NEW_NODE_WAIT_S
    while True:
        nodes = containers(ctx.executor_nodes())
        if {b.container for b in blocks} <= set(nodes) or time.monotonic() > deadline:
            return nodes
        time.sleep(1.0)


def _loaded(ctx: RayContext, conversion: str, loader: Any, spooled: list[SpooledBlock],
            respool: Callable[[list[int], str], list[SpooledBlock]] | None) -> list[Any]:
    """Load a conversion's files; recoverable if ``respool`` says how to compute them
    again, with the driver's recompute server (see :mod:`zoo_ray.recompute_server`),
    which serves it until the refs are all out of scope."""
    if respool is None or not spooled:
        return _load(loader, spooled, containers(ctx.executor_nodes()))
    nodes = containers(ctx.executor_nodes())
    started = ctx.nodes  # head first; empty while a rebuild runs
    if not started or ctx.address is None:
        raise RayContextError("zoo_ray is starting a new Ray cluster (the head's executor was "
                              "lost); run the conversion again in a few seconds.")
    server = server_for(ctx.address, ctx.sc)
    recovery = server.register(conversion, Recomputable(
        respool=respool,
        load=lambda blocks: _load(loader, blocks, _nodes_of(ctx, blocks)),
        cleanup=lambda again: remove_spools(ctx, again)))
    try:
        refs = _load(loader, spooled, nodes, recovery)
    except BaseException:
        server.forget(conversion)
        raise
    server.forget_when_out_of_scope(conversion, refs)
    return refs


def _arrow_schema_of(df: Any) -> pa.Schema:
    """The Arrow schema Spark converts ``df`` to; names the first column it cannot carry."""
    from pyspark.sql.pandas.types import to_arrow_type

    fields = []
    for column in df.schema.fields:
        try:
            fields.append(pa.field(column.name, to_arrow_type(column.dataType,
                                                              timezone="UTC")))
        except (TypeError, NotImplementedError, ValueError) as exc:
            raise UnsupportedColumnError(
                f"Column {column.name!r} has type {column.dataType.simpleString()}, which "
                f"Arrow cannot carry ({exc}). Cast it (e.g. to string) or drop it before "
                "from_spark.") from None
    return pa.schema(fields)


def from_spark(df: Any, block_size: str = _DEFAULT_BLOCK, recoverable: bool = True,
               parallelism: int | None = None) -> SparkDataset:
    """A Spark DataFrame as a Ray Dataset, each block on the node that computed it.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Any DataFrame of the RayContext's SparkContext. Cache it first if computing it
        twice would be costly: Spark computes it once here.
    block_size : str
        Largest Arrow block to cut a partition into, like "64m": a partition larger than
        the object store is held (and spilled) block by block.
    recoverable : bool
        Blocks lost with their executor are computed again by Spark when read (from
        ``df``'s lineage or cache, for just their partitions). False: reading them
        raises BlocksLostError at once.
    parallelism : int, optional
        Partitions to convert ``df`` in (so at least as many blocks), made by Spark's
        ``repartition`` (a shuffle). Default: ``df``'s own partitions.

    Returns
    -------
    SparkDataset
        A ``ray.data.MaterializedDataset`` whose blocks are in the object stores of the
        executors' Ray nodes, owned by this driver; freed by its ``release()``, when it
        is garbage-collected, or when the RayContext stops. Its pandas frames have
        Spark's dtypes (see :mod:`zoo_ray.spark_dataset`).

    Raises
    ------
    RayContextError
        No RayContext is running.
    InvalidArgumentError
        ``parallelism`` is not a positive integer.
    UnsupportedColumnError
        A column whose type Arrow cannot carry; names the column.
    BlocksLostError
        An executor was lost during the conversion; or, when a block is read, its
        executor was lost and Spark could not compute it again (names the executor
        and Spark's reason), or ``recoverable`` is False.
    KerberosError
        The DataFrame reads HDFS, which refused the application's expired tokens.
    """
    import ray

    from .ray_tasks import load_tables

    ctx = running_context("from_spark")
    max_bytes = parse_memory(block_size, "block_size")
    df = _with_parallelism(df, parallelism)
    expected = _arrow_schema_of(df)
    # One RDD for the first job and any recomputation: its partitions stay what they were
    # (a new plan could split them otherwise, AQE's after an executor's loss for one).
    spooling = _spooling_rdd(df, max_bytes)
    conversion = f"from-spark-{uuid.uuid4().hex}"

    def respool(partitions: list[int] | None, into: str) -> list[SpooledBlock]:
        rows = _spool_job(ctx.sc, spooling, "from_spark", partitions, into)
        return [SpooledBlock(**row.asDict()) for row in rows]

    started = time.monotonic()
    try:
        spooled = _homed(ctx, respool(None, conversion), respool, conversion)
        spooled_at = time.monotonic()
        refs = _loaded(ctx, conversion, load_tables, spooled, respool if recoverable else None)
    finally:
        remove_spools(ctx, conversion)
    if not spooled:  # one empty block: the Dataset keeps the columns
        return dataset_from_blocks([ray.put(expected.empty_table())], [0], [0], expected)
    schema = pa.ipc.read_schema(pa.py_buffer(spooled[0].schema))
    # The two phases' times tell a slow conversion's cause: Spark's job (computing and
    # spooling the partitions) or the load into the object stores.
    logger.info("from_spark: %d rows in %d blocks on %d nodes; Spark's job %.2f s, loading "
                "%.2f s", sum(b.num_rows for b in spooled), len(spooled),
                len({b.container for b in spooled}), spooled_at - started,
                time.monotonic() - spooled_at)
    return dataset_from_blocks(refs, [b.num_rows for b in spooled],
                               [b.size_bytes for b in spooled], schema)


def _with_parallelism(df: Any, parallelism: int | None) -> Any:
    """``df`` in ``parallelism`` partitions (see :func:`from_spark`)."""
    if parallelism is None:
        return df
    if isinstance(parallelism, bool) or not isinstance(parallelism, int) or parallelism < 1:
        raise InvalidArgumentError(
            f"from_spark: parallelism={parallelism!r}; give a positive number of partitions, "
            "or None to keep the DataFrame's own.")
    return df.repartition(parallelism)


def _spooling_rdd(df: Any, max_bytes: int) -> Any:
    """The RDD whose tasks spool ``df``'s partitions (one :class:`SpooledBlock` row per
    file), into the conversion the job names (see :func:`_spool_job`)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    # mapInArrow resolves columns by name, and a name like "(id * 2.0)" does not resolve:
    # convert under plain names, and give the batches their real ones back in the executor.
    plain = df.toDF(*[f"_{i}" for i in range(len(df.columns))])
    return plain.mapInArrow(partial(spool_arrow_partition, max_bytes, df.columns),
                            from_arrow_schema(SPOOLED_BLOCK_SCHEMA)).rdd


def _spool_job(sc: Any, spooling: Any, what: str, partitions: list[int] | None,
               conversion: str) -> list[Any]:
    """Run ``spooling``'s tasks (all, or ``partitions``) into ``conversion``'s spools, for
    ``what`` (the call, named in errors)."""
    sc.setLocalProperty(SPOOL_PROPERTY, conversion)
    try:
        with tokens_checked(what):  # the source may read HDFS
            return list(sc.runJob(spooling, list, partitions))
    finally:
        sc.setLocalProperty(SPOOL_PROPERTY, None)


def block_executors(ds: Any) -> list[str]:
    """The executor (YARN container) whose Ray node holds each block of ``ds``.

    "" for a block held elsewhere (the gateway's node, or inline in the driver).

    Raises
    ------
    RayContextError
        No RayContext is running.
    """
    from .ray_blocks import dataset_blocks, object_nodes

    executors = running_context("block_executors").executor_nodes()
    nodes = object_nodes([block.ref for block in dataset_blocks(ds)])
    return [executors[node].container if node in executors else "" for node in nodes]


@dataclass
class RayPartitions:
    """An RDD's partitions in Ray: one object per partition, on the node that computed it.

    Attributes
    ----------
    refs : list of ray.ObjectRef
        Each partition as a list of its items, in partition order.
    node_ids : list of str
        The Ray node holding each partition.
    containers : list of str
        The YARN container (executor) that computed each partition.
    counts : list of int
        The number of items in each partition.
    """

    refs: list[Any]
    node_ids: list[str | None]
    containers: list[str]
    counts: list[int] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.refs)

    released: bool = False

    def release(self) -> None:
        """Drop the driver's refs: Ray frees the partitions once no task or actor uses them.

        Idempotent.
        """
        self.refs, self.node_ids, self.containers, self.counts = [], [], [], []
        self.released = True


def from_rdd(rdd: Any, recoverable: bool = True) -> RayPartitions:
    """Any RDD's partitions as Ray objects, each on the node of the executor that computed it.

    Parameters
    ----------
    rdd : pyspark.RDD
        Items of any picklable type: numbers, numpy arrays, pandas frames, ...
    recoverable : bool
        Partitions lost with their executor are computed again by Spark when read.
        False: reading them raises BlocksLostError at once.

    Returns
    -------
    RayPartitions
        One object per partition (a list of its items), owned by this driver; freed on
        :meth:`RayPartitions.release` (and garbage collection) or when the RayContext stops.

    Raises
    ------
    RayContextError
        No RayContext is running.
    BlocksLostError
        An executor was lost during the conversion; or, when a partition is read, its
        executor was lost and Spark could not compute it again, or ``recoverable`` is
        False.
    KerberosError
        The RDD reads HDFS, which refused the application's expired tokens.
    """
    from .ray_tasks import load_pickles

    ctx = running_context("from_rdd")
    conversion = f"from-rdd-{uuid.uuid4().hex}"
    respool = partial(_spool_job, ctx.sc, rdd.mapPartitionsWithIndex(spool_rdd_partition),
                      "from_rdd")

    try:
        spooled = _homed(ctx, respool(None, conversion), respool, conversion)
        refs = _loaded(ctx, conversion, load_pickles, spooled,
                       respool if recoverable else None)
        nodes = containers(ctx.executor_nodes())
    finally:
        remove_spools(ctx, conversion)
    return RayPartitions(refs, [nodes.get(b.container) for b in spooled],
                         [b.container for b in spooled], [b.num_rows for b in spooled])


def from_rdd_batches(rdd: Any, block_size: str = _DEFAULT_BLOCK,
                     recoverable: bool = True) -> SparkDataset:
    """An RDD of batches as a Ray Dataset, each block on the node that computed it.

    Parameters
    ----------
    rdd : pyspark.RDD
        Items that are batches as Ray's ``map_batches`` takes them: pandas frames, numpy
        arrays (a column ``data``, as ``ray.data.from_numpy`` makes), dicts of arrays,
        Arrow tables. Every batch with the same columns and types.
    block_size : str
        Largest Arrow block to cut a partition into, like "64m".
    recoverable : bool
        Blocks lost with their executor are computed again by Spark when read.

    Returns
    -------
    SparkDataset
        As :func:`from_spark`'s.

    Raises
    ------
    RayContextError
        No RayContext is running.
    InvalidArgumentError
        An item that is no batch, or batches whose columns or types differ; names the
        partition.
    BlocksLostError
        As for :func:`from_spark`.
    """
    import ray

    from .ray_tasks import load_tables

    ctx = running_context("from_rdd_batches")
    max_bytes = parse_memory(block_size, "block_size")
    conversion = f"from-batches-{uuid.uuid4().hex}"
    respool = partial(_spool_job, ctx.sc, rdd.mapPartitionsWithIndex(
        partial(spool_batch_partition, max_bytes)), "from_rdd_batches")

    try:
        spooled = _homed(ctx, respool(None, conversion), respool, conversion)
        failed = [block.error for block in spooled if block.error]
        if failed:
            raise InvalidArgumentError(f"from_rdd_batches: {failed[0]}.")
        schema = _unified([pa.ipc.read_schema(pa.py_buffer(b.schema)) for b in spooled])
        refs = _loaded(ctx, conversion, load_tables, spooled, respool if recoverable else None)
    finally:
        remove_spools(ctx, conversion)
    if not spooled:
        return dataset_from_blocks([ray.put(schema.empty_table())], [0], [0], schema)
    return dataset_from_blocks(refs, [b.num_rows for b in spooled],
                               [b.size_bytes for b in spooled], schema)


def _unified(schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for every partition's batches (none: no columns)."""
    try:
        return pa.unify_schemas(schemas) if schemas else pa.schema([])
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise InvalidArgumentError(
            f"from_rdd_batches: the partitions' batches differ in columns or types ({exc}). "
            "Give every batch the same columns and types.") from None
