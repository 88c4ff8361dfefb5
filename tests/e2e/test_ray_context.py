"""RayContext on the local Hadoop: topology, ordinary Ray programs, faults, security."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import psutil
import pytest
from tests.fresh import env_without_ray

from zoo_ray import RayContext
from zoo_ray.errors import (
    ClusterLostError,
    InvalidArgumentError,
    InvalidMemoryError,
    RayContextError,
    RayNodeStartError,
)
from zoo_ray.yarn import FINAL_STATES

ray = pytest.importorskip("ray")

EXECUTORS = 3
SPARK_ARGS = dict(num_executors=EXECUTORS, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g")


def _ray_processes(manager_pid: int):
    try:
        return psutil.Process(manager_pid).children(recursive=True)
    except psutil.Error:
        return []


def _name(process: psutil.Process) -> str:
    """The process's name, or "" once it has exited (Ray's idle workers come and go)."""
    try:
        return process.name()
    except psutil.NoSuchProcess:
        return ""


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return time.monotonic() - (deadline - timeout)
        time.sleep(0.5)
    raise AssertionError(f"{what} not within {timeout}s")


def _alive_nodes():
    return [n for n in ray.nodes() if n["Alive"]]


@pytest.fixture(scope="module")
def ray_ctx(sc):
    ctx = RayContext(sc, object_store_memory="256m")
    ctx.init()
    ray.init()  # an unchanged program's own call: joins through RAY_ADDRESS
    yield ctx
    if ctx.initialized:
        ctx.stop()


def _executor_nodes(ctx, timeout=None):
    """{node id: container id} of the Ray nodes in executors (not the gateway's)."""
    @ray.remote(num_cpus=0)
    def whoami():
        return ray.get_runtime_context().get_node_id(), os.environ.get("CONTAINER_ID")

    found = {}
    for node in _alive_nodes():
        strategy = ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            node["NodeID"], soft=False)
        node_id, container = ray.get(whoami.options(scheduling_strategy=strategy).remote(),
                                     timeout=timeout)
        if container:
            found[node_id] = container
    return found


def test_one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx, sc):
    nodes = ray_ctx.address_info["nodes"]
    assert ray_ctx.nodes == nodes and nodes[0]["role"] == "head"
    assert ray_ctx.dashboard_url is None  # no include_webui
    assert len(nodes) == EXECUTORS
    assert len({n["container"] for n in nodes}) == EXECUTORS
    assert all(n["container"].startswith("container_") for n in nodes)
    assert len(_alive_nodes()) == EXECUTORS + 1  # + the gateway's node for the driver
    head = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("node:__internal_head__")]
    assert len(head) == 1
    assert ray_ctx.address == f"{head[0]['NodeManagerAddress']}:{ray_ctx.address.rsplit(':')[1]}"

    executor_nodes = _executor_nodes(ray_ctx)
    assert sorted(executor_nodes.values()) == sorted(n["container"] for n in nodes)
    # Starting Ray holds no Spark task slot: Spark still runs a job over every slot.
    assert sc.parallelize(range(EXECUTORS), EXECUTORS).map(lambda x: x * 2).sum() == 6


def test_ray_managers_stay_in_the_executor_process_tree(ray_ctx):
    for node in ray_ctx.address_info["nodes"]:
        manager = psutil.Process(node["pid"])
        executor = [p for p in manager.parents()
                    if "CoarseGrainedExecutorBackend" in " ".join(p.cmdline())]
        assert executor, f"manager {node['pid']} is not below its executor JVM"
        names = {_name(p) for p in _ray_processes(node["pid"])}
        assert {"raylet"} <= names
    head = ray_ctx.address_info["nodes"][0]
    assert "gcs_server" in {_name(p) for p in _ray_processes(head["pid"])}


