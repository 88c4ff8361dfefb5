"""Which executors get a new Ray node after a loss, and what a lost head hands on (no
cluster: Spark's executor list is given; a local Ray for the driver's waiting ray.get)."""
from __future__ import annotations

import json
import textwrap

import pytest
from tests.fresh import run_python
from tests.spark_stub import StubSparkContext

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
    return NodeKeeper(StubSparkContext(), plan, 3, NODES, lambda node: None, on_head_lost,
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

    from zoo_ray.driver_guard import refuse_drivers
    from zoo_ray.errors import ClusterLostError

    refuse_drivers("198.18.0.9:6379", "Spark ended the application")
    try:
        with pytest.raises(ClusterLostError, match="Spark ended the application"):
            services.canonicalize_bootstrap_address("198.18.0.9:6379")
        assert services.canonicalize_bootstrap_address("198.18.0.10:6379") == "198.18.0.10:6379"
    finally:
        refuse_drivers("198.18.0.9:6379", None)
    assert services.canonicalize_bootstrap_address("198.18.0.9:6379") == "198.18.0.9:6379"


def test_ray_gets_waiting_on_a_lost_cluster_and_new_calls_raise_cluster_lost():
    # A real (local) Ray: ray.get calls wait on a task that never ends, as on a lost
    # cluster, in the main thread and in another; the keeper's thread ends them, and
    # refuses new calls, while it disconnects the driver.
    result = run_python(textwrap.dedent("""
        import json, threading, time
        import ray
        from zoo_ray.errors import ClusterLostError
        from zoo_ray.driver_guard import _waiting_calls, cluster_lost, watch_driver_calls

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
        watch_driver_calls()
        never = ray.remote(num_cpus=0)(lambda: time.sleep(600))
        waited, keeper_saw, refused = [], [], []
        released = threading.Event()

        def wait_in_get():
            try:
                ray.get(never.remote(), timeout=120)
            except ClusterLostError as exc:
                waited.append(str(exc))
        other = threading.Thread(target=wait_in_get)
        other.start()

        def keeper():
            deadline = time.monotonic() + 60
            while _waiting_calls() < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            with cluster_lost("cluster gone", "lost while waiting", timeout=30) as waiting:
                keeper_saw.append(f"waiting {waiting}, left {_waiting_calls()}")
                keeper_saw.append(ray.get(ray.put("own calls pass")))
                released.wait(30)
        holder = threading.Thread(target=keeper)
        holder.start()
        started = time.monotonic()
        wait_in_get()
        took = time.monotonic() - started
        # Until the keeper is done, new calls of other threads stop before Ray.
        for call in (lambda: ray.put(1), lambda: never.remote()):
            try:
                call()
            except ClusterLostError as exc:
                refused.append(str(exc))
        released.set()
        holder.join()
        other.join()
        print(json.dumps({"waited": waited, "keeper": keeper_saw, "refused": refused,
                          "main waited": took}))
        # A get with a timeout that runs out still says so, and gets work again.
        try:
            ray.get(never.remote(), timeout=1.5)
        except ray.exceptions.GetTimeoutError:
            print("timed out")
        print(ray.get(ray.remote(lambda: "still connected").remote(), timeout=60))
        ray.shutdown()
    """), timeout=240)
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("{"), result.stdout + result.stderr[-3000:]
    seen = json.loads(lines[0])
    assert seen["waited"] == ["lost while waiting"] * 2  # the main thread's get and another's
    assert seen["keeper"] == ["waiting 2, left 0", "own calls pass"]
    assert seen["refused"] == ["cluster gone"] * 2
    assert seen["main waited"] < 10  # the keeper came at once; a get looks each second
    assert lines[1:] == ["timed out", "still connected"]


def test_calls_on_a_gcs_that_is_gone_keep_their_timeout_or_end_when_the_cluster_is_lost():
    # A real (local) Ray whose GCS is killed: ray.nodes(), the first .remote() of a
    # function or an actor class would wait until Ray ends the process; zoo_ray's
    # node_table() keeps its timeout, and every such call without one ends when the
    # keeper says the cluster is lost.
    result = run_python(textwrap.dedent("""
        import json, os, threading, time
        import psutil, ray
        from zoo_ray.errors import ClusterLostError
        from zoo_ray.driver_guard import (_waiting_calls, cluster_lost, node_table,
                                           watch_driver_calls)

        ray.init(num_cpus=1, include_dashboard=False, logging_level="ERROR")
        watch_driver_calls()
        keys = ["NodeID", "Alive", "NodeManagerAddress", "NodeManagerPort",
                "ObjectStoreSocketName", "Resources"]
        same = [{k: n[k] for k in keys} for n in ray.nodes()] == node_table()
        answered = ray.get(ray.remote(lambda: "first .remote() answers").remote())
        ours = psutil.Process().children(recursive=True)
        for gcs in (p for p in ours if p.name() == "gcs_server"):
            gcs.kill()
            gcs.wait(5)
        started = time.monotonic()
        try:
            node_table(timeout=2)
            timed_out = "answered"
        except ray.exceptions.RpcError:
            timed_out = round(time.monotonic() - started, 1)

        class Never:
            pass
        calls = {"node_table": node_table, "ray.nodes": ray.nodes,
                 "function": lambda: ray.remote(lambda: 1).remote(),
                 "actor class": lambda: ray.remote(Never).remote()}
        told = {}

        def call(name):
            try:
                calls[name]()
            except ClusterLostError as exc:
                told[name] = str(exc)
        threads = [threading.Thread(target=call, args=(name,)) for name in calls]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while _waiting_calls() < len(calls) and time.monotonic() < deadline:
            time.sleep(0.1)
        started = time.monotonic()
        with cluster_lost("cluster gone", "lost while waiting", timeout=30) as waiting:
            ended = _waiting_calls()
        for thread in threads:
            thread.join(30)
        print(json.dumps({"same": same, "answered": answered, "timed out": timed_out,
                          "waiting": waiting, "left": ended, "told": told,
                          "took": time.monotonic() - started}), flush=True)
        for process in ours:  # this interpreter's own Ray, its GCS gone (and reaped)
            if process.is_running():
                process.kill()
        os._exit(0)
    """), timeout=180)
    lines = result.stdout.splitlines()
    assert lines and lines[0].startswith("{"), result.stdout + result.stderr[-3000:]
    seen = json.loads(lines[0])
    assert seen["same"] is True and seen["answered"] == "first .remote() answers"
    # Ray's client ends a request that timed out at its next channel check (each second).
    assert isinstance(seen["timed out"], float) and 2 <= seen["timed out"] < 8
    assert (seen["waiting"], seen["left"]) == (4, 0)
    assert seen["told"] == {name: "cluster gone" for name in
                            ("node_table", "ray.nodes", "function", "actor class")}
    assert seen["took"] < 8  # each looks at the keeper's word between slices
