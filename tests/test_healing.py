"""Which executors get a new Ray node after a loss, and what a lost head hands on (no
cluster: Spark's executor list is given; a local Ray for the driver's waiting ray.get)."""
from __future__ import annotations

import textwrap

import pytest
from tests.fresh import run_python

from zoo_ray import healing
from zoo_ray.healing import EventLog, NodeKeeper, choose_targets
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


def _keeper(monkeypatch, live, on_head_lost):
    monkeypatch.setattr(healing.spark_internals, "live_executors", lambda sc: dict(live))
    monkeypatch.setattr(healing.spark_internals, "is_stopped", lambda sc: live is None)
    monkeypatch.setattr(healing, "_POLL_S", 3600.0)  # the test looks itself
    plan = type("Plan", (), {"base": type("Spec", (), {"app_id": "application_1_0001"})})()
    return NodeKeeper(object(), plan, 3, NODES, lambda node: None, on_head_lost,
                      lambda: on_head_lost("spark"), EventLog())


def test_a_lost_worker_is_an_event_and_the_keeper_goes_on(monkeypatch):
    handed = []
    keeper = _keeper(monkeypatch, {"1": "nm-1", "3": "nm-3"}, lambda *why: handed.append(why))
    monkeypatch.setattr(keeper, "_start_in", lambda targets: None)
    keeper.heal_once()
    assert [(e.kind, e.container) for e in keeper.events.events] == [("lost", "container_2")]
    assert handed == [] and not keeper.closing
    keeper.close()
    keeper.close()  # idempotent
    assert keeper.closing


def test_a_lost_head_is_handed_on_once_and_ends_the_keeper(monkeypatch):
    handed = []
    keeper = _keeper(monkeypatch, {"2": "nm-2", "3": "nm-3"}, lambda *why: handed.append(why))
    keeper.heal_once()
    keeper.heal_once()  # an ended keeper looks no more
    assert handed == [()]
    assert [e.kind for e in keeper.events.events] == ["head lost"]
    assert "ObjectRefs and actor handles from before are void" in keeper.events.events[0].message
    keeper._thread.join(5)
    assert not keeper._thread.is_alive() and not keeper.closing


def test_no_job_runs_once_the_keeper_is_closed(monkeypatch):
    keeper = _keeper(monkeypatch, {}, lambda: None)
    keeper.close()
    with pytest.raises(healing.RayContextError, match="stopping"):
        with keeper.jobs("a job"):
            pass


def test_a_spark_context_stopped_from_the_jvm_is_handed_on_and_ends_the_keeper(monkeypatch):
    handed = []
    keeper = _keeper(monkeypatch, None, lambda *why: handed.append(why))
    keeper.heal_once()
    assert handed == [("spark",)] and keeper.events.events == []
    keeper._thread.join(5)
    assert not keeper._thread.is_alive()


def test_a_driver_s_ray_init_to_a_refused_cluster_says_why_and_others_pass():
    from ray._private import services

    from zoo_ray.errors import ClusterLostError
    from zoo_ray.ray_internals import refuse_drivers

    refuse_drivers("198.18.0.9:6379", "Spark ended the application")
    try:
        with pytest.raises(ClusterLostError, match="Spark ended the application"):
            services.canonicalize_bootstrap_address("198.18.0.9:6379")
        assert services.canonicalize_bootstrap_address("198.18.0.10:6379") == "198.18.0.10:6379"
    finally:
        refuse_drivers("198.18.0.9:6379", None)
    assert services.canonicalize_bootstrap_address("198.18.0.9:6379") == "198.18.0.9:6379"


def test_a_ray_get_waiting_on_a_lost_cluster_raises_cluster_lost_in_the_main_thread():
    # A real (local) Ray: the main thread waits in ray.get on a task that never ends, as on
    # a lost cluster; the keeper's thread interrupts it before disconnecting the driver.
    result = run_python(textwrap.dedent("""
        import threading, time
        import ray
        from zoo_ray.errors import ClusterLostError
        from zoo_ray.ray_internals import (
            catch_lost_gets, interrupt_driver_get, ray_calls_refused)

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
        catch_lost_gets()
        never = ray.remote(num_cpus=0)(lambda: time.sleep(600))
        ended = []
        keeper = threading.Timer(3, lambda: ended.append(interrupt_driver_get("head lost", 30)))
        keeper.start()
        started = time.monotonic()
        try:
            ray.get(never.remote())
        except ClusterLostError as exc:
            keeper.join()
            print("raised", exc, ended, round(time.monotonic() - started))
        # Nothing to end when the main thread does not wait in ray.get.
        idle = threading.Thread(target=lambda: ended.append(interrupt_driver_get("x", 1)))
        idle.start(); idle.join()
        print("idle", ended[-1])
        print(ray.get(ray.remote(lambda: "still connected").remote(), timeout=60))
        # Until the driver is disconnected, new calls (connected ones too) stop before Ray.
        with ray_calls_refused("cluster gone"):
            for call in (lambda: ray.put(1), lambda: never.remote()):
                try:
                    call()
                except ClusterLostError as exc:
                    print("refused", exc)
        print(ray.get(ray.put("allowed again")))
        ray.shutdown()
    """), timeout=180)
    lines = result.stdout.splitlines()
    assert lines[0].startswith("raised head lost [True] "), result.stderr[-3000:]
    assert int(lines[0].split()[-1]) < 10  # interrupted at 3 s: Ray checks about every second
    assert lines[1:] == ["idle False", "still connected", *["refused cluster gone"] * 2,
                         "allowed again"]
