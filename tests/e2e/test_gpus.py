"""GPUs from YARN to Ray on the session's local Hadoop, whose NodeManagers have 2 pretend
GPUs each (YARN's GPU plugin with a stand-in nvidia-smi: YARN schedules and accounts
``yarn.io/gpu`` for real; the NodeManagers do not isolate devices, as many clusters'
do not). A second driver asks for three executors with one GPU each: two of them share a
NodeManager, whose devices both list."""
from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path

from tests.e2e.helpers import SESSION_SPEC, start_driver, wait_app_end, wait_until

from zoo_ray import gpu_claims
from zoo_ray.preflight import gpus_of

_PROGRAM = textwrap.dedent("""
    import json, os, sys, time
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    from zoo_ray import RayContext, init_spark_on_yarn
    from zoo_ray.errors import GpuRequestError

    ARGS = dict(hadoop_conf=sys.argv[1], num_executors=3, executor_cores=1,
                executor_memory="512m", driver_memory="512m",
                extra_executor_memory_for_ray="1g")
    report = {}
    for name, more in (("too_many", dict(executor_gpus=3)),
                       ("queue", dict(executor_gpus=1, queue="tiny"))):
        try:
            init_spark_on_yarn(**ARGS, **more)
        except GpuRequestError as err:
            report[name] = str(err)
    sc = init_spark_on_yarn(**ARGS, executor_gpus=1)
    ctx = RayContext(sc, object_store_memory="128m")
    ctx.init()
    report.update(app=sc.applicationId, status=ctx.node_status(),
                  card=repr(ctx), gpus=ray.cluster_resources().get("GPU"),
                  spark=sc.parallelize(range(8), 4).map(lambda x: x * x).sum())
    print(json.dumps(report), flush=True)
    sys.stdin.readline()  # the test looks at YARN meanwhile

    @ray.remote(num_gpus=1)
    class Holder:
        def devices(self):
            from pathlib import Path
            from zoo_ray.gpu_claims import container_gpus
            from zoo_ray.protocol import WORK_DIR_ENV
            work_dir = Path(os.environ[WORK_DIR_ENV])
            held = container_gpus(work_dir)
            return {"node": ray.get_runtime_context().get_node_id(),
                    "container": work_dir.name,
                    "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
                    "cuda": os.environ.get("CUDA_VISIBLE_DEVICES"),
                    "claimed": held.indices if held else None}

    @ray.remote(num_gpus=1)
    def fourth():
        return [str(g) for g in ray.get_gpu_ids()]

    holders = [Holder.remote() for _ in range(3)]
    later = {"holders": ray.get([h.devices.remote() for h in holders], timeout=120)}
    waiting = fourth.remote()
    later["fourth_waited"] = not ray.wait([waiting], timeout=10)[0]
    ray.kill(holders[0])
    later["fourth_got"] = ray.get(waiting, timeout=120)
    later["victim"] = ctx.address_info["nodes"][-1]["container"]
    print(json.dumps(later), flush=True)
    sys.stdin.readline()  # the test has YARN kill the victim's container meanwhile

    def replaced():
        nodes = {info.container: node for node, info in ctx.executor_nodes().items()}
        return nodes if len(nodes) == 3 and later["victim"] not in nodes else None

    deadline = time.monotonic() + 240
    while not replaced() and time.monotonic() < deadline:
        time.sleep(1)
    nodes = replaced() or {}
    [new] = set(nodes) - {h["container"] for h in later["holders"]}
    pinned = NodeAffinitySchedulingStrategy(nodes[new], soft=False)
    holder = Holder.options(scheduling_strategy=pinned).remote()
    print(json.dumps({"new": new, "status": ctx.node_status(),
                      "holder": ray.get(holder.devices.remote(), timeout=120)}), flush=True)
    ctx.stop()
    sc.stop()
""")


def _yarn_gpus(cluster, kind: str) -> int:
    """The ``yarn.io/gpu`` of every NodeManager, ``kind`` "total" or "used"."""
    return sum(gpus_of(node[f"{kind}Resource"])
               for node in cluster.resource_manager.nodes(states="RUNNING"))


