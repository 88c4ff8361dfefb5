"""Ctrl-C in a notebook cell during init_spark_on_yarn or RayContext.init leaves nothing
half-started, and the same interpreter (the kernel) starts cleanly on the retry. One driver
goes through both, as a user in one kernel would: interrupted in init_spark_on_yarn, it
starts Spark again, is interrupted in RayContext.init on that application, and starts Ray
on it again."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from tests.fresh import env_without_ray

from zoo_ray.yarn import FINAL_STATES

#: A driver that interrupts itself (SIGINT, as Jupyter's interrupt sends) when a
#: zoo_ray log line shows it is inside the stage under test, then retries; a report of
#: each stage on stdout.
_DRIVER = textwrap.dedent("""
    import json, logging, os, signal, sys
    # A job started in the background of a shell (as CI may run us) ignores SIGINT; a
    # notebook kernel or a terminal gets it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import psutil
    import ray
    from pyspark import SparkContext
    from zoo_ray import RayContext, init_spark_on_yarn

    CONF = sys.argv[1]
    # ACCEPTED is logged while SparkContext() still waits for YARN.
    WHEN = {"spark": ("zoo_ray.startup", "YARN application"),
            "ray": ("zoo_ray.nodes", "Starting")}
    ARGS = dict(hadoop_conf=CONF, num_executors=2, executor_cores=1, executor_memory="512m",
                driver_memory="512m", extra_executor_memory_for_ray="1g")


    class Interrupt(logging.Handler):
        stage = None  # the stage to interrupt once, then None

        def emit(self, record):
            if Interrupt.stage is None:
                return
            logger, prefix = WHEN[Interrupt.stage]
            message = record.getMessage()
            if (record.name == logger and message.startswith(prefix)
                    and (Interrupt.stage != "spark" or message.endswith("is ACCEPTED"))):
                Interrupt.stage = None
                os.kill(os.getpid(), signal.SIGINT)


    def ray_on_gateway():
        found = []
        for proc in psutil.Process().children(recursive=True):
            try:
                line = " ".join(proc.cmdline())
            except psutil.Error:
                continue
            if "zoo_ray.manager" in line or "raylet" in line or "gcs_server" in line:
                found.append(line[:80])
        return found


    def managers_in_executors(sc):
        def count(_):
            import psutil
            jvm = next(p for p in psutil.Process().parents() if p.name() == "java")
            found = 0
            for child in jvm.children(recursive=True):
                try:
                    found += "zoo_ray.manager" in child.cmdline()
                except psutil.Error:
                    pass
            return [found]
        return sc.parallelize(range(2), 2).barrier().mapPartitions(count).collect()


    logging.basicConfig(level=logging.INFO)
    logging.getLogger().addHandler(Interrupt())
    reports = {}
    for stage in ("spark", "ray"):
        report = reports[stage] = {"interrupted": False}
        Interrupt.stage = stage
        try:
            sc = SparkContext._active_spark_context or init_spark_on_yarn(
                app_name="interrupted-start", **ARGS)
            RayContext(sc, object_store_memory="128m").init()
        except KeyboardInterrupt:
            report["interrupted"] = True
        report["ray_on_gateway"] = ray_on_gateway()
        sc = SparkContext._active_spark_context
        report["spark_survived"] = sc is not None
        if sc is None:  # the retry a user makes in the same kernel
            sc = init_spark_on_yarn(app_name="retried-start", **ARGS)
        report["app"] = sc.applicationId  # the application the stage ends on
        report["managers_in_executors"] = managers_in_executors(sc)
        ctx = RayContext(sc, object_store_memory="128m")
        ctx.init()
        report["retry"] = ray.get(ray.remote(lambda: 42).remote())
        ctx.stop()
    sc.stop()
    reports["ray_on_gateway_at_end"] = ray_on_gateway()
    print(json.dumps(reports), flush=True)
""")


def _wait_final(rm, name, timeout=90):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        apps = [a for a in rm.apps() if a["name"] == name]
        if apps and all(a["state"] in FINAL_STATES for a in apps):
            return apps
        time.sleep(1)
    raise AssertionError(f"applications named {name} still running: {rm.apps()}")


def _run_driver(cluster: Any, tmp: Path, _cleanup: ExitStack
                ) -> tuple[subprocess.CompletedProcess[str], Path]:
    log = tmp / "driver.err"
    with open(log, "w") as err:
        result = subprocess.run([sys.executable, "-c", _DRIVER, str(cluster.hadoop_conf_dir)],
                                env=env_without_ray(), stdout=subprocess.PIPE, stderr=err,
                                text=True, timeout=600)
    return result, log


AHEAD = {"test_ctrl_c_during_start_up_leaves_nothing_and_the_retry_works": _run_driver}


@pytest.mark.faults
def test_ctrl_c_during_start_up_leaves_nothing_and_the_retry_works(cluster, ahead_result):
    result, log = ahead_result
    assert result.returncode == 0, log.read_text()[-4000:]
    reports = json.loads(result.stdout.strip().splitlines()[-1])
    for stage in ("spark", "ray"):
        report = reports[stage]
        assert report["interrupted"], f"the interrupt reached {stage}'s start"
        assert report["ray_on_gateway"] == [], f"no Ray process left on the gateway ({stage})"
        assert report["managers_in_executors"] == [0, 0], f"no Ray node left ({stage})"
        assert report["retry"] == 42
    assert reports["ray_on_gateway_at_end"] == []
    rm = cluster.resource_manager
    # Interrupted inside SparkContext(): Spark's JVM was ended, the application killed,
    # not left waiting for its driver.
    assert not reports["spark"]["spark_survived"]
    assert "Interrupted while Spark's application was starting" in log.read_text()
    assert [a["state"] for a in _wait_final(rm, "interrupted-start")] == ["KILLED"]
    # Ctrl-C in RayContext.init keeps the SparkContext: Ray started again on the retry's
    # application.
    assert reports["ray"]["spark_survived"]
    assert reports["ray"]["app"] == reports["spark"]["app"]
    retry = _wait_final(rm, "retried-start")
    assert [a["id"] for a in retry] == [reports["ray"]["app"]]
