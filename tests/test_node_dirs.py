"""Where a Ray node keeps its files: the container's directory, or under a user's root
(pure file logic; the e2e tests run nodes under a root)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from zoo_ray import leftovers
from zoo_ray.node_dirs import NodeDirs, node_dir_name
from zoo_ray.protocol import STATE_DIR, NodeDirsRecord, NodeSpec


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
    for path in both.rooted:  # the record the sweep finds through the node's link
        record = NodeDirsRecord.read(path)
        assert (record.pid, record.host) == (os.getpid(), socket.gethostname())
        assert record.dirs == [str(root / name), str(spill / name)]
    both.remove()
    both.remove()  # idempotent
    assert list(root.iterdir()) == [] and list(spill.iterdir()) == []


def test_a_directory_someone_else_made_under_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    spec = _spec(tmp_path, temp_root=str(root))
    (root / node_dir_name(spec.app_id)).symlink_to(tmp_path)
    failure = NodeDirs.for_spec(spec, tmp_path / "container" / STATE_DIR).prepare()
    assert failure is not None and failure.kind == "dirs"
    assert "is not a directory" in failure.message


def test_the_gateway_s_node_is_named_for_its_driver(tmp_path, monkeypatch):
    monkeypatch.delenv("CONTAINER_ID")
    # The gateway's manager watches its driver: the directory is named for the driver.
    spec = _spec(tmp_path, temp_root=str(tmp_path), watch_pid=4242)
    assert NodeDirs.for_spec(spec, tmp_path).ray_dir.name == (
        f"zoo-ray-application_1_0001-driver-4242@{socket.gethostname()}")


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


def test_a_killed_manager_s_directory_under_a_root_is_swept_through_its_link(tmp_path):
    """A worker whose head never answers waits with its directory made and linked; killed
    with SIGKILL, it leaves both; any later sweep on the host removes them."""
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "logs").mkdir()
    spec = _spec(tmp_path, temp_root=str(root), head_address="127.0.0.1:9", ready_timeout=60)
    proc = subprocess.Popen([sys.executable, "-m", "zoo_ray.manager"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "CONTAINER_ID": "container_1_0001_01_000002"})
    try:
        proc.stdin.write(spec.to_json() + "\n")
        proc.stdin.close()
        node = root / "zoo-ray-application_1_0001-container_1_0001_01_000002"
        link = leftovers.node_temp_link(node)
        for _ in range(300):  # bounded: 30 s
            if link.is_symlink() and NodeDirsRecord.read(node) is not None:
                break
            time.sleep(0.1)
        assert link.is_symlink() and NodeDirsRecord.read(link).pid == proc.pid
        leftovers.sweep()
        assert node.is_dir() and link.is_symlink(), "a live manager's directory stays"
    finally:
        proc.kill()
        proc.wait()
    removed = leftovers.sweep()
    assert node in removed and link in removed
    assert not node.exists() and not link.is_symlink()


def test_a_raylet_that_gave_up_on_its_dashboard_agent_is_named_with_the_cause(tmp_path):
    dirs = NodeDirs.for_spec(_spec(tmp_path), tmp_path / "container" / STATE_DIR)
    assert dirs.prepare() is None
    assert dirs.raylet_abort() == ""  # no session yet
    session = dirs.ray_dir / "session_2026-12-08_01-05-03_252290_23300"
    (session / "logs").mkdir(parents=True)
    (dirs.ray_dir / "session_latest").symlink_to(session)
    raylet_err = session / "logs" / "raylet.err"
    raylet_err.write_text("[2026-12-08 01:05:33,983 I 24428 24428] (raylet) started\n")
    assert dirs.raylet_abort() == ""
    # As a CI run's raylet wrote it (the stack trace follows the fatal line).
    port_file = f"{session}/dashboard_agent_listen_port_9172205943"
    with raylet_err.open("a") as err:
        err.write(
            "[2026-12-08 01:05:49,520 C 24428 24428] (raylet) node_manager.cc:3588:  An "
            "unexpected system state has occurred. You have likely discovered a bug in Ray. "
            "Check failed: statussetor3588.has_value() Timed out waiting for file "
            f"{port_file}\n*** StackTrace Information ***\n/lib/libc.so.6(+0x2724a)\n")
    reason = dirs.raylet_abort()
    assert reason.startswith(f"the raylet aborted: Timed out waiting for file {port_file}")
    assert "dashboard agent took longer than the raylet's 15 s" in reason
    assert "likely short of CPU" in reason
    # A start that made no session of its own (ray start failed before): not its abort.
    assert dirs.raylet_abort(before=session.resolve()) == ""
    assert dirs.latest_session() == session.resolve()
