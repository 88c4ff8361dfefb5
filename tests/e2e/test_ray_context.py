"""RayContext on the local Hadoop: topology, ordinary Ray programs, the driver's faults, security.

The tests run on the session's shared application (``sc``, ``ray_ctx``); those that kill,
lose or stop Ray run after the others (``breakable_ray_ctx``). The bodies that
``test_isolated_hosts`` runs again on isolated hosts are in :mod:`tests.e2e.scenarios`. The
fault matrix (killed raylets and GCS, containers YARN kills, the head's executor lost, stop
and start again) runs once, there: on hosts of their own, as on a real cluster, rather than
again on this one host's NodeManagers.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from functools import partial
from pathlib import Path

import psutil
import pytest
from tests.e2e import scenarios
from tests.e2e.helpers import (
    SHARED_OBJECT_STORE,
    SHARED_SPARK_ARGS,
    alive_nodes,
    executor_nodes,
    process_name,
    ray_processes,
    start_driver,
    wait_app_end,
    wait_until,
    zoo_ray_processes,
)

from zoo_ray import RayContext
from zoo_ray.errors import (
    InvalidArgumentError,
    InvalidMemoryError,
    RayContextError,
    RayNodeStartError,
)
from zoo_ray.memory import RAY_PROCESS_MEMORY, parse_memory

ray = pytest.importorskip("ray")

EXECUTORS = SHARED_SPARK_ARGS["num_executors"]
CORES = SHARED_SPARK_ARGS["executor_cores"]


@pytest.mark.smoke
def test_one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx, sc):
    # The quick tier's one end-to-end test: init_spark_on_yarn, a RayContext, Ray tasks
    # pinned to every node, a Spark job over every slot.
    scenarios.one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx, sc)


def test_ray_managers_stay_in_the_executor_process_tree(ray_ctx, sc):
    # Every executor's manager and raylet, the head's GCS, the gateway's manager and raylet:
    # what the checks that a cluster has gone away count.
    counted = [process_name(p) for p in zoo_ray_processes(sc.applicationId)]
    assert counted.count("raylet") == EXECUTORS + 1, counted
    assert counted.count("gcs_server") == 1, counted
    for node in ray_ctx.address_info["nodes"]:
        manager = psutil.Process(node["pid"])
        executor = [p for p in manager.parents()
                    if "CoarseGrainedExecutorBackend" in " ".join(p.cmdline())]
        assert executor, f"manager {node['pid']} is not below its executor JVM"
        names = {process_name(p) for p in ray_processes(node["pid"])}
        assert {"raylet"} <= names
    head = ray_ctx.address_info["nodes"][0]
    assert "gcs_server" in {process_name(p) for p in ray_processes(head["pid"])}


def test_ordinary_ray_programs_run_on_the_cluster(ray_ctx):
    scenarios.ordinary_ray_programs_run_on_the_cluster()


def test_a_100mb_array_put_on_one_node_is_read_on_another(ray_ctx):
    nodes = list(executor_nodes())
    strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def produce():
        import numpy as np
        return [ray.put(np.ones(100 * 2**20 // 8)), ray.get_runtime_context().get_node_id()]

    @ray.remote(num_cpus=0)
    def consume(boxed):
        return float(ray.get(boxed[0]).sum()), ray.get_runtime_context().get_node_id()

    boxed = ray.get(produce.options(scheduling_strategy=strategy(nodes[0], soft=False)).remote())
    total, reader = ray.get(
        consume.options(scheduling_strategy=strategy(nodes[1], soft=False)).remote(boxed))
    assert total == 100 * 2**20 // 8
    assert boxed[1] == nodes[0] and reader == nodes[1] and nodes[0] != nodes[1]


def test_ray_admits_only_what_the_containers_hold_and_bounds_the_gateway_s_store(ray_ctx):
    # extra_executor_memory_for_ray, less the object store and 512m for Ray's processes.
    expected = (parse_memory(SHARED_SPARK_ARGS["extra_executor_memory_for_ray"])
                - parse_memory(SHARED_OBJECT_STORE) - RAY_PROCESS_MEMORY)
    assert RAY_PROCESS_MEMORY == 512 * 2**20 and expected > 128 * 2**20
    executor_ids = set(executor_nodes())
    alive = [n for n in ray.nodes() if n["Alive"]]
    offered = sorted(int(n["Resources"]["memory"]) for n in alive if n["NodeID"] in executor_ids)
    print(f"memory per executor node: {[m // 2**20 for m in offered]} MiB")
    assert len(offered) == EXECUTORS and all(abs(m - expected) < 2**20 for m in offered)
    gateway = [n for n in alive if n["NodeID"] not in executor_ids]
    assert len(gateway) == 1
    assert abs(gateway[0]["Resources"]["object_store_memory"] - 256 * 2**20) < 2**20

    # One CPU: only executors' nodes have CPUs (the gateway's node is the driver's).
    @ray.remote(memory=expected + 64 * 2**20, num_cpus=1)
    def more_than_a_container_holds():
        return "ran"

    ref = more_than_a_container_holds.remote()
    with pytest.raises(ray.exceptions.GetTimeoutError):
        ray.get(ref, timeout=15)  # infeasible: Ray leaves it pending instead of YARN killing it
    ray.cancel(ref, force=True)

    @ray.remote(memory=expected // 2, num_cpus=1)
    def fits():
        return "ran"

    assert ray.get(fits.remote(), timeout=60) == "ran"


def test_the_context_shows_its_application_its_pages_and_every_node(ray_ctx, sc, cluster):
    text = repr(ray_ctx)
    print(text)
    assert text.startswith(f"RayContext running: application {sc.applicationId} (RUNNING)")
    rows = [line.split() for line in text.splitlines() if line.strip().endswith(("yes", "LOST"))]
    assert len(rows) == EXECUTORS + 1 and all(row[-1] == "yes" for row in rows)
    for node in ray_ctx.nodes:
        assert any(node["node_ip"] in row and f"({node['container']})" in row for row in rows)
    assert [row[0] for row in rows].count("driver") == 1
    page = ray_ctx._repr_html_()
    rm = cluster.resource_manager.webapp_address
    yarn_page = f"http://{rm}/cluster/app/{sc.applicationId}"
    assert f'href="{yarn_page}"' in page
    assert f'href="http://{rm}/proxy/{sc.applicationId}/"' in page
    assert page.count("<tr>") == EXECUTORS + 2
    with urllib.request.urlopen(yarn_page, timeout=30) as response:
        assert sc.applicationId in response.read().decode()


def test_an_existing_program_calling_ray_init_runs_unchanged(ray_ctx):
    program = textwrap.dedent("""
        import ray, sys
        ray.init(address=sys.argv[1]) if len(sys.argv) > 1 else ray.init()
        print(int(ray.cluster_resources()["CPU"]), ray.get(ray.remote(lambda: 7).remote()))
    """)
    for args in ([], ["auto"]):
        out = subprocess.run([sys.executable, "-c", program, *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        assert out.stdout.split() == [str(EXECUTORS * CORES), "7"]


def test_the_token_is_on_no_command_line_environment_spark_conf_or_log(ray_ctx, sc, cluster):
    scenarios.the_token_is_on_no_command_line_environment_spark_conf_or_log(ray_ctx, sc, cluster)


def test_bad_input_is_a_typed_error(sc, ray_ctx):
    with pytest.raises(InvalidMemoryError, match="object_store_memory='2gg'"):
        RayContext(sc, object_store_memory="2gg")
    # An object store as large as Ray's whole share leaves nothing for Ray's processes.
    with pytest.raises(InvalidArgumentError, match="extra_executor_memory_for_ray"):
        RayContext(sc, object_store_memory=SHARED_SPARK_ARGS["extra_executor_memory_for_ray"])
    with pytest.raises(InvalidArgumentError, match="num_executors=5"):
        RayContext(sc, num_ray_nodes=5)
    with pytest.raises(RayContextError, match="already initialised"):
        ray_ctx.init()
    other = RayContext(sc)
    other.stop()  # never started: stopping it does nothing, and touches nothing running
    assert RayContext.get(initialize=False) is ray_ctx and ray_ctx.initialized
    with pytest.raises(RayContextError, match="Another RayContext is running"):
        other.init()


_DRIVER = textwrap.dedent("""
    import json, sys, time
    import ray  # a second driver that imports ray first, as Ray programs do
    from zoo_ray import RayContext, init_spark_on_yarn
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=2, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g")
    ctx = RayContext(sc, object_store_memory="128m")
    info = ctx.init()
    assert ray.get(ray.remote(lambda: 1).remote()) == 1
    print(json.dumps({"app": sc.applicationId, "managers": [n["pid"] for n in info["nodes"]],
                      "gateway": info["gateway_node"]["pid"],
                      "links": [n["temp_dir"] for n in info["nodes"]]
                               + [info["gateway_node"]["temp_dir"]]}), flush=True)
    time.sleep(900)