def test_ordinary_ray_programs_run_on_the_cluster(ray_ctx):
    np = pytest.importorskip("numpy")

    @ray.remote
    def square(x):
        return x * x

    assert sum(ray.get([square.remote(i) for i in range(1000)])) == sum(i * i for i in range(1000))

    @ray.remote
    class Counter:
        def __init__(self):
            self.n = 0

        def add(self, k):
            self.n += k
            return self.n

    counter = Counter.remote()
    ray.get([counter.add.remote(1) for _ in range(50)])
    assert ray.get(counter.add.remote(0)) == 50

    @ray.remote
    class Progress:
        def __init__(self):
            self.done = {}

        def report(self, task, n):
            self.done[task] = n

        def total(self):
            return sum(self.done.values())

    @ray.remote
    def sample(progress, task, n):
        import random
        inside = 0
        for i in range(n):
            x, y = random.random(), random.random()
            inside += x * x + y * y <= 1
            if i % 10_000 == 0:
                progress.report.remote(task, i)
        ray.get(progress.report.remote(task, n))  # the last report lands before we return
        return inside

    progress = Progress.remote()
    tasks, per_task = 6, 50_000
    pi = 4 * sum(ray.get([sample.remote(progress, t, per_task) for t in range(tasks)])) / (
        tasks * per_task)
    assert abs(pi - 3.14159) < 0.05
    assert ray.get(progress.total.remote()) == tasks * per_task

    @ray.remote
    def chunk(i):
        return np.full(1000, i, dtype=np.int64)

    @ray.remote
    def reduce_sum(*arrays):
        return int(sum(int(a.sum()) for a in arrays))

    refs = [chunk.remote(i) for i in range(20)]
    assert ray.get(reduce_sum.remote(*refs)) == 1000 * sum(range(20))

    ray_data = pytest.importorskip("ray.data")
    ds = ray_data.range(2000).map_batches(lambda b: {"id": b["id"] * 2})
    assert ds.sum("id") == 2 * sum(range(2000))


def test_a_100mb_array_put_on_one_node_is_read_on_another(ray_ctx):
    nodes = list(_executor_nodes(ray_ctx))
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
    # extra_executor_memory_for_ray=1g, less the 256m object store and 512m for Ray's processes.
    expected = (1024 - 256 - 512) * 2**20
    executor_ids = set(_executor_nodes(ray_ctx))
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
        assert out.stdout.split() == [str(EXECUTORS), "7"]


def test_the_token_is_on_no_command_line_environment_spark_conf_or_log(ray_ctx, sc, cluster):
    token = ray_ctx._token
    assert len(token) >= 32
    for proc in psutil.process_iter(["cmdline", "environ"]):
        assert token not in " ".join(proc.info["cmdline"] or [])
        assert token not in json.dumps(proc.info["environ"] or {})
    assert token not in json.dumps(sc.getConf().getAll())
    roots = [cluster.dir] + [Path(n["log_dir"]) for n in ray_ctx.address_info["nodes"]]
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and path.name != "auth_token" and path.stat().st_size < 50 * 2**20:
                assert token.encode() not in path.read_bytes(), path


def test_a_killed_raylet_is_restarted_and_its_node_reregisters(ray_ctx):
    worker = ray_ctx.address_info["nodes"][1]

    def worker_nodes(alive):
        return {n["NodeID"] for n in ray.nodes() if n["Alive"] == alive
                and n["ObjectStoreSocketName"].startswith(worker["temp_dir"])}

    old = worker_nodes(True)
    assert len(old) == 1
    raylet = [p for p in _ray_processes(worker["pid"]) if _name(p) == "raylet"][0]
    os.kill(raylet.pid, signal.SIGKILL)
    took = _wait(lambda: worker_nodes(True) and worker_nodes(True) != old, 120,
                 "a new node from the same RayManager")
    print(f"raylet back and registered after {took:.1f}s")
    _wait(lambda: old <= worker_nodes(False), 120, "the killed node to be marked dead")
    assert len(_alive_nodes()) == EXECUTORS + 1
    new = [p for p in _ray_processes(worker["pid"]) if _name(p) == "raylet"]
    assert new and new[0].pid != raylet.pid
    log = Path(worker["log_dir"]) / "ray_manager.log"
    assert "restarting the node" in log.read_text()


@ray.remote(num_cpus=0)
class _Counter:
    def __init__(self):
        self.count = 0

    def add(self):
        self.count += 1
        return self.count

    def value(self):
        return self.count


def _answers(call, expected):
    """Whether a Ray call answers ``expected`` now (a cluster being healed may not)."""
    try:
        return ray.get(call(), timeout=5) == expected
    except (ray.exceptions.RayError, ConnectionError):
        return False


