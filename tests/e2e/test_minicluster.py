"""The local Hadoop, proven on its real daemons."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from tests.e2e.helpers import assert_stop_leaves_alone

from zoo_ray.errors import (
    DaemonStartError,
    JavaNotFoundError,
    MavenNotFoundError,
    MiniClusterStateError,
    PortInUseError,
)
from zoo_ray.minicluster import MiniCluster, MiniClusterSpec
from zoo_ray.minicluster.daemons import SMALL_BOX_JVM
from zoo_ray.minicluster.teardown import stray_processes
from zoo_ray.yarn import FINAL_STATES

ZOO_RAY = [sys.executable, "-m", "zoo_ray.cli"]


def _executor_container(_):
    return os.environ["CONTAINER_ID"], f"{os.environ['NM_HOST']}:{os.environ['NM_PORT']}"


def _wait_final(rm, app_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        app = rm.app(app_id)
        if app["state"] in FINAL_STATES:
            return app
        time.sleep(0.5)
    raise AssertionError(f"{app_id} did not end within {timeout}s: {rm.app(app_id)}")


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def test_cluster_is_ready_with_every_nodemanager(cluster):
    nodes = cluster.resource_manager.nodes(states="RUNNING")
    assert len(nodes) == 2
    assert len({n["id"] for n in nodes}) == 2
    assert all(n["totalResource"]["memory"] == cluster.spec.nm_memory_mb for n in nodes)
    assert list(cluster.resource_manager.leaf_queues()) == ["adhoc", "batch", "default", "tiny"]
    assert cluster.fs("-test", "-d", "/") == ""  # HDFS answers and left safe mode


def test_spark_application_on_yarn_uses_both_nodemanagers_and_hdfs(cluster, spark_on_yarn,
                                                                  tmp_path):
    marker = f"zoo-ray-marker-{uuid.uuid4()}"
    local_input = tmp_path / "words.txt"
    local_input.write_text("alpha beta\nbeta gamma\ngamma gamma\n")
    hdfs_dir = f"/user/test/{marker}"
    cluster.fs("-mkdir", "-p", hdfs_dir)
    cluster.fs("-put", str(local_input), f"{hdfs_dir}/words.txt")

    # More than half a NodeManager per executor: two executors cannot share a node.
    executor_memory = f"{cluster.spec.nm_memory_mb // 2}m"
    with spark_on_yarn(
        **{"spark.executor.instances": "2", "spark.executor.cores": "1",
           "spark.executor.memory": executor_memory},
    ) as sc:
        app_id = sc.applicationId
        rm = cluster.resource_manager
        # An application zoo_ray did not start: `zoo-ray stop` leaves it alone.
        assert_stop_leaves_alone(cluster, app_id)
        seen = set(sc.parallelize(range(40), 40).map(_executor_container).collect())

        attempt = rm.app_attempts(app_id)[-1]
        containers = rm.containers(app_id, attempt["appAttemptId"])
        executor_nodes = {
            c["containerId"]: c["nodeId"] for c in containers
            if c["containerId"] != attempt["containerId"]
        }
        assert len(executor_nodes) == 2
        assert len(set(executor_nodes.values())) == 2, executor_nodes
        assert {cid for cid, _ in seen} == set(executor_nodes)
        # The NodeManagers give every container's JVM the local Hadoop's small-box options.
        jvm_options = sc.parallelize(range(4), 4).map(
            lambda _: os.environ.get("JAVA_TOOL_OPTIONS")).collect()
        assert set(jvm_options) == {" ".join(SMALL_BOX_JVM)}

        counts = (
            sc.textFile(f"{cluster.default_fs}{hdfs_dir}/words.txt")
            .flatMap(str.split).map(lambda w: (w, 1)).reduceByKey(lambda a, b: a + b)
            .map(lambda kv: f"{kv[0]} {kv[1]}")
        )
        counts.saveAsTextFile(f"{cluster.default_fs}{hdfs_dir}/counts")

        def shout(_):
            print(marker, file=sys.stderr, flush=True)
            return 1

        assert sc.parallelize(range(2), 2).map(shout).sum() == 2

    written = cluster.fs("-cat", f"{hdfs_dir}/counts/part-*")
    assert sorted(written.split("\n")) == sorted(["alpha 1", "beta 2", "gamma 3", ""])

    app = _wait_final(cluster.resource_manager, app_id)
    assert (app["state"], app["finalStatus"]) == ("FINISHED", "SUCCEEDED")

    logs = cluster.app_logs(app_id)
    assert marker in logs
    for container_id in executor_nodes:
        assert container_id in logs


def test_cli_status_and_up_reuse_the_running_cluster(cluster):
    pids_before = {name: d["pid"] for name, d in cluster.status()["daemons"].items()}

    # The session's spec, as its owner would start it: an up with another spec refuses.
    spec = cluster.spec
    up = subprocess.run(ZOO_RAY + ["minicluster", "up", "--dir", str(cluster.dir),
                                   "--nodemanagers", str(spec.nodemanagers),
                                   "--nm-memory-mb", str(spec.nm_memory_mb),
                                   "--nm-vcores", str(spec.nm_vcores),
                                   "--gpus", str(spec.gpus)],
                        capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert f"HADOOP_CONF_DIR={cluster.hadoop_conf_dir}" in up.stdout
    assert "Reusing" in up.stderr

    status = subprocess.run(ZOO_RAY + ["minicluster", "status", "--dir", str(cluster.dir)],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["running"] is True
    assert {name: d["pid"] for name, d in report["daemons"].items()} == pids_before
    assert [n["state"] for n in report["nodemanagers"]] == ["RUNNING", "RUNNING"]
    assert report["hadoop_conf_dir"] == str(cluster.hadoop_conf_dir)


def test_up_with_another_spec_while_running_says_so(cluster):
    other = MiniClusterSpec(nodemanagers=3)
    with pytest.raises(MiniClusterStateError, match="down"):
        MiniCluster(cluster.dir, spec=other).up()
    assert cluster.running


def _in_tmp() -> set[str]:
    """What Hadoop daemons write to /tmp by default: Jetty's web apps, the YARN stores."""
    return {p.name for p in Path("/tmp").iterdir()
            if p.name.startswith(("jetty-", "hadoop-yarn-"))}


