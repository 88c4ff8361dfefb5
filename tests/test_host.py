"""The process, port and file helpers every part of zoo_ray shares."""
from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading
import time

import psutil
import pytest
from tests.fresh import run_python

from zoo_ray.host import (
    free_ports,
    node_ip,
    port_free,
    terminate,
    tree_rss,
    wait_until,
    write_private,
)


def test_wait_until_returns_the_first_truthy_result():
    calls = []

    def probe():
        calls.append(1)
        return len(calls) >= 3 and "ready"

    assert wait_until(probe, timeout=10, interval=0.01) == "ready" and len(calls) == 3


def test_wait_until_gives_none_at_the_timeout_and_lets_the_probe_end_it():
    assert wait_until(lambda: False, timeout=0.2, interval=0.05) is None

    def fails():
        raise RuntimeError("the daemon died")

    with pytest.raises(RuntimeError, match="died"):
        wait_until(fails, timeout=10)


def test_wait_until_stops_when_its_event_is_set():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    started = time.monotonic()
    assert wait_until(lambda: False, timeout=30, interval=5, stop=stop) is None
    assert time.monotonic() - started < 5


def _child(code, **kwargs):
    proc = subprocess.Popen([sys.executable, "-c", code], **kwargs)
    time.sleep(0.5)  # let it install its handler
    return psutil.Process(proc.pid), proc


def test_terminate_kills_what_ignores_sigterm_and_says_so():
    polite, _ = _child("import time; time.sleep(60)")
    stubborn, _ = _child(
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)")
    killed = terminate([polite, stubborn], grace=1)
    assert killed == [stubborn]
    # terminate reaped both, its own children.
    assert not psutil.pid_exists(polite.pid) and not psutil.pid_exists(stubborn.pid)


def test_terminate_a_group_reaches_its_grandchildren():
    code = ("import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', "
            "'import time; time.sleep(60)']); time.sleep(60)")
    leader, proc = _child(code, start_new_session=True)
    grandchild = leader.children()[0]
    assert terminate([leader], grace=5, group=True) == []
    _, alive = psutil.wait_procs([grandchild], timeout=10)
    assert alive == []


def test_free_ports_are_distinct_and_bindable():
    ports = free_ports(20, "127.0.0.1")
    assert len(set(ports)) == 20
    assert all(port_free("127.0.0.1", p) for p in ports)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports[0]))
        taken.listen()
        assert not port_free("127.0.0.1", ports[0])


def test_private_files_are_0600_from_the_start(tmp_path):
    path = tmp_path / "token"
    write_private(path, "secret")
    assert path.read_text() == "secret"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_terminate_counts_an_exited_process_another_parent_has_not_reaped_as_gone():
    # The middle process starts a child and never waits for it: once SIGTERMed, the
    # child stays a zombie of a process that is not ours.
    middle = subprocess.Popen([sys.executable, "-c", (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen(['sleep', '600'])\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(600)\n")], stdout=subprocess.PIPE, text=True)
    try:
        child = psutil.Process(int(middle.stdout.readline()))
        assert terminate([child], grace=10) == [], "gone at SIGTERM, not killed"
        assert child.status() == psutil.STATUS_ZOMBIE
    finally:
        middle.kill()
        middle.wait()


def test_the_package_imports_without_psutil_as_the_executor_daemon_does(tmp_path):
    # PySpark's worker daemon imports zoo_ray in the user's executor environment.
    blocker = tmp_path / "psutil.py"
    blocker.write_text("raise ImportError('no psutil here')\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-c", "import zoo_ray.executor_daemon, zoo_ray.host"],
        env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"},
        capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_node_ip_is_the_address_on_the_route_toward_the_given_host():
    assert node_ip(toward="127.0.0.1") == "127.0.0.1"
    assert node_ip(toward="127.0.0.2") == "127.0.0.1"  # loopback's own source address


def test_tree_rss_counts_every_process_below_the_root():
    before, processes_before = tree_rss(os.getpid())
    # A grandchild holding 200 MiB, touched: what a Ray worker below the executor JVM does.
    code = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
            "\"b = bytearray(200 * 2**20); import sys; print('held', flush=True); "
            "sys.stdin.read()\"])")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "held"
        after, processes_after = tree_rss(os.getpid())
    finally:
        child.stdin.close()
        child.wait(30)
    assert processes_after == processes_before + 2
    assert after - before >= 200 * 2**20


def test_tree_rss_of_a_process_that_is_gone_is_nothing():
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    assert tree_rss(gone.pid) == (0, 0)


def test_tree_rss_of_a_zombie_is_nothing():
    # An executor JVM YARN killed, not yet reaped: its memory is gone, not "0 MB used".
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, 30)
    try:
        assert tree_rss(zombie.pid) == (0, 0)
    finally:
        zombie.wait()


_SPAWNS_WHEN_STOPPED = """
import signal, subprocess, sys, time
def spawn(*_):
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    sys.exit(0)
signal.signal(signal.SIGTERM, spawn)
print("ready", flush=True)
time.sleep(60)
"""


def test_kill_descendants_also_takes_what_a_dying_child_started():
    # A subreaper whose child, told to stop, starts another process and exits (as a
    # raylet may start a worker as it dies): that one is re-parented to the subreaper.
    result = run_python(textwrap.dedent(f"""
        import subprocess, sys
        import psutil
        from zoo_ray.host import become_subreaper, kill_descendants
        assert become_subreaper()
        child = subprocess.Popen([sys.executable, "-c", {_SPAWNS_WHEN_STOPPED!r}],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\\n"
        kill_descendants(grace=5)
        print(len(psutil.Process().children(recursive=True)))
    """))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0"]