def _next_report(driver, err: Path) -> dict:
    """The driver's next JSON line (Ray echoes its workers' and its autoscaler's messages
    to the driver's standard output too)."""
    for line in driver.stdout:
        if line.startswith("{"):
            return json.loads(line)
    raise AssertionError(f"the driver ended without its report:\n{err.read_text()[-3000:]}")


def test_executors_get_their_containers_gpus_as_ray_nodes(cluster, tmp_path):
    assert _yarn_gpus(cluster, "total") == 2 * SESSION_SPEC.gpus == 4
    driver, report = start_driver(_PROGRAM, [str(cluster.hadoop_conf_dir)],
                                  tmp_path / "driver.err")
    try:
        # Refused before anything was submitted: more than a NodeManager has, or than the
        # queue may use.
        assert "at most 2 per executor" in report["too_many"]
        assert "queue 'tiny' may use at most 0 GPUs" in report["queue"]
        # YARN accounts one GPU per executor; Ray sees exactly those, the gateway none.
        assert _yarn_gpus(cluster, "used") == 3
        assert report["gpus"] == 3
        assert [n["gpus"] for n in report["status"]] == [1.0, 1.0, 1.0]
        assert "GPUs" in report["card"]
        # Spark's own tasks run as before: they hold no GPU.
        assert report["spark"] == sum(x * x for x in range(8))
        driver.stdin.write("go\n")
        driver.stdin.flush()
        later = _next_report(driver, tmp_path / "driver.err")
        # Healing: YARN kills an executor; its replacement's node comes with its GPU.
        cluster.resource_manager.signal_container(later["victim"], "FORCEFUL_SHUTDOWN")
        driver.stdin.write("go\n")
        driver.stdin.flush()
        healed = _next_report(driver, tmp_path / "driver.err")
        assert driver.wait(120) == 0, (tmp_path / "driver.err").read_text()[-3000:]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    holders = later["holders"]
    # Each node's task sees its own container's device, in the host's numbering; the
    # executors never the same one. Two of the three share a NodeManager (nm0 lists 0 and
    # 1, nm1 2 and 3), and both list its devices: only the claims keep them apart.
    assert len({h["node"] for h in holders}) == 3
    for holder in holders:
        assert holder["gpu_ids"] == holder["claimed"] == [holder["cuda"]], holder
    devices = {h["gpu_ids"][0] for h in holders}
    assert len(devices) == 3 and devices <= {"0", "1", "2", "3"}
    # A fourth GPU task waits for a free one instead of sharing; it gets the freed device.
    assert later["fourth_waited"]
    assert later["fourth_got"] == holders[0]["gpu_ids"]

    alive = [n for n in healed["status"] if n["alive"]]
    assert [n["gpus"] for n in alive] == [1.0, 1.0, 1.0]
    assert later["victim"] not in {n["container"] for n in alive}
    holder = healed["holder"]
    assert holder["container"] == healed["new"]
    assert holder["gpu_ids"] == holder["claimed"] == [holder["cuda"]], holder
    # Not a device the two surviving executors hold (their JVMs run: their claims stand).
    kept = {h["gpu_ids"][0] for h in holders if h["container"] != later["victim"]}
    assert len(kept) == 2 and holder["gpu_ids"][0] not in kept

    wait_app_end(cluster, report["app"])
    assert _yarn_gpus(cluster, "used") == 0
    # The executors' claims end with their JVMs: the next zoo_ray start sweeps them.
    app_number = report["app"].removeprefix("application_")

    def swept() -> bool:
        gpu_claims.sweep_claims()
        return not any(app_number in claim.read_text()
                       for claim in gpu_claims.claims_dir().glob("*.json"))

    wait_until(swept, 60, "the application's GPU claims to be swept")
    # This suite's executors were the directory's only users.
    shutil.rmtree(gpu_claims.claims_dir())
