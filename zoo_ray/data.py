"""Spark partitions into Ray's object store and back, node by node (runs on the driver).

Where the data lives, and when it is freed:

- :func:`from_spark`: each Spark task converts its partition with Spark's own
  Arrow conversion (``mapInArrow``) and writes the batches, in files of about
  ``block_size``, into its container's spool (:mod:`zoo_ray.spool`). Then a Ray
  task pinned to the Ray node of that same executor loads each of its files into
  that node's object store, one object per file, and deletes the file. Only file
  names, row counts and the schema reach the driver.
- The driver submits those Ray tasks, so it owns the blocks: they outlive the
  Spark tasks, and they are freed when the Dataset (or :class:`RayPartitions`) is
  released and garbage-collected, or when the RayContext stops. No actor holds
  them; nothing is detached.
- If an executor is lost, its blocks go with it; Ray then re-runs the load task,
  which finds the file gone and raises :class:`~zoo_ray.errors.BlocksLostError`
  naming the executor: run the conversion again to recompute it from Spark.
- :func:`to_spark`: a Ray task pinned to each node holding blocks writes them to
  that node's spool; a Spark job whose tasks prefer the matching executors
  reads the files back and checkpoints them in Spark's block managers.
"""
from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from typing import Any

import pyarrow as pa

from . import spark_internals
from .context import RayContext
from .errors import InvalidArgumentError, RayContextError, UnsupportedColumnError
from .executor_data import (
    SPOOLED_BLOCK_SCHEMA,
    ReadPlan,
    read_spooled_blocks,
    spool_arrow_partition,
    spool_rdd_partition,
)
from .memory import parse_memory
from .placement import assign
from .protocol import NodeInfo, SpooledBlock

__all__ = ["RayPartitions", "assign_partitions_to_actors", "block_executors", "feed", "from_rdd",
           "from_spark", "to_spark"]

logger = logging.getLogger(__name__)

_DEFAULT_BLOCK = "64m"
#: Most bytes one load task reads (a pickled partition is read into the worker's memory).
_LOAD_BYTES = 256 << 20


def _running_context(what: str) -> RayContext:
    """The running RayContext, connecting this driver to its cluster if needed."""
    import ray

    ctx = RayContext._active
    if ctx is None or not ctx.initialized:
        raise RayContextError(
            f"{what} needs a running RayContext: first `sc = init_spark_on_yarn(...)`, then "
            "`RayContext(sc).init()`.")
    if not ray.is_initialized():
        ray.init(address=ctx.address, logging_level=logging.WARNING)
    return ctx


def _containers(executors: dict[str, NodeInfo]) -> dict[str, str]:
    """container -> Ray node id, from node id -> node."""
    return {info.container: node_id for node_id, info in executors.items()}


def _remove_spools(ctx: RayContext, conversion: str) -> None:
    """Delete what is left of a conversion on every executor node (failed attempts' files)."""
    import ray

    from .ray_tasks import pinned, remove_spool

    ray.get([pinned(remove_spool, node_id).remote(conversion)
             for node_id in ctx.executor_nodes()])


def _tasks_by_node(nodes: Sequence[str], sizes: Sequence[int] | None = None,
                   cap: int | None = None) -> list[tuple[str, list[int]]]:
    """Item indices grouped per node, in order, a group at most ``cap`` bytes of
    ``sizes`` (an item larger than that alone; no cap if None): the items each pinned
    task handles."""
    groups: list[tuple[str, list[int]]] = []
    filling: dict[str, tuple[list[int], int]] = {}
    for i, (node, size) in enumerate(zip(nodes, sizes or repeat(0))):
        group, total = filling.get(node, ([], 0))
        if not group or (cap is not None and total + size > cap):
            group, total = [], 0
            groups.append((node, group))
        group.append(i)
        filling[node] = (group, total + size)
    return groups


