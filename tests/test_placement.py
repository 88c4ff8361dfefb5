"""Unit tests of the partition -> actor assignment (pure logic)."""
from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from zoo_ray.errors import InvalidArgumentError
from zoo_ray.placement import assign


def _check(partition_nodes: list[str | None], actor_nodes: list[str | None]) -> list[list[int]]:
    result = assign(partition_nodes, actor_nodes)
    flat = [p for parts in result for p in parts]
    assert sorted(flat) == list(range(len(partition_nodes))), "each partition exactly once"
    sizes = [len(parts) for parts in result]
    assert max(sizes) <= math.ceil(len(partition_nodes) / len(actor_nodes))
    assert max(sizes) - min(sizes) <= 1
    return result


def _local_count(result: list[list[int]], partition_nodes: list[str | None],
                 actor_nodes: list[str | None]) -> int:
    return sum(partition_nodes[p] == actor_nodes[a] for a, parts in enumerate(result)
               for p in parts)


def test_same_node_first():
    parts = ["a", "b", "a", "b"]
    result = _check(parts, ["b", "a"])
    assert result == [[1, 3], [0, 2]]


def test_actor_on_a_node_without_partitions_still_gets_work():
    parts = ["x"] * 4
    result = _check(parts, ["x", "x", "y"])
    assert [len(r) for r in result].count(0) == 0
    assert len(result[2]) == 1


def test_fewer_partitions_than_actors_leaves_some_actors_empty():
    result = _check(["a", "b"], ["a", "b", "c", "a"])
    assert sorted(len(r) for r in result) == [0, 0, 1, 1]
    assert _local_count(result, ["a", "b"], ["a", "b", "c", "a"]) == 2


def test_no_partitions():
    assert _check([], ["a", "b"]) == [[], []]


def test_unknown_nodes_are_never_local_but_assigned():
    result = _check([None, None, "a"], [None, "a"])
    assert 2 in result[1]


def test_no_actors_is_a_typed_error():
    with pytest.raises(InvalidArgumentError, match="at least one actor"):
        assign(["a"], [])


def test_random_layouts_keep_local_whatever_the_quotas_allow():
    rng = random.Random(7)
    for _ in range(300):
        nodes = [f"n{i}" for i in range(rng.randint(1, 5))]
        parts: list[str | None] = [rng.choice(nodes) for _ in range(rng.randint(0, 40))]
        actors: list[str | None] = [rng.choice(nodes) for _ in range(rng.randint(1, 8))]
        result = _check(parts, actors)
        # Each node's actors take its partitions up to their base quota at least.
        base = len(parts) // len(actors)
        per_node, actors_per_node = Counter(parts), Counter(actors)
        floor = sum(min(per_node[n], base * actors_per_node[n]) for n in nodes)
        assert _local_count(result, parts, actors) >= floor
