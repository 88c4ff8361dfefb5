"""Ray Data internals behind zoo_ray.data's blocks (runs on the driver, and inside Ray tasks).

Each call here uses an API Ray does not promise to keep; setup.py pins the Ray
minor versions they were checked against, and the end-to-end tests exercise each.
Nothing here touches the driver's connection (that is :mod:`zoo_ray.driver_guard`),
so Ray tasks import only Ray Data and pyarrow.

- :func:`dataset_from_blocks`: a Dataset from blocks whose metadata the writer
  already knows, without ``from_arrow_refs``' one metadata task per block (which
  stalls while Spark holds every CPU). Its pandas batches have numpy dtypes, as
  in Spark, unless ``RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION`` is set.
- :func:`dataset_blocks`: a Dataset's blocks as refs, row counts and slices.
- :func:`to_arrow`: a block, or a slice of it, as an Arrow table.
- :func:`object_nodes`: the node holding each object.
- :func:`when_out_of_scope`: a call once no one can read any of some objects (the
  driver's own Ray core worker's callbacks, as Ray Data's memory accounting uses them).
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray

#: Set it to keep Ray's default (Arrow-backed pandas batches) for from_spark's Datasets.
_ARROW_PANDAS_ENV = "RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION"

__all__ = ["BlockRef", "dataset_blocks", "dataset_from_blocks", "object_nodes", "to_arrow",
           "when_out_of_scope"]


@dataclass(frozen=True)
class BlockRef:
    """One block of a Dataset: its ref and the rows of it that belong to the Dataset."""

    ref: ray.ObjectRef
    num_rows: int
    start: int | None = None
    end: int | None = None


def dataset_from_blocks(
    refs: Sequence[Any], rows: Sequence[int], sizes: Sequence[int], schema: pa.Schema
) -> ray.data.Dataset:
    """A materialized Dataset over Arrow blocks of known rows, bytes and schema."""
    from ray.data._internal.logical.interfaces import LogicalPlan
    from ray.data._internal.logical.operators.from_operators import FromArrow
    from ray.data._internal.stats import DatasetStats
    from ray.data.block import BlockMetadataWithSchema
    from ray.data.context import DataContext
    from ray.data.dataset import MaterializedDataset

    metadata = [
        BlockMetadataWithSchema(num_rows=n, size_bytes=size, exec_stats=None, input_files=None,
                                schema=schema)
        for n, size in zip(rows, sizes)
    ]
    context = DataContext.get_current().copy()
    if _ARROW_PANDAS_ENV not in os.environ:
        # pandas batches as Spark's mapInPandas gives them (numpy dtypes): Ray 2.60's
        # Arrow-backed frames lack operators such as `%`.
        context.enable_arrow_backed_pandas_conversion = False
    plan = LogicalPlan(FromArrow(list(refs), metadata), context)
    by_operator: dict[str, Any] = {"FromArrow": metadata}
    stats = DatasetStats(metadata=by_operator, parent=None)
    return MaterializedDataset(plan, context, stats)


def dataset_blocks(ds: ray.data.Dataset) -> Iterator[BlockRef]:
    """Every block of ``ds`` (executing it if needed), with the slice of it ``ds`` uses."""
    for bundle in ds.iter_internal_ref_bundles():
        for entry, piece in zip(bundle.blocks, bundle.slices):
            if piece is None:
                yield BlockRef(entry.ref, entry.metadata.num_rows or 0)
            else:
                yield BlockRef(entry.ref, piece.num_rows, piece.start_offset, piece.end_offset)


def to_arrow(block: Any, start: int | None, end: int | None) -> pa.Table:
    """A Ray Data block (Arrow or pandas), or its rows ``start:end``, as an Arrow table."""
    if isinstance(block, pa.Table):
        # Without importing Ray Data, which costs a fresh worker seconds.
        return block if start is None or end is None else block.slice(start, end - start)
    from ray.data.block import BlockAccessor

    accessor = BlockAccessor.for_block(block)
    if start is not None and end is not None:
        accessor = BlockAccessor.for_block(accessor.slice(start, end, copy=False))
    table: pa.Table = accessor.to_arrow()
    return table


def object_nodes(refs: Sequence[Any]) -> list[str | None]:
    """The id of a node holding each object; None for objects kept inline by their owner."""
    locations = ray.experimental.get_object_locations(list(refs))
    nodes: list[str | None] = []
    for ref in refs:
        holders = locations.get(ref, {}).get("node_ids") or []
        nodes.append(holders[0] if holders else None)
    return nodes


def when_out_of_scope(refs: Sequence[Any], callback: Callable[[], None]) -> None:
    """Call ``callback`` (once, in one of Ray's threads) when every one of ``refs`` is out
    of scope: no ref to it is left anywhere, and no task that got it still runs. This
    process must own the objects."""
    from ray._private.worker import global_worker

    remaining = {ref.binary() for ref in refs}
    lock = threading.Lock()

    def gone(object_id: bytes) -> None:
        with lock:
            if object_id not in remaining:
                return
            remaining.discard(object_id)
            last = not remaining
        if last:
            callback()

    if not remaining:
        callback()
    for ref in refs:
        core_worker = global_worker.core_worker  # type: ignore[attr-defined]
        if not core_worker.add_object_out_of_scope_callback(ref, gone):
            gone(ref.binary())