@pytest.mark.parametrize("process", ["raylet", "gcs_server"])
def test_a_killed_head_process_comes_back_with_the_cluster_and_the_driver_carries_on(
        ray_ctx, process):
    # Ray aborts a driver (and gives up a raylet) that cannot reach its GCS for 60 s, and a
    # GCS restarted without its tables is a new cluster: the head keeps them on disk.
    head, worker = ray_ctx.address_info["nodes"][:2]
    by_container = {info.container: node_id for node_id, info in ray_ctx.executor_nodes().items()}
    worker_node, old_head = by_container[worker["container"]], by_container[head["container"]]
    counter = _Counter.options(
        scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            worker_node, soft=False)).remote()
    assert ray.get(counter.add.remote()) == 1
    kept = ray.put("kept")
    victim = [p for p in _ray_processes(head["pid"]) if _name(p) == process][0]
    os.kill(victim.pid, signal.SIGKILL)
    started = time.monotonic()
    _wait(lambda: any(_name(p) == process and p.pid != victim.pid
                      for p in _ray_processes(head["pid"])), 60, f"a new {process}")
    _wait(lambda: _answers(counter.value.remote, 1), 60, "the actor on a worker to answer")
    took = time.monotonic() - started

    def whole():
        try:
            alive = {n["NodeID"] for n in _alive_nodes()}
        except (ray.exceptions.RayError, ConnectionError):
            return False
        # The recovered tables hold the old head's node until its health checks fail.
        return len(alive) == EXECUTORS + 1 and old_head not in alive
    _wait(whole, 120, "every node registered with the restarted head")
    print(f"{process} of the head killed: the driver's calls answer again after {took:.1f}s, "
          f"the cluster is whole after {time.monotonic() - started:.1f}s")
    # The same cluster: the actor kept its state, the driver's object is there.
    assert ray.get(counter.add.remote()) == 2 and ray.get(kept) == "kept"
    assert all(s["alive"] for s in ray_ctx.node_status())
    assert sorted(_executor_nodes(ray_ctx).values()) == sorted(n["container"]
                                                               for n in ray_ctx.nodes)
    ray.kill(counter)


def test_bad_input_is_a_typed_error(sc, ray_ctx):
    with pytest.raises(InvalidMemoryError, match="object_store_memory='2gg'"):
        RayContext(sc, object_store_memory="2gg")
    with pytest.raises(InvalidArgumentError, match="extra_executor_memory_for_ray"):
        RayContext(sc, object_store_memory="1g")
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


def _start_driver(script, args, log):
    """A second driver in its own Python: returns it and the JSON of its first line."""
    fresh_env = env_without_ray()
    with open(log, "w") as stderr:
        driver = subprocess.Popen([sys.executable, "-c", script, *args], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=stderr, text=True, env=fresh_env)
    line = driver.stdout.readline()
    if not line.startswith("{"):
        driver.kill()
        driver.wait()
        raise AssertionError(f"the second driver failed:\n{Path(log).read_text()[-3000:]}")
    return driver, json.loads(line)


def _wait_app_end(cluster, app_id):
    _wait(lambda: cluster.resource_manager.app(app_id)["state"] in FINAL_STATES, 120,
          f"{app_id} to end")


def test_kill_9_of_the_driver_leaves_no_ray_process_while_another_app_runs(cluster, ray_ctx,
                                                                           tmp_path):
    driver, info = _start_driver(_DRIVER, [str(cluster.hadoop_conf_dir)], tmp_path / "driver.err")
    try:
        pids = info["managers"] + [info["gateway"]]
        family = [psutil.Process(p) for p in pids]
        family += [c for p in pids for c in _ray_processes(p)]
        assert sum(_name(p) == "raylet" for p in family) == 3
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
    _wait_app_end(cluster, info["app"])  # its containers free their resources for the next tests
    assert len(_alive_nodes()) == EXECUTORS + 1  # our own cluster is untouched
    _check_the_next_driver_sweeps_what_the_killed_one_left(driver.pid, info["links"], ray_ctx)


def _check_the_next_driver_sweeps_what_the_killed_one_left(pid, links, ray_ctx):
    """The killed driver's token file and work dir stay behind, and so do the links of
    executor managers that YARN killed with SIGKILL; the next zoo_ray process on the host
    (here: this driver's sweep, which init() and every manager's start run) removes them
    and leaves every entry of the running cluster alone."""
    from zoo_ray.auth import driver_token_path
    from zoo_ray.leftovers import driver_tag, sweep

    token = driver_token_path().with_name(f"driver-{driver_tag(pid)}.token")
    work_dirs = list(Path(tempfile.gettempdir()).glob(f"zoo-ray-driver-{driver_tag(pid)}-*"))
    assert token.exists() and len(work_dirs) == 1
    # YARN deletes the containers' directories once the application ended.
    _wait(lambda: not any(Path(link).exists() for link in links), 60,
          "the killed application's container directories to go")
    dangling = [Path(link) for link in links if Path(link).is_symlink()]
    print(f"{len(dangling)} of {len(links)} node links left dangling by the kill")
    ours = [Path(n["temp_dir"]) for n in ray_ctx.address_info["nodes"]]
    ours.append(Path(ray_ctx.address_info["gateway_node"]["temp_dir"]))
    removed = sweep()
    assert token in removed and work_dirs[0] in removed
    assert set(dangling) <= set(removed)
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