@pytest.mark.slow  # a cold start of a local Hadoop of its own
def test_down_stops_every_daemon_and_frees_every_port(tmp_path):
    small = MiniCluster(tmp_path / "hadoop", spec=MiniClusterSpec(nodemanagers=1,
                                                                   nm_memory_mb=2048))
    before = _in_tmp()
    small.up()
    # Each web UI unpacked in the daemon's own temp dir, which goes with the cluster's.
    unpacked = {p.parent.name for p in (small.dir / "tmp" / "jvm").glob("*/jetty-*")}
    assert {"namenode", "datanode", "resourcemanager", "nodemanager0"} <= unpacked
    pids = [d["pid"] for d in small.status()["daemons"].values()]
    procs = [psutil.Process(pid) for pid in pids]
    family = procs + [c for p in procs for c in p.children(recursive=True)]
    ports = list(small.ports.values())
    assert len(pids) == 4
    assert all(_port_in_use(p) for p in (small.ports["nn_rpc"], small.ports["rm_web"]))

    result = subprocess.run(ZOO_RAY + ["minicluster", "down", "--dir", str(small.dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr

    leftovers = [p for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert leftovers == []
    assert [p for p in ports if _port_in_use(p)] == []
    assert small.status()["running"] is False
    assert _in_tmp() - before == set()
    small.down()  # a second down is harmless


def test_port_already_taken_is_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        base = blocker.getsockname()[1]
        cluster = MiniCluster(tmp_path / "hadoop", spec=MiniClusterSpec(base_port=base))
        with pytest.raises(PortInUseError, match=f"Port {base} .*--base-port"):
            cluster.up()
    assert cluster.status()["running"] is False


def test_daemon_dying_during_start_reports_its_log_and_stops_the_rest(tmp_path):
    spec = MiniClusterSpec(nodemanagers=1, heap_mb={"resourcemanager": 1})
    cluster = MiniCluster(tmp_path / "hadoop", spec=spec)
    with pytest.raises(DaemonStartError, match="(?s)resourcemanager exited.*heap"):
        cluster.up()
    assert cluster.status()["running"] is False
    state = json.loads((cluster.dir / "state.json").read_text())
    assert state["daemons"] == []
    assert stray_processes(cluster.dir) == []


def test_missing_java_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(JavaNotFoundError, match="JAVA_HOME"):
        MiniCluster(tmp_path / "hadoop").up()


def test_missing_maven_without_cached_jars_is_a_clear_error(tmp_path, monkeypatch):
    java = shutil.which("java")
    assert java, "the tests need a JDK"
    monkeypatch.setenv("JAVA_HOME", str(Path(os.path.realpath(java)).parent.parent))
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("ZOO_RAY_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(MavenNotFoundError, match="Install Maven"):
        MiniCluster(tmp_path / "hadoop").up()


_OWNER_SCRIPT = """
import sys, time
from zoo_ray.minicluster import MiniCluster, MiniClusterSpec
from zoo_ray.minicluster.daemons import SMALL_BOX_JVM
with MiniCluster(sys.argv[1], spec=MiniClusterSpec(nodemanagers=1, nm_memory_mb=2048)) as c:
    print("ready", flush=True)
    time.sleep(900)
"""


@pytest.mark.slow  # a cold start of a local Hadoop of its own
def test_killing_the_owner_process_stops_the_cluster(tmp_path):
    cluster_dir = tmp_path / "hadoop"
    owner = subprocess.Popen([sys.executable, "-c", _OWNER_SCRIPT, str(cluster_dir)],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout.readline().strip() == "ready"
        cluster = MiniCluster(cluster_dir)
        procs = [psutil.Process(d["pid"]) for d in cluster.status()["daemons"].values()]
        ports = list(cluster.ports.values())
        assert len(procs) == 4 and all(p.is_running() for p in procs)
    finally:
        owner.kill()
        owner.wait()

    gone, alive = psutil.wait_procs(procs, timeout=90)
    assert alive == []
    deadline = time.monotonic() + 30
    while cluster.started and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not cluster.started
    assert [p for p in ports if _port_in_use(p)] == []
