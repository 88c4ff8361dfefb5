"""Feeding an RDD's partitions in Ray to actors: same node first, balanced.

Runs on the driver: it asks each actor for its node, plans which partitions each
actor works on (:mod:`zoo_ray.placement`) and hands each actor the refs, never
copies; the data moves node to node, never through the driver.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import InvalidArgumentError
from .placement import assign
from .spark_to_ray import RayPartitions

__all__ = ["assign_partitions_to_actors", "feed"]


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
        From :func:`zoo_ray.data.from_rdd`.
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
