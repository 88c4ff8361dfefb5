"""Analytics Zoo programs with only their imports changed: `import ray` first, then the prelude.
The two programs run at once (``ahead``), as two users' would. A notebook that does the same
in a real kernel is notebooks/01_quickstart.ipynb, run by test_notebooks (its first code cell
imports ray: tests/test_notebooks_stripped.py keeps it so)."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from tests.e2e.helpers import wait_until, zoo_ray_processes
from tests.fresh import env_without_ray

# Written as Zoo users wrote their programs: ray (and numpy, os) first, the prelude after.
_ZOO_PROGRAM = textwrap.dedent("""
    import json, os, socket, sys
    import numpy as np
    import ray
    from zoo_ray import init_spark_on_yarn
    from zoo_ray import RayContext
    from zoo_ray.errors import RayContextError

    import warnings
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Zoo 0.6-0.8 spellings: num_executor, spark_conf (with a non-Spark key).
        sc = init_spark_on_yarn(hadoop_conf=sys.argv[1], conda_name=None, num_executor=2,
                                executor_cores=1, executor_memory="512m", driver_memory="512m",
                                extra_executor_memory_for_ray="1g",
                                spark_conf={"zoo.custom.key": "kept"})
    from zoo_ray.spark_internals import jvm_env
    report = {"warnings": [str(w.message) for w in caught
                           if issubclass(w.category, DeprecationWarning)],
              "custom_key": sc.getConf().get("zoo.custom.key"),
              "archives": [os.environ.get("PYSPARK_ARCHIVES_PATH"),
                           jvm_env("PYSPARK_ARCHIVES_PATH")]}

    ray.init(num_cpus=1, include_dashboard=False)  # a cluster of the program's own
    ray_ctx = RayContext(sc=sc, object_store_memory="128m")
    try:
        ray_ctx.init()
    except RayContextError as exc:
        report["connected_error"] = str(exc)
    ray.shutdown()

    # Zoo's own YARN program: a temp-dir root of the site's choice, and a proxy.
    root = sys.argv[2]
    ray_ctx = RayContext(sc=sc, object_store_memory="128m",
                         env={"http_proxy": "http://proxy.invalid:3128",
                              "https_proxy": "http://proxy.invalid:3128", "ZOO_VAR": "set"},
                         extra_params={"resources": '{"zoo": 2}', "temp-dir": root + "/"})
    info = ray_ctx.init()
    report["keys"] = sorted(info)
    report["app_id"] = sc.applicationId
    report["under_root"] = sorted(os.listdir(root))
    report["temp_dirs"] = [os.path.realpath(n["temp_dir"])
                           for n in info["nodes"] + [info["gateway_node"]]]

    @ray.remote(num_cpus=0, resources={"zoo": 1})
    def environment():
        return os.environ.get("ZOO_VAR"), os.environ.get("http_proxy")

    report["env"] = ray.get(environment.remote())
    report["gcs_address"] = info["gcs_address"]
    report["address"] = ray_ctx.address

    @ray.remote(num_cpus=1)
    class Host:
        def where(self):
            return (socket.gethostname(), ray.get_runtime_context().get_node_id(),
                    ray.util.get_node_ip_address(), os.environ.get("http_proxy"))

    hosts = [Host.remote() for _ in range(2)]
    report["actors"] = ray.get([h.where.remote() for h in hosts])
    report["sum"] = float(np.sum(ray.get([ray.put(np.ones(10)) for _ in range(3)])))
    ray_ctx.stop()
    report["after_stop"] = os.listdir(root)

    again = RayContext(sc=sc, object_store_memory="128m")
    report["reinit_keys"] = sorted(again.init())
    ray.init()  # an unchanged program's own call: joins through RAY_ADDRESS
    report["reinit_nodes"] = len([n for n in ray.nodes() if n["Alive"]])
    again.stop()
    sc.stop()
    print("REPORT " + json.dumps(report), flush=True)