def _load(loader: Any, blocks: Sequence[SpooledBlock], nodes: dict[str, str]
          ) -> list[Any]:
    """Load spooled files into the object stores of their own nodes, a task per node and
    up to ``_LOAD_BYTES`` (see :mod:`zoo_ray.ray_tasks`); wait until all are in. One ref
    per file, in order."""
    import ray

    from .ray_tasks import pinned

    homeless = sorted({b.container for b in blocks} - set(nodes))
    if homeless:
        raise RayContextError(
            f"Executors {homeless} computed partitions but run no Ray node to take them. "
            "Give every executor a Ray node (RayContext's num_ray_nodes defaults to all), or "
            "restart the RayContext after losing executors.")
    refs: list[Any] = [None] * len(blocks)
    counts = []
    for node, indices in _tasks_by_node([nodes[b.container] for b in blocks],
                                        [b.size_bytes for b in blocks], _LOAD_BYTES):
        *loaded, count = pinned(loader, node, num_returns=len(indices) + 1).remote(
            [(blocks[i].path, blocks[i].container) for i in indices])
        counts.append(count)
        for i, ref in zip(indices, loaded):
            refs[i] = ref
    ray.get(counts)
    return refs


# ------------------------------------------------------------------- Spark -> Ray
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


def from_spark(df: Any, block_size: str = _DEFAULT_BLOCK) -> Any:
    """A Spark DataFrame as a Ray Dataset, each block on the node that computed it.

    Parameters
    ----------
    df : pyspark.sql.DataFrame
        Any DataFrame of the RayContext's SparkContext. Cache it first if computing it
        twice would be costly: Spark computes it once here.
    block_size : str
        Largest Arrow block to cut a partition into, like "64m": a partition larger than
        the object store is held (and spilled) block by block.

    Returns
    -------
    ray.data.MaterializedDataset
        Its blocks are in the object stores of the executors' Ray nodes, owned by this
        driver; freed when the Dataset is garbage-collected or the RayContext stops.

    Raises
    ------
    RayContextError
        No RayContext is running.
    UnsupportedColumnError
        A column whose type Arrow cannot carry; names the column.
    BlocksLostError
        An executor was lost during the conversion.
    """
    import ray

    from .ray_blocks import dataset_from_blocks
    from .ray_tasks import load_tables

    ctx = _running_context("from_spark")
    expected = _arrow_schema_of(df)
    max_bytes = parse_memory(block_size, "block_size")
    conversion = f"from-spark-{uuid.uuid4().hex}"
    try:
        spooled = _spool_dataframe(df, conversion, max_bytes)
        refs = _load(load_tables, spooled, _containers(ctx.executor_nodes()))
    finally:
        _remove_spools(ctx, conversion)
    if not spooled:
        return ray.data.from_arrow(expected.empty_table())
    schema = pa.ipc.read_schema(pa.py_buffer(spooled[0].schema))
    logger.info("from_spark: %d rows in %d blocks on %d nodes", sum(b.num_rows for b in spooled),
                len(spooled), len({b.container for b in spooled}))
    return dataset_from_blocks(refs, [b.num_rows for b in spooled],
                               [b.size_bytes for b in spooled], schema)


def _spool_dataframe(df: Any, conversion: str, max_bytes: int) -> list[SpooledBlock]:
    from pyspark.sql.pandas.types import from_arrow_schema

    # mapInArrow resolves columns by name, and a name like "(id * 2.0)" does not resolve:
    # convert under plain names, and give the batches their real ones back in the executor.
    plain = df.toDF(*[f"_{i}" for i in range(len(df.columns))])
    rows = plain.mapInArrow(partial(spool_arrow_partition, conversion, max_bytes, df.columns),
                            from_arrow_schema(SPOOLED_BLOCK_SCHEMA)).collect()
    return [SpooledBlock(**row.asDict()) for row in rows]


def block_executors(ds: Any) -> list[str]:
    """The executor (YARN container) whose Ray node holds each block of ``ds``.

    "" for a block held elsewhere (the gateway's node, or inline in the driver).

    Raises
    ------
    RayContextError
        No RayContext is running.
    """
    from .ray_blocks import dataset_blocks, object_nodes

    executors = _running_context("block_executors").executor_nodes()
    nodes = object_nodes([block.ref for block in dataset_blocks(ds)])
    return [executors[node].container if node in executors else "" for node in nodes]


