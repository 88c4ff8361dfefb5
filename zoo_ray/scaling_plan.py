"""What an elastic Ray cluster should do next: how many executors, which idle nodes to drain.

Runs in the driver, for the scaler's thread (issue #27): pure logic, and :func:`read_state`
of the GCS's reply to ``GcsClient.get_cluster_resource_state()``. :func:`plan` packs the
pending demand first-fit-decreasing onto the live nodes, then onto new nodes of one
executor's shape; when nothing waits, it picks the nodes idle for long enough to drain.
No threads, no Spark or Ray calls: the scaler acts on the :class:`ScalePlan`.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import InvalidArgumentError

__all__ = ["Demand", "NodeLoad", "ScalePlan", "parse_idle_timeout", "plan", "read_state"]

Shape = dict[str, float]
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$", re.IGNORECASE)
_LIVE = ("RUNNING", "IDLE")
_EPS = 1e-9
#: Resources packed: CPU, GPU, ``memory`` (zoo_ray's nodes declare Ray's share of the
#: container), custom ones and ``accelerator_type:*``. Not packed: ``object_store_memory`` (no
#: task asks for it; its "available" falls as objects are stored, so a node would look full
#: where tasks still fit); ``node:<ip>`` and ``node:__internal_head__`` (each names one node,
#: which a new node is not); ``<res>_group_<pg id>``, ``<res>_group_<i>_<pg id>``,
#: ``bundle_group_<pg id>`` (placed placement groups' bundles, carved out of CPU, ...
#: already counted). A pending shape naming one of those last waits for its node or bundle,
#: which no new node gives: it is left out of the demand.
_PINNED = re.compile(r"^node:|_group_(\d+_)?[0-9a-f]{36}$")


def parse_idle_timeout(value: str | float) -> float:
    """Seconds in an idle timeout: ``"60s"``, ``"5m"``, ``"1h"``, ``"90"`` or a number.

    Raises
    ------
    InvalidArgumentError
        For a bool, zero, a negative or non-finite number, or a string of another form.
    """
    seconds: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds is None or not math.isfinite(seconds) or seconds <= 0:
        raise InvalidArgumentError(
            f"idle_timeout={value!r} is not a duration. Write seconds as a number above "
            "zero (90, 2.5) or a number and a unit, like \"60s\", \"5m\" or \"1h\".")
    return seconds


@dataclass(frozen=True)
class NodeLoad:
    """One Ray node as the GCS sees it.

    Parameters
    ----------
    node_id : str
        Hex, as ``GcsClient.drain_node`` takes it.
    status : str
        "RUNNING", "IDLE", "DRAINING", "DEAD" (or "UNSPECIFIED"); ``idle_s`` is 0 unless IDLE.
    idle_s : float
    total, available : dict of str to float
        The resources that matter for packing (see ``_PINNED``).
    busy : tuple of str
        Why the node's raylet does not call it idle ("Busy workers on node.", ...).
    """

    node_id: str
    status: str
    idle_s: float
    total: Shape
    available: Shape
    busy: tuple[str, ...] = ()


@dataclass(frozen=True)
class Demand:
    """What waits for resources, one shape per task, actor or placement-group bundle.

    Parameters
    ----------
    shapes : tuple of dict
        Tasks and actors (a request with count 3 is three shapes).
    gangs : tuple of tuple of dict
        Pending placement groups whose bundles may share nodes (PACK, SPREAD); the bundles
        of a STRICT_PACK group (an affinity constraint) are summed into one.
    strict_spread_gangs : tuple of tuple of dict
        Pending STRICT_SPREAD groups (an anti-affinity constraint): one node per bundle.
    """

    shapes: tuple[Shape, ...] = ()
    gangs: tuple[tuple[Shape, ...], ...] = ()
    strict_spread_gangs: tuple[tuple[Shape, ...], ...] = ()


@dataclass(frozen=True)
class ScalePlan:
    """What the scaler should do.

    Parameters
    ----------
    target_nodes : int
        Executors (a Ray node each) to ask Spark for in all.
    drain : tuple of str
        Hex ids of the idle nodes to drain, most idle first.
    unmet : int
        Shapes an executor's node would hold that wait beyond ``max_ray_nodes``.
    infeasible : tuple of dict
        Shapes no executor's node can hold: never scaled for.
    reason : str
        Why, in a sentence, for the log and ``node_status()``.
    """

    target_nodes: int
    drain: tuple[str, ...]
    unmet: int
    infeasible: tuple[Shape, ...]
    reason: str


def _packable(resources: Mapping[str, float]) -> Shape:
    return {key: float(value) for key, value in resources.items()
            if value > 0 and key != "object_store_memory" and not _PINNED.search(key)}


def _shape(resources: Mapping[str, float]) -> Shape | None:
    """The packed part of a pending shape; None for one pinned to a node or placed bundle."""
    return None if any(_PINNED.search(key) for key in resources) else _packable(resources)


def read_state(reply: Any) -> tuple[list[NodeLoad], Demand]:
    """The nodes and the demand in a ``GetClusterResourceStateReply`` (bytes or message).

    Label selectors are not read (zoo_ray's nodes have no labels); placement-group entries
    without bundles (the GCS lists non-pending groups empty) are skipped.
    """
    # Imported here: RayContext's argument checks import this module, and Ray with it
    # would slow `import zoo_ray`. Generated code, without stubs.
    from ray.core.generated import autoscaler_pb2

    pb: Any = autoscaler_pb2
    if isinstance(reply, (bytes, bytearray, memoryview)):
        reply = pb.GetClusterResourceStateReply.FromString(bytes(reply))
    state = getattr(reply, "cluster_resource_state", reply)
    nodes = [NodeLoad(n.node_id.hex(), pb.NodeStatus.Name(n.status), n.idle_duration_ms / 1e3,
                      _packable(n.total_resources), _packable(n.available_resources),
                      tuple(n.node_activity))
             for n in state.node_states]
    shapes = [shape for r in state.pending_resource_requests
              if (shape := _shape(r.request.resources_bundle)) is not None
              for _ in range(r.count)]
    gangs: list[tuple[Shape, ...]] = []
    spread: list[tuple[Shape, ...]] = []
    for gang in state.pending_gang_resource_requests:
        # Ray 2.60 fills both; its own scheduler reads the first bundle selector.
        requests = (gang.bundle_selectors[0].resource_requests if gang.bundle_selectors
                    else gang.requests)
        bundles = [(b, r) for r in requests if (b := _shape(r.resources_bundle)) is not None]
        if not bundles:
            continue
        # Two optional fields, not a oneof: Ray's own scheduler asks HasField of each.
        kinds = {kind for _, r in bundles for c in r.placement_constraints
                 for kind in ("anti_affinity", "affinity") if c.HasField(kind)}
        if "anti_affinity" in kinds:  # STRICT_SPREAD: "_PG_<id>" on every bundle
            spread.append(tuple(b for b, _ in bundles))
        elif "affinity" in kinds:  # STRICT_PACK: all on one node, so one shape
            keys = {key for b, _ in bundles for key in b}
            gangs.append(({key: sum(b.get(key, 0.0) for b, _ in bundles) for key in keys},))
        else:
            gangs.append(tuple(b for b, _ in bundles))
    return nodes, Demand(tuple(shapes), tuple(gangs), tuple(spread))


def _fits(need: Shape, free: Shape) -> bool:
    return all(free.get(key, 0.0) + _EPS >= value for key, value in need.items())


def _place(need: Shape, bins: list[Shape], node_shape: Shape, avoid: set[int]) -> int:
    """First fit into ``bins`` (not those in ``avoid``), else a new node; the bin's index."""
    index = next((i for i, free in enumerate(bins) if i not in avoid and _fits(need, free)),
                 len(bins))
    if index == len(bins):
        bins.append(dict(node_shape))
    for key, value in need.items():
        bins[index][key] = bins[index].get(key, 0.0) - value
    return index


def _check(min_nodes: int, max_nodes: int, starting: int) -> None:
    for name, value in (("min_ray_nodes", min_nodes), ("max_ray_nodes", max_nodes),
                        ("starting", starting)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgumentError(f"{name}={value!r} must be a whole number.")
    if min_nodes < 1:
        raise InvalidArgumentError(f"min_ray_nodes={min_nodes} must be at least 1 (the head's "
                                   "node); pass min_ray_nodes=1 or more.")
    if min_nodes > max_nodes:
        raise InvalidArgumentError(f"min_ray_nodes={min_nodes} is above max_ray_nodes="
                                   f"{max_nodes}; pass min_ray_nodes <= max_ray_nodes.")
    if starting < 0:
        raise InvalidArgumentError(f"starting={starting}: executors asked for whose node is "
                                   "not up yet are 0 or more.")


def plan(nodes: Sequence[NodeLoad], demand: Demand, node_shape: Mapping[str, float], *,
         head_node: str, min_nodes: int, max_nodes: int, idle_timeout_s: str | float,
         starting: int = 0) -> ScalePlan:
    """Pack the demand and pick the executors to have and the idle nodes to drain.

    Parameters
    ----------
    nodes : sequence of NodeLoad
        The executors' nodes (leave out a node no executor holds, like the driver's).
    demand : Demand
    node_shape : mapping of str to float
        The resources one executor's Ray node offers.
    head_node : str
        The head's node id (hex): never drained.
    min_nodes, max_nodes : int
        ``min_ray_nodes`` and ``max_ray_nodes``.
    idle_timeout_s : float or str
        How long a node stays IDLE before it is drained (see :func:`parse_idle_timeout`).
        Nothing is drained while a shape some node could hold waits; infeasible ones do
        not keep idle nodes.
    starting : int
        Executors asked for whose node is not up yet: packed as empty nodes.

    Raises
    ------
    InvalidArgumentError
        min_nodes < 1, min_nodes > max_nodes, starting < 0, a bad timeout, an empty shape.
    """
    _check(min_nodes, max_nodes, starting)
    idle_timeout_s = parse_idle_timeout(idle_timeout_s)
    shape = _packable(node_shape)
    if not shape:
        raise InvalidArgumentError(f"node_shape={dict(node_shape)!r} offers nothing to pack "
                                   "into; pass an executor's node resources, like {'CPU': 4}.")
    live = [n for n in nodes if n.status in _LIVE]
    base = len(live) + starting
    bins = [_packable(n.available) for n in live] + [dict(shape) for _ in range(starting)]
    infeasible: list[Shape] = []
    placed: list[int] = []

    def size(need: Shape) -> tuple[float, float]:
        fractions = [value / shape[key] for key, value in need.items() if key in shape]
        return max(fractions, default=0.0), sum(fractions)

    def feasible(group: Iterable[Shape]) -> list[Shape]:
        group = list(group)
        bad = [b for b in group if not _fits(b, shape)]
        infeasible.extend(bad)
        return [] if bad else sorted(group, key=size, reverse=True)

    for gang in demand.strict_spread_gangs:
        used: set[int] = set()
        for bundle in feasible(gang):
            used.add(_place(bundle, bins, shape, used))
        placed.extend(used)
    for gang in demand.gangs:
        placed.extend(_place(bundle, bins, shape, set()) for bundle in feasible(gang))
    tasks = [s for s in demand.shapes if _fits(s, shape)]
    infeasible.extend(s for s in demand.shapes if not _fits(s, shape))
    placed.extend(_place(s, bins, shape, set()) for s in sorted(tasks, key=size, reverse=True))

    new, room = len(bins) - base, max(0, max_nodes - base)
    unmet = sum(1 for index in placed if index >= base + room)
    drain: list[NodeLoad] = []
    if placed:
        target = base + min(new, room)
        what = f"{len(placed)} pending {'request' if len(placed) == 1 else 'requests'}"
        reason = (f"max_ray_nodes={max_nodes} reached: {unmet} of {what} wait" if unmet else
                  f"{what} need {new} more node{'s' * (new > 1)}" if new else
                  f"{what} fit in the {base} node{'s' * (base > 1)} there are or start")
    else:
        # Nothing waits: executors asked for and not up yet are asked for no more (and a
        # lost one is not replaced), and the idle nodes go.
        target = len(live)
        idle = sorted((n for n in live if n.status == "IDLE" and n.node_id != head_node
                       and n.idle_s >= idle_timeout_s), key=lambda n: (-n.idle_s, n.node_id))
        drain = idle[:max(0, len(live) - min_nodes)]
        target -= len(drain)
        reason = ("; ".join(f"node {n.node_id[:8]} idle {n.idle_s:.0f} s" for n in drain)
                  or "no pending demand and no node to drain")
    if target < min_nodes:
        target = min_nodes
        reason += f"; min_ray_nodes={min_nodes} keeps {min_nodes}"
    if infeasible:
        first = ", ".join(f"{key}: {value:g}" for key, value in sorted(infeasible[0].items()))
        reason += f"; {len(infeasible)} fit no executor's node ({{{first}}}), never scaled for"
    return ScalePlan(target, tuple(n.node_id for n in drain), unmet, tuple(infeasible), reason)
