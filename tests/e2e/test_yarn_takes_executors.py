"""YARN takes an executor's container away, as shared clusters do, on the secure local
Hadoop (Kerberos; the module's application logs in with the user's keytab):
- for memory (the local Hadoop checks physical memory): the driver says which executor,
  the limit, the usage and which parameter to raise (the loss watch asks the NodeManager's
  REST API, behind SPNEGO);
- for another queue (preemption): a lost executor, whose replacement gets a Ray node
  once YARN gives the container back;
and the application outlives its first delegation tokens (they live a minute here)."""
from __future__ import annotations

import json
import textwrap
import time
from xml.etree import ElementTree

import psutil
import pytest
import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from tests.e2e.helpers import (
    SECURE_SPEC,
    executor_nodes,
    keytab_login,
    ray_processes,
    start_driver,
    wait_app_end,
    wait_until,
)

from zoo_ray import data
from zoo_ray.errors import ClusterLostError
from zoo_ray.host import tree_rss
from zoo_ray.minicluster import MiniCluster
from zoo_ray.spnego import hadoop_opener

pytestmark = pytest.mark.faults

#: Shared with test_secure_cluster. Queue batch is guaranteed 25 % (1536 MB), the module's
#: application in it holds 4736 MB (its ApplicationMaster's 896, two executors), and what
#: is left holds another ApplicationMaster but no executor for queue default. Both
#: applications run their ApplicationMaster in a container for that (and so this module
#: covers that way, zoo_ray.app_master's fallback).
SPEC = SECURE_SPEC
CONTAINER_AM = {"spark.yarn.unmanagedAM.enabled": "false"}

SPARK_ARGS = dict(num_executors=2, executor_cores=1, executor_memory="512m",
                  driver_memory="512m", extra_executor_memory_for_ray="1g", queue="batch",
                  conf=CONTAINER_AM)


OBJECT_STORE_MEMORY = "128m"


@pytest.fixture(scope="module")
def cluster(own_cluster: MiniCluster) -> MiniCluster:
    """Replaces the session's cluster for every test in this module."""
    return own_cluster


@pytest.fixture
def ray_ctx(module_ray_ctx):
    """The module's application and RayContext (``SPARK_ARGS``, ``OBJECT_STORE_MEMORY``)."""
    return module_ray_ctx


def test_a_memory_kill_names_the_executor_the_limit_the_usage_and_the_fix(ray_ctx, caplog,
                                                                         first_tokens_dead):
    # (first_tokens_dead is asked for here, with the application: see its docstring.)
    # Not the head's executor: losing the head is the self-healing issue's to survive.
    victim = next(info for info in ray_ctx.executor_nodes().items() if info[1].role == "worker")
    node_id, node = victim
    # What the container held before the leak: the bound on what its sample may show.
    manager = next(n for n in ray_ctx.nodes if n["container"] == node.container)
    jvm = next(p for p in psutil.Process(manager["pid"]).parents() if p.name() == "java")
    before_mb = tree_rss(jvm.pid)[0] / 2**20

    @ray.remote(num_cpus=0, max_retries=0)
    def hog():
        # Grows as a leak does, 64 MiB at a time, to 3 GiB: far over the ~1.9 GiB container.
        blocks = []
        for _ in range(48):
            blocks.append(bytearray(64 * 2**20))
            time.sleep(0.1)
        time.sleep(120)
        return len(blocks)

    ref = hog.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))
    with pytest.raises(ray.exceptions.RayError):
        ray.get(ref.remote(), timeout=180)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not ray_ctx.lost_executors():
        time.sleep(1)
    [loss] = ray_ctx.lost_executors()
    print(f"\nSpark's reason: {loss.reason}\nas the user reads it: "
          f"{caplog.records[-1].getMessage() if caplog.records else ''}")
    assert loss.killed_for_memory, loss.reason
    assert loss.container == node.container and loss.executor_id == node.executor_id
    # The limit is the container's size: 512m heap + 384m Spark's overhead + 1g for Ray.
    assert loss.memory_limit in ("1920 MB", "1.9 GB")
    # The usage: YARN's figure is cut from the diagnostics (Ray's process tree fills them),
    # so it is the RayManager's last sample, which saw the leak well under way and at most
    # all of it (3 GiB) over what the container held before, plus the hog's worker itself.
    assert loss.memory_used is not None, "neither YARN's figure nor zoo_ray's sample"
    used = float(loss.memory_used.split()[0])
    if loss.sampled_at is not None:
        assert loss.memory_used.endswith(" MB"), loss.memory_used
        assert 1024 <= used < before_mb + 3072 + 512, (loss.memory_used, before_mb)
    message = "\n".join(r.getMessage() for r in caplog.records if r.name == "zoo_ray.losses")
    assert f"Executor {node.executor_id} ({node.container}" in message
    assert f"{loss.memory_used} in its processes" in message or loss.sampled_at is None
    assert f"{loss.memory_limit} limit" in message and "using too much memory" in message
    assert "extra_executor_memory_for_ray=1024m" in message
    assert "object_store_memory=128m" in message and "executor_memory=512m" in message
    assert ray_ctx.lost_executors() == [loss], "each loss is reported once"


