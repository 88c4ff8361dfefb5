"""Ray's internal APIs zoo_ray relies on, in one place (runs on the driver, and in Ray tasks).

Each call here uses an API Ray does not promise to keep; setup.py pins the Ray
minor versions they were checked against, and the end-to-end tests exercise each.

- :func:`dataset_from_blocks`: a Dataset from blocks whose metadata the writer
  already knows, without ``from_arrow_refs``' one metadata task per block (which
  stalls while Spark holds every CPU). Its pandas batches have numpy dtypes, as
  in Spark, unless ``RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION`` is set.
- :func:`dataset_blocks`: a Dataset's blocks as refs, row counts and slices.
- :func:`object_nodes`: the node holding each object.
- :func:`object_store_used`: one node's object store usage, from its raylet.
- :func:`attach_drivers_to`: which raylet a ``ray.init()`` in this process attaches to.
- :func:`refuse_drivers`: a ``ray.init()`` in this process (Ray's auto-connect included)
  to a cluster that is gone raises a :class:`~zoo_ray.errors.ClusterLostError` saying why.
- :func:`catch_lost_gets` and :func:`interrupt_driver_get`: a ``ray.get`` the main thread
  waits in when its cluster is lost raises :class:`~zoo_ray.errors.ClusterLostError`.
- :func:`ray_calls_refused`: meanwhile every new Ray call raises it at once, connected or not.
"""
from __future__ import annotations

import _thread
import contextlib
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import ray
from ray._private import auto_init_hook, services
from ray._private.worker import Worker

from .host import wait_until

#: Set it to keep Ray's default (Arrow-backed pandas batches) for from_spark's Datasets.
_ARROW_PANDAS_ENV = "RAY_DATA_ENABLE_ARROW_BACKED_PANDAS_CONVERSION"

__all__ = ["BlockRef", "attach_drivers_to", "catch_lost_gets", "dataset_blocks",
           "dataset_from_blocks", "interrupt_driver_get", "object_nodes", "object_store_used",
           "ray_calls_refused", "refuse_drivers", "to_arrow"]


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


def object_store_used(raylet_address: str) -> int:
    """Bytes in use in the object store of the raylet at ``ip:port``."""
    from ray._private.internal_api import node_stats

    ip, port = raylet_address.rsplit(":", 1)
    stats = node_stats(ip, int(port), include_memory_info=False)
    return int(stats.store_stats.object_store_bytes_used)


_attach_to: list[str] = []
_find_node: Any = services.get_node_to_connect_for_driver


def _node_for_driver(gcs_client: Any, node_ip_address: str | None = None,
                     node_name: str | None = None, temp_dir: str | None = None,
                     **kwargs: Any) -> Any:
    if _attach_to and node_ip_address is None and node_name is None and temp_dir is None:
        temp_dir = _attach_to[0]
    return _find_node(gcs_client, node_ip_address, node_name, temp_dir, **kwargs)


def attach_drivers_to(temp_dir: str | None) -> None:
    """Make ``ray.init()`` in this process attach to the node with ``temp_dir`` (None: Ray's
    own choice again).

    Ray attaches a driver to any raylet it finds among the machine's processes and
    prefers the head's. On a gateway that also runs executors (or the local Hadoop,
    where every host shares one process table) that can be an executor's raylet,
    in another network namespace. A ``ray.init()`` that names a node itself is left alone.
    """
    _attach_to[:] = [temp_dir] if temp_dir else []
    services.get_node_to_connect_for_driver = _node_for_driver  # type: ignore[assignment]


_refused: dict[str, str] = {}
_canonical_address: Any = services.canonicalize_bootstrap_address


def _address_for_driver(addr: str | None, temp_dir: str | None = None) -> str | None:
    address = _canonical_address(addr, temp_dir)
    if address in _refused:
        from .errors import ClusterLostError

        raise ClusterLostError(_refused[address])
    return address


def refuse_drivers(address: str, why: str | None) -> None:
    """Make ``ray.init()`` in this process to the cluster at ``address`` raise
    :class:`~zoo_ray.errors.ClusterLostError` with ``why`` (None: allow it again).

    Ray's own error for a cluster that is gone comes after 20 s of retries and says
    nothing of the cause; the user's next Ray call goes through ``ray.init()`` (Ray's
    auto-connect), so this is where it learns why.
    """
    if why is None:
        _refused.pop(address, None)
    else:
        _refused[address] = why
    services.canonicalize_bootstrap_address = _address_for_driver


_interrupting: list[str] = []
_get_objects: Any = Worker.get_objects


def _get_objects_or_lost(self: Worker, *args: Any, **kwargs: Any) -> Any:
    try:
        return _get_objects(self, *args, **kwargs)
    except KeyboardInterrupt as exc:
        if not _interrupting:
            raise
        from .errors import ClusterLostError

        raise ClusterLostError(_interrupting[0]) from exc


def catch_lost_gets() -> None:
    """Let :func:`interrupt_driver_get` end a ``ray.get`` of this process's main thread."""
    Worker.get_objects = _get_objects_or_lost  # type: ignore[method-assign]


def _waiting_in_get(thread_id: int | None) -> bool:
    frame = sys._current_frames().get(thread_id or 0)
    while frame is not None:
        if frame.f_code is _get_objects_or_lost.__code__:
            return True
        frame = frame.f_back
    return False


def interrupt_driver_get(why: str, timeout: float) -> bool:
    """Make the ``ray.get`` this process's main thread waits in raise
    :class:`~zoo_ray.errors.ClusterLostError` with ``why``; whether one did within ``timeout``.

    Disconnecting the driver (``ray.shutdown()``) under a waiting ``ray.get`` leaves
    that call blocked for good, and a lost cluster never answers it. Ray ends a wait
    at a KeyboardInterrupt, the one exception it checks for while waiting, so the
    main thread gets one (Python delivers signals to the main thread only: a
    ``ray.get`` in another thread cannot be ended this way). Needs
    :func:`catch_lost_gets` before the ``ray.get`` started.
    """
    main = threading.main_thread().ident
    if threading.get_ident() == main or not _waiting_in_get(main):
        return False
    _interrupting[:] = [why]
    try:
        _thread.interrupt_main()
        return bool(wait_until(lambda: not _waiting_in_get(main), timeout, interval=0.1))
    finally:
        _interrupting.clear()


_refusing: list[str] = []
_auto_init: Any = auto_init_hook.auto_init_ray


def _auto_init_unless_refused() -> None:
    if _refusing:
        from .errors import ClusterLostError

        raise ClusterLostError(_refusing[0])
    _auto_init()


@contextlib.contextmanager
def ray_calls_refused(why: str) -> Iterator[None]:
    """While this runs, every Ray call of this process, in any thread, raises
    :class:`~zoo_ray.errors.ClusterLostError` with ``why`` before it reaches Ray.

    For the moments between the loss of a cluster and the driver's disconnection: a
    call that reaches a GCS that is gone blocks inside Ray (function and actor
    registrations wait on the GCS without a timeout), and Ray ends the process once
    that GCS has been gone for ``gcs_rpc_server_reconnect_timeout_s``. The calls that
    run Ray's auto-connect hook first are refused there: ``get``, ``put``, ``wait``,
    ``remote`` of tasks and actors, ``kill``, ``cancel``, ``get_actor`` (not ``init``,
    nor state calls such as ``nodes``).
    """
    auto_init_hook.auto_init_ray = _auto_init_unless_refused
    _refusing[:] = [why]
    try:
        yield
    finally:
        _refusing.clear()
