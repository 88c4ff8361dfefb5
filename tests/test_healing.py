"""Which executors get a new Ray node after a loss (pure logic: no cluster)."""
from __future__ import annotations

from zoo_ray.healing import choose_targets
from zoo_ray.protocol import NodeInfo


def _node(executor_id: str) -> NodeInfo:
    return NodeInfo(role="worker", address="198.18.0.2:6379", pid=1, node_ip="198.18.0.2",
                    log_dir="/l", temp_dir=f"/tmp/zoo-ray-{executor_id}",
                    container=f"container_{executor_id}", executor_id=executor_id,
                    executor_host="nm-1")


NODES = [_node("1"), _node("2"), _node("3")]


def test_nothing_to_do_while_every_node_s_executor_lives():
    live = {"1": "nm-1", "2": "nm-2", "3": "nm-3"}
    assert choose_targets(live, NODES, 3, set()) == []


def test_the_replacement_of_a_lost_executor_gets_a_node():
    live = {"1": "nm-1", "2": "nm-2", "4": "nm-3"}
    assert choose_targets(live, NODES, 3, set()) == [("4", "nm-3")]


def test_no_more_nodes_than_wanted_and_the_lowest_executor_ids_first():
    # Executor 10 sorts after 9 (Spark's ids are numbers in strings).
    live = {"1": "nm-1", "10": "nm-4", "9": "nm-2", "11": "nm-3"}
    assert choose_targets(live, NODES, 3, set()) == [("9", "nm-2"), ("10", "nm-4")]


def test_spare_executors_stay_without_a_node_until_one_is_lost():
    live = {"1": "nm-1", "2": "nm-2", "3": "nm-3", "4": "nm-4"}
    assert choose_targets(live, NODES, 3, set()) == []
    del live["2"]
    assert choose_targets(live, NODES, 3, set()) == [("4", "nm-4")]


def test_an_executor_given_up_on_is_left_alone():
    live = {"1": "nm-1", "2": "nm-2", "4": "nm-3", "5": "nm-1"}
    assert choose_targets(live, NODES, 3, {"4"}) == [("5", "nm-1")]
