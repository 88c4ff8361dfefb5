"""A user's root for the nodes' Ray temp and spill dirs (``RayContext(temp_dir=...)``,
Analytics Zoo's ``extra_params={"temp-dir": ...}``), on the shared application before
its RayContext starts (``no_ray_context``)."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
from tests.e2e import scenarios
from tests.e2e.helpers import SHARED_SPARK_ARGS, wait_until, zoo_ray_processes

from zoo_ray import RayContext
from zoo_ray.errors import RayContextError

ray = pytest.importorskip("ray")

EXECUTORS = SHARED_SPARK_ARGS["num_executors"]


def _node_dir(node: dict) -> Path:
    """Where a node's short temp-dir link points."""
    return Path(os.path.realpath(node["temp_dir"]))


def test_nodes_keep_their_files_under_the_root_a_restarted_one_too_and_stop_removes_them(
        no_ray_context, tmp_path):
    sc = no_ray_context
    root = tmp_path / "hello"
    root.mkdir()
    ctx = RayContext(sc, object_store_memory="128m", extra_params={"temp-dir": f"{root}/"})
    try:
        info = ctx.init()
        ray.init()  # as an unchanged program would: joins through RAY_ADDRESS
        nodes = info["nodes"] + [info["gateway_node"]]
        app = sc.applicationId
        assert sorted(_node_dir(n) for n in nodes) == sorted(root.iterdir())
        for node in nodes:
            name = _node_dir(node).name
            assert name.startswith(f"zoo-ray-{app}-"), name
            # An executor's is named for its container, the gateway's for its driver: us.
            assert name.endswith(node["container"] or
                                 f"-driver-{os.getpid()}@{socket.gethostname()}"), name
            assert list(_node_dir(node).glob("session_2*")), "Ray's session is under the root"
        worker = info["nodes"][1]
        worker_dir = _node_dir(worker)
        scenarios.a_killed_raylet_is_restarted_and_its_node_reregisters(ctx, EXECUTORS)
        # The new node registered its object store under the worker's link (the scenario
        # checks that), and the link still leads into the same directory under the root.
        assert _node_dir(worker) == worker_dir
        store = [n["ObjectStoreSocketName"] for n in ray.nodes()
                 if n["Alive"] and n["ObjectStoreSocketName"].startswith(worker["temp_dir"])]
        assert len(store) == 1
        assert Path(os.path.realpath(store[0])).is_relative_to(worker_dir)
        assert Path(store[0]).exists()
        assert (worker_dir / "spill").is_dir()
    finally:
        ctx.stop()
    assert list(root.iterdir()) == [], "stop() removes every node's directory"
    wait_until(lambda: zoo_ray_processes(sc.applicationId) == [], 60, "no Ray process left")


def test_a_root_the_gateway_lacks_fails_init_before_anything_starts(no_ray_context, tmp_path):
    sc = no_ray_context
    missing = tmp_path / "no-such-root"
    ctx = RayContext(sc, object_store_memory="128m", temp_dir=str(missing))
    with pytest.raises(RayContextError, match="does not exist") as failure:
        ctx.init()
    message = str(failure.value)
    assert str(missing) in message and socket.gethostname() in message
    assert "pass another temp_dir" in message, "the message names the fix"
    assert not ctx.initialized and not missing.exists()
    assert zoo_ray_processes(sc.applicationId) == []


def test_a_root_the_executors_lack_fails_init_naming_each_of_them_and_leaves_nothing(
        no_ray_context, tmp_path, monkeypatch):
    # One host here: a root that exists for the driver (and its gateway node, which runs in
    # the driver's directory) but not for the executors' managers (in their containers'
    # directories) is one below each process's own working directory.
    sc = no_ray_context
    monkeypatch.chdir(tmp_path)
    (tmp_path / "only-here").mkdir()
    ctx = RayContext(sc, object_store_memory="128m", temp_dir="/proc/self/cwd/only-here")
    started = time.monotonic()
    with pytest.raises(RayContextError, match="cannot keep their files where asked") as failure:
        ctx.init()
    print(f"init failed after {time.monotonic() - started:.1f}s")
    message = str(failure.value)
    # Every executor that tried (the head's first: the workers wait for it, and stop
    # when it fails), each named with its container.
    executors = [line for line in message.splitlines() if line.startswith("container_")]
    assert 1 <= len(executors) <= EXECUTORS, message
    assert all("'/proc/self/cwd/only-here' does not exist" in line
               and socket.gethostname() in line for line in executors), message
    assert not ctx.initialized
    assert list((tmp_path / "only-here").iterdir()) == [], "the gateway's node went too"
    wait_until(lambda: zoo_ray_processes(sc.applicationId) == [], 60, "no Ray process left")
    assert sc.parallelize(range(4), 2).sum() == 6