""")


@pytest.mark.faults
def test_kill_9_of_the_driver_leaves_no_ray_process_while_another_app_runs(cluster, ray_ctx,
                                                                           tmp_path):
    driver, info = start_driver(_DRIVER, [str(cluster.hadoop_conf_dir)], tmp_path / "driver.err")
    try:
        pids = info["managers"] + [info["gateway"]]
        family = [psutil.Process(p) for p in pids]
        family += [c for p in pids for c in ray_processes(p)]
        assert sum(process_name(p) == "raylet" for p in family) == 3
        # Two applications' Ray clusters side by side on the same NodeManagers.
        assert ray.get(ray.remote(lambda: 2).remote()) == 2
    finally:
        driver.kill()
        driver.wait()
    started = time.monotonic()
    _, alive = psutil.wait_procs(family, timeout=120)
    print(f"all {len(family)} Ray processes of the app gone after "
          f"{time.monotonic() - started:.1f}s")
    assert alive == []
    wait_app_end(cluster, info["app"])  # its containers free their resources for the next tests
    assert len(alive_nodes()) == EXECUTORS + 1  # our own cluster is untouched
    _check_the_next_driver_sweeps_what_the_killed_one_left(driver.pid, info["links"], ray_ctx)


def _check_the_next_driver_sweeps_what_the_killed_one_left(pid, links, ray_ctx):
    """The killed driver's token file and work dir stay behind, and so do the links of
    executor managers that YARN killed with SIGKILL; the next zoo_ray process on the host
    removes them and leaves every entry of the running cluster alone. Here that is this
    driver's sweep (which init() and every manager's start run), or one of the suite's
    other worker, whose zoo_ray processes sweep the same host meanwhile."""
    from zoo_ray.auth import driver_token_path
    from zoo_ray.leftovers import driver_tag, sweep

    token = driver_token_path().with_name(f"driver-{driver_tag(pid)}.token")
    work_dirs = list(Path(tempfile.gettempdir()).glob(f"zoo-ray-driver-{driver_tag(pid)}-*"))
    left = [path for path in [token, *work_dirs] if path.exists()]
    print(f"left by the killed driver before a sweep here: {left}")
    # YARN deletes the containers' directories once the application ended.
    wait_until(lambda: not any(Path(link).exists() for link in links), 60,
               "the killed application's container directories to go")
    ours = [Path(n["temp_dir"]) for n in ray_ctx.address_info["nodes"]]
    ours.append(Path(ray_ctx.address_info["gateway_node"]["temp_dir"]))
    removed = sweep()
    print(f"{len(removed)} entries swept here")
    # The driver cannot remove them itself (SIGKILL): only a sweep does.
    assert not token.exists() and not any(path.exists() for path in work_dirs)
    assert not any(Path(link).is_symlink() for link in links)
    assert driver_token_path().exists() and all(link.is_dir() for link in ours)


_LEAVER = textwrap.dedent("""
    import json, sys, time
    import zoo_ray
    from zoo_ray import RayContext, init_spark_on_yarn
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=2, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g")
    info = RayContext(sc, object_store_memory="128m").init()
    print(json.dumps({"app": sc.applicationId,
                      "managers": [n["pid"] for n in info["nodes"]]
                                  + [info["gateway_node"]["pid"]]}),
          flush=True)
    sys.stdin.readline()  # the test lists Ray's processes before they are torn down
    if sys.argv[2] == "sc.stop()":
        sc.stop()
        print("stopped", flush=True)
        time.sleep(900)  # Ray must be gone while this interpreter still runs
