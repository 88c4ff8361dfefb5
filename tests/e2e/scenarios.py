"""Test bodies that run on more than one cluster (tests only, on the gateway).

``test_ray_context`` and ``test_data_path`` run them on the session's local Hadoop;
``test_isolated_hosts`` runs them again, unchanged, on three isolated hosts. Each takes
the RayContext, SparkContext and cluster it checks as arguments, and reads the number
of executors from the SparkContext's configuration.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pytest
import ray
from tests.e2e.helpers import (
    alive_nodes,
    answers,
    executor_nodes,
    executors_of,
    process_name,
    ray_processes,
    wait_until,
)

from zoo_ray import RayContext
from zoo_ray.auth import driver_token_path
from zoo_ray.errors import ClusterLostError
from zoo_ray.ray_blocks import dataset_blocks, object_nodes


# ------------------------------------------------------------------ topology
def one_ray_node_per_executor_with_the_head_in_an_executor(ray_ctx: RayContext, sc: Any) -> None:
    executors = executors_of(sc)
    nodes = ray_ctx.address_info["nodes"]
    assert ray_ctx.nodes == nodes and nodes[0]["role"] == "head"
    assert ray_ctx.dashboard_url is None  # no include_webui
    assert len(nodes) == executors
    assert len({n["container"] for n in nodes}) == executors
    assert all(n["container"].startswith("container_") for n in nodes)
    assert len(alive_nodes()) == executors + 1  # + the gateway's node for the driver
    head = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("node:__internal_head__")]
    assert len(head) == 1
    assert ray_ctx.address == f"{head[0]['NodeManagerAddress']}:{ray_ctx.address.rsplit(':')[1]}"

    on_executors = executor_nodes()
    assert sorted(on_executors.values()) == sorted(n["container"] for n in nodes)
    # Starting Ray holds no Spark task slot: Spark still runs a job over every slot.
    slots = executors * int(sc.getConf().get("spark.executor.cores"))
    assert sc.parallelize(range(slots), slots).map(lambda x: x * 2).sum() == slots * (slots - 1)


def ordinary_ray_programs_run_on_the_cluster() -> None:
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


def the_token_is_on_no_command_line_environment_spark_conf_or_log(
        ray_ctx: RayContext, sc: Any, cluster: Any) -> None:
    token = driver_token_path().read_text().strip()
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


# ----------------------------------------------------------------- data path
def each_block_lives_on_the_ray_node_of_the_executor_that_computed_it(
        spark: Any, ray_ctx: RayContext) -> None:
    from pyspark.sql import functions as F

    from zoo_ray import data

    computed_in = F.udf(lambda: os.environ["CONTAINER_ID"])
    df = spark.range(0, 400_000, numPartitions=8).withColumn("container", computed_in())
    ds = data.from_spark(df, block_size="1m")
    blocks = list(dataset_blocks(ds))
    container_of = {node_id: info.container for node_id, info in ray_ctx.executor_nodes().items()}
    holders = object_nodes([b.ref for b in blocks])
    seen = set()
    for block, node in zip(blocks, holders):
        producers = set(ray.get(block.ref).column("container").to_pylist())
        assert producers == {container_of[node]}
        seen.add(container_of[node])
    print(f"{len(blocks)} blocks on {len(seen)} executors, each on its producer's node")
    assert len(blocks) > 8, "1m blocks cut each partition into several"
    assert seen == set(container_of.values())


def task_localities(sc: Any, group: str) -> list[str]:
    """The locality level of every task Spark ran for a job group (Spark's status store)."""
    tracker = sc.statusTracker()
    store = sc._jsc.sc().statusStore()
    as_java = sc._jvm.scala.jdk.javaapi.CollectionConverters.asJava
    return [task.taskLocality()
            for job in tracker.getJobIdsForGroup(group)
            for stage in tracker.getJobInfo(job).stageIds
            for task in as_java(store.taskList(stage, 0, 10_000))]


def with_localities(sc: Any, group: str, call: Callable[[], Any]) -> tuple[Any, list[str]]:
    """``call()``'s result, and the locality level of every task Spark ran for it."""
    from zoo_ray.spark_internals import job_group

    with job_group(sc, group, group):
        result = call()
    return result, task_localities(sc, group)


def to_spark_reads_each_block_in_the_executor_holding_it(
        spark: Any, sc: Any, ray_ctx: RayContext) -> None:
    from zoo_ray import data

    ds = data.from_spark(spark.range(0, 200_000, numPartitions=8), block_size="256k")
    holders = data.block_executors(ds)
    assert len(set(holders)) == len(ray_ctx.executor_nodes()) and "" not in holders
    back, levels = with_localities(sc, "zoo-ray-to-spark-locality", lambda: data.to_spark(ds))
    print(f"{len(holders)} blocks read back by tasks at {sorted(set(levels))}")
    assert len(levels) >= len(holders) and set(levels) == {"PROCESS_LOCAL"}
    assert back.count() == 200_000


def a_spark_task_fetches_a_block_through_ray_when_its_file_is_not_on_its_host(
        sc: Any, ray_ctx: RayContext) -> None:
    from zoo_ray.executor_data import ReadPlan, _RemoteReader
    from zoo_ray.ray_tasks import pinned, spool_blocks

    node_id, info = sorted(ray_ctx.executor_nodes().items())[0]
    table = pa.table({"v": list(range(1000))})
    [block] = ray.get(pinned(spool_blocks, node_id, soft=False).remote(
        "t-remote", [(0, None, None)], [ray.put(table)]))
    assert block.container == info.container and os.path.exists(block.path)
    plan = ReadPlan(table.schema, ray_ctx.address, {info.container: node_id})

    def fetch(_):
        reader = _RemoteReader(plan)
        try:
            fetched = reader.read(block.container, block.path, pickled=False)
        finally:
            reader.close()
        yield fetched.column("v").to_pylist(), os.environ["CONTAINER_ID"]

    values, reader_container = sc.parallelize([0], 1).mapPartitions(fetch).collect()[0]
    assert values == list(range(1000))
    assert not os.path.exists(block.path), "read once, then gone"
    print(f"block of {info.container} fetched through Ray by a task in {reader_container}")


# -------------------------------------------------------------- fault matrix
def a_killed_raylet_is_restarted_and_its_node_reregisters(ray_ctx: RayContext,
                                                          executors: int) -> None:
    worker = ray_ctx.address_info["nodes"][1]

    def worker_nodes(alive):
        return {n["NodeID"] for n in ray.nodes() if n["Alive"] == alive
                and n["ObjectStoreSocketName"].startswith(worker["temp_dir"])}

    old = worker_nodes(True)
    assert len(old) == 1
    raylet = [p for p in ray_processes(worker["pid"]) if process_name(p) == "raylet"][0]
    os.kill(raylet.pid, signal.SIGKILL)
    took = wait_until(lambda: worker_nodes(True) and worker_nodes(True) != old, 120,
                      "a new node from the same RayManager")
    print(f"raylet back and registered after {took:.1f}s")
    wait_until(lambda: old <= worker_nodes(False), 120, "the killed node to be marked dead")
    assert len(alive_nodes()) == executors + 1
    new = [p for p in ray_processes(worker["pid"]) if process_name(p) == "raylet"]
    assert new and new[0].pid != raylet.pid
    log = Path(worker["log_dir"]) / "ray_manager.log"
    assert "restarting the node" in log.read_text()


def a_killed_head_process_comes_back_with_the_cluster_and_the_driver_carries_on(
        ray_ctx: RayContext, process: str, executors: int) -> None:
    # Ray aborts a driver (and gives up a raylet) that cannot reach its GCS for 60 s, and a
    # GCS restarted without its tables is a new cluster: the head keeps them on disk.
    @ray.remote(num_cpus=0)
    class Counter:
        def __init__(self):
            self.count = 0

        def add(self):
            self.count += 1
            return self.count

        def value(self):
            return self.count

    head, worker = ray_ctx.address_info["nodes"][:2]
    by_container = {info.container: node_id for node_id, info in ray_ctx.executor_nodes().items()}
    worker_node, old_head = by_container[worker["container"]], by_container[head["container"]]
    counter = Counter.options(
        scheduling_strategy=ray.util.scheduling_strategies.NodeAffinitySchedulingStrategy(
            worker_node, soft=False)).remote()
    assert ray.get(counter.add.remote()) == 1
    kept = ray.put("kept")
    victim = [p for p in ray_processes(head["pid"]) if process_name(p) == process][0]
    os.kill(victim.pid, signal.SIGKILL)
    started = time.monotonic()
    wait_until(lambda: any(process_name(p) == process and p.pid != victim.pid
                           for p in ray_processes(head["pid"])), 60, f"a new {process}")
    wait_until(lambda: answers(counter.value.remote, 1), 60, "the actor on a worker to answer")
    took = time.monotonic() - started

    def whole():
        try:
            alive = {n["NodeID"] for n in alive_nodes()}
        except (ray.exceptions.RayError, ConnectionError):
            return False
        # The recovered tables hold the old head's node until its health checks fail.
        return len(alive) == executors + 1 and old_head not in alive
    wait_until(whole, 120, "every node registered with the restarted head")
    print(f"{process} of the head killed: the driver's calls answer again after {took:.1f}s, "
          f"the cluster is whole after {time.monotonic() - started:.1f}s")
    # The same cluster: the actor kept its state, the driver's object is there.
    assert ray.get(counter.add.remote()) == 2 and ray.get(kept) == "kept"
    assert all(s["alive"] for s in ray_ctx.node_status())
    assert sorted(executor_nodes().values()) == sorted(n["container"] for n in ray_ctx.nodes)
    ray.kill(counter)


def a_container_killed_by_yarn_is_reported_and_its_replacement_gets_a_ray_node(
        ray_ctx: RayContext, sc: Any, cluster: Any, caplog: pytest.LogCaptureFixture) -> None:
    executors = executors_of(sc)
    victim = ray_ctx.address_info["nodes"][-1]
    before = {n["container"] for n in ray_ctx.nodes}
    seen = len(ray_ctx.events())
    family = [psutil.Process(victim["pid"])] + ray_processes(victim["pid"])
    assert any(process_name(p) == "raylet" for p in family)
    # The user's Spark jobs go on while YARN takes the executor and healing runs its start
    # job: one over every slot, again and again, from the kill until the new node joined.
    user_jobs: list[float] = []
    failed: list[BaseException] = []
    healed = threading.Event()

    def user_work():
        while not healed.is_set():
            began = time.monotonic()
            try:
                total = sc.parallelize(range(2 * executors), 2 * executors).map(
                    lambda x: x * 2).sum()
            except Exception as exc:  # healing must not make the user's job fail
                failed.append(exc)
                return
            if total != 2 * executors * (2 * executors - 1):
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
        wait_until(lambda: any(not s["alive"] for s in ray_ctx.node_status()), 120, "the loss")
        assert f"Ray node of executor {victim['container']} is lost" in caplog.text

        # Spark starts a replacement executor; a Ray node starts in it and joins the head.
        def whole():
            containers = {info.container for info in ray_ctx.executor_nodes().values()}
            return len(containers) == executors and victim["container"] not in containers
        wait_until(whole, 240, "a Ray node in the replacement executor")
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
    events = [(e.kind, e.container) for e in ray_ctx.events()[seen:]
              if e.kind in ("lost", "joined")]
    assert events == [("lost", victim["container"]), ("joined", *new)]
    status = {s["container"]: s["alive"] for s in ray_ctx.node_status()}
    assert status.pop(victim["container"]) is False and all(status.values())
    assert len(status) == executors
    # Tasks run on every executor's node, the new one included.
    assert set(executor_nodes().values()) == {
        info.container for info in ray_ctx.executor_nodes().values()}


def losing_the_head_s_executor_starts_a_new_cluster_and_the_driver_reconnects(
        ray_ctx: RayContext, cluster: Any, executors: int) -> None:
    head = ray_ctx.address_info["nodes"][0]
    old_address, seen = ray_ctx.address, len(ray_ctx.events())
    before = ray.put("before")
    family = [psutil.Process(head["pid"])] + ray_processes(head["pid"])
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
    wait_until(lambda: any(e.kind in ("rebuilt", "cluster lost")
                           for e in ray_ctx.events()[seen:]), 300, "a new cluster")
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
        return len(containers) == executors and head["container"] not in containers
    wait_until(whole, 300, "a Ray node in every executor")
    print(f"head's container killed: a new cluster {rebuilt:.1f}s after the kill, whole again "
          f"(including Spark's replacement executor) after {time.monotonic() - started:.1f}s")
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
    # Ray aborts a driver that cannot reach its GCS for long enough (60 s by default,
    # DRIVER_GCS_WAIT_S under zoo_ray): this one holds no connection to the lost GCS.
    assert ray.get_runtime_context().gcs_address == ray_ctx.address != old_address
    assert set(executor_nodes().values()) == {
        info.container for info in ray_ctx.executor_nodes().values()}
    assert all(s["alive"] for s in ray_ctx.node_status() if s["container"] != head["container"])


def stop_removes_every_ray_process_and_init_starts_afresh(ray_ctx: RayContext, sc: Any) -> None:
    executors = executors_of(sc)
    managers = [n["pid"] for n in ray_ctx.address_info["nodes"]]
    managers.append(ray_ctx.address_info["gateway_node"]["pid"])
    family = [psutil.Process(p) for p in managers if psutil.pid_exists(p)]
    family += [c for p in managers for c in ray_processes(p)]
    assert len(family) > executors
    ray_ctx.stop()
    _, alive = psutil.wait_procs(family, timeout=30)
    assert alive == []
    assert sc.parallelize(range(10), 5).sum() == 45
    ray_ctx.stop()  # idempotent
    assert not ray_ctx.initialized and RayContext._active is None

    again = RayContext(sc, object_store_memory="128m", include_webui=True)
    info = again.init()
    try:
        assert len(info["nodes"]) == executors
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
        token = driver_token_path().read_text().strip()
        request = urllib.request.Request(f"{url}/api/version",
                                         headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["ray_version"] == ray.__version__
    finally:
        again.stop()
