"""Which actor gets which partition: same node first, balanced (pure logic, runs on the driver).

Analytics Zoo's assignment crashed on actors left with nothing (BigDL #4369) and
matched nodes by IP suffix; here nodes are Ray node ids and any layout works.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from .errors import InvalidArgumentError

__all__ = ["assign"]


def assign(partition_nodes: Sequence[str | None],
           actor_nodes: Sequence[str | None]) -> list[list[int]]:
    """Assign partitions to actors; ``result[a]`` lists the partitions of actor ``a``.

    Every actor gets ``P // A`` or ``P // A + 1`` partitions (so never more than
    ``ceil(P / A)``, and an actor on a node holding nothing still gets its share);
    within those quotas as many partitions as possible stay on their own node.
    Partitions keep their order within each actor.

    Parameters
    ----------
    partition_nodes : sequence of str or None
        The node holding each partition (None: unknown, never local).
    actor_nodes : sequence of str or None
        The node of each actor.

    Raises
    ------
    InvalidArgumentError
        No actors.
    """
    if not actor_nodes:
        raise InvalidArgumentError("No actors to assign partitions to: pass at least one actor.")
    base, extra = divmod(len(partition_nodes), len(actor_nodes))
    quota = _Quota(base, extra, [[] for _ in actor_nodes])
    local: dict[str | None, list[int]] = defaultdict(list)
    for actor, node in enumerate(actor_nodes):
        if node is not None:
            local[node].append(actor)
    pending = list(range(len(partition_nodes)))
    for allow_extra in (False, True):
        pending = [p for p in pending
                   if not quota.give(p, local.get(partition_nodes[p], []), allow_extra)]
    everyone = list(range(len(actor_nodes)))
    for allow_extra in (False, True):
        pending = [p for p in pending if not quota.give(p, everyone, allow_extra)]
    assert not pending, "the quotas add up to the number of partitions"
    return [sorted(parts) for parts in quota.result]


class _Quota:
    """Hands partitions out within ``base`` each, plus ``extra`` actors at ``base + 1``."""

    def __init__(self, base: int, extra: int, result: list[list[int]]) -> None:
        self.base, self.extra, self.result = base, extra, result

    def give(self, partition: int, actors: list[int], allow_extra: bool) -> bool:
        """Give ``partition`` to the least-loaded of ``actors`` with room; False if none."""
        cap = self.base + 1 if allow_extra and self.extra > 0 else self.base
        open_actors = [a for a in actors if len(self.result[a]) < cap]
        if not open_actors:
            return False
        actor = min(open_actors, key=lambda a: len(self.result[a]))
        if len(self.result[actor]) == self.base:
            self.extra -= 1
        self.result[actor].append(partition)
        return True
