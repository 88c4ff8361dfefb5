"""The RayManager process on its own (no cluster): its answers and what it refuses."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time

from zoo_ray.protocol import NodeSpec


def _spec(tmp_path, **overrides):
    base = dict(role="head", app_id="application_test", token="t" * 43, num_cpus=1,
                work_dir=str(tmp_path), log_dir=str(tmp_path / "logs"))
    return NodeSpec(**{**base, **overrides})


def test_spec_round_trips_and_hides_the_token_from_repr(tmp_path):
    spec = _spec(tmp_path, extra_params={"resources": '{"ssd": 1}'})
    assert NodeSpec.from_json(spec.to_json()) == spec
    assert "t" * 43 not in repr(spec)


def test_an_object_store_larger_than_free_shm_is_refused_before_starting_ray(tmp_path):
    too_big = shutil.disk_usage("/dev/shm").free + 2**30
    spec = _spec(tmp_path, object_store_memory=too_big)
    proc = subprocess.run([sys.executable, "-m", "zoo_ray.manager"], input=spec.to_json() + "\n",
                          capture_output=True, text=True, timeout=60)
    kind, _, payload = proc.stdout.partition(" ")
    assert (proc.returncode, kind) == (1, "ERROR")
    answer = json.loads(payload)
    assert answer["kind"] == "shm" and "/dev/shm" in answer["message"]
    assert not (tmp_path / ".zoo_ray" / "auth_token").exists()
    assert "t" * 43 not in (tmp_path / "logs" / "ray_manager.log").read_text()


def test_ray_logs_are_copied_flat_where_yarn_log_aggregation_finds_them(tmp_path):
    from zoo_ray.manager import RayManager

    (tmp_path / "logs").mkdir()
    manager = RayManager(_spec(tmp_path))
    for session, text in (("session_2026-01-01_00-00-00_1", "first"),
                          ("session_2026-01-01_00-05-00_2", "second")):
        logs = manager.ray_dir / session / "logs"
        (logs / "events").mkdir(parents=True)
        (logs / "raylet.out").write_text(text)
        (logs / "events" / "event_RAYLET.log").write_text(text)
    (manager.ray_dir / "session_latest").symlink_to(manager.ray_dir / session)
    manager.dirs.copy_logs(tmp_path / "logs")
    copied = {p.name: p.read_text() for p in (tmp_path / "logs").iterdir()}
    assert copied == {"ray-raylet.out": "second", "ray-events_event_RAYLET.log": "second",
                      "ray0-raylet.out": "first", "ray0-events_event_RAYLET.log": "first"}


def test_only_a_head_gets_metrics_ports_of_its_own_and_never_ray_s_fixed_ones(tmp_path):
    from zoo_ray.manager import RayManager

    head = RayManager(_spec(tmp_path / "head")).ray_env()
    ports = {int(head["AUTOSCALER_METRIC_PORT"]), int(head["DASHBOARD_METRIC_PORT"])}
    assert len(ports) == 2 and not ports & {44217, 44227}
    worker = RayManager(_spec(tmp_path / "worker", role="worker")).ray_env()
    assert "AUTOSCALER_METRIC_PORT" not in worker and worker["RAY_AUTH_MODE"] == "token"
    mine = RayManager(_spec(tmp_path / "mine", env={"AUTOSCALER_METRIC_PORT": "9999"}))
    assert mine.ray_env()["AUTOSCALER_METRIC_PORT"] == "9999"  # the user's env wins
    taken = [*mine.ports.values()]
    assert len(set(taken)) == len(taken) == 8


def test_a_start_ends_when_the_process_it_serves_is_gone(tmp_path):
    # A worker whose head never answers, serving a driver that dies meanwhile: it must
    # answer at once, not keep waiting and retrying for ready_timeout per attempt.
    from zoo_ray.host import free_ports

    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3)"])
    spec = _spec(tmp_path, role="worker", head_address=f"127.0.0.1:{free_ports(1)[0]}",
                 watch_pid=driver.pid, ready_timeout=600)
    try:
        proc = subprocess.run([sys.executable, "-m", "zoo_ray.manager"],
                              input=spec.to_json() + "\n", capture_output=True, text=True,
                              timeout=120)
    finally:
        driver.wait()
    kind, _, payload = proc.stdout.partition(" ")
    assert (proc.returncode, kind) == (1, "ERROR"), proc.stderr
    assert f"pid {driver.pid}) is gone" in json.loads(payload)["message"]


def test_a_failed_start_nobody_waits_for_leaves_no_ray_process(tmp_path):
    # The head's port accepts, so `ray start` runs (and hangs, as no GCS answers); then the
    # driver dies and nobody reads the answer: the manager must still stop `ray start`.
    import socket

    import psutil

    head = socket.create_server(("127.0.0.1", 0))
    driver = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    spec = _spec(tmp_path, role="worker", head_address=f"127.0.0.1:{head.getsockname()[1]}",
                 watch_pid=driver.pid, ready_timeout=600)
    manager = subprocess.Popen([sys.executable, "-m", "zoo_ray.manager"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        manager.stdin.write(spec.to_json() + "\n")
        manager.stdin.close()
        log = tmp_path / "logs" / "ray_manager.log"
        for _ in range(600):  # until `ray start` runs (bounded: 60 s)
            if log.exists() and "started ray node" in log.read_text():
                break
            time.sleep(0.1)
        manager.stdout.close()  # the answer's reader is gone
        driver.kill()
        assert manager.wait(timeout=120) == 1
    finally:
        driver.kill()
        driver.wait()
        head.close()
        if manager.poll() is None:
            manager.kill()
    assert "started ray node" in log.read_text()
    ours = [p for p in psutil.process_iter(["cmdline"])
            if str(tmp_path) in " ".join(p.info["cmdline"] or [])]
    assert ours == [], [p.info["cmdline"][:4] for p in ours]


#: A stand-in for one of a Ray node's processes: notes when it is told to stop and when,
#: a moment later, it has (a real raylet takes that moment to end its workers).
_FAKE_RAY_PROCESS = """#!/bin/sh
now() { python3 -c 'import time; print(time.time())'; }
trap 'echo "term $(basename "$0") $(now)" >> "$STOP_LOG"; sleep 0.3;
      echo "exit $(basename "$0") $(now)" >> "$STOP_LOG"; exit 0' TERM