@pytest.mark.parametrize("how", ["sc.stop()", "interpreter exit"])
def test_stopping_spark_or_leaving_python_tears_ray_down(cluster, ray_ctx, how, tmp_path):
    driver, info = _start_driver(_LEAVER, [str(cluster.hadoop_conf_dir), how],
                                 tmp_path / "driver.err")
    try:
        family = [psutil.Process(p) for p in info["managers"]]
        family += [c for p in info["managers"] for c in _ray_processes(p)]
        assert sum(_name(p) == "raylet" for p in family) == 3
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
    _wait_app_end(cluster, info["app"])
    # Stopped by RayContext.stop() (SIGTERM from the stop job), not by a manager noticing
    # that its driver or executor died.
    managers = re.findall(r"^LogType:ray_manager\.log$(.*?)^End of LogType",
                          cluster.app_logs(info["app"]), re.S | re.M)
    assert len(managers) == 2
    for log in managers:
        assert "manager exits" in log and "is gone" not in log
    assert len(_alive_nodes()) == EXECUTORS + 1  # the module's own cluster is untouched


def test_a_container_killed_by_yarn_is_reported_and_its_replacement_gets_a_ray_node(
        ray_ctx, sc, cluster, caplog):
    victim = ray_ctx.address_info["nodes"][-1]
    before = {n["container"] for n in ray_ctx.nodes}
    family = [psutil.Process(victim["pid"])] + _ray_processes(victim["pid"])
    assert any(_name(p) == "raylet" for p in family)
    # The user's Spark jobs go on while YARN takes the executor and healing runs its start
    # job: one over every slot, again and again, from the kill until the new node joined.
    user_jobs: list[float] = []
    failed: list[BaseException] = []
    healed = threading.Event()

    def user_work():
        while not healed.is_set():
            began = time.monotonic()
            try:
                total = sc.parallelize(range(2 * EXECUTORS), 2 * EXECUTORS).map(
                    lambda x: x * 2).sum()
            except Exception as exc:  # healing must not make the user's job fail
                failed.append(exc)
                return
            if total != 2 * EXECUTORS * (2 * EXECUTORS - 1):
                failed.append(AssertionError(f"the user's job summed {total}"))
                return
            user_jobs.append(time.monotonic() - began)
    worker = threading.Thread(target=user_work)
    worker.start()
    try:
        cluster.resource_manager.signal_container(victim["container"], "FORCEFUL_SHUTDOWN")
        started = time.monotonic()
        _, alive = psutil.wait_procs(family, timeout=60)
        print(f"{len(family)} Ray processes of the killed container gone after "
              f"{time.monotonic() - started:.1f}s")
        assert alive == []
        _wait(lambda: any(not s["alive"] for s in ray_ctx.node_status()), 120, "the loss")
        assert f"Ray node of executor {victim['container']} is lost" in caplog.text

        # Spark starts a replacement executor; a Ray node starts in it and joins the head.
        def whole():
            containers = {info.container for info in ray_ctx.executor_nodes().values()}
            return len(containers) == EXECUTORS and victim["container"] not in containers
        _wait(whole, 240, "a Ray node in the replacement executor")
    finally:
        healed.set()
        worker.join(240)
    print(f"cluster whole again {time.monotonic() - started:.1f}s after the kill")
    joined = [e for e in ray_ctx.events() if e.kind == "joined"][-1]
    print(f"user's Spark jobs meanwhile: {len(user_jobs)}, the longest "
          f"{max(user_jobs):.1f}s ({joined.message})")
    # None failed or stayed blocked; the last one ended after healing.
    assert not failed and not worker.is_alive() and user_jobs
    new = {info.container for info in ray_ctx.executor_nodes().values()} - before
    events = [(e.kind, e.container) for e in ray_ctx.events() if e.kind in ("lost", "joined")]
    assert events == [("lost", victim["container"]), ("joined", *new)]
    status = {s["container"]: s["alive"] for s in ray_ctx.node_status()}
    assert status.pop(victim["container"]) is False and all(status.values())
    assert len(status) == EXECUTORS
    # Tasks run on every executor's node, the new one included.
    assert set(_executor_nodes(ray_ctx).values()) == {
        info.container for info in ray_ctx.executor_nodes().values()}


