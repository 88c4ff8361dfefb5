"""Ray tasks of the data path (run in Ray's workers on the executors' nodes).

The driver submits each of them pinned to one node
(:func:`pinned`), so the task reads or writes that node's spool
(:mod:`zoo_ray.spool`) and its results land in that node's object store. The
driver submits them, so the driver owns their results: they outlive the Spark
tasks and the PySpark workers that produced the files, and are freed when the
driver drops its last ref (or the cluster stops). They take no CPU, so they run
even while Spark or the user's Ray work holds every core.

One task serves many of a node's files (each file still becomes an object of
its own): zero-CPU tasks run all at once, and Ray starts a fresh worker for each
one running beside another, only to end it a second after (it keeps about one
idle worker per CPU). A worker's start costs more than copying its files.

A load task whose node is lost is re-run by Ray on another node (its pinning is soft:
any live node, the head's or the gateway's included), to reconstruct its blocks; its
files are gone then, and :mod:`zoo_ray.block_recovery` has Spark compute them again.
"""
from __future__ import annotations

import os
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from . import spool
from .block_recovery import RecomputeHandle, recover
from .errors import BlocksLostError, InvalidArgumentError
from .executor_tasks import container_id
from .protocol import BlockFile, SpooledBlock
from .ray_blocks import to_arrow

__all__ = [
    "RECONSTRUCTIONS", "load_pickles", "load_tables", "node_of_actor", "pinned", "remove_spool",
    "spool_blocks", "spool_objects",
]

#: Most times Ray re-runs a load task to reconstruct blocks lost with their node.
RECONSTRUCTIONS = 3


def pinned(remote: Any, node_id: str | None, soft: bool = True, **options: Any) -> Any:
    """``remote`` set to run on ``node_id`` (with Ray's ``options``); if ``soft``,
    anywhere when that node is gone."""
    if node_id is not None:
        options["scheduling_strategy"] = NodeAffinitySchedulingStrategy(node_id, soft=soft)
    return remote.options(**options) if options else remote


def _lost(file: BlockFile, what: str) -> BlocksLostError:
    return BlocksLostError(
        f"{what} written by executor {file.container} ({file.path}) is gone with that "
        "executor or its Ray node, and nothing computes it again here (a conversion made "
        "with recoverable=False, or a file to_spark or to_rdd wrote). Run the conversion "
        "again."
    )


def _load(files: list[BlockFile], read: Any, what: str,
          recovery: RecomputeHandle | None) -> tuple[Any, ...]:
    """Each file read (and deleted), then the list of their lengths. Files that are gone
    (Ray re-runs this task after their node was lost) are computed again by Spark if
    ``recovery`` says how."""
    gone = [file for file in files if not os.path.exists(file.path)]
    recovered = recover(recovery, gone) if gone and recovery is not None else {}
    loaded = []
    for file in files:
        if (file.partition, file.piece) in recovered:
            loaded.append(recovered[file.partition, file.piece])
            continue
        try:
            loaded.append(read(file.path))
        except FileNotFoundError:
            raise _lost(file, what) from None
    return (*loaded, [len(item) for item in loaded])


# Submitted with num_returns=len(files) + 1: one object per file, then the lengths. Ray
# re-runs them (up to RECONSTRUCTIONS times) to reconstruct objects lost with a node.
# ``after``, the lengths of an earlier load task on the node, only orders the tasks: Ray
# starts this one once that one is done (see zoo_ray.spark_to_ray._load).
@ray.remote(num_cpus=0, retry_exceptions=False, max_retries=RECONSTRUCTIONS)
def load_tables(files: list[BlockFile], recovery: RecomputeHandle | None = None,
                after: list[int] | None = None) -> tuple[Any, ...]:
    """The Arrow blocks Spark tasks spooled on this node, then their rows (the files go)."""
    return _load(files, spool.read_table, "A block", recovery)


@ray.remote(num_cpus=0, retry_exceptions=False, max_retries=RECONSTRUCTIONS)
def load_pickles(files: list[BlockFile], recovery: RecomputeHandle | None = None,
                 after: list[int] | None = None) -> tuple[Any, ...]:
    """The RDD partitions Spark tasks spooled on this node, then their lengths (the files go)."""
    return _load(files, spool.read_pickle, "A partition", recovery)


@ray.remote(num_cpus=0)
def spool_blocks(conversion: str, slices: list[tuple[int, int | None, int | None]],
                 blocks: list[Any]) -> list[SpooledBlock]:
    """Write Dataset blocks to this node's spool; say where each went.

    ``slices[i]`` is ``(index, start, end)`` for ``blocks[i]``: the file's number in the
    conversion and the rows of the block the Dataset uses (all when None). The blocks
    come as refs, read one at a time: as arguments Ray would hold them all in memory
    (restored from spill) for the whole task.
    """
    written = []
    for (index, start, end), ref in zip(slices, blocks):
        table = to_arrow(ray.get(ref), start, end)
        file = spool.write_table(table, spool.conversion_dir(conversion) / f"b{index}.arrow")
        written.append(SpooledBlock(container_id(), file.path, index, file.num_rows,
                                    file.size_bytes, table.schema.serialize().to_pybytes()))
        # Let the block go before the next one is fetched: one block in memory at a time.
        del table
    return written


@ray.remote(num_cpus=0)
def spool_objects(conversion: str, indices: list[int], objects: list[Any]
                  ) -> list[SpooledBlock]:
    """Write objects (each a list of items: one RDD partition) to this node's spool, one
    at a time; say where each went. ``indices[i]`` numbers ``objects[i]``'s file."""
    written = []
    for index, ref in zip(indices, objects):
        items = ray.get(ref)
        if not isinstance(items, (list, tuple)):
            raise InvalidArgumentError(
                f"to_rdd: object {index} holds a {type(items).__name__}, not a list of items. "
                "Give each partition as a list (from_rdd's objects are).")
        file = spool.write_pickle(list(items),
                                  spool.conversion_dir(conversion) / f"o{index}.pickle")
        written.append(SpooledBlock(container_id(), file.path, index, file.num_rows,
                                    file.size_bytes))
        del items
    return written


@ray.remote(num_cpus=0)
def remove_spool(conversion: str) -> None:
    """Remove what is left of a conversion's spool on this node."""
    spool.remove(conversion)


def node_of_actor(_actor: object) -> str:
    """The node an actor runs on (called in the actor through ``__ray_call__``)."""
    return str(ray.get_runtime_context().get_node_id())
