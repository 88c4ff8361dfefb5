"""Start slots on one host (zoo_ray.start_slots): real flocks, real processes as holders."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from zoo_ray.start_slots import SLOTS_DIR_ENV, slot_count, slots_dir, start_slot


def test_no_more_starts_hold_a_slot_at_once_than_there_are_slots(tmp_path):
    where = tmp_path / "slots"
    with start_slot(5, slots=2, directory=where) as first, \
            start_slot(5, slots=2, directory=where) as second:
        began = time.monotonic()
        with start_slot(0.6, slots=2, directory=where) as third:
            waited = time.monotonic() - began
    assert (first, second, third) == (True, True, False)
    assert waited >= 0.6
    # Both freed as their blocks ended.
    with start_slot(0, slots=2, directory=where) as again:
        assert again


def test_a_waiting_start_takes_the_slot_as_soon_as_its_holder_is_done(tmp_path):
    where = tmp_path / "slots"
    held = threading.Event()

    def hold_for_a_second() -> None:
        with start_slot(5, slots=1, directory=where):
            held.set()
            time.sleep(1.0)

    holder = threading.Thread(target=hold_for_a_second)
    holder.start()
    assert held.wait(5)
    began = time.monotonic()
    with start_slot(30, slots=1, directory=where) as got:
        waited = time.monotonic() - began
    holder.join()
    assert got
    assert 0.5 <= waited < 10


def test_a_holder_killed_with_sigkill_frees_its_slot(tmp_path):
    where = tmp_path / "slots"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pathlib import Path\n"
         "from zoo_ray.start_slots import start_slot\n"
         "with start_slot(5, slots=1, directory=Path(sys.argv[1])) as got:\n"
         "    print(got, flush=True)\n"
         "    time.sleep(600)\n", str(where)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "True"
        with start_slot(0.3, slots=1, directory=where) as got:
            assert not got  # the holder's
        holder.kill()
        holder.wait(10)
        with start_slot(0, slots=1, directory=where) as got:
            assert got
    finally:
        holder.kill()
        holder.wait(10)


def test_a_stopping_manager_stops_waiting(tmp_path):
    where = tmp_path / "slots"
    stop = threading.Event()
    with start_slot(5, slots=1, directory=where):
        threading.Timer(0.3, stop.set).start()
        began = time.monotonic()
        with start_slot(60, give_up=stop.is_set, slots=1, directory=where) as got:
            waited = time.monotonic() - began
    assert not got
    assert 0.3 <= waited < 5


def test_a_manager_stopped_while_waiting_for_a_slot_starts_no_ray(tmp_path, monkeypatch):
    from contextlib import ExitStack

    from zoo_ray.manager import NodeStartError, RayManager
    from zoo_ray.protocol import NodeSpec

    where = tmp_path / "slots"
    monkeypatch.setenv(SLOTS_DIR_ENV, str(where))
    spec = NodeSpec(role="head", app_id="application_test", token="t" * 43, num_cpus=1,
                    work_dir=str(tmp_path / "node"), log_dir=str(tmp_path / "logs"))
    manager = RayManager(spec)
    with ExitStack() as held:  # every slot of the host taken
        assert all(held.enter_context(start_slot(5, directory=where))
                   for _ in range(slot_count()))
        threading.Timer(0.5, manager.stop).start()
        began = time.monotonic()
        with pytest.raises(NodeStartError, match="stopped while waiting for a start slot"):
            manager.launch()
    assert time.monotonic() - began < 10
    assert manager.proc is None  # no `ray start`


def test_a_directory_others_may_write_holds_no_slots(tmp_path, caplog):
    shared = tmp_path / "slots"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    began = time.monotonic()
    with start_slot(30, slots=1, directory=shared) as got:
        assert not got
    assert time.monotonic() - began < 5
    assert not list(shared.iterdir())
    assert "not a directory of this user's alone" in caplog.text
    assert SLOTS_DIR_ENV in caplog.text


def test_a_link_where_the_slots_directory_should_be_holds_no_slots(tmp_path, caplog):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    link = tmp_path / "slots"
    link.symlink_to(elsewhere)
    with start_slot(30, slots=1, directory=link) as got:
        assert not got
    assert not list(elsewhere.iterdir())
    assert "not a directory of this user's alone" in caplog.text


def test_the_slots_directory_is_the_users_own_unless_set(monkeypatch):
    import os

    monkeypatch.delenv(SLOTS_DIR_ENV, raising=False)
    assert slots_dir() == Path(f"/tmp/zoo-ray-starts-{os.getuid()}")
    monkeypatch.setenv(SLOTS_DIR_ENV, "/somewhere/else")
    assert slots_dir() == Path("/somewhere/else")
    assert 1 <= slot_count() <= (os.cpu_count() or 1)
