"""Sweeping what killed zoo_ray processes left in a host's temp directory (pure file logic;
the e2e kill tests check it on real leftovers)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from zoo_ray import leftovers
from zoo_ray.protocol import STATE_DIR, ManagerState, NodeDirsRecord


@pytest.fixture()
def tmp(tmp_path, monkeypatch):
    """A private temp dir and link root, so the test sees only its own entries."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(leftovers, "_LINK_ROOT", tmp_path)
    return tmp_path


@pytest.fixture()
def sleeper():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture()
def dead_pid():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


#: A PID no process can have.
NEVER = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1


def _work_dir(tmp, pid, manager_pid=None, host=None):
    path = tmp / f"zoo-ray-driver-{pid}@{host or socket.gethostname()}-abc123"
    (path / STATE_DIR).mkdir(parents=True)
    (path / "logs").mkdir()
    (path / "logs" / "ray_manager.log").write_text("manager exits\n")
    if manager_pid is not None:
        ManagerState(pid=manager_pid, app_id="application_1_0001", role="gateway",
                     temp_dir="/tmp/x").write(path)
    return path


def test_a_dead_drivers_token_goes_and_a_live_ones_stays(tmp, dead_pid):
    directory = leftovers.driver_token_dir()
    assert directory == tmp / f"zoo-ray-{os.getuid()}"
    assert directory.stat().st_mode & 0o777 == 0o700
    dead = directory / f"driver-{leftovers.driver_tag(dead_pid)}.token"
    mine = directory / f"driver-{leftovers.driver_tag()}.token"
    other = directory / "notes.txt"
    # A temp dir shared with another host: its drivers' PIDs mean nothing here.
    elsewhere = directory / f"driver-{dead_pid}@another-host.token"
    for path in (dead, mine, other, elsewhere):
        path.write_text("x")
    assert leftovers.sweep() == [dead]
    assert not dead.exists() and mine.exists() and other.exists() and elsewhere.exists()


def test_a_dead_drivers_work_dir_goes_unless_its_gateway_manager_still_runs(
        tmp, dead_pid, sleeper):
    gone = _work_dir(tmp, dead_pid)
    finishing = _work_dir(tmp, NEVER, manager_pid=sleeper)
    manager_died = _work_dir(tmp, NEVER + 1, manager_pid=dead_pid)
    live = _work_dir(tmp, os.getpid())
    elsewhere = _work_dir(tmp, dead_pid, host="another-host")
    assert sorted(leftovers.sweep()) == sorted([gone, manager_died])
    assert finishing.exists() and live.exists() and elsewhere.exists()
    assert not gone.exists() and not manager_died.exists()


def test_the_drivers_work_dir_is_named_for_its_pid_and_kept_while_it_lives(tmp):
    work_dir = leftovers.driver_work_dir()
    try:
        assert os.path.basename(work_dir.name).startswith(
            f"zoo-ray-driver-{os.getpid()}@{socket.gethostname()}-")
        assert leftovers.sweep() == []
    finally:
        work_dir.cleanup()


def test_only_dangling_node_links_go(tmp):
    target = tmp / "container" / "ray"
    target.mkdir(parents=True)
    kept = leftovers.node_temp_link(target)
    kept.symlink_to(target)
    gone_target = tmp / "deleted" / "ray"
    gone_target.mkdir(parents=True)
    dangling = leftovers.node_temp_link(gone_target)
    dangling.symlink_to(gone_target)
    gone_target.rmdir()
    not_ours = tmp / "zoo-ray-elsewhere"
    not_ours.symlink_to(tmp / "nothing")
    directory = tmp / "zoo-ray-0123456789ab"
    directory.mkdir()
    assert leftovers.sweep() == [dangling]
    assert kept.is_symlink() and not_ours.is_symlink() and directory.is_dir()
    assert not dangling.is_symlink()


def test_a_gateway_link_into_a_swept_work_dir_goes_with_it(tmp, dead_pid):
    work_dir = _work_dir(tmp, dead_pid)
    ray_dir = work_dir / STATE_DIR / "ray"
    ray_dir.mkdir()
    link = leftovers.node_temp_link(ray_dir)
    link.symlink_to(ray_dir.resolve())
    assert sorted(leftovers.sweep()) == sorted([work_dir, link])
    assert not link.is_symlink()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a link to another user needs root")
def test_another_users_dangling_link_stays(tmp):
    target = tmp / "gone" / "ray"
    link = leftovers.node_temp_link(target)
    link.symlink_to(target)
    os.lchown(link, 65534, 65534)
    assert leftovers.sweep() == [] and link.is_symlink()


def test_a_sweep_that_fails_is_logged_not_raised(tmp, monkeypatch, caplog):
    def refused():
        raise PermissionError(13, "Permission denied", str(tmp))

    dead = leftovers.driver_token_dir() / f"driver-{leftovers.driver_tag(NEVER)}.token"
    dead.write_text("x")
    monkeypatch.setattr(leftovers, "_sweep_work_dirs", refused)
    assert leftovers.sweep() == [dead]  # the other steps still ran
    assert "could not sweep" in caplog.text and "Permission denied" in caplog.text


def test_a_dead_managers_directories_under_a_root_go_with_its_link(tmp, dead_pid, sleeper):
    nodes = {}
    for name, pid, host in (("dead", dead_pid, socket.gethostname()),
                            ("alive", sleeper, socket.gethostname()),
                            ("elsewhere", dead_pid, "another-host")):
        path = tmp / "root" / f"zoo-ray-application_1_0001-container_{name}"
        spill = tmp / "spill" / path.name
        for directory in (path, spill):
            (directory / STATE_DIR).mkdir(parents=True)
        record = NodeDirsRecord(pid=pid, host=host, dirs=[str(path), str(spill)])
        record.path(path).write_text(record.to_json())
        leftovers.node_temp_link(path).symlink_to(path)
        nodes[name] = (path, spill, leftovers.node_temp_link(path))
    dead = nodes.pop("dead")
    assert sorted(leftovers.sweep()) == sorted(dead)
    assert not any(p.exists() or p.is_symlink() for p in dead)
    assert all(p.exists() for kept in nodes.values() for p in kept)