#: An application in queue default, under its guaranteed share, asking for one executor
#: of 1920 MB that only a preempted container of the module's application makes room for.
_OTHER_QUEUE = textwrap.dedent("""
    import json, sys, time
    from zoo_ray import init_spark_on_yarn
    sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], num_executors=1, executor_cores=1,
                            executor_memory="512m", driver_memory="512m",
                            extra_executor_memory_for_ray="1g", queue="default",
                            executor_timeout=240,
                            conf={"spark.yarn.unmanagedAM.enabled": "false"},
                            **json.loads(sys.argv[2]))
    print(json.dumps({"app": sc.applicationId}), flush=True)
    time.sleep(900)
""")


def test_a_container_preempted_for_another_queue_is_lost_and_its_replacement_joins(
        ray_ctx, cluster, first_tokens_dead, tmp_path):
    def whole():
        try:
            answered = executor_nodes(timeout=30)
        except (ray.exceptions.RayError, ClusterLostError):  # a node, or the cluster, is going
            return False
        live = {n["container"] for n in ray_ctx.nodes
                if n["container"] not in {x.container for x in ray_ctx.lost_executors()}}
        return len(answered) == SPARK_ARGS["num_executors"] and set(answered.values()) == live
    wait_until(whole, 240, "the module's cluster whole")  # the memory kill's replacement joined
    seen, lost_before = len(ray_ctx.events()), len(ray_ctx.lost_executors())
    # Each executor node's manager and Ray processes, to check the preempted one's are gone.
    families = {n["container"]: [psutil.Process(n["pid"]), *ray_processes(n["pid"])]
                for n in ray_ctx.nodes if psutil.pid_exists(n["pid"])}
    asked = time.monotonic()
    other, info = start_driver(_OTHER_QUEUE, [str(cluster.hadoop_conf_dir),
                                              json.dumps(keytab_login(cluster))],
                                tmp_path / "other.err")
    try:
        wait_until(lambda: len(ray_ctx.lost_executors()) > lost_before, 120, "a preempted executor")
        preempted = time.monotonic() - asked
        [loss] = ray_ctx.lost_executors()[lost_before:]
        assert "preempted" in loss.reason, loss.reason
        kinds = [e.kind for e in ray_ctx.events()[seen:]]
        assert kinds[0] in ("lost", "head lost"), kinds
        _, alive = psutil.wait_procs(families[loss.container], timeout=30)
        assert alive == [], f"left by the preempted container: {alive}"
        # The replacement's container starts once the other application ends: after every
        # token the module's application was given at its start is dead.
        time.sleep(max(0.0, first_tokens_dead - time.time()))
    finally:
        other.kill()
        other.wait()
    wait_app_end(cluster, info["app"])
    ended = time.monotonic()
    # The container is YARN's to give back now: Spark's replacement gets a Ray node.
    wait_until(whole, 240, "a Ray node in the replacement executor")
    print(f"an executor preempted {preempted:.1f}s after another queue's application asked "
          f"({loss.reason}); whole again {time.monotonic() - ended:.1f}s after that "
          f"application ended; events: {[(e.kind, e.container) for e in ray_ctx.events()[seen:]]}")
    kinds = [e.kind for e in ray_ctx.events()[seen:]]
    assert kinds in (["lost", "joined"], ["head lost", "rebuilt", "joined"]), kinds
    assert loss.container not in {info.container for info in ray_ctx.executor_nodes().values()}


@pytest.fixture(scope="module")
def first_tokens_dead(module_sc) -> float:
    """When (epoch seconds) every delegation token the module's application got at its
    start is dead: no HDFS or YARN token outlives the max lifetime from its issue, and
    every one of them was issued before the SparkContext was ready, which it is when this
    fixture is first asked for (by the module's first test, with the application)."""
    return time.time() + SPEC.token_max_lifetime_s + 5


def test_the_application_outlives_its_first_delegation_tokens(ray_ctx, module_sc, module_spark,
                                                              cluster, first_tokens_dead,
                                                              tmp_path):
    # The NameNode's own configuration says how long its tokens live.
    opener = hadoop_opener(cluster.credentials, cluster.security.ca_file)
    with opener.open(f"{cluster.namenode_web}/conf", timeout=30) as response:
        conf = ElementTree.fromstring(response.read())
    lifetime_ms = next(int(p.findtext("value")) for p in conf.iter("property")
                       if p.findtext("name") == "dfs.namenode.delegation.token.max-lifetime")
    assert lifetime_ms == SPEC.token_max_lifetime_s * 1000
    # Only the tokens Spark fetched since with the keytab work from here on (and the
    # preemption test's replacement executor started after this point too).
    time.sleep(max(0.0, first_tokens_dead - time.time()))
    print(f"the application is {time.time() - module_sc.startTime / 1000:.0f}s old; its "
          f"first tokens lived {lifetime_ms / 1000:.0f}s at most")
    # Spark's tasks write and read HDFS with the executors' tokens.
    frame = module_spark.range(0, 10_000, numPartitions=4).selectExpr("id", "id * 2 AS twice")
    path = f"outlives-tokens-{tmp_path.name}"
    frame.write.parquet(path)
    assert module_spark.read.parquet(path).groupBy().sum("twice").first()[0] == 9_999 * 10_000
    # zoo_ray.data both ways, on every executor's node (the replacement's among them).
    back = data.to_spark(data.from_spark(frame).map(lambda row: {"id": row["id"] + 1}))
    assert back.groupBy().sum("id").first()[0] == 10_000 * 10_001 // 2
    assert len(ray_ctx.executor_nodes()) == SPARK_ARGS["num_executors"]