# ------------------------------------------------------------------- RDD -> Ray
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

    def release(self) -> None:
        """Drop the driver's refs: Ray frees the partitions once no task or actor uses them.

        Idempotent.
        """
        self.refs, self.node_ids, self.containers, self.counts = [], [], [], []


def from_rdd(rdd: Any) -> RayPartitions:
    """Any RDD's partitions as Ray objects, each on the node of the executor that computed it.

    Parameters
    ----------
    rdd : pyspark.RDD
        Items of any picklable type: numbers, numpy arrays, pandas frames, ...

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
        An executor was lost during the conversion.
    """
    from .ray_tasks import load_pickles

    ctx = _running_context("from_rdd")
    conversion = f"from-rdd-{uuid.uuid4().hex}"
    try:
        spooled: list[SpooledBlock] = rdd.mapPartitionsWithIndex(
            partial(spool_rdd_partition, conversion)).collect()
        nodes = _containers(ctx.executor_nodes())
        refs = _load(load_pickles, spooled, nodes)
    finally:
        _remove_spools(ctx, conversion)
    return RayPartitions(refs, [nodes.get(b.container) for b in spooled],
                         [b.container for b in spooled], [b.num_rows for b in spooled])


# ------------------------------------------------------------------ feeding actors
def _actor_nodes(actors: Sequence[Any]) -> list[str | None]:
    import ray

    from .ray_tasks import node_of_actor

    return ray.get([actor.__ray_call__.remote(node_of_actor) for actor in actors])


def assign_partitions_to_actors(partitions: RayPartitions, actors: Sequence[Any]
                                ) -> list[list[Any]]:
    """Which partitions each actor works on: same node first, balanced.

    Every actor gets ``P // A`` or ``P // A + 1`` partitions (an actor on a node that
    holds none still gets its share; with fewer partitions than actors some get none).

    Parameters
    ----------
    partitions : RayPartitions
        From :func:`from_rdd`.
    actors : sequence of ray.actor.ActorHandle
        Live actors (their nodes are looked up).

    Returns
    -------
    list of list of ray.ObjectRef
        ``result[i]`` holds the refs for ``actors[i]``: refs, never copies.

    Raises
    ------
    InvalidArgumentError
        No actors, or released partitions.
    """
    if not actors:
        raise InvalidArgumentError("No actors to assign partitions to: pass at least one actor.")
    plan = assign(partitions.node_ids, _actor_nodes(actors))
    return [[partitions.refs[p] for p in parts] for parts in plan]


def feed(partitions: RayPartitions, actors: Sequence[Any], method: str, *args: Any,
         **kwargs: Any) -> list[Any]:
    """Call ``actor.<method>(refs, *args, **kwargs)`` on each actor with its partitions.

    Each actor gets the list of refs :func:`assign_partitions_to_actors` chose for it
    (``ray.get`` them inside the actor: the data moves node to node, never through the
    driver).

    Returns
    -------
    list of ray.ObjectRef
        The result of each call, in actor order.
    """
    shares = assign_partitions_to_actors(partitions, actors)
    return [getattr(actor, method).remote(refs, *args, **kwargs)
            for actor, refs in zip(actors, shares)]


# ------------------------------------------------------------------- Ray -> Spark
def _spark_schema_of(schema: pa.Schema) -> Any:
    """Spark's schema for an Arrow schema; names the first column Spark cannot hold."""
    from pyspark.sql.pandas.types import from_arrow_type
    from pyspark.sql.types import StructField, StructType

    fields = []
    for column in schema:
        try:
            fields.append(StructField(column.name, from_arrow_type(column.type), True))
        except (TypeError, NotImplementedError, ValueError) as exc:
            raise UnsupportedColumnError(
                f"Column {column.name!r} has Arrow type {column.type}, which Spark cannot hold "
                f"({exc}). Convert it in Ray (e.g. with map_batches) before to_spark.") from None
    return StructType(fields)


