"""The elastic scaler's plan: idle timeouts, the GCS's resource state, packing, draining."""
from __future__ import annotations

import pytest
from ray.core.generated import autoscaler_pb2 as pb

from zoo_ray.errors import InvalidArgumentError
from zoo_ray.scaling_plan import Demand, NodeLoad, parse_idle_timeout, plan, read_state

HEAD = "aa" * 28
NODE = {"CPU": 4.0, "memory": 8e9}
PG = "0123456789abcdef0123456789abcdef0123"  # 18 bytes, as Ray's PlacementGroupID


def node(node_id: str, status: str = "RUNNING", idle_s: float = 0.0,
         available: dict[str, float] | None = None) -> NodeLoad:
    return NodeLoad(node_id, status, idle_s, dict(NODE),
                    dict(NODE if available is None else available))


def cpus(n: float, count: int = 1) -> tuple[dict[str, float], ...]:
    return tuple({"CPU": float(n)} for _ in range(count))


def run(nodes: list[NodeLoad], demand: Demand, **kwargs):
    args = {"head_node": HEAD, "min_nodes": 1, "max_nodes": 10, "idle_timeout_s": 60.0}
    return plan(nodes, demand, NODE, **{**args, **kwargs})


# --- idle timeouts ---------------------------------------------------------------------

@pytest.mark.parametrize("value, seconds", [
    ("60s", 60.0), ("5m", 300.0), ("1h", 3600.0), ("90", 90.0), (" 2.5M ", 150.0),
    (45, 45.0), (0.5, 0.5),
])
def test_idle_timeouts_in_seconds(value, seconds):
    assert parse_idle_timeout(value) == seconds


@pytest.mark.parametrize("value", ["0s", "0", "-5s", "5d", "1m30s", "", "s", "fast", 0, -1,
                                   True, float("inf"), float("nan"), None, [60]])
def test_bad_idle_timeouts_name_the_forms(value):
    with pytest.raises(InvalidArgumentError, match=r"idle_timeout=.*\"60s\", \"5m\" or \"1h\""):
        parse_idle_timeout(value)


# --- the GCS's reply -------------------------------------------------------------------

def _reply() -> pb.GetClusterResourceStateReply:
    reply = pb.GetClusterResourceStateReply()
    state = reply.cluster_resource_state
    for raw, status, idle_ms in ((b"\x01" * 28, pb.RUNNING, 0), (b"\x02" * 28, pb.IDLE, 75_500),
                                 (b"\x03" * 28, pb.DRAINING, 0)):
        n = state.node_states.add(node_id=raw, status=status, idle_duration_ms=idle_ms)
        n.total_resources.update({"CPU": 4, "memory": 8e9, "object_store_memory": 2e9,
                                  "node:10.0.0.1": 1, f"CPU_group_{PG}": 2,
                                  f"CPU_group_0_{PG}": 2, f"bundle_group_{PG}": 1000,
                                  "accelerator_type:T4": 1, "my_group_x": 3})
        n.available_resources.update({"CPU": 1.5, "object_store_memory": 1e9})
    state.node_states.add(node_id=b"\x04" * 28, status=pb.DEAD)
    state.pending_resource_requests.add(count=3).request.resources_bundle.update({"CPU": 1})
    state.pending_resource_requests.add(count=1).request.resources_bundle.update(
        {"CPU": 0.5, "GPU": 1, "memory": 1e9})
    # Waiting inside a placed placement group, or pinned to a node: no new node serves them.
    state.pending_resource_requests.add(count=2).request.resources_bundle.update(
        {f"CPU_group_{PG}": 1})
    state.pending_resource_requests.add(count=1).request.resources_bundle.update(
        {"CPU": 1, "node:__internal_head__": 0.001})
    # A STRICT_SPREAD group, as the GCS writes it: both fields, "_PG_<id>" anti-affinity.
    spread = state.pending_gang_resource_requests.add(details=f"{PG}:STRICT_SPREAD|PENDING")
    selector = spread.bundle_selectors.add()
    for field in (spread.requests, selector.resource_requests):
        for _ in range(3):
            request = field.add()
            request.resources_bundle["CPU"] = 2
            request.placement_constraints.add().anti_affinity.label_name = f"_PG_{PG}"
    state.pending_gang_resource_requests.add()  # a group that is not pending: empty
    pack = state.pending_gang_resource_requests.add(details="x:STRICT_PACK|PENDING")
    for _ in range(2):
        request = pack.requests.add()
        request.resources_bundle["CPU"] = 1
        request.placement_constraints.add().affinity.label_name = "_PG_x"
    plain = state.pending_gang_resource_requests.add(details="y:PACK|PENDING")
    plain.requests.add().resources_bundle.update({"CPU": 1, "GPU": 1})
    plain.requests.add().resources_bundle.update({"CPU": 3})
    return reply


