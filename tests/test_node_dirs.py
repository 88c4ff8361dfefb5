"""Where a Ray node keeps its files: the container's directory, or under a user's root
(pure file logic; the e2e tests run nodes under a root)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from zoo_ray.node_dirs import NodeDirs, node_dir_name
from zoo_ray.protocol import STATE_DIR, ManagerState, NodeSpec


def _spec(tmp_path, **overrides):
    base = dict(role="worker", app_id="application_1_0001", token="t" * 43, num_cpus=1,
                work_dir=str(tmp_path / "container"), log_dir=str(tmp_path / "logs"))
    return NodeSpec(**{**base, **overrides})


@pytest.fixture(autouse=True)
def _in_a_container(monkeypatch):
    monkeypatch.setenv("CONTAINER_ID", "container_1_0001_01_000002")


def test_without_a_root_both_live_in_the_container(tmp_path):
    state = tmp_path / "container" / STATE_DIR
    dirs = NodeDirs.for_spec(_spec(tmp_path), state)
    assert (dirs.ray_dir, dirs.spill_dir, dirs.rooted) == (state / "ray", state / "spill", ())
    assert dirs.prepare() is None
    assert dirs.ray_dir.is_dir() and dirs.spill_dir.is_dir()
    dirs.remove()
    assert dirs.ray_dir.is_dir(), "YARN removes the container's directory, not zoo_ray"


def test_under_a_root_each_node_has_a_directory_named_for_its_application_and_container(
        tmp_path):
    root, spill = tmp_path / "root", tmp_path / "spill"
    root.mkdir()
    spill.mkdir()
    state = tmp_path / "container" / STATE_DIR
    name = "zoo-ray-application_1_0001-container_1_0001_01_000002"
    assert node_dir_name("application_1_0001") == name
    dirs = NodeDirs.for_spec(_spec(tmp_path, temp_root=str(root)), state)
    assert (dirs.ray_dir, dirs.spill_dir, dirs.rooted) == (
        root / name, root / name / "spill", (root / name,))
    both = NodeDirs.for_spec(_spec(tmp_path, temp_root=str(root), spill_root=str(spill)), state)
    assert both.rooted == (root / name, spill / name)
    assert both.prepare() is None
    assert oct((root / name).stat().st_mode & 0o777) == "0o700"
    both.record(ManagerState(pid=os.getpid(), app_id="application_1_0001", role="worker",
                             temp_dir="/tmp/x", host=socket.gethostname()))
    assert ManagerState.read(root / name).pid == os.getpid()
    assert ManagerState.read(spill / name).host == socket.gethostname()
    both.remove()
    both.remove()  # idempotent
    assert list(root.iterdir()) == [] and list(spill.iterdir()) == []


def test_the_gateway_s_node_is_named_for_its_driver(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTAINER_ID")
    assert node_dir_name("application_1_0001") == (
        f"zoo-ray-application_1_0001-driver-{os.getpid()}@{socket.gethostname()}")


def test_a_missing_root_is_a_failure_naming_it_and_the_host(tmp_path):
    missing = tmp_path / "no-such-root"
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    for spec in (_spec(tmp_path, temp_root=str(missing)),
                 _spec(tmp_path, spill_root=str(a_file))):
        failure = NodeDirs.for_spec(spec, tmp_path / "container" / STATE_DIR).prepare()
        assert failure is not None and failure.kind == "dirs"
        assert "does not exist" in failure.message
        assert socket.gethostname() in failure.message
    assert not missing.exists()


def test_the_manager_answers_a_missing_root_before_starting_ray(tmp_path):
    spec = _spec(tmp_path, role="head", temp_root=str(tmp_path / "no-such-root"))
    (tmp_path / "logs").mkdir()
    proc = subprocess.run([sys.executable, "-m", "zoo_ray.manager"], input=spec.to_json() + "\n",
                          capture_output=True, text=True, timeout=60)
    kind, _, payload = proc.stdout.partition(" ")
    assert (proc.returncode, kind) == (1, "ERROR"), proc.stdout + proc.stderr
    answer = json.loads(payload)
    assert answer["kind"] == "dirs" and "temp-dir" in answer["message"]
    assert "started ray node" not in (tmp_path / "logs" / "ray_manager.log").read_text()