def test_losing_the_head_s_executor_starts_a_new_cluster_and_the_driver_reconnects(
        ray_ctx, cluster):
    head = ray_ctx.address_info["nodes"][0]
    old_address, seen = ray_ctx.address, len(ray_ctx.events())
    before = ray.put("before")
    family = [psutil.Process(head["pid"])] + _ray_processes(head["pid"])
    killed = []

    def kill_head():
        killed.append(time.monotonic())
        cluster.resource_manager.signal_container(head["container"], "FORCEFUL_SHUTDOWN")
    # The driver waits in ray.get when its cluster goes: the call raises instead of blocking.
    threading.Timer(1.0, kill_head).start()
    with pytest.raises(ClusterLostError, match="lost while this ray.get waited"):
        ray.get(ray.remote(num_cpus=0)(lambda: time.sleep(600)).remote(), timeout=180)
    started = killed[0]
    print(f"head's container killed: the waiting ray.get raised ClusterLostError after "
          f"{time.monotonic() - started:.1f}s")
    _wait(lambda: any(e.kind in ("rebuilt", "cluster lost") for e in ray_ctx.events()[seen:]),
          300, "a new cluster")
    rebuilt = time.monotonic() - started
    kinds = [e.kind for e in ray_ctx.events()[seen:]]
    assert kinds[:2] == ["head lost", "rebuilt"], ray_ctx.events()[seen:]
    assert ray_ctx.address != old_address
    # The driver's next call connects to the new head; what the old cluster held is void.
    assert ray.get(ray.remote(lambda: "after").remote()) == "after"
    with pytest.raises((ValueError, ray.exceptions.RayError)):
        ray.get(before, timeout=30)

    def whole():
        containers = {info.container for info in ray_ctx.executor_nodes().values()}
        return len(containers) == EXECUTORS and head["container"] not in containers
    _wait(whole, 300, "a Ray node in every executor")
    print(f"head's container killed: a new cluster {rebuilt:.1f}s after the kill, whole again "
          f"(including Spark's replacement executor) after {time.monotonic() - started:.1f}s")
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
    # Past the 60 s after which Ray would have aborted a driver left on the lost GCS.
    time.sleep(max(0.0, 70 - (time.monotonic() - started)))
    assert set(_executor_nodes(ray_ctx).values()) == {
        info.container for info in ray_ctx.executor_nodes().values()}
    assert all(s["alive"] for s in ray_ctx.node_status() if s["container"] != head["container"])


def test_stop_removes_every_ray_process_and_init_starts_afresh(ray_ctx, sc):
    managers = [n["pid"] for n in ray_ctx.address_info["nodes"]]
    managers.append(ray_ctx.address_info["gateway_node"]["pid"])
    family = [psutil.Process(p) for p in managers if psutil.pid_exists(p)]
    family += [c for p in managers for c in _ray_processes(p)]
    assert len(family) > EXECUTORS
    ray_ctx.stop()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
    assert sc.parallelize(range(10), 5).sum() == 45
    ray_ctx.stop()  # idempotent
    assert not ray_ctx.initialized and RayContext._active is None

    again = RayContext(sc, object_store_memory="128m", include_webui=True)
    info = again.init()
    try:
        assert len(info["nodes"]) == EXECUTORS
        assert {n["pid"] for n in info["nodes"]}.isdisjoint(managers)
        assert ray.get(ray.remote(lambda: "fresh").remote()) == "fresh"
        # sc.stop is wrapped once, whatever the number of init() calls on this SparkContext.
        assert not hasattr(sc.stop._zoo_ray_original, "_zoo_ray_original")
        # The dashboard is served on the head's address, and only with the token.
        url = again.dashboard_url
        assert url.startswith(f"http://{again.address.rsplit(':', 1)[0]}:")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/version", timeout=30)
        assert refused.value.code in (401, 403)
        request = urllib.request.Request(f"{url}/api/version",
                                         headers={"Authorization": f"Bearer {again._token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["ray_version"] == ray.__version__
    finally:
        again.stop()


def _zoo_ray_processes():
    """Every RayManager, raylet and GCS on this host (the module's own cluster is stopped)."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] in ("raylet", "gcs_server") or \
                "zoo_ray.manager" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def test_a_node_that_cannot_start_fails_init_naming_its_executor_and_leaves_nothing(sc):
    assert _zoo_ray_processes() == []
    bad = RayContext(sc, object_store_memory="128m", extra_params={"no-such-flag": "1"})
    started = time.monotonic()
    with pytest.raises(RayNodeStartError) as failure:
        bad.init()
    print(f"init failed after {time.monotonic() - started:.1f}s")
    message = str(failure.value)
    assert "container_" in message
    assert "No such option" in message and "no-such-flag" in message  # the tail of its log
    assert not bad.initialized
    _wait(lambda: _zoo_ray_processes() == [], 60, "no Ray process left")
    assert sc.parallelize(range(4), 2).sum() == 6