@pytest.mark.parametrize("serialized", [True, False])
def test_read_state_from_the_gcs_reply(serialized):
    reply = _reply()
    nodes, demand = read_state(reply.SerializeToString() if serialized else reply)
    assert [(n.node_id, n.status, n.idle_s) for n in nodes] == [
        ("01" * 28, "RUNNING", 0.0), ("02" * 28, "IDLE", 75.5), ("03" * 28, "DRAINING", 0.0),
        ("04" * 28, "DEAD", 0.0)]
    assert nodes[0].total == {"CPU": 4, "memory": 8e9, "accelerator_type:T4": 1,
                              "my_group_x": 3}
    assert nodes[0].available == {"CPU": 1.5}
    assert demand.shapes == ({"CPU": 1}, {"CPU": 1}, {"CPU": 1},
                             {"CPU": 0.5, "GPU": 1, "memory": 1e9})
    assert demand.strict_spread_gangs == (({"CPU": 2}, {"CPU": 2}, {"CPU": 2}),)
    assert demand.gangs == (({"CPU": 2},), ({"CPU": 1, "GPU": 1}, {"CPU": 3}))


def test_read_state_of_an_idle_cluster():
    reply = pb.GetClusterResourceStateReply()
    reply.cluster_resource_state.pending_gang_resource_requests.add()
    assert read_state(reply.SerializeToString()) == ([], Demand())


# --- scaling up ------------------------------------------------------------------------

def test_a_burst_needs_exactly_two_more_nodes():
    result = run([node(HEAD, available={"CPU": 0, "memory": 8e9})], Demand(cpus(1, 8)))
    assert (result.target_nodes, result.drain, result.unmet, result.infeasible) == (3, (), 0, ())
    assert "8 pending requests need 2 more nodes" in result.reason


def test_demand_partly_fits_in_what_the_nodes_have_free():
    nodes = [node(HEAD, available={"CPU": 3}), node("b" * 56, available={"CPU": 2})]
    assert run(nodes, Demand(cpus(1, 5))).target_nodes == 2  # all fit: no new node
    assert run(nodes, Demand(cpus(1, 6))).target_nodes == 3
    # Largest first: 3 on the head, 1 + 1 on b; in the given order the 3 would find no room.
    assert run(nodes, Demand(cpus(1, 2) + cpus(3))).target_nodes == 2
    assert "5 pending requests fit in the 2 nodes" in run(nodes, Demand(cpus(1, 5))).reason


def test_without_demand_executors_still_starting_are_asked_for_no_more():
    result = run([node(HEAD, available={}), node("b")], Demand(), starting=2)
    assert result.target_nodes == 2 and result.drain == ()


def test_starting_executors_take_demand_before_new_ones_are_asked_for():
    result = run([node(HEAD, available={})], Demand(cpus(4, 3)), starting=2)
    assert result.target_nodes == 4
    assert "need 1 more node" in result.reason


def test_the_cap_leaves_demand_unmet():
    result = run([node(HEAD, available={})], Demand(cpus(2, 10)), max_nodes=3)
    assert (result.target_nodes, result.unmet) == (3, 6)
    assert "max_ray_nodes=3 reached: 6 of 10 pending requests wait" in result.reason


