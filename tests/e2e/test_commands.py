"""The ``zoo-ray`` commands a user runs on the gateway, end to end on the local Hadoop:
submit (exit code, Ctrl-C), status, stop and pack. The three applications the tests check
start at once (``ahead``), as three users' would."""
from __future__ import annotations

import json
import signal
import sys
import textwrap

import pytest
from tests.e2e.helpers import (
    SUBMIT_SIZE,
    all_gone,
    end_program,
    program_env,
    ray_pids,
    submit_in_background,
    zoo_ray_cli,
)

from zoo_ray.applications import AppRecord
from zoo_ray.yarn import FINAL_STATES

#: An ordinary Ray script: nothing of zoo_ray in it.
_SCRIPT = textwrap.dedent("""
    import json, os, socket, sys
    import ray

    ray.init()

    @ray.remote(num_cpus=1)
    def where(i):
        return i * i, os.environ.get("CONTAINER_ID")

    results = ray.get([where.remote(i) for i in range(6)])
    with open(sys.argv[1], "w") as out:
        json.dump({"argv": sys.argv[1:], "squares": [r[0] for r in results],
                   "containers": sorted({r[1] for r in results if r[1]})}, out)
    sys.exit(int(sys.argv[2]))
""")

#: A script that reports its application, then waits to be interrupted or stopped.
_WAITER = textwrap.dedent("""
    import json, time
    import ray
    from pyspark import SparkContext

    ray.init()
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    print(json.dumps({"app": SparkContext._active_spark_context.applicationId}), flush=True)
    while True:  # started with the module's first test: as long as the tests take
        time.sleep(60)
""")


@pytest.fixture
def cli_env(cluster):
    return program_env(cluster)


def _submit(cluster, tmp, _cleanup):
    script = tmp / "job.py"
    script.write_text(_SCRIPT)
    out = tmp / "out.json"
    return zoo_ray_cli(["submit", *SUBMIT_SIZE, str(script), str(out), "3"],
                       program_env(cluster)), out


def _start_waiter(cluster, tmp, cleanup):
    """``zoo-ray submit`` of a script that waits: the CLI, its application, and ``tmp``
    (where its stderr goes). The CLI ends with the module at the latest."""
    script = tmp / "waiter.py"
    script.write_text(_WAITER)
    proc, line = submit_in_background(script, program_env(cluster), tmp / "submit.err",
                                      cleanup)
    return proc, line["app"], tmp


AHEAD = {"test_submit_runs_an_unchanged_ray_script_and_exits_with_its_code": _submit,
         "test_status_shows_the_application_and_its_ray_nodes_and_ctrl_c_stops_it":
             _start_waiter,
         "test_stop_kills_the_application_and_its_ray_nodes": _start_waiter}


def test_submit_runs_an_unchanged_ray_script_and_exits_with_its_code(cluster, ahead_result):
    result, out = ahead_result
    assert result.returncode == 3, result.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["argv"] == [str(out), "3"]
    assert report["squares"] == [i * i for i in range(6)]
    # The CPU tasks ran in the executors' Ray nodes (the gateway's node offers no CPUs).
    assert report["containers"] and all(c.startswith("container_") for c in report["containers"])
    apps = [a for a in cluster.resource_manager.apps() if a["name"] == "zoo-ray submit job.py"]
    # container_<cluster>_<app>_<attempt>_<n>: the application the tasks ran in.
    ran_in = {"application_" + "_".join(c.split("_")[-4:-2]) for c in report["containers"]}
    assert len(ran_in) == 1
    ran = [a for a in apps if a["id"] in ran_in]
    assert len(ran) == 1 and ran[0]["state"] in FINAL_STATES
    assert "zoo_ray" in ran[0]["applicationTags"].split(",")
    assert AppRecord.read(ran[0]["id"]) is None, "the record goes with the RayContext"
    # Another application only when Spark's UI lost its race with the ApplicationMaster
    # and the first one was killed for it (spark_start._new_context).
    for other in (a for a in apps if a["id"] not in ran_in):
        assert other["state"] == "KILLED", other
        assert "Spark's UI failed to start" in other["diagnostics"], other
        assert "starting the application again" in result.stderr