""")

_RAY_KEYS = {"address", "gcs_address", "node_id", "node_ip_address", "object_store_address",
             "raylet_socket_name", "session_dir", "webui_url"}


def _run_zoo_program(cluster: Any, tmp: Path, _cleanup: ExitStack
                     ) -> subprocess.CompletedProcess[str]:
    fresh_env = {k: v for k, v in env_without_ray().items()
                 if k != "PYSPARK_ARCHIVES_PATH"}
    root = tmp / "hello"
    root.mkdir()
    return subprocess.run([sys.executable, "-c", _ZOO_PROGRAM, str(cluster.hadoop_conf_dir),
                           str(root)],
                          capture_output=True, text=True, timeout=900, env=fresh_env, cwd=tmp)


def test_a_zoo_program_importing_ray_first_runs_with_ray_address_info(ahead_result):
    result = ahead_result
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert "ray.shutdown()" in report["connected_error"]
    # pyspark.zip and py4j come from the cluster's cache: set for the JVM that submits,
    # never left in the program's environment for its child processes to inherit.
    in_process, in_jvm = report["archives"]
    assert in_process is None and in_jvm.startswith("hdfs://") and "pyspark.zip" in in_jvm
    assert _RAY_KEYS <= set(report["keys"])
    assert {"nodes", "gateway_node", "node_ids"} <= set(report["keys"])
    assert report["gcs_address"] == report["address"]
    assert len({node for _, node, _, _ in report["actors"]}) == 2, "one actor per executor's node"
    for hostname, _, ip, proxy in report["actors"]:
        assert hostname == socket.gethostname() and ip
        assert proxy == "http://proxy.invalid:3128"
    # Every node's Ray files under the program's temp-dir root while it ran, gone after stop().
    root = {str(Path(d).parent) for d in report["temp_dirs"]}
    assert len(root) == 1 and Path(root.pop()).name == "hello"
    assert len(report["under_root"]) == 3, report["under_root"]  # two executors, the gateway
    assert all(n.startswith(f"zoo-ray-{report['app_id']}-") for n in report["under_root"])
    assert sorted(Path(d).name for d in report["temp_dirs"]) == report["under_root"]
    assert report["after_stop"] == []
    wait_until(lambda: zoo_ray_processes(report["app_id"]) == [], 60, "no Ray process left")
    assert report["sum"] == 30.0
    assert _RAY_KEYS <= set(report["reinit_keys"])
    assert report["reinit_nodes"] == 3  # two executors and the gateway
    assert any("num_executor=" in w and "num_executors=" in w for w in report["warnings"])
    assert any("spark_conf=" in w and "conf=" in w for w in report["warnings"])
    assert report["custom_key"] == "kept"
    # env reaches Ray's workers; Ray's own gRPC ignored the unresolvable proxy in it.
    assert report["env"] == ["set", "http://proxy.invalid:3128"]


_ZOO_LOCAL_PROGRAM = textwrap.dedent("""
    import json, os
    import psutil
    import ray
    from zoo_ray import init_spark_on_local, RayContext

    sc = init_spark_on_local(cores=4, spark_log_level="ERROR")
    ray_ctx = RayContext(sc, object_store_memory="256m", ray_node_cpu_cores=2)
    info = ray_ctx.init()
    root = sc._jvm.org.apache.logging.log4j.LogManager.getRootLogger()
    report = {"keys": sorted(info), "is_local": ray_ctx.is_local,
              "total_cores": ray_ctx.total_cores, "log_level": root.getLevel().toString()}

    @ray.remote
    def square(x):
        return x * x

    report["squares"] = ray.get([square.remote(i) for i in range(8)])
    ray_ctx.stop()
    again = RayContext(sc, object_store_memory="256m", ray_node_cpu_cores=2)
    report["reinit_keys"] = sorted(again.init())
    report["reinit_square"] = ray.get(square.remote(7))
    again.stop()
    names = {"raylet", "gcs_server", "plasma_store"}
    report["left"] = [p.name() for p in psutil.Process().children(recursive=True)
                      if p.name() in names]
    sc.stop()
    print("REPORT " + json.dumps(report), flush=True)
""")


def _run_local_program(_cluster: Any, tmp: Path, _cleanup: ExitStack
                       ) -> tuple[subprocess.CompletedProcess[str], Path]:
    result = subprocess.run([sys.executable, "-c", _ZOO_LOCAL_PROGRAM], capture_output=True,
                            text=True, timeout=600, env=env_without_ray(), cwd=tmp)
    return result, tmp


def test_a_zoo_program_in_local_mode_runs_and_re_inits(ahead_result):
    result, cwd = ahead_result
    lines = [line for line in result.stdout.splitlines() if line.startswith("REPORT ")]
    assert result.returncode == 0 and lines, result.stderr[-4000:]
    report = json.loads(lines[0][len("REPORT "):])
    assert _RAY_KEYS <= set(report["keys"]) and _RAY_KEYS <= set(report["reinit_keys"])
    assert report["is_local"] is True and report["total_cores"] == 2
    assert report["log_level"] == "ERROR"
    assert report["squares"] == [i * i for i in range(8)] and report["reinit_square"] == 49
    assert report["left"] == []
    assert not (cwd / ".zoo_ray").exists(), "local mode keeps nothing in the user's cwd"


AHEAD = {"test_a_zoo_program_importing_ray_first_runs_with_ray_address_info": _run_zoo_program,
         "test_a_zoo_program_in_local_mode_runs_and_re_inits": _run_local_program}