def test_no_node_is_asked_for_a_shape_no_executor_can_hold():
    big = {"CPU": 16.0}
    result = run([node(HEAD, available={})], Demand((big, {"TPU": 1.0})))
    assert (result.target_nodes, result.unmet, result.infeasible) == (1, 0, (big, {"TPU": 1.0}))
    assert "2 fit no executor's node ({CPU: 16})" in result.reason


def test_a_gang_with_one_bundle_too_big_is_infeasible_whole():
    result = run([node(HEAD, available={})], Demand(gangs=((*cpus(2, 3), {"CPU": 5.0}),)))
    assert (result.target_nodes, result.infeasible) == (1, ({"CPU": 5.0},))


def test_strict_spread_puts_each_bundle_on_a_node_of_its_own():
    nodes = [node(HEAD, available={"CPU": 4})]
    assert run(nodes, Demand(strict_spread_gangs=(cpus(1, 3),))).target_nodes == 3
    # Without the constraint all three fit in the one node's free CPUs.
    assert run(nodes, Demand(gangs=(cpus(1, 3),))).target_nodes == 1


def test_min_nodes_is_kept_whatever_the_demand():
    assert run([node(HEAD)], Demand(), min_nodes=3).target_nodes == 3
    assert run([node(HEAD, available={})], Demand(cpus(1)), min_nodes=3).target_nodes == 3


# --- scaling down ----------------------------------------------------------------------

def _idle_cluster() -> list[NodeLoad]:
    return [node(HEAD, "IDLE", 500), node("b" * 56, "IDLE", 75), node("c" * 56, "IDLE", 300),
            node("d" * 56, "IDLE", 30), node("e" * 56, "RUNNING"), node("f" * 56, "DRAINING"),
            node("0" * 56, "DEAD")]


def test_idle_nodes_past_the_timeout_are_drained_most_idle_first_never_the_head():
    result = run(_idle_cluster(), Demand())
    assert result.drain == ("c" * 56, "b" * 56)
    assert result.target_nodes == 3  # 5 live nodes, 2 drained
    assert result.reason == "node cccccccc idle 300 s; node bbbbbbbb idle 75 s"


def test_draining_stops_at_min_nodes():
    result = run(_idle_cluster(), Demand(), min_nodes=4)
    assert (result.drain, result.target_nodes) == (("c" * 56,), 4)
    assert run(_idle_cluster(), Demand(), min_nodes=5).drain == ()


def test_nothing_is_drained_while_demand_waits():
    result = run(_idle_cluster(), Demand(cpus(1)))
    assert (result.drain, result.target_nodes) == ((), 5)
    assert run(_idle_cluster(), Demand(gangs=(cpus(1),))).drain == ()


def test_infeasible_demand_alone_does_not_keep_idle_nodes():
    result = run(_idle_cluster(), Demand(cpus(64)))
    assert result.drain == ("c" * 56, "b" * 56)
    assert "fit no executor's node" in result.reason


def test_a_node_idle_for_less_than_the_timeout_stays():
    assert run(_idle_cluster(), Demand(), idle_timeout_s=400).drain == ()
    assert run(_idle_cluster(), Demand(), idle_timeout_s="5m").drain == ("c" * 56,)


# --- bad arguments ---------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    ({"min_nodes": 0}, "min_ray_nodes=0 must be at least 1"),
    ({"min_nodes": 4, "max_nodes": 3}, "min_ray_nodes <= max_ray_nodes"),
    ({"starting": -1}, "starting=-1"),
    ({"min_nodes": True}, "min_ray_nodes=True must be a whole number"),
    ({"max_nodes": 2.5}, "max_ray_nodes=2.5 must be a whole number"),
    ({"idle_timeout_s": 0}, "idle_timeout=0"),
])
def test_bad_arguments_name_the_fix(kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        run([node(HEAD)], Demand(), **kwargs)


def test_an_empty_node_shape_is_refused():
    with pytest.raises(InvalidArgumentError, match="node_shape"):
        plan([node(HEAD)], Demand(), {"object_store_memory": 1e9}, head_node=HEAD,
             min_nodes=1, max_nodes=2, idle_timeout_s=60)
