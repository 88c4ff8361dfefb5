"""Ray tasks of the data path (run in Ray's workers on the executors' nodes).

The driver submits each of them pinned to one node
(:func:`pinned`), so the task reads or writes that node's spool
(:mod:`zoo_ray.spool`) and its result lands in that node's object store. The
driver submits them, so the driver owns their results: they outlive the Spark
tasks and the PySpark workers that produced the files, and are freed when the
driver drops its last ref (or the cluster stops). They take no CPU, so they run
even while Spark or the user's Ray work holds every core.
"""
from __future__ import annotations

from typing import Any

import pyarrow as pa
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import spool
from .errors import BlocksLostError
from .executor_tasks import container_id
from .protocol import SpooledBlock
from .ray_internals import to_arrow

__all__ = [
    "load_pickle", "load_table", "node_of_actor", "pinned", "remove_spool", "spool_block",
]


def pinned(remote: Any, node_id: str | None, soft: bool = True) -> Any:
    """``remote`` set to run on ``node_id``; if ``soft``, anywhere when that node is gone."""
    if node_id is None:
        return remote
    return remote.options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=soft))


def _lost(path: str, container: str, what: str) -> BlocksLostError:
    return BlocksLostError(
        f"{what} written by executor {container} ({path}) is gone: that executor or its Ray "
        "node was lost after the conversion. Run the conversion again (from_spark / from_rdd) "
        "to recompute it from Spark."
    )


@ray.remote(num_cpus=0, num_returns=2, retry_exceptions=False)
def load_table(path: str, container: str) -> tuple[pa.Table, int]:
    """The Arrow block a Spark task spooled on this node, and its rows (the file goes)."""
    try:
        table = spool.read_table(path)
    except FileNotFoundError:
        raise _lost(path, container, "A block") from None
    return table, table.num_rows


@ray.remote(num_cpus=0, num_returns=2, retry_exceptions=False)
def load_pickle(path: str, container: str) -> tuple[list[Any], int]:
    """The RDD partition a Spark task spooled on this node, and its length (the file goes)."""
    try:
        items = spool.read_pickle(path)
    except FileNotFoundError:
        raise _lost(path, container, "A partition") from None
    return items, len(items)


@ray.remote(num_cpus=0)
def spool_block(block: Any, conversion: str, index: int, start: int | None,
                end: int | None) -> SpooledBlock:
    """Write a Dataset block (rows ``start:end``) to this node's spool; say where it went."""
    table = to_arrow(block, start, end)
    written = spool.write_table(table, spool.conversion_dir(conversion) / f"b{index}.arrow")
    return SpooledBlock(container_id(), written.path, index, written.num_rows,
                        written.size_bytes, table.schema.serialize().to_pybytes())


@ray.remote(num_cpus=0)
def remove_spool(conversion: str) -> None:
    """Remove what is left of a conversion's spool on this node."""
    spool.remove(conversion)


def node_of_actor(_actor: object) -> str:
    """The node an actor runs on (called in the actor through ``__ray_call__``)."""
    return str(ray.get_runtime_context().get_node_id())