echo "ready $(basename "$0") $(now)" >> "$STOP_LOG"
while true; do sleep 0.05; done
"""

#: What the manager runs below it: ``ray start --block`` (signalled after the node's other
#: processes and before the GCS, as its own SIGTERM handler asks the GCS to drain the node)
#: and the node's processes.
_FAKES = ("ray-start", "gcs_server", "dashboard", "raylet")

_KILL_ALL = """
import os, subprocess, sys, time
from pathlib import Path
from zoo_ray.manager import RayManager
from zoo_ray.protocol import NodeSpec

fakes = Path(sys.argv[1])
manager = RayManager(NodeSpec.from_json(sys.stdin.read()))
manager.proc = subprocess.Popen([str(fakes / "ray-start")])
for name in ("gcs_server", "dashboard", "raylet"):
    subprocess.Popen([str(fakes / name)])
log = Path(os.environ["STOP_LOG"])
for _ in range(300):  # until each has set its trap (bounded: 30 s)
    if log.exists() and log.read_text().count("ready ") == 4:
        break
    time.sleep(0.1)
else:
    sys.exit("the fake Ray processes did not start within 30 s")
manager.kill_node(grace=30)
"""


def test_a_node_stops_as_ray_stop_stops_it_the_raylet_first_and_the_gcs_last(tmp_path):
    # Signalled together, a real raylet waits 10 s for its agents to answer, and the
    # autoscaler's monitor for the GCS, and `ray start` for the GCS to drain its node; the
    # order makes a node stop in seconds.
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    for name in _FAKES:
        (fakes / name).write_text(_FAKE_RAY_PROCESS)
        (fakes / name).chmod(0o755)
    log = tmp_path / "stopped"
    proc = subprocess.run([sys.executable, "-c", _KILL_ALL, str(fakes)],
                          input=_spec(tmp_path).to_json(), capture_output=True, text=True,
                          timeout=120, env={**os.environ, "STOP_LOG": str(log)})
    assert proc.returncode == 0, proc.stderr
    when = {(event, name): float(at) for event, name, at in
            (line.split() for line in log.read_text().splitlines()) if event != "ready"}
    assert len(when) == 2 * len(_FAKES), when
    # Each round is told to stop only once the one before it has.
    assert when["exit", "raylet"] < when["term", "dashboard"]
    assert when["exit", "dashboard"] < when["term", "ray-start"]
    assert when["exit", "ray-start"] < when["term", "gcs_server"]