""")


_ENDINGS = ["sc.stop()", "interpreter exit"]


def _leave(how, cluster, tmp, _cleanup):
    """A second driver that ends with ``how``: every Ray process of its application must be
    gone the moment Spark or Python is. Returns its Ray nodes' manager logs. The two
    endings run at once (``ahead``), after the shared application stopped (it leaves room
    for one such driver, not two)."""
    driver, info = start_driver(_LEAVER, [str(cluster.hadoop_conf_dir), how],
                                tmp / "driver.err")
    try:
        family = [psutil.Process(p) for p in info["managers"]]
        family += [c for p in info["managers"] for c in ray_processes(p)]
        assert sum(process_name(p) == "raylet" for p in family) == 3
        driver.stdin.write("go\n")
        driver.stdin.flush()
        if how == "sc.stop()":
            assert driver.stdout.readline().strip() == "stopped"
            assert driver.poll() is None
        else:
            assert driver.wait(300) == 0
        _, alive = psutil.wait_procs(family, timeout=5)
        assert alive == []
    finally:
        driver.kill()
        driver.wait()
    # The driver is gone; its application ends (and its logs are aggregated) shortly after.
    wait_app_end(cluster, info["app"])
    return re.findall(r"^LogType:ray_manager\.log$(.*?)^End of LogType",
                      cluster.app_logs(info["app"]), re.S | re.M)


AHEAD = {f"test_stopping_spark_or_leaving_python_tears_ray_down[{how}]": partial(_leave, how)
         for how in _ENDINGS}


@pytest.mark.parametrize("how", _ENDINGS)
def test_stopping_spark_or_leaving_python_tears_ray_down(how, ahead_result):
    # Stopped by RayContext.stop() (SIGTERM from the stop job), not by a manager noticing
    # that its driver or executor died.
    managers = ahead_result
    assert len(managers) == 2
    for log in managers:
        assert "manager exits" in log and "is gone" not in log


@pytest.mark.faults
def test_a_node_that_cannot_start_fails_init_naming_its_executor_and_leaves_nothing(
        no_ray_context):
    sc = no_ray_context
    assert zoo_ray_processes(sc.applicationId) == []
    bad = RayContext(sc, object_store_memory="128m", extra_params={"no-such-flag": "1"})
    started = time.monotonic()
    with pytest.raises(RayNodeStartError) as failure:
        bad.init()
    print(f"init failed after {time.monotonic() - started:.1f}s")
    message = str(failure.value)
    assert "container_" in message
    assert "No such option" in message and "no-such-flag" in message  # the tail of its log
    assert not bad.initialized
    wait_until(lambda: zoo_ray_processes(sc.applicationId) == [], 60, "no Ray process left")
    assert sc.parallelize(range(4), 2).sum() == 6