def _block_homes(nodes: Sequence[str | None], executors: dict[str, NodeInfo]) -> list[str]:
    """The executor node each block is written out on: its own, or (if elsewhere) spread."""
    spare = sorted(executors)
    if not spare:
        raise RayContextError("No executor Ray node is alive: restart the RayContext.")
    homes, turn = [], 0
    for node in nodes:
        if node in executors:
            homes.append(node)
        else:
            homes.append(spare[turn % len(spare)])
            turn += 1
    return homes


def to_spark(ds: Any, spark: Any = None) -> Any:
    """A Ray Dataset as a Spark DataFrame, each block read by the executor that holds it.

    Parameters
    ----------
    ds : ray.data.Dataset
        Executed here if it is not yet.
    spark : pyspark.sql.SparkSession, optional
        Defaults to the session of the RayContext's SparkContext.

    Returns
    -------
    pyspark.sql.DataFrame
        Checkpointed in the executors (no longer tied to Ray): the Dataset may be
        released.

    Raises
    ------
    RayContextError
        No RayContext is running.
    UnsupportedColumnError
        A column type Spark cannot hold; names the column.
    """
    from pyspark.sql import SparkSession

    ctx = _running_context("to_spark")
    spark = spark or SparkSession(ctx.sc)
    conversion = f"to-spark-{uuid.uuid4().hex}"
    try:
        written = _spool_dataset(ds, ctx, conversion)
        if not written:
            return spark.createDataFrame([], _spark_schema_of(_dataset_schema(ds)))
        schema = pa.unify_schemas([pa.ipc.read_schema(pa.py_buffer(b.schema)) for b in written])
        df = _read_spooled(spark, written, ctx, schema)
        return df.localCheckpoint(eager=True)
    finally:
        _remove_spools(ctx, conversion)


def _dataset_schema(ds: Any) -> pa.Schema:
    schema = ds.schema()
    if schema is None:
        raise InvalidArgumentError("to_spark: the Dataset has no schema (no columns).")
    return pa.schema(list(zip(schema.names, schema.types)))


def _spool_dataset(ds: Any, ctx: RayContext, conversion: str) -> list[SpooledBlock]:
    """Write every block of ``ds`` to the spool of the executor node holding it, one task
    per node (see :mod:`zoo_ray.ray_tasks`); in block order."""
    import ray

    from .ray_blocks import dataset_blocks, object_nodes
    from .ray_tasks import pinned, spool_blocks

    blocks = [b for b in dataset_blocks(ds) if b.num_rows]
    homes = _block_homes(object_nodes([b.ref for b in blocks]), ctx.executor_nodes())
    # One task per node: it reads its blocks one at a time.
    written = ray.get([
        pinned(spool_blocks, home).remote(
            conversion, [(i, blocks[i].start, blocks[i].end) for i in indices],
            [blocks[i].ref for i in indices])
        for home, indices in _tasks_by_node(homes)])
    return sorted((block for node in written for block in node), key=lambda b: b.partition)


def _read_spooled(spark: Any, written: list[SpooledBlock], ctx: RayContext,
                  schema: pa.Schema) -> Any:
    """A DataFrame reading each spooled file in a task that prefers its executor."""
    from pyspark.sql.pandas.types import to_arrow_schema
    from pyspark.sql.types import StringType, StructField, StructType

    spark_schema = _spark_schema_of(schema)
    executors = ctx.executor_nodes()
    # Blocks are cast to exactly what Spark expects back from mapInArrow (e.g. ns -> us).
    plan = ReadPlan(to_arrow_schema(spark_schema, timezone="UTC"), str(ctx.address),
                    _containers(executors))
    where = {info.container: [info.spark_location] for info in executors.values()
             if info.spark_location}
    rdd = spark_internals.rdd_with_locations(spark.sparkContext, [
        (json.dumps([b.container, b.path]), where.get(b.container, [])) for b in written])
    rows = rdd.map(json.loads)
    listing = spark.createDataFrame(rows, StructType([StructField("container", StringType()),
                                                      StructField("path", StringType())]))
    return listing.mapInArrow(partial(read_spooled_blocks, plan), spark_schema)
