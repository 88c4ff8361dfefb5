"""Ray into Spark: a Ray Dataset as a Spark DataFrame, each block read where it is.

Runs on the driver: Ray tasks pinned to the nodes holding the blocks write them to
their executors' spools (:mod:`zoo_ray.ray_tasks`), then a Spark job whose tasks
prefer those executors reads the files back (:mod:`zoo_ray.executor_data`) and
checkpoints them in Spark's block managers. See :mod:`zoo_ray.data`.
"""
from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from functools import partial
from typing import Any

import pyarrow as pa

from . import spark_internals
from .context import RayContext
from .conversion import containers, remove_spools, running_context, tasks_by_node
from .errors import InvalidArgumentError, RayContextError, UnsupportedColumnError
from .executor_data import ReadPlan, read_spooled_blocks
from .protocol import NodeInfo, SpooledBlock

__all__ = ["to_rdd", "to_spark"]


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

    ctx = running_context("to_spark")
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
        remove_spools(ctx, conversion)


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
        for home, indices in tasks_by_node(homes)])
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
                    containers(executors))
    rows = _listing(spark.sparkContext, written, executors).map(json.loads)
    listing = spark.createDataFrame(rows, StructType([StructField("container", StringType()),
                                                      StructField("path", StringType())]))
    return listing.mapInArrow(partial(read_spooled_blocks, plan), spark_schema)


def _listing(sc: Any, written: list[SpooledBlock], executors: dict[str, NodeInfo]) -> Any:
    """An RDD of one JSON ``[container, path]`` per spooled file (a partition each), each
    preferring the executor that holds its file."""
    where = {info.container: [info.spark_location] for info in executors.values()
             if info.spark_location}
    return spark_internals.rdd_with_locations(sc, [
        (json.dumps([b.container, b.path]), where.get(b.container, [])) for b in written])


def to_rdd(partitions: Any) -> Any:
    """Ray objects as an RDD, a partition per object, each read by the executor holding it.

    Parameters
    ----------
    partitions : RayPartitions or list of ray.ObjectRef
        ``from_rdd``'s result, or refs to objects that are each a list of items (one
        partition): in order.

    Returns
    -------
    pyspark.RDD
        Checkpointed in the executors (no longer tied to Ray): the objects may be
        released.

    Raises
    ------
    RayContextError
        No RayContext is running.
    InvalidArgumentError
        Not refs, or an object that is not a list of items.
    """
    import ray

    from .executor_data import read_spooled_pickles
    from .ray_blocks import object_nodes
    from .ray_tasks import pinned, spool_objects

    ctx = running_context("to_rdd")
    if getattr(partitions, "released", False):
        raise InvalidArgumentError(
            "to_rdd: these RayPartitions were released; run from_rdd again.")
    try:
        refs = list(getattr(partitions, "refs", partitions))
    except TypeError:
        refs = [partitions]
    if not all(isinstance(ref, ray.ObjectRef) for ref in refs):
        raise InvalidArgumentError(
            "to_rdd takes from_rdd's RayPartitions or a list of ObjectRefs, each to a list of "
            "items.")
    if not refs:
        return ctx.sc.emptyRDD()
    executors = ctx.executor_nodes()
    conversion = f"to-rdd-{uuid.uuid4().hex}"
    try:
        homes = _block_homes(object_nodes(refs), executors)
        written = sorted((block for node in ray.get([
            pinned(spool_objects, home).remote(conversion, indices, [refs[i] for i in indices])
            for home, indices in tasks_by_node(homes)]) for block in node),
            key=lambda b: b.partition)
        plan = ReadPlan(None, str(ctx.address), containers(executors))
        # Read now, while the files are there.
        return spark_internals.local_checkpoint(_listing(ctx.sc, written, executors)
                                                .mapPartitions(partial(read_spooled_pickles, plan)))
    finally:
        remove_spools(ctx, conversion)
