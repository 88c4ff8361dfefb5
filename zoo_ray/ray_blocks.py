"""Ray Data internals behind zoo_ray.data's blocks (runs on the driver, and inside Ray tasks).

Each call here uses an API Ray does not promise to keep; setup.py pins the Ray
minor versions they were checked against, and the end-to-end tests exercise each.
Nothing here touches the driver's connection (that is :mod:`zoo_ray.driver_guard`),
so Ray tasks import only Ray Data and pyarrow.

The Dataset ``from_spark`` builds from its blocks is :mod:`zoo_ray.spark_dataset`'s.

- :func:`dataset_blocks`: a Dataset's blocks as refs, row counts and slices.
- :func:`to_arrow`: a block, or a slice of it, as an Arrow table.
- :func:`object_nodes`: the node holding each object.
- :func:`when_out_of_scope`: a call once no one can read any of some objects (the
  driver's own Ray core worker's callbacks, as Ray Data's memory accounting uses them).
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray

__all__ = ["BlockRef", "dataset_blocks", "object_nodes", "to_arrow", "when_out_of_scope"]


@dataclass(frozen=True)
class BlockRef:
    """One block of a Dataset: its ref and the rows of it that belong to the Dataset."""

    ref: ray.ObjectRef
    num_rows: int
    start: int | None = None
    end: int | None = None


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
