"""The election of the start job's barrier tasks (pure logic; the job itself runs in tests/e2e)."""
from __future__ import annotations

from zoo_ray.executor_tasks import Slot, elect, executor_identity


def _slots(layout):
    """Slots from {container: [partitions]}, with the containers that already run a node."""
    return [Slot(c, p, has_node) for c, (parts, has_node) in layout.items() for p in parts]


def test_one_task_per_executor_starts_a_node_head_first():
    slots = _slots({"c2": ([3, 1], False), "c1": ([0, 2], False), "c3": ([4, 5], False)})
    election = elect(slots, head="c3", wanted=3)
    assert election.starters == {"c3": 4, "c1": 0, "c2": 1}
    roles = {(s.container, s.partition): election.role(s) for s in slots}
    assert roles == {("c3", 4): "head", ("c1", 0): "worker", ("c2", 1): "worker",
                     ("c3", 5): None, ("c1", 2): None, ("c2", 3): None}


def test_fewer_nodes_than_executors_leaves_the_rest_idle_with_one_speaker_each():
    slots = _slots({"c1": ([0, 1], False), "c2": ([2, 3], False), "c3": ([4, 5], False)})
    election = elect(slots, head="c2", wanted=2)
    assert list(election.starters) == ["c2", "c1"]
    speakers = [s for s in slots if election.speaks_for_executor(s)]
    assert [(s.container, s.partition) for s in speakers] == [("c1", 0), ("c2", 2), ("c3", 4)]


def test_executors_that_run_a_node_of_the_application_are_skipped():
    slots = _slots({"c1": ([0], True), "c2": ([1], False), "c3": ([2], False)})
    assert elect(slots, head="c3", wanted=3).starters == {"c3": 2, "c2": 1}


def test_a_head_executor_among_no_slot_is_not_elected():
    slots = _slots({"c1": ([0], False), "c2": ([1], False)})
    election = elect(slots, head="lost", wanted=2)
    assert election.starters == {"c1": 0, "c2": 1}
    assert all(election.role(s) == "worker" for s in slots)


def test_slots_round_trip_through_json():
    slot = Slot("container_1", 7, True)
    assert Slot.from_json(slot.to_json()) == slot


def test_the_executor_identity_comes_from_its_jvm_arguments():
    argv = ["java", "-cp", "x", "org.apache.spark.executor.YarnCoarseGrainedExecutorBackend",
            "--driver-url", "spark://a:1", "--executor-id", "7", "--hostname", "nm-2",
            "--cores", "1"]
    assert executor_identity(argv) == ("7", "nm-2")
    assert executor_identity(["python"]) == ("", "")
