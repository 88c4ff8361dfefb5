"""What every conversion between Spark and Ray does on the driver.

Runs on the driver. :mod:`zoo_ray.spark_to_ray`, :mod:`zoo_ray.ray_to_spark` and
:mod:`zoo_ray.actor_feed` find the running RayContext here, map executors to their
Ray nodes, group the items each pinned Ray task handles, and remove what a
conversion left in the executors' spools.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from itertools import repeat

from .context import RayContext
from .errors import RayContextError
from .protocol import NodeInfo

__all__ = ["containers", "remove_spools", "running_context", "tasks_by_node"]


def running_context(what: str) -> RayContext:
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


def containers(executors: dict[str, NodeInfo]) -> dict[str, str]:
    """container -> Ray node id, from node id -> node."""
    return {info.container: node_id for node_id, info in executors.items()}


def remove_spools(ctx: RayContext, conversion: str) -> None:
    """Delete what is left of a conversion on every executor node (failed attempts' files)."""
    import ray

    from .ray_tasks import pinned, remove_spool

    ray.get([pinned(remove_spool, node_id).remote(conversion)
             for node_id in ctx.executor_nodes()])


def tasks_by_node(nodes: Sequence[str], sizes: Sequence[int] | None = None,
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