def test_status_shows_the_application_and_its_ray_nodes_and_ctrl_c_stops_it(
        cluster, cli_env, ahead_result):
    proc, app_id, tmp_path = ahead_result
    try:
        pids = ray_pids(app_id)
        status = zoo_ray_cli(["status"], cli_env, timeout=60)
        assert status.returncode == 0, status.stderr
        report = {a["id"]: a for a in json.loads(status.stdout)}[app_id]
        assert report["state"] == "RUNNING"
        # zoo_ray's default: Spark's ApplicationMaster in the driver, no container of its own.
        assert report["app_master"] == "driver"
        roles = sorted(c["role"] for c in report["containers"])
        assert roles == ["executor", "executor"]
        ray_nodes = report["ray"]["nodes"]
        assert sorted(n["role"] for n in ray_nodes) == ["head", "worker"]
        executors = {c["container"] for c in report["containers"] if c["role"] == "executor"}
        assert {n["container"] for n in ray_nodes} == executors
        one = zoo_ray_cli(["status", app_id], cli_env, timeout=60)
        assert [a["id"] for a in json.loads(one.stdout)] == [app_id]

        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=180) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert all_gone(pids), "Ctrl-C leaves no Ray process"
    assert cluster.resource_manager.app(app_id)["state"] in FINAL_STATES
    assert "interrupted" in (tmp_path / "submit.err").read_text()


def test_stop_kills_the_application_and_its_ray_nodes(cluster, cli_env, ahead_result):
    proc, app_id, _ = ahead_result
    try:
        pids = ray_pids(app_id)
        result = zoo_ray_cli(["stop", app_id], cli_env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == f"{app_id}: KILLED"
        assert cluster.resource_manager.app(app_id)["state"] == "KILLED"
        assert all_gone(pids), "the executors' and the gateway's Ray nodes are gone"
        assert AppRecord.read(app_id) is None
        listed = json.loads(zoo_ray_cli(["status"], cli_env, timeout=60).stdout)
        assert app_id not in [a["id"] for a in listed]
    finally:
        end_program(proc)


def test_pack_packs_and_uploads_once(cluster, cli_env):
    first = zoo_ray_cli(["pack"], cli_env, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    entry = json.loads(first.stdout)
    assert entry["kind"] == "venv" and entry["prefix"] == sys.prefix and entry["layered"]
    assert entry["bytes"] > 10 * 2**20
    assert entry["bytes"] == sum(part["bytes"] for part in entry["parts"])
    # Ray, pyarrow and the other large distributions each in a layer of their own.
    assert len(entry["parts"]) > 5, entry["parts"]
    assert all(part["remote"].startswith("hdfs://") and part["remote"].endswith(".tar.gz")
               for part in entry["parts"])
    again = zoo_ray_cli(["pack"], cli_env, timeout=900)
    assert json.loads(again.stdout) == entry
    assert "Reusing" in again.stderr and "Uploading" not in again.stderr


def test_errors_are_one_line_with_the_fix(cli_env, tmp_path):
    missing = zoo_ray_cli(["submit", str(tmp_path / "nope.py")], cli_env, timeout=60)
    assert missing.returncode == 2
    assert missing.stderr.startswith("zoo-ray: error: No script") and "Traceback" not in (
        missing.stderr)
    no_conf = {k: v for k, v in cli_env.items() if k != "HADOOP_CONF_DIR"}
    status = zoo_ray_cli(["status"], no_conf, timeout=60)
    assert status.returncode == 2 and "HADOOP_CONF_DIR" in status.stderr
    assert "Traceback" not in status.stderr
